"""`$name` is the agent's state: every Markdown playbook of an agent reads and
writes the same variables, arguments are bound for one call (the caller's value
of the same name comes back), and the shared state survives a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from killing import ROOT, child_env

PROGRAM = ROOT / "tests" / "programs" / "shared_state.pb"
REPLAY = ROOT / "tests" / "programs" / "shared_state.replay.jsonl"
EXPECTED = [
    "What is your name?",
    "A warm hello to Ada!",
    "done greeting",
    "greeted=True style=plain",
]


def run(workdir: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    (workdir / "playbooks.toml").write_text(
        f'[model]\nname = "replay:{REPLAY}"\n[durability]\nenabled = true\nfsync = false\n'
    )
    env = child_env({"PLAYBOOKS_CRASH_AT": crash_at} if crash_at else None)
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(PROGRAM), "--json", "--message", "Ada"]
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def said(*lives: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    out = []
    for life in lives:
        for line in life.stdout.splitlines():
            event = json.loads(line)
            if event["event"] == "say" and (event["id"], event["text"]) not in out:
                out.append((event["id"], event["text"]))
    return out


def test_playbooks_share_the_agents_variables(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert [text for _, text in said(done)] == EXPECTED


@pytest.mark.parametrize("k", range(1, 9))
def test_shared_state_survives_a_kill_before_each_effect(tmp_path: Path, k: int) -> None:
    first = run(tmp_path, crash_at=f"effect:{k}")
    if first.returncode == 0:
        pytest.skip(f"the program has fewer than {k} effects")
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = run(tmp_path)
    assert second.returncode == 0, second.stderr
    assert [text for _, text in said(first, second)] == EXPECTED
