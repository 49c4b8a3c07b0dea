"""A Say to the person appears while its statement streams in (terminal view).

The statement still runs once, when complete; the display then adds only what
the preview had not shown. Real child processes, a real HTTP server that
paces its chunks like a live model, and a real SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from killing import child_env
from llm_server import ScriptedLLMServer, ScriptResponder

from playbooks.execution.say_preview import SayPreview, partial_say

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = (
    "# Host\nTells a tale.\n\n## Main\n### Triggers\n- At the beginning\n### Steps\n- Tell it\n"
)
WORDS = " ".join(f"w{n:03d}" for n in range(80))  # 80 words of 4 letters: 399 characters
TALE = WORDS + "."
SCRIPT = {
    "Main": [
        f'```python\nawait Step("Main:01")\nawait Say("user", "{TALE}")\nawait Return("told")\n```\n'
    ]
}


# -- the pure recogniser ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```python\nawait Step("M:01")\nawait Say("user", "Hello wor', ("Hello wor", False)),
        ('await Say("user", "a\\nb\\', ("a\nb", False)),  # an escape not yet complete
        ("await Say('user', 'it\\'s", ("it's", False)),
        ('await Say("user", f"Hi {{you}} {$name} and', ("Hi {you} ", True)),
        ('await Say("user", """two\nlines""', ("two\nlines", False)),
        ('await Say("user", "done")', ("done", True)),
        ('await Say("user", "', ("", False)),
    ],
)
def test_partial_say_reads_what_is_certain(text: str, expected: tuple[str, bool]) -> None:
    found = partial_say(text)
    assert isinstance(found, SayPreview)
    assert (found.text, found.complete) == expected


@pytest.mark.parametrize(
    "text",
    [
        'await Say("user", "done")\n',  # the statement has ended: it runs, no preview
        'await Say("user", "a"); x = 1',
        'await Say("agent 7", "not for the person',
        '    await Say("user", "inside a block that may not run',
        'Some prose: await Say("user", "x',
        '```python\nawait Say("user", "a")\n```\nawait Say("user", "after the fence',
        'await Say("user", $text',
        'await Say("user", "one line\nthen more',
    ],
)
def test_partial_say_ignores_what_is_not_a_streaming_say_to_the_person(text: str) -> None:
    assert partial_say(text) is None


