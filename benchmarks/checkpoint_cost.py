"""Benchmark 7: checkpoint CPU follows the change, not the size of the state.

A frame holds ``$records`` (a list of small dicts, 10 KB or 10 MB as JSON)
and ``$x``. Each statement is ``$x = $x + 1``: it changes one small variable
and leaves the records alone. The statement runs the way the executor runs it
(``exec`` in the namespace) and ``CheckpointManager.record_checkpoint`` gets
``touched=touched_names(node)``; only the checkpoint's CPU is timed
(``time.process_time``, fsync off: the disk is not what is measured). The
first checkpoint, which encodes everything once, is not timed.

Target: per-checkpoint CPU with 10 MB of untouched state ≤ 1.5× with 10 KB.
For contrast, the same checkpoint without ``touched`` (everything encoded,
as before) at 10 KB and 1 MB.
"""

from __future__ import annotations

import ast
import builtins
import json
import time
from typing import Any

from playbooks import CheckpointManager, FilesystemCheckpointProvider
from playbooks.execution.touched import touched_names

from .common import Row, Sample, reps, temp_dir

STATEMENT = "x = x + 1"
SIZES = {"10 KB": 10_000, "10 MB": 10_000_000}


def records(size: int) -> list[dict[str, Any]]:
    """Small dicts adding up to about ``size`` bytes of JSON (deterministic)."""
    item = {"id": 99999, "name": "customer-099999", "tags": ["a", "b"], "score": 12.25}
    each = len(json.dumps(item)) + 2
    return [
        {"id": i, "name": f"customer-{i:06d}", "tags": ["a", "b"], "score": (i % 100) / 4}
        for i in range(max(1, size // each))
    ]


def _frame(size: int, path: str) -> tuple[CheckpointManager, dict[str, Any]]:
    manager = CheckpointManager("cost", FilesystemCheckpointProvider(path, fsync=False))
    namespace: dict[str, Any] = {"__builtins__": builtins, "records": records(size), "x": 0}
    return manager, namespace


def _variables(namespace: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def per_checkpoint(size: int, statements: int, runs: int, *, incremental: bool) -> Sample:
    """CPU seconds of one checkpoint after ``$x = $x + 1`` (mean over a run, one per run)."""
    node = ast.parse(STATEMENT).body[0]
    code = compile(STATEMENT, "<bench>", "exec")
    means = []
    with temp_dir() as path:
        manager, namespace = _frame(size, str(path))
        manager.record_checkpoint(  # the first one stores everything: not timed
            "main", turn=0, cursor=0, statement="", variables=_variables(namespace)
        )
        cursor = 0
        for _ in range(runs + 1):  # the first run warms up
            spent = 0.0
            for _ in range(statements):
                exec(code, namespace)  # noqa: S102 - the statement being checkpointed
                touched = touched_names(node) if incremental else None
                cursor += 1
                start = time.process_time()
                manager.record_checkpoint(
                    "main",
                    turn=0,
                    cursor=cursor,
                    statement=STATEMENT,
                    variables=_variables(namespace),
                    touched=touched,
                )
                spent += time.process_time() - start
            means.append(spent / statements)
        manager.close()
        stored = manager.state.frames["main"].vars
        if stored["x"] != cursor or len(stored["records"]) != len(namespace["records"]):
            raise AssertionError("the checkpoints did not store what the statements did")
    return Sample(means[1:])


def run(quick: bool) -> list[Row]:
    count = reps(quick)
    n = 100 if quick else 400
    rows: list[Row] = []
    medians: dict[str, float] = {}
    for label, size in SIZES.items():
        sample = per_checkpoint(size, n, count, incremental=True)
        medians[label] = sample.median
        rows.append(
            sample.scaled(1e6).row(
                f"checkpoint after `$x = $x + 1`, {label} of untouched state",
                "µs/ckpt",
                note=f"{n} statements a run; CPU time of record_checkpoint",
            )
        )
    ratio = medians["10 MB"] / medians["10 KB"]
    rows.append(
        Row(
            "checkpoint CPU, 10 MB / 10 KB of untouched state",
            ratio,
            "×",
            target="≤ 1.5×",
            met=ratio <= 1.5,
            note="medians of the two rows above",
        )
    )
    for label, size, few in (("10 KB", 10_000, n), ("1 MB", 1_000_000, 3)):
        sample = per_checkpoint(size, few, count, incremental=False)
        rows.append(
            sample.scaled(1e6).row(
                f"same, everything encoded (no `touched`), {label}",
                "µs/ckpt",
                note=f"{few} statements a run: the cost before this change",
            )
        )
    return rows
