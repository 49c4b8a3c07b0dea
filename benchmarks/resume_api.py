"""Benchmark 7: `resume_from_checkpoint` must cost the same after 100 or 10,000 statements.

One response of N ``await Noop()`` / ``$x = i`` pairs is run through the
public executor API with a checkpoint manager and stopped (as a kill would)
right after its N-th pair; the stored checkpoint is then resumed with
``StreamingPythonExecutor.resume_from_checkpoint`` many times. The whole
response is live state (it must be kept to resume), so what is measured is
whether the code before the resume point is read again: it must not be.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from pathlib import Path

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor

from .common import Row, Sample, reps, temp_dir

SIZES = (100, 10_000)


class _Stop(BaseException):
    pass


async def _noop() -> None:
    return None


async def _halt() -> None:
    raise _Stop()


async def _build(n: int, path: Path) -> dict:
    code = "".join(f"await Noop()\n$x = {i}\n" for i in range(n)) + "await Halt()\nawait Noop()\n"
    manager = CheckpointManager("bench", FilesystemCheckpointProvider(path, fsync=False))
    executor = StreamingPythonExecutor(
        None, namespace={"Noop": _noop, "Halt": _halt}, checkpoint_manager=manager
    )
    executor.set_llm_response(code)
    try:
        await executor.add_chunk(code)
        await executor.finalize()
    except _Stop:
        pass
    manager.close()
    checkpoint = await CheckpointManager(
        "bench", FilesystemCheckpointProvider(path, fsync=False)
    ).get_latest_checkpoint()
    assert checkpoint is not None and checkpoint["metadata"]["cursor"]["statement"] == 2 * n
    return checkpoint


async def _time_resume(checkpoint: dict, count: int) -> float:
    """Median seconds of one resume (restore + run the rest of the response)."""
    times = []
    gc.collect()
    for _ in range(count):
        start = time.perf_counter()
        await StreamingPythonExecutor.resume_from_checkpoint(
            None, checkpoint, namespace={"Noop": _noop, "Halt": _noop}
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool) -> list[Row]:
    async def measure() -> dict[int, Sample]:
        samples: dict[int, Sample] = {}
        with temp_dir() as folder:
            checkpoints = {n: await _build(n, folder / str(n)) for n in SIZES}
            for n in SIZES:
                values = [await _time_resume(checkpoints[n], 20) for _ in range(reps(quick))]
                samples[n] = Sample([v * 1000 for v in values])
        return samples

    samples = asyncio.run(measure())
    small, large = samples[SIZES[0]], samples[SIZES[-1]]
    ratio = large.median / small.median
    return [
        small.row(f"resume_from_checkpoint after {SIZES[0]:,} statements", "ms"),
        large.row(f"resume_from_checkpoint after {SIZES[-1]:,} statements", "ms"),
        Row(
            f"ratio {SIZES[-1]:,} / {SIZES[0]:,}",
            ratio,
            "×",
            target="≤ 1.5×",
            met=ratio <= 1.5,
            note="the code before the resume point is skipped, not parsed again",
        ),
    ]
