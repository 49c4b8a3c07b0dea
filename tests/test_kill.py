"""Kill a real `playbooks run` with SIGKILL, rerun it, and demand the exact
transcript of an uninterrupted run, no repeated LLM call and no message shown
twice (except the one in flight, re-shown at once with the same id).

The program has three levels: Markdown Main -> Python Cook (awaits in a for
loop) -> Markdown Taste, plus a wait for the person's reply.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from killing import Trial, child_env, transcript_check

pytestmark = pytest.mark.slow
WORKERS = 3


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    trial = Trial(tmp_path_factory.mktemp("baseline"))
    try:
        life = trial.live()
        assert life.code == 0, life.stderr
        return {"shown": trial.shown(), "requests": trial.requests(), "end": life.events[-1]}
    finally:
        trial.close()


def check(trial: Trial, baseline: dict) -> dict:
    ok, reshows = transcript_check(trial.shown(), baseline["shown"])
    extra = trial.requests() - baseline["requests"]
    final = trial.finished()
    return {
        "exact": ok and final is not None and final.events[-1] == baseline["end"],
        "reshows": reshows,
        "extra_requests": extra,
        "continuations": trial.continuations(),
        "kills": trial.kills,
        "cuts": trial.cuts,
        "within_request_budget": extra <= trial.cuts,
        "lives": len(trial.lives),
    }


def summarize(results: list[dict], label: str) -> None:
    print(
        f"\n{label}: trials={len(results)} exact={sum(r['exact'] for r in results)} "
        f"kills={sum(r['kills'] for r in results)} stream_cuts={sum(r['cuts'] for r in results)} "
        f"re-shows={sum(r['reshows'] for r in results)} "
        f"extra_requests={sum(r['extra_requests'] for r in results)} "
        f"continuations={sum(r['continuations'] for r in results)}"
    )


def test_baseline_is_the_expected_conversation(baseline: dict) -> None:
    texts = [text for _, text in baseline["shown"]]
    assert texts[0] == "Hello! Which dish shall I cook today?"
    assert "stirring tomato soup, round 2" in texts
    assert texts[-1].startswith("Your tomato soup is ready. Notes: tomato soup round 0: bland;")
    assert len({i for i, _ in baseline["shown"]}) == len(baseline["shown"])  # ids are unique
    assert baseline["requests"] == 5  # Main twice, Taste three times


def _kill_at_await(args: tuple[Path, int, str], baseline: dict) -> dict | None:
    workdir, k, phase = args
    trial = Trial(workdir)
    try:
        first = trial.live(crash_at=f"await:{k}:{phase}")
        if first.code == 0:
            return None  # fewer than k awaits: past the end
        assert first.code == -signal.SIGKILL, first.stderr
        trial.finish()
        return check(trial, baseline) | {"point": f"await {k} {phase}"}
    finally:
        trial.close()


def test_kill_at_every_await(baseline: dict, tmp_path: Path) -> None:
    """(a) every await of the three-level program, killed before and after its record."""
    results: list[dict] = []
    k = 1
    with ThreadPoolExecutor(WORKERS) as pool:
        while True:
            batch = [
                (tmp_path / f"{k + i}-{p}", k + i, p)
                for i in range(WORKERS)
                for p in ("before", "after")
            ]
            found = [r for r in pool.map(lambda a: _kill_at_await(a, baseline), batch) if r]
            results += found
            if len(found) < len(batch):
                break
            k += WORKERS
    summarize(results, "kill at every await")
    assert len(results) >= 40  # the program has 20+ awaits
    bad = [r for r in results if not (r["exact"] and r["within_request_budget"])]
    assert bad == []


def _random_kill(args: tuple[Path, int], baseline: dict) -> dict:
    workdir, seed = args
    rng = random.Random(seed)
    trial = Trial(workdir)
    try:
        how = rng.choice(["stream", "stream", "reply", "event", "record", "record"])
        if how == "stream":  # in the middle of an LLM stream
            request = rng.randrange(baseline["requests"])
            trial.live(kill_at_chunk=(request, rng.randrange(1, 12)))
        elif how == "reply":  # while waiting for the person's reply
            trial.live(replies=False, kill_at_event=lambda e, n: e["event"] == "wait")
        elif how == "event":  # right after the n-th thing the program printed
            n = rng.randrange(1, 25)
            trial.live(kill_at_event=lambda e, count: count == n)
        else:  # at a random durable record of any kind
            kind = rng.choice(["text", "ckpt", "turn", "end", "frame"])
            trial.live(crash_at=f"{kind}:{rng.randrange(1, 6)}:{rng.choice(['before', 'after'])}")
        trial.finish()
        return check(trial, baseline) | {"point": how, "seed": seed}
    finally:
        trial.close()


def test_kill_at_fifty_random_moments(baseline: dict, tmp_path: Path) -> None:
    """(b) 50 random moments: mid-stream, waiting for the reply, anywhere."""
    args = [(tmp_path / str(seed), seed) for seed in range(50)]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda a: _random_kill(a, baseline), args))
    summarize(results, "kill at 50 random moments")
    assert sum(r["kills"] for r in results) >= 40  # most moments were really reached
    bad = [r for r in results if not (r["exact"] and r["within_request_budget"])]
    assert bad == []


def test_three_level_resume_after_a_kill_in_the_innermost_playbook(
    baseline: dict, tmp_path: Path
) -> None:
    """Killed while Taste (depth 3) runs its second call: Taste finishes, returns
    to Cook, which goes on with round 2, and Main goes on. A resume of the top
    frame only would re-run Cook from round 0 and show its messages again."""
    trial = Trial(tmp_path / "nested")
    try:
        target = "tasting... tomato soup round 1: better"
        # killed just before Taste's round-1 Say (its 12th effect): Taste is running at
        # depth 3, its LLM turn received; a kill on reading output would race the child
        first = trial.live(crash_at="effect:12")
        assert first.code == -signal.SIGKILL
        said = [e["text"] for e in first.events if e["event"] == "say"]
        assert said[-1] == "stirring tomato soup, round 1"
        show = subprocess.run(
            [
                sys.executable,
                "-m",
                "playbooks.cli",
                "executions",
                "show",
                "--json",
                first.events[0]["execution_id"],
            ],
            cwd=trial.workdir,
            env=child_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        frames = json.loads(show.stdout)["frames"]
        assert [f["playbook"] for f in frames] == ["Main", "Cook", "Taste"]
        second = trial.finish()
        assert second.code == 0
        resumed_texts = [e["text"] for e in second.events if e["event"] == "say"]
        assert "stirring tomato soup, round 0" not in resumed_texts
        assert resumed_texts[0] in (target, "stirring tomato soup, round 2")
        result = check(trial, baseline)
        assert result["exact"], trial.shown()
        assert result["extra_requests"] <= result["cuts"] <= 1
    finally:
        trial.close()