# -- a real terminal view of a slowly streaming model ------------------------------
def start(workdir: Path, url: str, *extra: str, durable: bool = False) -> subprocess.Popen:
    config = workdir / "playbooks.toml"
    config.write_text(
        f'[model]\nname = "openai/test-model"\napi_base = "{url}"\n'
        f"[durability]\nenabled = {'true' if durable else 'false'}\n"
        f'path = "{workdir / "ckpt"}"\nfsync = false\n'
    )
    (workdir / "tale.pb").write_text(PROGRAM)
    args = [sys.executable, "-m", "playbooks.cli", "run", "tale.pb", *extra]
    return subprocess.Popen(
        args, cwd=workdir, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def read_timed(child: subprocess.Popen, until: bytes | None = None) -> list[tuple[float, bytes]]:
    """Each piece of stdout with the time it arrived; stops early at ``until``."""
    assert child.stdout is not None
    pieces: list[tuple[float, bytes]] = []
    seen = b""
    while True:
        data = os.read(child.stdout.fileno(), 65536)
        if not data:
            return pieces
        pieces.append((time.monotonic(), data))
        seen += data
        if until is not None and until in seen:
            return pieces


def arrival(pieces: list[tuple[float, bytes]], needle: bytes) -> float:
    seen = b""
    for at, data in pieces:
        seen += data
        if needle in seen:
            return at
    raise AssertionError(f"{needle!r} never arrived in {seen!r}")


class Pacing:
    """Holds each chunk back like a live model (about 300 characters a second)."""

    def __init__(self) -> None:
        self.delay = 0.025

    def __call__(self, request: int, chunk: int) -> None:
        if self.delay:
            time.sleep(self.delay)


def test_the_first_words_of_a_long_say_appear_well_before_its_last(tmp_path: Path) -> None:
    assert len(TALE) == 400
    with ScriptedLLMServer(ScriptResponder(SCRIPT), chunk_size=8, on_chunk=Pacing()) as server:
        child = start(tmp_path, server.url)
        pieces = read_timed(child)
        _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    out = b"".join(data for _, data in pieces).decode()
    assert out == f"Host: {TALE}\n"  # shown once, whole, on one line
    first, last = arrival(pieces, b"w000 w001"), arrival(pieces, b"w078 w079.")
    assert last - first > 1.0, (first, last)


def test_json_output_stays_one_event_per_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from playbooks.cli import main

    for key in list(os.environ):
        if key.startswith("PLAYBOOKS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tale.pb").write_text(PROGRAM)
    with ScriptedLLMServer(ScriptResponder(SCRIPT), chunk_size=8) as server:
        (tmp_path / "playbooks.toml").write_text(
            f'[model]\nname = "openai/test-model"\napi_base = "{server.url}"\n'
        )
        assert main(["run", "tale.pb", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]  # nothing but JSON, no partial text
    assert [e["text"] for e in events if e["event"] == "say"] == [TALE]
    usage = [e for e in events if e["event"] == "llm"]
    assert usage == [
        {
            "event": "llm",
            "call": 0,
            "playbook": "Main",
            "prompt_tokens": usage[0]["prompt_tokens"],
            "completion_tokens": len(SCRIPT["Main"][0]) // 4,
        }
    ]
    assert usage[0]["prompt_tokens"] > len(PROGRAM) // 4  # the tokens the server counted


def test_a_call_the_code_returns_from_early_still_reports_its_tokens_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The code reaches Return before the stream's last chunk (the token counts)
    arrives: the run waits a little for it, and the one llm event has the counts."""
    import threading

    from playbooks.cli import main
    from playbooks.execution import executor as executor_module

    returned = threading.Event()
    add_chunk = executor_module.StreamingPythonExecutor.add_chunk

    async def watched(self, text: str) -> None:  # only observes: the code runs as it is
        try:
            await add_chunk(self, text)
        except executor_module.PlaybookReturn:
            returned.set()
            raise

    monkeypatch.setattr(executor_module.StreamingPythonExecutor, "add_chunk", watched)
    for key in list(os.environ):
        if key.startswith("PLAYBOOKS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tale.pb").write_text(PROGRAM)
    held = []

    def hold_the_end(request: int) -> None:  # the last chunk goes once Return has run
        held.append(returned.wait(30))

    with ScriptedLLMServer(ScriptResponder(SCRIPT), before_end=hold_the_end) as server:
        (tmp_path / "playbooks.toml").write_text(
            f'[model]\nname = "openai/test-model"\napi_base = "{server.url}"\n'
        )
        assert main(["run", "tale.pb", "--json"]) == 0
    assert held == [True]
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    usage = [e for e in events if e["event"] == "llm"]
    assert [(e["call"], e["completion_tokens"]) for e in usage] == [
        (0, len(SCRIPT["Main"][0]) // 4)
    ]


def test_a_kill_mid_say_shows_the_message_whole_once_after_resume(tmp_path: Path) -> None:
    pacing = Pacing()
    with ScriptedLLMServer(ScriptResponder(SCRIPT), chunk_size=8, on_chunk=pacing) as server:
        child = start(tmp_path, server.url, durable=True)
        pieces = read_timed(child, until=b"w010 ")
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
        first_life = b"".join(data for _, data in pieces).decode()
        assert first_life.startswith("Host: w000 w001") and TALE not in first_life
        pacing.delay = 0
        again = start(tmp_path, server.url, durable=True)
        out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err.decode()
    assert "resuming" in err.decode()
    assert out.decode() == f"Host: {TALE}\n"  # whole, once; nothing from the first life repeated
