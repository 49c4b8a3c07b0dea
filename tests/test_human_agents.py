"""`# Name:Human` declares a person besides `user`: messages to them show with
their name, and their replies come from `--message NAME:TEXT` (or the
terminal, with a prompt naming them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from killing import child_env

PROGRAM = """\
# Manager:Human
Approves expenses.

# Clerk
Files expenses.

## Main
### Triggers
- When program begins
### Steps
- Ask the user for the expense, ask the Manager to approve it, tell the user
"""
RESPONSE = (
    '```python\nawait Step("Main:01")\nawait Say("user", "What is the expense?")\n'
    '$expense = await Yld("user")\nawait Say("Manager", f"Please approve: {$expense}")\n'
    '$verdict = await Yld("Manager")\nawait Say("user", f"The manager says: {$verdict}")\n'
    "await Return($verdict)\n```\n"
)


def run(tmp: Path, *messages: str, json_mode: bool = True) -> subprocess.CompletedProcess:
    (tmp / "desk.pb").write_text(PROGRAM)
    replay = tmp / "desk.replay.jsonl"
    replay.write_text(json.dumps({"call": 0, "playbook": "Main", "response": RESPONSE}) + "\n")
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(tmp / "desk.pb")]
    cmd += ["--model", f"replay:{replay}"] + (["--json"] if json_mode else [])
    for message in messages:
        cmd += ["--message", message]
    return subprocess.run(
        cmd, cwd=tmp, env=child_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def test_a_human_agent_replies_by_name(tmp_path: Path) -> None:
    done = run(tmp_path, "Manager: approved", "lunch, 12 EUR")
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in done.stdout.splitlines()]
    said = [(e["to"], e["text"]) for e in seen if e["event"] == "say"]
    assert said == [
        ("user", "What is the expense?"),
        ("Manager", "Please approve: lunch, 12 EUR"),
        ("user", "The manager says: approved"),
    ]
    replies = [(e.get("from", "user"), e["text"]) for e in seen if e["event"] == "reply"]
    assert replies == [("user", "lunch, 12 EUR"), ("Manager", "approved")]
    assert seen[-1]["result"] == "approved"


def test_the_terminal_shows_the_human_by_name(tmp_path: Path) -> None:
    done = run(tmp_path, "lunch", "manager:no", json_mode=False)
    assert done.returncode == 0, done.stderr
    assert "Clerk -> Manager: Please approve: lunch" in done.stdout
    assert "Manager: no" in done.stdout


def test_no_reply_from_the_human_leaves_the_run_waiting(tmp_path: Path) -> None:
    done = run(tmp_path, "lunch")
    assert done.returncode == 1
    assert "waiting for the person's reply" in done.stderr
