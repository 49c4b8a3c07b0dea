"""Benchmark 5: storage grows with what changed, not with state size × steps.

300 steps each append 1 KiB to a list. What changed is 300 KiB; a store that
rewrites the whole state per step would hold ~300 × 150 KiB. We report the
bytes on disk of the execution directory as a multiple of the bytes changed,
and the same for LangGraph's SqliteSaver files after the same graph.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playbooks.durability.manager import CheckpointManager
from playbooks.durability.provider import FilesystemCheckpointProvider
from playbooks.execution.executor import StreamingPythonExecutor

from .common import Row, Sample, comparison_python, dir_size, reps, run_compare, temp_dir
from .compare import payload

STEPS = 300
SIZE = 1024
SKIP = "skipped: langgraph not installed (pip install -e '.[bench]')"


def code(steps: int = STEPS) -> str:
    lines = ["$items = []"] + [f"$items.append(await Make({i}))" for i in range(steps)]
    return "```python\n" + "\n".join(lines) + "\n```\n"


async def _run(text: str, manager: CheckpointManager) -> list[str]:
    async def make(i: int) -> str:
        return payload(i, SIZE)

    ex = StreamingPythonExecutor(None, namespace={"Make": make}, checkpoint_manager=manager)
    ex.set_llm_response(text)
    for start in range(0, len(text), 12):
        await ex.add_chunk(text[start : start + 12])
    await ex.finalize()
    return ex.namespace["items"]


def ours(directory: Path, tag: str) -> int:
    """Bytes on disk of the execution directory after the 300 steps."""
    provider = FilesystemCheckpointProvider(directory, fsync=False)  # same bytes either way
    manager = CheckpointManager(tag, provider)
    manager.open()
    items = asyncio.run(_run(code(), manager))
    manager.close()
    if len(items) != STEPS or items[-1] != payload(STEPS - 1, SIZE):
        raise AssertionError("the list was not built")
    return dir_size(directory / tag)


def run(quick: bool) -> list[Row]:
    count = reps(quick, full=5)
    changed = STEPS * SIZE
    with temp_dir() as tmp:
        sizes = Sample([ours(tmp, f"storage-{rep}") for rep in range(count)])
    rows = [
        sizes.scaled(1 / changed).row(
            f"storage, ours: {STEPS} steps appending {SIZE} B, bytes on disk / bytes changed",
            "×",
            target="≤ 2×",
            met=sizes.median <= 2 * changed,
            note=f"{sizes.median / 1024:.0f} KiB for {changed / 1024:.0f} KiB changed "
            "(execution directory, keep_last_n=10)",
        )
    ]
    python = comparison_python("langgraph")
    if python is None:
        return rows + [Row("storage, LangGraph SqliteSaver", None, "", note=SKIP)]
    with temp_dir() as tmp:
        result = run_compare(
            python, "langgraph-storage", str(STEPS), str(SIZE), str(count), str(tmp)
        )
    theirs = Sample([float(b) for b in result["bytes"]])
    files = ", ".join(
        f"{name.split('.', 1)[1]} {size / 1024:.0f} KiB"
        for name, size in sorted(result["files"].items())
    )
    rows.append(
        theirs.scaled(1 / changed).row(
            "storage, LangGraph SqliteSaver: bytes on disk / bytes changed",
            "×",
            note=f"{theirs.median / 1024:.0f} KiB ({files})",
        )
    )
    return rows
