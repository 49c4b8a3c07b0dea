"""Benchmark 9: what an effect costs on PostgreSQL, beside its floor and DBOS.

On PostgreSQL an await of a call that may have effects appends its records
with asynchronous commits, sent without waiting for their answers, and then
passes the barrier: one synchronous commit on the same connection that also
checks the fencing token, so one WAL flush and one waited round trip. (The
result of an effect is sent as that synchronous commit at once, unwaited, so
its flush overlaps the code up to the next barrier, which then checks the
token and reads the answers.) The floor of that guarantee is one
synchronous INSERT commit, measured on the same server in the same run.
DBOS keeps its step records in the same kind of database: its steps are run
against the same server too (``python -m benchmarks.postgres dbos URL N REPS``,
in the venv that has dbos).

The server is a throwaway cluster started for the run (tests/pg_server.py),
with fsync on, in the temp dir. Without server binaries the rows say so.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
import uuid
from typing import Any

from .common import ROOT, Row, Sample, child_env, comparison_python, reps
from .per_await import _code, _execute

SKIP = "skipped: {why}"


def _server_module() -> Any:
    spec = importlib.util.spec_from_file_location("pg_server", ROOT / "tests" / "pg_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ours(dsn: str, text: str, n: int, tag: str) -> float:
    """Wall seconds for ``n`` awaits with durability on PostgreSQL (None: off)."""
    manager = None
    provider = None
    if dsn:
        from playbooks.durability import CheckpointManager, PostgresCheckpointProvider

        provider = PostgresCheckpointProvider(dsn)
        manager = CheckpointManager(tag, provider)
        manager.open()
    start = time.perf_counter()
    asyncio.run(_execute(text, manager))
    elapsed = time.perf_counter() - start
    if manager is not None:
        counter = manager.open().counter
        manager.close()
        provider.close()
        if counter != n:
            raise AssertionError(f"{counter} checkpoints written for {n} awaits")
    return elapsed


def insert_commit(dsn: str, count: int) -> Sample:
    """Seconds for one synchronous INSERT commit of a 100-byte row."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigint PRIMARY KEY, v bytea)")
        times = []
        for i in range(count + 5):
            start = time.perf_counter()
            conn.execute(
                "INSERT INTO bench_floor (id, v) VALUES (%s, %s)",
                (i, os.urandom(100)),
                prepare=True,
            )
            if i >= 5:
                times.append(time.perf_counter() - start)
    return Sample(times)


def _dbos_rows(url: str, n: int, count: int, ours_effect: Sample) -> list[Row]:
    python = comparison_python("dbos")
    if python is None:
        return [Row("DBOS on PostgreSQL: time per step", None, "", note=SKIP.format(why="no dbos"))]
    import subprocess

    done = subprocess.run(
        [python, "-m", "benchmarks.postgres", "dbos", url, str(n), str(count)],
        capture_output=True,
        text=True,
        env=child_env(DBOS__DISABLE_TELEMETRY="true"),
        cwd=str(ROOT),
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dbos on postgres failed:\n{done.stderr[-2000:]}")
    steps = Sample(json.loads(done.stdout.strip().splitlines()[-1])["steps"]).scaled(1 / n)
    half = steps.median / 2
    return [
        steps.scaled(1e6).row(
            "DBOS on PostgreSQL: time per step",
            "µs",
            note=f"a workflow of {n} no-op steps, {count} runs, same server",
        ),
        Row(
            "ours vs DBOS on PostgreSQL: effect await / DBOS step",
            ours_effect.median / steps.median,
            "×",
            target="≤ 0.5×",
            met=ours_effect.median <= half,
            note=f"ours {ours_effect.median * 1e6:.0f} µs vs DBOS {steps.median * 1e6:.0f} µs",
        ),
    ]


def run(quick: bool) -> list[Row]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return [Row("PostgreSQL", None, "", note=SKIP.format(why="psycopg not installed"))]
    server_module = _server_module()
    bindir = server_module.find_bindir()
    if bindir is None:
        why = "no PostgreSQL server binaries (initdb, pg_ctl)"
        return [Row("PostgreSQL", None, "", note=SKIP.format(why=why))]
    server = server_module.PgServer(bindir, fsync=True).start()
    try:
        count = reps(quick, full=5)
        n = 200 if quick else 1000
        dsn = server.dsn()
        floor = insert_commit(dsn, 200 if quick else 1000)
        text = _code(n)
        ours(dsn, _code(50), 50, "warmup")
        on, off = [], []
        for rep in range(count):
            off.append(ours("", text, n, ""))
            on.append(ours(dsn, text, n, f"on-{rep}-{uuid.uuid4().hex[:6]}"))
        per_effect = Sample([(a - b) / n for a, b in zip(on, off, strict=True)])
        budget = 1.5 * floor.median
        rows = [
            floor.scaled(1e6).row(
                "PostgreSQL: one synchronous INSERT commit (100 bytes)",
                "µs",
                note=f"median of {len(floor.values)}, same server (fsync on, local socket)",
            ),
            per_effect.scaled(1e6).row(
                "ours on PostgreSQL: overhead per await of a no-op user function",
                "µs",
                target=f"≤ 1.5× INSERT commit = {budget * 1e6:.0f} µs",
                met=per_effect.median <= budget,
                note=f"(on − off)/{n}: each effect's result committed synchronously at once "
                "without waiting; the next barrier checks the token and reads the answers",
            ),
        ]
        rows += _dbos_rows(server.url(), 50 if quick else 200, count, per_effect)
        return rows
    finally:
        server.stop()


def dbos_steps(url: str, steps: int, count: int) -> dict:
    """Seconds for a workflow of ``steps`` no-op steps, ``count`` times, on PostgreSQL."""
    from dbos import DBOS, SetWorkflowID

    DBOS(
        config={
            "name": "pb-bench-pg",
            "system_database_url": url.replace("postgresql://", "postgresql+psycopg://"),
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def workflow(total: int) -> int:
        return sum(noop(i) for i in range(total))

    DBOS.launch()
    times = []
    try:
        for rep in range(count + 1):
            n = steps if rep else min(steps, 20)  # the first round warms up
            with SetWorkflowID(f"bench-pg-{rep}-{uuid.uuid4().hex[:6]}"):
                start = time.perf_counter()
                total = workflow(n)
                elapsed = time.perf_counter() - start
            assert total == n * (n - 1) // 2
            if rep:
                times.append(elapsed)
    finally:
        DBOS.destroy()
    return {"steps": times}


if __name__ == "__main__":
    if sys.argv[1:2] == ["dbos"]:
        url, steps, count = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(dbos_steps(url, steps, count)))
        sys.exit(0)
    print("usage: python -m benchmarks.postgres dbos URL STEPS REPS", file=sys.stderr)
    sys.exit(2)
