"""An agent with triggers besides its begin triggers keeps serving: after its
begin playbooks return it waits for the person's next message and runs a turn
with its triggers in view, until the input ends (exit 0) or EndProgram."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from killing import ROOT, child_env

PROGRAM = ROOT / "tests" / "programs" / "chat.pb"
REPLAY = ROOT / "tests" / "programs" / "chat.replay.jsonl"
MESSAGES = ["what is the weather in Paris?", "thanks"]
EXPECTED = [
    "Welcome! Ask me about the weather.",
    "Sunny in Paris.",
    "You said: thanks. The last forecast was sunny.",
]


def run(
    workdir: Path, crash_at: str | None = None, messages: list[str] = MESSAGES
) -> subprocess.CompletedProcess:
    (workdir / "playbooks.toml").write_text(
        f'[model]\nname = "replay:{REPLAY}"\n[durability]\nenabled = true\nfsync = false\n'
    )
    env = child_env({"PLAYBOOKS_CRASH_AT": crash_at} if crash_at else None)
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(PROGRAM), "--json"]
    for message in messages:
        cmd += ["--message", message]
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def said(*lives: subprocess.CompletedProcess) -> list[str]:
    seen: dict[str, str] = {}
    for life in lives:
        for line in life.stdout.splitlines():
            event = json.loads(line)
            if event["event"] == "say":
                seen.setdefault(event["id"], event["text"])
    return list(seen.values())


def test_a_trigger_driven_turn_runs_after_main_returns(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert said(done) == EXPECTED
    end = json.loads(done.stdout.splitlines()[-1])
    assert end["event"] == "end" and end["status"] == "finished"


@pytest.mark.parametrize("k", range(1, 12, 2))
def test_serving_survives_a_kill(tmp_path: Path, k: int) -> None:
    first = run(tmp_path, crash_at=f"effect:{k}")
    if first.returncode == 0:
        pytest.skip(f"fewer than {k} effects")
    assert first.returncode == -signal.SIGKILL, first.stderr
    # replies are counted: the next --message is the next reply, so give the rest
    taken = sum(1 for line in first.stdout.splitlines() if json.loads(line)["event"] == "reply")
    second = run(tmp_path, messages=MESSAGES[taken:])
    assert second.returncode == 0, second.stderr
    assert said(first, second) == EXPECTED
