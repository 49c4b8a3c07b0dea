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


MEETING = """\
# Alice:Human
A team lead.

# Greeter
## Main
### Triggers
- At the beginning
### Steps
- Run a team introduction meeting with Alice and the user
- End the program

## TeamIntroduction
meeting: true
required_attendees: [Alice, user]
### Steps
- Welcome everyone and ask for introductions
- Thank them and conclude
"""
MEETING_CALLS = [
    (
        "Main",
        '$r = await TeamIntroduction(topic="Introductions")\n'
        'await Say("user", f"Done: {$r}")\nawait EndProgram()',
    ),
    (
        "TeamIntroduction",
        'await Say($meeting_id, "Welcome everyone! Who are you?")\n'
        "$first = await Yld($meeting_id)\n$second = await Yld($meeting_id)\n"
        'await Say($meeting_id, "Thanks.")\nawait Return([$first, $second])',
    ),
]


def test_people_speak_in_a_meeting_of_one_ai_agent(tmp_path: Path) -> None:
    """The meeting's people (the user and a human agent) are asked in turn when no AI
    attendee can say anything; each reply comes back named, once."""
    (tmp_path / "m.pb").write_text(MEETING)
    lines = [
        json.dumps({"call": n, "playbook": p, "response": f"```python\n{code}\n```"})
        for n, (p, code) in enumerate(MEETING_CALLS)
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "playbooks.cli", "run", "m.pb", "--model", "replay:m.jsonl"]
    cmd += ["--json", "--message", "Alice: I lead the team", "--message", "I am new"]
    done = subprocess.run(
        cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in done.stdout.splitlines()]
    said = [e["text"] for e in seen if e["event"] == "say"]
    assert said == ["Done: ['Alice: I lead the team', 'user: I am new']"]
    talk = [(e["from"], e["to"]) for e in seen if e["event"] == "message"]
    assert talk == [("Greeter", "meeting 100"), ("Greeter", "meeting 100")]
