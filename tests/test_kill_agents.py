"""Kill a real `playbooks run` of a three-agent program (SIGKILL) and rerun it.

Host asks the person for their income, calls Accountant.GetTaxRate (a public
playbook run in the accountant), sends the Clerk a message and waits for the
Clerk's answer (the Clerk wakes on the message, its model answers with Say),
then tells the person. Killed before every effect and after every await of every
agent, and at a few random moments, the joined run must show the person exactly
the uninterrupted transcript, deliver each agent message exactly once, and send no completed
LLM call again for any agent (the test server counts each agent's requests by
the model its `model:` metadata names).
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from killing import ROOT, Trial, transcript_check

from playbooks.durability import CheckpointManager, FilesystemCheckpointProvider

pytestmark = pytest.mark.slow
WORKERS = 3
PROGRAM = ROOT / "tests" / "programs" / "office.pb"
SCRIPT = {
    "Main": [
        '```python\nawait Step("Main:01")\nawait Say("user", "What is your gross income?")\n'
        '$income = int(await Yld("user"))\n```\n',
        '```python\nawait Step("Main:02")\n$rate = await Accountant.GetTaxRate($income)\n'
        'await Step("Main:03")\n'
        'await Say("Clerk", f"Please file a return: income {$income}, rate {$rate}%")\n'
        '$filed = await Yld("agent 1002")\nawait Step("Main:04")\n'
        'await Say("user", f"Your tax is {$income * $rate // 100}. {$filed}")\n'
        'await Step("Main:05")\nawait EndProgram()\n```\n',
    ],
    "GetTaxRate": [
        '```python\nawait Step("GetTaxRate:01")\n'
        "await Return(15 if $income < 100000 else 25)\n```\n"
    ],
    "HandleMessage": [
        '```python\nawait Say($sender, f"Filed. ({$message})")\nawait Return()\n```\n'
    ],
}
MESSAGES = [
    ("main/1.3.0", "Please file a return: income 80000, rate 15%"),
    ("agent1002/0.0.1/0.0.0", "Filed. (Please file a return: income 80000, rate 15%)"),
]
SHOWN = [
    ("main/0.1.0", "What is your gross income?"),
    ("main/1.6.0", "Your tax is 12000. " + MESSAGES[1][1]),
]
MODELS = {"test-model": 2, "accountant-model": 1, "clerk-model": 1}


def test_llm_events_name_the_agent_that_called(tmp_path: Path) -> None:
    trial = office(tmp_path)
    try:
        life = trial.live()
        assert life.code == 0, life.stderr
        calls = [
            (e.get("agent"), e["playbook"], e["call"]) for e in life.events if e["event"] == "llm"
        ]
        assert sorted(calls) == [
            ("Accountant", "GetTaxRate", 0),
            ("Clerk", "HandleMessage", 0),
            ("Host", "Main", 0),
            ("Host", "Main", 1),
        ]
    finally:
        trial.close()


def office(workdir: Path) -> Trial:
    return Trial(workdir, program=PROGRAM, script=SCRIPT, replies=["80000"])


def durable_state(trial: Trial):  # noqa: ANN201 - an ExecutionState
    provider = FilesystemCheckpointProvider(trial.workdir / "ckpt")
    (execution,) = provider.list_executions()
    return CheckpointManager(execution, provider).read_state()


def verdict(trial: Trial) -> dict:
    ok, reshows = transcript_check(trial.shown(), SHOWN)
    state = durable_state(trial)
    messages = [(m["id"], m["text"]) for m in state.transcript if m.get("event") == "message"]
    asked = Counter(r.get("model") for r in trial.server.requests)
    extra = {m: asked[m] - n for m, n in MODELS.items()}
    final = trial.finished()
    return {
        "exact": ok and final is not None and state.status == "finished",
        "delivered_once": messages == MESSAGES
        and sorted(state.received) == sorted(i for i, _ in MESSAGES)
        and not state.mail,
        "extra": sum(extra.values()),
        "within_budget": all(n >= 0 for n in extra.values()) and sum(extra.values()) <= trial.cuts,
        "kills": trial.kills,
        "reshows": reshows,
    }


def _kill_at(args: tuple[Path, str, int]) -> dict | None:
    """Kill before the k-th effect (``effect``) or right after the k-th await record
    of any agent (``await``: pure awaits too), then run on to the end."""
    workdir, kind, k = args
    trial = office(workdir)
    try:
        first = trial.live(crash_at=f"{kind}:{k}")
        if first.code == 0:
            return None  # fewer than k of them: past the end
        assert first.code == -signal.SIGKILL, first.stderr
        last = trial.finish()
        assert last.code == 0, last.stderr
        return verdict(trial) | {"point": f"{kind} {k}"}
    finally:
        trial.close()


def _random_kill(args: tuple[Path, int]) -> dict:
    workdir, seed = args
    rng = random.Random(seed)
    trial = office(workdir)
    try:
        how = rng.choice(["stream", "event", "record"])
        if how == "stream":
            trial.live(kill_at_chunk=(rng.randrange(4), rng.randrange(1, 6)))
        elif how == "event":
            n = rng.randrange(1, 12)
            trial.live(kill_at_event=lambda e, count: count == n)
        else:
            kind = rng.choice(["text", "ckpt", "turn", "end", "frame", "await"])
            trial.live(crash_at=f"{kind}:{rng.randrange(1, 8)}:{rng.choice(['before', 'after'])}")
        last = trial.finish()
        assert last.code == 0, last.stderr
        return verdict(trial) | {"point": how, "seed": seed}
    finally:
        trial.close()


def test_uninterrupted_run_is_the_expected_conversation(tmp_path: Path) -> None:
    trial = office(tmp_path)
    try:
        life = trial.live()
        assert life.code == 0, life.stderr
        assert trial.shown() == SHOWN
        sent = [(e["id"], e["from"], e["to"]) for e in life.events if e["event"] == "message"]
        assert sent == [(MESSAGES[0][0], "Host", "Clerk"), (MESSAGES[1][0], "Clerk", "Host")]
        result = verdict(trial)
        assert result["delivered_once"] and result["extra"] == 0
    finally:
        trial.close()


def test_kill_at_every_effect_and_await_of_every_agent_and_at_random_moments(
    tmp_path: Path,
) -> None:
    results: list[dict] = []
    # CI takes 6 random moments; PLAYBOOKS_KILL_RANDOM=30 gives the full count
    count = int(os.environ.get("PLAYBOOKS_KILL_RANDOM", "6"))
    randoms = [(tmp_path / f"r{seed}", seed) for seed in range(count)]
    with ThreadPoolExecutor(WORKERS) as pool:
        for kind in ("effect", "await"):
            k = 1
            while True:  # every one, in batches, until a run gets past the last one
                batch = [(tmp_path / f"{kind}{k + i}", kind, k + i) for i in range(WORKERS)]
                found = [r for r in pool.map(_kill_at, batch) if r]
                results += found
                if len(found) < len(batch):
                    break
                k += WORKERS
        results += list(pool.map(_random_kill, randoms))
    print(
        f"\nagents kill test: trials={len(results)} "
        f"exact={sum(r['exact'] for r in results)} "
        f"delivered_once={sum(r['delivered_once'] for r in results)} "
        f"kills={sum(r['kills'] for r in results)} "
        f"re-shows={sum(r['reshows'] for r in results)} "
        f"extra_requests={sum(r['extra'] for r in results)}"
    )
    awaits = sum(r["point"].startswith("await") for r in results)
    print(f"kills after an await record: {awaits}")
    assert awaits >= 12  # every await of the three agents, pure ones included
    assert len(results) >= 30  # and every effect, then the random ones
    bad = [r for r in results if not (r["exact"] and r["delivered_once"] and r["within_budget"])]
    assert bad == []
