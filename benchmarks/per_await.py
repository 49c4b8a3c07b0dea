"""Benchmark 3: what durability adds to each await, beside its floor and its rivals.

Each await in generated code is journaled: its result is appended, and a
checkpoint of the statement's variables follows (a statement that changed no
variable, like these, has its checkpoint carried by the next await record).
Records are fdatasynced before anything with an effect runs, so a call that
may have effects (a user function, here ``Noop``) costs one fdatasync, while
a pure built-in (``Step``) costs none of its own: its target is half of one.
The floor of the guarantee for a call with effects is one ``fdatasync`` of a
small appended record in the same directory, measured in the same run twice:
back to back, and paced (each after as much work as an await takes without
durability), which on this VM costs more and is what an implementation with
no overhead of its own would pay. Our log writes its records into zeros it
reserved beforehand, so its fdatasyncs change no file size and cost less than
the yardstick; that probe is shown beside it, and the yardstick stays the
plain append. LangGraph (SqliteSaver, a checkpoint per
step) and DBOS (SQLite, a recorded step) give the same kind of guarantee.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path

from playbooks.durability.manager import CheckpointManager
from playbooks.durability.provider import FilesystemCheckpointProvider
from playbooks.execution.builtins import make_builtins
from playbooks.execution.executor import StreamingPythonExecutor
from playbooks.execution.interpreter import PURE

from .common import Row, Sample, comparison_python, reps, run_compare, temp_dir

SKIP = "skipped: {name} not installed (pip install -e '.[bench]')"


async def _noop() -> None:
    return None


def _code(n: int, call: str = "Noop()") -> str:
    return "```python\n" + f"await {call}\n" * n + "```\n"


class _Quiet:
    """A conversation that shows nothing (Step reports the step to it)."""

    consumed = 0

    def step(self, **_: object) -> None:
        pass


async def _execute(text: str, manager: CheckpointManager | None) -> None:
    namespace: dict = {"Noop": _noop}
    namespace.update(
        make_builtins(agent="bench", frame_id="main", conversation=_Quiet(), namespace=namespace)
    )
    ex = StreamingPythonExecutor(None, namespace=namespace, checkpoint_manager=manager, pure=PURE)
    ex.set_llm_response(text)
    await ex.add_chunk(text)
    await ex.finalize()


def ours(text: str, n: int, directory: Path | None, fsync: bool, tag: str) -> float:
    """Wall seconds to run the ``n`` awaits; durable when ``directory`` is given."""
    manager = None
    if directory is not None:
        provider = FilesystemCheckpointProvider(directory, fsync=fsync)
        manager = CheckpointManager(tag, provider)
        manager.open()
    gc.collect()  # the garbage of the run before is not this run's cost
    start = time.perf_counter()
    asyncio.run(_execute(text, manager))
    elapsed = time.perf_counter() - start
    if manager is not None:
        counter = manager.open().counter
        manager.close()
        if counter != n:
            raise AssertionError(f"{counter} checkpoints written for {n} awaits")
    return elapsed


def fdatasync_cost(
    directory: Path, count: int, gap: float = 0.0, *, reserved: bool = False
) -> Sample:
    """Seconds for one ``fdatasync`` after appending a 100-byte record.

    With ``gap``, the CPU is kept busy that many seconds before each record,
    as it is between two awaits: on this VM an fdatasync issued after a
    stretch of work takes longer than one issued right after the last. With
    ``reserved``, the records go into zeros allocated beforehand, as our log
    writes them (the file's size does not change)."""
    path = directory / ("fsync-probe-reserved" if reserved else "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (0 if reserved else os.O_APPEND), 0o600)
    if reserved:
        os.posix_fallocate(fd, 0, 100 * (count + 5))
        os.fsync(fd)
    times = []
    try:
        for i in range(count + 5):
            until = time.perf_counter() + gap
            while time.perf_counter() < until:
                pass
            os.pwrite(fd, (f"{i:08d}" * 13)[:99].encode() + b"\n", 100 * i)
            start = time.perf_counter()
            os.fdatasync(fd)
            if i >= 5:
                times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return Sample(times)


def _paired(runs: dict[str, Callable[[], float]], count: int) -> dict[str, list[float]]:
    """Each run ``count`` times, in rounds whose order alternates.

    The speed of this shared VM drifts by up to 2× within seconds, so a
    figure that is a difference of two runs pairs runs made side by side,
    and alternating the order cancels a drift inside a round."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(count):
        for name in names if rep % 2 == 0 else reversed(names):
            out[name].append(runs[name]())
    return out


def _ours_rows(n: int, count: int) -> tuple[list[Row], Sample, Sample, Sample]:
    text, steps = _code(n), _code(n, 'Step("Main:01")')
    with temp_dir() as tmp:
        ours(_code(50), 50, tmp, True, "warmup")
        tags = iter(range(10**9))
        t = _paired(
            {
                "off": lambda: ours(text, n, None, True, ""),
                "on": lambda: ours(text, n, tmp, True, f"on-{next(tags)}"),
                "nofsync": lambda: ours(text, n, tmp, False, f"nofsync-{next(tags)}"),
                "step_off": lambda: ours(steps, n, None, True, ""),
                "step_on": lambda: ours(steps, n, tmp, True, f"step-{next(tags)}"),
            },
            count,
        )
        gap = Sample(t["off"]).median / n  # the time an await takes without durability
        probe = fdatasync_cost(tmp, 100 * count)
        paced = fdatasync_cost(tmp, 40 * count, gap)
        ours_sync = fdatasync_cost(tmp, 40 * count, gap, reserved=True)

    def per(on: str, off: str) -> Sample:
        return Sample([(a - b) / n for a, b in zip(t[on], t[off], strict=True)])

    per_on, per_nofsync, per_step = (
        per("on", "off"),
        per("nofsync", "off"),
        per("step_on", "step_off"),
    )
    sync = paced.median
    rows = [
        probe.scaled(1e6).row(
            "fdatasync of a small appended record, back to back (same temp dir)",
            "µs",
            note=f"median of {len(probe.values)}; a lower bound",
        ),
        paced.scaled(1e6).row(
            "fdatasync of a small appended record, one per await's time",
            "µs",
            note=f"median of {len(paced.values)}, each after {gap * 1e6:.0f} µs of work "
            "(an await without durability): the yardstick below",
        ),
        ours_sync.scaled(1e6).row(
            "fdatasync of a small record written into zeros reserved before, paced",
            "µs",
            note=f"median of {len(ours_sync.values)}: how our log writes; "
            f"{ours_sync.median / sync:.2f}× the yardstick",
        ),
        per_step.scaled(1e6).row(
            "ours: overhead per await of the built-in Step (fsync on)",
            "µs",
            target=f"≤ 0.5× fdatasync = {sync / 2 * 1e6:.0f} µs",
            met=per_step.median <= sync / 2,
            note=f"{per_step.median / sync:.2f}× paced, {per_step.median / probe.median:.2f}× "
            "back to back; a pure built-in: made durable by the next effect's fsync",
        ),
        Sample(t["off"]).scaled(1e6 / n).row(f"ours: {n} awaits, durability off, per await", "µs"),
        per_on.scaled(1e6).row(
            "ours: overhead per await of a no-op user function (fsync on)",
            "µs",
            target=f"≤ 2× fdatasync = {2 * sync * 1e6:.0f} µs",
            met=per_on.median <= 2 * sync,
            note=f"{per_on.median / sync:.2f}× paced, {per_on.median / probe.median:.2f}× "
            f"back to back; (on − off)/{n}, pairs of runs side by side",
        ),
        per_nofsync.scaled(1e6).row(
            "ours: durability overhead per await (fsync off)",
            "µs",
            note="the CPU part: encode, append, apply to state, checkpoint delta",
        ),
    ]
    return rows, per_on, per_nofsync, per_step


def _langgraph_rows(
    n: int, count: int, per_await: Sample, per_cpu: Sample, per_step_builtin: Sample
) -> list[Row]:
    python = comparison_python("langgraph")
    if python is None:
        return [
            Row(
                "LangGraph SqliteSaver: overhead per step",
                None,
                "",
                note=SKIP.format(name="langgraph"),
            )
        ]
    with temp_dir() as tmp:
        result = run_compare(python, "langgraph-steps", str(n), str(count), str(tmp))
    none = Sample(result["none"])

    def overhead(mode: str) -> Sample:
        pairs = zip(result[mode], none.values, strict=True)
        return Sample([(a - b) / n for a, b in pairs])

    per_step, per_step_nosync = overhead("sqlite"), overhead("sqlite_nosync")
    quarter = per_step.median / 4
    return [
        none.scaled(1e6 / n).row(f"LangGraph: {n}-step graph, no checkpointer, per step", "µs"),
        per_step.scaled(1e6).row(
            "LangGraph: SqliteSaver overhead per step",
            "µs",
            note=f'(with − without)/{n}; durability="sync", SQLite WAL',
        ),
        Row(
            "ours vs LangGraph: built-in Step await / LangGraph step",
            per_step_builtin.median / per_step.median,
            "×",
            target="≤ 0.25×",
            met=per_step_builtin.median <= quarter,
            note=f"ours {per_step_builtin.median * 1e6:.0f} µs vs LangGraph "
            f"{per_step.median * 1e6:.0f} µs",
        ),
        Row(
            "ours vs LangGraph: user-function await (1 fdatasync each) / LangGraph step",
            per_await.median / per_step.median,
            "×",
            target="≤ 0.25×",
            met=per_await.median <= quarter,
            note=f"ours {per_await.median * 1e6:.0f} µs vs LangGraph {per_step.median * 1e6:.0f} µs",
        ),
        per_step_nosync.scaled(1e6).row(
            "LangGraph: SqliteSaver overhead per step, synchronous=OFF",
            "µs",
            note="the CPU part, to compare with ours with fsync off",
        ),
        Row(
            "ours vs LangGraph, fsync off: overhead per await / per step",
            per_cpu.median / per_step_nosync.median,
            "×",
            target="≤ 0.25× (CPU part)",
            met=per_cpu.median <= per_step_nosync.median / 4,
            note=f"ours {per_cpu.median * 1e6:.0f} µs vs LangGraph "
            f"{per_step_nosync.median * 1e6:.0f} µs",
        ),
    ]


def _dbos_rows(n: int, count: int) -> list[Row]:
    python = comparison_python("dbos")
    if python is None:
        return [Row("DBOS: time per step", None, "", note=SKIP.format(name="dbos"))]
    with temp_dir() as tmp:
        result = run_compare(python, "dbos-steps", str(n), str(count), str(tmp))
    return [
        Sample(result["steps"])
        .scaled(1e6 / n)
        .row(
            "DBOS: time per step (SQLite system database)",
            "µs",
            note=f"a workflow of {n} no-op steps, {count} runs",
        )
    ]


def run(quick: bool) -> list[Row]:
    count = reps(quick, full=5)
    n = 200 if quick else 2000
    dbos_n = 50 if quick else 400  # DBOS is ~17 ms a step here: 2,000 steps = 5 runs of 400
    # ours: shorter runs, more pairs (a median of differences needs many of them)
    ours_rows, per_await, per_cpu, per_step = _ours_rows(n // 2, reps(quick, full=21))
    rows = ours_rows
    rows += _langgraph_rows(n, count, per_await, per_cpu, per_step)
    rows += _dbos_rows(dbos_n, count)
    return rows
