"""The multi-agent examples run offline from their recorded responses, in the
reference dialect (`Say("agent 1001", ...)`, `Yld("agent 1001")`, `CreateAgent`),
and survive a SIGKILL before any of their effects: killed, rerun, the person
sees the uninterrupted transcript, each agent message is delivered once, and
the agents CreateAgent made come back instead of being made again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from killing import ROOT, child_env, transcript_check

from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider

EXAMPLES = ROOT / "examples"
WORKERS = 3
TAX_SAID = ["What is your gross income?", "With a tax rate of 15%, your tax is $12,000.00."]
TAX_MESSAGES = [
    ("HostAgent", "TaxAccountantAgent", "What tax rate applies to a gross income of 80000?"),
    ("TaxAccountantAgent", "HostAgent", "15"),
]
MEETING_SAID = ["Correct! (Participant: pizza)", "The meeting is over: the guess was correct."]
NEGOTIATION_SAID = [
    "Bill the seller here. A buyer has arrived (agent 1003): watch us haggle over a pen.",
    "Sold the pen for $75.",
    "I quit!",
]


def run(
    name: str, workdir: Path, messages: list[str], *, durable: bool = False, crash_at: str = ""
) -> subprocess.CompletedProcess:
    replay = EXAMPLES / f"{name}.replay.jsonl"
    config = f'[model]\nname = "replay:{replay}"\n'
    if durable:
        config += '[durability]\nenabled = true\nfsync = false\npath = "ckpt"\n'
    (workdir / "playbooks.toml").write_text(config)
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(EXAMPLES / f"{name}.pb"), "--json"]
    for message in messages:
        cmd += ["--message", message]
    env = child_env({"PLAYBOOKS_CRASH_AT": crash_at} if crash_at else None)
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )


def events(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_tax_asks_the_accountant_by_message(tmp_path: Path) -> None:
    done = run("tax", tmp_path, ["80000"])
    assert done.returncode == 0, done.stderr
    seen = events(done)
    assert [e["text"] for e in seen if e["event"] == "say"] == TAX_SAID
    sent = [(e["from"], e["to"], e["text"]) for e in seen if e["event"] == "message"]
    assert sent == TAX_MESSAGES
    assert not [e for e in seen if e["event"] == "code_error"]


def test_tax_rate_depends_on_the_income(tmp_path: Path) -> None:
    seen = events(run("tax", tmp_path, ["250,000"]))
    assert seen[-1] == {"event": "end", "status": "finished", "result": None}
    said = [e["text"] for e in seen if e["event"] == "say"]
    assert said[-1] == "With a tax rate of 25%, your tax is $62,500.00."


def test_negotiation_creates_the_buyer_and_the_boss(tmp_path: Path) -> None:
    done = run("negotiation", tmp_path, [])
    assert done.returncode == 0, done.stderr
    seen = events(done)
    assert [e["text"] for e in seen if e["event"] == "say"] == NEGOTIATION_SAID
    sent = [(e["from"], e["to"]) for e in seen if e["event"] == "message"]
    assert sent[:2] == [("Seller", "Buyer 1003"), ("Buyer 1003", "Seller")]
    assert ("Seller", "Boss 1004") in sent and ("Boss 1004", "Seller") in sent
    assert not [e for e in seen if e["event"] == "code_error"]


CREATE_BGN = """\
# A
## Main
### Triggers
- At the beginning
### Steps
- Say to user "Hello from A"
- Call C.Greet()
- Create a new B and call Greet2
- End program

# B
## Greet
### Triggers
- At the beginning
### Steps
- Tell the user "Hello from B"

## Greet2
public: true
### Steps
- Tell the user "from another B"

