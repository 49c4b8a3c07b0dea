"""Support for crash tests: run `playbooks run` as a real child process against
the scripted LLM server, SIGKILL it at a chosen moment, rerun until it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llm_server import ScriptedLLMServer, ScriptResponder

from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider
from playbooks.llm.prompts import CONTINUE_PROMPT

ROOT = Path(__file__).resolve().parents[1]
KITCHEN = ROOT / "tests" / "programs" / "kitchen.pb"

KITCHEN_SCRIPT = {
    "Main": [
        '```python\nawait Step("Main:01")\nawait Say("user", "Hello! Which dish shall I cook today?")\n'
        '$dish = await Yld("user")\n```\n',
        '```python\nawait Step("Main:02")\n$result = await Cook($dish)\nawait Step("Main:03")\n'
        'await Say("user", f"Your {$dish} is ready. Notes: {$result}")\n'
        'await Step("Main:04")\nawait Return($result)\n```\n',
    ],
    "Taste": [
        '```python\nawait Step("Taste:01")\n$verdict = f"{$dish} round {$round}: '
        "{['bland', 'better', 'delicious'][$round]}\"\n"
        'await Say("user", f"tasting... {$verdict}")\nawait Step("Taste:02")\n'
        "await Return($verdict)\n```\n",
    ],
}
REPLIES = ["tomato soup"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYBOOKS_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


@dataclass
class Life:
    """One process life: its exit code and the JSON events it printed."""

    code: int
    events: list[dict]
    stderr: str


@dataclass
class Trial:
    """A program run that may be killed and is rerun until it finishes."""

    workdir: Path
    program: Path = KITCHEN
    script: dict = field(default_factory=lambda: KITCHEN_SCRIPT)
    replies: list[str] = field(default_factory=lambda: list(REPLIES))
    chunk_size: int = 8
    lives: list[Life] = field(default_factory=list)
    kills: int = 0
    cuts: int = 0  # kills that left an LLM stream unfinished
    dsn: str | None = None  # the executions live in PostgreSQL there, not in ckpt/

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._child: subprocess.Popen | None = None
        self._kill_at_chunk: tuple[int, int] | None = None
        self.server = ScriptedLLMServer(
            ScriptResponder(self.script), chunk_size=self.chunk_size, on_chunk=self._on_chunk
        ).start()
        (self.workdir / "playbooks.toml").write_text(
            "max_llm_calls = 20\n"
            f'[model]\nname = "openai/test-model"\napi_base = "{self.server.url}"\n'
            f'[durability]\nenabled = true\npath = "{self.workdir / "ckpt"}"\n'
        )

    def close(self) -> None:
        self.server.stop()

    def _on_chunk(self, request: int, chunk: int) -> None:
        if self._kill_at_chunk == (request, chunk) and self._child is not None:
            self._kill()
            raise ConnectionAbortedError("killed the client mid-stream")

    def _kill(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            self.kills += 1

    def live(
        self,
        *,
        crash_at: str | None = None,
        kill_at_event: Callable[[dict, int], bool] | None = None,
        kill_at_chunk: tuple[int, int] | None = None,
        replies: bool = True,
    ) -> Life:
        """One life of the program; returns when the process has ended."""
        args = [sys.executable, "-m", "playbooks.cli", "run", str(self.program), "--json"]
        if replies:
            for reply in self.replies:
                args += ["--message", reply]
        env = child_env({"PLAYBOOKS_CRASH_AT": crash_at} if crash_at else None)
        self._kill_at_chunk = kill_at_chunk
        child = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._child = child
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.append(child.stderr.read()), daemon=True)
        reader.start()
        events = []
        assert child.stdout is not None
        for line in child.stdout:
            event = json.loads(line)
            events.append(event)
            if kill_at_event is not None and kill_at_event(event, len(events)):
                self._kill()
        code = child.wait()
        reader.join()
        if crash_at and code == -signal.SIGKILL:
            self.kills += 1
        if code == -signal.SIGKILL and self.stream_open():
            self.cuts += 1
        self._child = None
        self._kill_at_chunk = None
        life = Life(code, events, "".join(err))
        self.lives.append(life)
        return life

    def finished(self) -> Life | None:
        """The life that ran the program to its end, if one did. A kill that lands
        after the end was shown (while the process tidies up) needs no rerun:
        a rerun would start the program again."""
        for life in self.lives:
            if any(e["event"] == "end" and e.get("status") == "finished" for e in life.events):
                return life
        return None

    def finish(self, max_lives: int = 4) -> Life:
        """Rerun (no kill) until the program ends."""
        for _ in range(max_lives):
            done = self.finished()
            if done is not None:
                return done
            life = self.live()
            if life.code != -signal.SIGKILL:
                return life
        raise AssertionError("the program never finished")

    def stream_open(self) -> bool:
        """Did the killed process leave an LLM turn started but not fully received?"""
        if self.dsn is not None:
            from playbooks.durability import PostgresCheckpointProvider

            provider = PostgresCheckpointProvider(self.dsn)
        else:
            provider = FilesystemCheckpointProvider(self.workdir / "ckpt")
        try:
            executions = provider.list_executions()
            if not executions:
                return False
            state = CheckpointManager(executions[0], provider).read_state()
        finally:
            getattr(provider, "close", lambda: None)()
        return any(
            f.result is None
            and f.kind == "markdown"
            and f.turn < len(f.texts)
            and not f.turn_done(f.turn)
            for f in state.frames.values()
        )

    # -- what the person saw, and what the server was asked ------------------
    def shown(self) -> list[tuple[str, str]]:
        return [
            (e["id"], e["text"]) for life in self.lives for e in life.events if e["event"] == "say"
        ]

    def requests(self) -> int:
        return len(self.server.requests)

    def continuations(self) -> int:
        return sum(
            1
            for r in self.server.requests
            if r["messages"] and r["messages"][-1].get("content") == CONTINUE_PROMPT
        )


def transcript_check(
    shown: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> tuple[bool, int]:
    """Is ``shown`` the expected transcript, allowing only immediate re-shows of
    the same message (same id)? Returns (ok, number of re-shows)."""
    merged: list[tuple[str, str]] = []
    reshows = 0
    for item in shown:
        if merged and merged[-1] == item:
            reshows += 1
            continue
        merged.append(item)
    return merged == expected, reshows
