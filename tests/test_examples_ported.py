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
