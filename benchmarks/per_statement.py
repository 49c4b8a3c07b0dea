"""Benchmark 2: what the executor adds to each statement, durability off.

The executor splits the stream, rewrites ``$names`` and every ``await`` (for
the journal), compiles and evals one statement at a time. The floor is what
any statement-at-a-time runner pays: ``compile`` + ``eval`` of each
statement. The difference is the executor's own overhead per statement.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import time

from playbooks.execution.executor import StreamingPythonExecutor

from .common import Row, Sample, reps
from .split import chunks

FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


async def _noop() -> None:
    return None


def _code(kind: str, n: int) -> tuple[str, list[str]]:
    """(the streamed text with ``$``, the same statements as plain Python)."""
    if kind == "assign":
        ours = ["$x = 0"] + ["$x = $x + 1"] * (n - 1)
    else:
        ours = ["await Noop()"] * n
    return "\n".join(ours) + "\n", [s.replace("$", "") for s in ours]


async def _ours(pieces: list[str]) -> dict:
    namespace = {"Noop": _noop}
    ex = StreamingPythonExecutor(None, namespace=namespace)
    for piece in pieces:
        await ex.add_chunk(piece)
    await ex.finalize()
    return namespace


async def _bare(statements: list[str]) -> dict:
    namespace: dict = {"Noop": _noop}
    for source in statements:
        code = compile(source, "<bare>", "exec", flags=FLAGS, dont_inherit=True)
        result = eval(code, namespace)  # noqa: S307 - the baseline being measured
        if inspect.iscoroutine(result):
            await result
    return namespace


def _cpu(coro_fn) -> float:
    loop = asyncio.new_event_loop()
    try:
        start = time.process_time()
        loop.run_until_complete(coro_fn())
        return time.process_time() - start
    finally:
        loop.close()


def measure(kind: str, n: int, count: int) -> tuple[Sample, Sample]:
    text, statements = _code(kind, n)
    pieces = chunks(text)
    ns = asyncio.run(_ours(pieces))
    if kind == "assign" and ns["x"] != n - 1:
        raise AssertionError(f"executor left x={ns['x']}, expected {n - 1}")
    ours, bare = [], []
    for _ in range(count + 1):  # the first round warms up
        ours.append(_cpu(lambda: _ours(pieces)) / n)
        bare.append(_cpu(lambda: _bare(statements)) / n)
    return Sample(ours[1:]), Sample(bare[1:])


def run(quick: bool) -> list[Row]:
    n = 500 if quick else 2000
    count = reps(quick)
    rows: list[Row] = []
    for kind, label in (("assign", "`$x = $x + 1`"), ("await", "`await Noop()`")):
        ours, bare = measure(kind, n, count)
        diff = Sample([o - b for o, b in zip(ours.values, bare.values, strict=True)])
        rows.append(ours.scaled(1e6).row(f"executor: {label}, per statement", "µs/stmt"))
        rows.append(
            bare.scaled(1e6).row(f"baseline compile+eval: {label}, per statement", "µs/stmt")
        )
        rows.append(
            diff.scaled(1e6).row(
                f"executor overhead: {label}, per statement",
                "µs/stmt",
                note=f"{n} statements streamed in 5-char chunks; CPU time; "
                f"{ours.median / bare.median:.1f}× the baseline",
            )
        )
    return rows