# C
## Greet
public: true
### Steps
- Tell the user "Hello from C"
"""
CREATE_BGN_CALLS = [
    (
        "A",
        0,
        "Main",
        'await Step("Main:01")\nawait Say("user", "Hello from A")\nawait Step("Main:02")\n'
        'await C.Greet()\nawait Step("Main:03")\n$b = await CreateAgent("B")\n'
        'await B.Greet2()\nawait Step("Main:04")\nawait EndProgram()',
    ),
    ("B", 0, "Greet", 'await Say("user", "Hello from B")\nawait Return()'),
    ("C", 0, "Greet", 'await Say("user", "Hello from C")\nawait Return()'),
    ("B", 1, "Greet2", 'await Say("user", "from another B")\nawait Return()'),
    ("B 1003", 0, "Greet", 'await Say("user", "Hello from B 1003")\nawait Return()'),
]


def test_terminal_lines_are_whole_with_several_agents(tmp_path: Path) -> None:
    """(15-create-bgn.pb of the reference) Lines of several agents interleave, so a
    Say is shown when it runs, never as a preview another agent's line would cut;
    the agent CreateAgent made runs its begin playbook and speaks by its own name."""
    (tmp_path / "p.pb").write_text(CREATE_BGN)
    lines = [
        json.dumps({"agent": a, "call": c, "playbook": p, "response": f"```python\n{r}\n```"})
        for a, c, p, r in CREATE_BGN_CALLS
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "playbooks.cli", "run", "p.pb", "--model", "replay:r.jsonl"]
    done = subprocess.run(
        cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        "A: Hello from A",
        "B 1003: Hello from B 1003",
        "B: Hello from B",
        "B: from another B",
        "C: Hello from C",
    ]


def _killed(args: tuple[str, Path, int]) -> dict | None:
    name, workdir, k = args
    workdir.mkdir()
    messages = ["80000"] if name == "tax" else []
    first = run(name, workdir, messages, durable=True, crash_at=f"effect:{k}")
    if first.returncode == 0:
        return None  # past the last effect
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = run(name, workdir, messages, durable=True)
    assert second.returncode == 0, second.stderr
    shown = [
        (e["id"], e["text"]) for d in (first, second) for e in events(d) if e["event"] == "say"
    ]
    provider = FilesystemCheckpointProvider(workdir / "ckpt")
    (execution,) = provider.list_executions()
    state = CheckpointManager(execution, provider).read_state()
    sent = [m["id"] for m in state.transcript if m.get("event") == "message"]
    return {
        "k": k,
        "shown": shown,
        "sent_once": len(sent) == len(set(sent)),
        "received_once": len(state.received) == len(set(state.received)),
        "created": [c["id"] for c in state.created],
        "sent": sent,
    }


def test_meeting_with_shared_state(tmp_path: Path) -> None:
    """The host saves a food in the meeting's shared state, the attendee reads it
    and says it in the meeting; the meeting ends when the host's playbook returns."""
    done = run("meeting", tmp_path, [])
    assert done.returncode == 0, done.stderr
    seen = events(done)
    assert [e["text"] for e in seen if e["event"] == "say"] == MEETING_SAID
    talk = [(e["from"], e["to"], e["text"]) for e in seen if e["event"] == "message"]
    assert talk == [
        ("Host", "meeting 100", "Please guess the food item I saved in the shared state."),
        ("Participant 1002", "meeting 100", "pizza"),
        ("Host", "meeting 100", "Correct!"),
        ("Participant 1002", "meeting 100", "Goodbye!"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "stride"), [("tax", 2), ("negotiation", 3), ("meeting", 2)])
def test_killed_before_effects(name: str, stride: int, tmp_path: Path) -> None:
    """Before every second effect (every third of negotiation's 30), attendees'
    waits included: kept short, since the office program is killed at every one."""
    stride = int(os.environ.get("PLAYBOOKS_KILL_STRIDE", stride))  # 1: before every effect
    baseline = run(name, tmp_path, ["80000"] if name == "tax" else [], durable=True)
    expected = [(e["id"], e["text"]) for e in events(baseline) if e["event"] == "say"]
    results: list[dict] = []
    k = 1
    with ThreadPoolExecutor(WORKERS) as pool:
        while True:
            batch = [
                (name, tmp_path / f"k{k + i}", k + i) for i in range(0, WORKERS * stride, stride)
            ]
            found = [r for r in pool.map(_killed, batch) if r]
            results += found
            if len(found) < len(batch):
                break
            k += WORKERS * stride
    assert len(results) >= 6
    for result in results:
        assert transcript_check(result["shown"], expected)[0], result
        assert result["sent_once"] and result["received_once"], result
        if name == "meeting":
            assert result["created"] == [1002] and len(result["sent"]) == 4, result
        if name == "negotiation":
            assert result["created"] == [1003, 1004], result  # recreated, never made twice
            assert len(result["sent"]) >= 8, result


REFERENCE = ROOT.parent / "shared" / "reference" / "programs"
REFERENCE_RUNS = {
    "examples/tax.pb": ("tax", ["80000"], TAX_SAID),
    "examples/negotiation.pb": ("negotiation", [], NEGOTIATION_SAID),
    "tests/data/meeting-shared-state.pb": ("meeting", [], MEETING_SAID),
}


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference programs not present: {REFERENCE}")
@pytest.mark.parametrize("relative", sorted(REFERENCE_RUNS))
def test_the_reference_program_itself_runs_from_the_recording(
    relative: str, tmp_path: Path
) -> None:
    """The reference project's own file, unchanged, with our example's recording."""
    recording, messages, said = REFERENCE_RUNS[relative]
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(REFERENCE / relative), "--json"]
    cmd += ["--model", f"replay:{EXAMPLES / f'{recording}.replay.jsonl'}"]
    for message in messages:
        cmd += ["--message", message]
    done = subprocess.run(
        cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    assert [e["text"] for e in events(done) if e["event"] == "say"] == said


def test_max_llm_calls_bounds_the_calls_of_all_agents_together(tmp_path: Path) -> None:
    """tax makes five calls, no agent more than three: a budget of four stops it."""
    replay = EXAMPLES / "tax.replay.jsonl"
    (tmp_path / "playbooks.toml").write_text(
        f'max_llm_calls = 4\n[model]\nname = "replay:{replay}"\n'
    )
    cmd = [sys.executable, "-m", "playbooks.cli", "run", str(EXAMPLES / "tax.pb")]
    done = subprocess.run(
        [*cmd, "--message", "80000"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert "did not finish within max_llm_calls = 4 LLM calls" in done.stderr
