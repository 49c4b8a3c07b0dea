"""Programs written the way the reference project's users write them (4-space
nesting, `### Trigger`, plain `def` playbooks, step codes such as `:QUE`,
`# trig?` comments) run offline from their recorded responses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from killing import ROOT, child_env

EXAMPLES = ROOT / "examples"
CASES = {
    "support": (
        ["Where is my order 42?", "And can I return it?"],
        [
            "Hi! I can check an order or explain returns. How can I help?",
            "Order 42 is shipped and should arrive on 2026-12-02.",
            "Items can be returned within 30 days. Your order is shipped, so that applies to it too.",
        ],
    ),
    "trip": (
        ["Lisbon", "4"],
        [
            "Where would you like to go?",
            "How many days do you have in Lisbon?",
            "Plenty of time: we can add day trips.",
            "Day 1: old town and museums\nDay 2: a day trip outside Lisbon\n"
            "Day 3: a day trip outside Lisbon\nDay 4: a day trip outside Lisbon\nHave a good trip!",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ported_example_runs_offline(name: str, tmp_path: Path) -> None:
    messages, expected = CASES[name]
    cmd = [
        sys.executable,
        "-m",
        "playbooks.cli",
        "run",
        str(EXAMPLES / f"{name}.pb"),
        "--model",
        f"replay:{EXAMPLES / f'{name}.replay.jsonl'}",
        "--json",
    ]
    for message in messages:
        cmd += ["--message", message]
    done = subprocess.run(
        cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["text"] for e in events if e["event"] == "say"] == expected
    assert not [e for e in events if e["event"] == "code_error"]


def _letters_run(workdir: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    (workdir / "playbooks.toml").write_text(
        f'[model]\nname = "replay:{EXAMPLES / "letters.replay.jsonl"}"\n'
        '[durability]\nenabled = true\nfsync = false\npath = "ckpt"\n'
    )
    env = child_env({"PLAYBOOKS_CRASH_AT": crash_at} if crash_at else None)
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(EXAMPLES / "letters.pb"), "--json"]
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("k", [None, 2, 3, 4, 5, 6])
def test_letters_drawn_by_a_python_playbook_are_the_same_after_a_kill(
    tmp_path: Path, k: int | None
) -> None:
    """`random.choices` inside a plain `def` playbook is journaled: a run killed
    before effect k shows first and last letters of one and the same string."""
    from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider

    lives = [_letters_run(tmp_path, f"effect:{k}" if k else None)]
    if k is not None:
        assert lives[0].returncode == -9, lives[0].stderr
        lives.append(_letters_run(tmp_path))
    assert lives[-1].returncode == 0, lives[-1].stderr
    shown: dict[str, str] = {}
    for life in lives:
        for line in life.stdout.splitlines():
            event = json.loads(line)
            if event["event"] == "say":
                shown.setdefault(event["id"], event["text"])
    first, last = (text.rsplit(" ", 1)[1].rstrip(".") for text in shown.values())
    provider = FilesystemCheckpointProvider(tmp_path / "ckpt")
    (execution,) = provider.list_executions()
    state = CheckpointManager(execution, provider).read_state()
    letters = CheckpointManager(execution, provider).decode(state.agent_vars["letters"])
    assert (first, last) == (letters[:4], letters[-4:])
