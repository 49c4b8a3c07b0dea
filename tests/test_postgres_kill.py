"""`playbooks run` on PostgreSQL, SIGKILLed just before each of its effects and run
again: the exact transcript of an uninterrupted run, no LLM call sent twice.

The three-level kitchen program of test_kill.py (a reply given with --message),
with ``[durability] provider = "postgres"``: a real child process, a real
server, the scripted LLM server on 127.0.0.1.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from killing import Trial, transcript_check

pytestmark = pytest.mark.slow
WORKERS = 3


def _trial(workdir: Path, dsn: str) -> Trial:
    trial = Trial(workdir, dsn=dsn)  # its stream_open reads PostgreSQL
    toml = trial.workdir / "playbooks.toml"
    text = toml.read_text().replace('path = "', 'provider = "postgres"\ndsn = "' + dsn + '"\n#')
    toml.write_text(text)
    return trial


@pytest.fixture(scope="module")
def baseline(pg_server, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    trial = _trial(tmp_path_factory.mktemp("pg-baseline"), pg_server.dsn())
    try:
        life = trial.live()
        assert life.code == 0, life.stderr
        assert not (trial.workdir / "ckpt").exists()  # nothing went to the filesystem
        return {"shown": trial.shown(), "requests": trial.requests(), "end": life.events[-1]}
    finally:
        trial.close()


def _kill_before_effect(workdir: Path, dsn: str, k: int, baseline: dict) -> dict | None:
    trial = _trial(workdir, dsn)
    try:
        first = trial.live(crash_at=f"effect:{k}")
        if first.code == 0:
            return None  # fewer than k effects: past the end
        assert first.code == -signal.SIGKILL, first.stderr
        last = trial.finish()
        assert last.code == 0, last.stderr
        assert "resuming" in last.stderr
        ok, reshows = transcript_check(trial.shown(), baseline["shown"])
        return {
            "effect": k,
            "exact": ok and last.events[-1] == baseline["end"],
            "reshows": reshows,
            "extra_requests": trial.requests() - baseline["requests"],
            "cuts": trial.cuts,  # a kill mid-stream: the rest is asked for, as in test_kill
        }
    finally:
        trial.close()


def test_killed_before_every_effect_then_resumed_exactly(
    pg_server,  # noqa: ANN001
    baseline: dict,
    tmp_path: Path,
) -> None:
    results: list[dict] = []
    k = 1
    with ThreadPoolExecutor(WORKERS) as pool:
        while True:
            batch = [(tmp_path / str(k + i), pg_server.dsn(), k + i) for i in range(WORKERS)]
            found = [r for r in pool.map(lambda a: _kill_before_effect(*a, baseline), batch) if r]
            results += found
            if len(found) < len(batch):
                break
            k += WORKERS
    print(
        f"\npostgres, kill before every effect: trials={len(results)} "
        f"exact={sum(r['exact'] for r in results)} "
        f"re-shows={sum(r['reshows'] for r in results)} "
        f"extra_requests={sum(r['extra_requests'] for r in results)} "
        f"stream_cuts={sum(r['cuts'] for r in results)}"
    )
    assert len(results) >= 15  # the program has 15+ effects
    # no completed LLM call is sent again: an extra request only continues a cut stream
    assert [r for r in results if not r["exact"] or r["extra_requests"] > r["cuts"]] == []
