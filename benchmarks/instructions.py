"""Benchmark 11: durability's instructions per await, counted, not timed.

On this shared VM a run's speed moves by up to 2× from one second to the
next, so a timed difference of two runs moves by ±50%. The number of machine
instructions a run executes does not: valgrind (callgrind) counts them. Four
runs of the per-await benchmark's code (200 awaits and none, durable and not,
hash seed fixed) give the instructions one await adds with durability on
(fsync off: the kernel's work is not counted). Skipped without valgrind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from .common import ROOT, Row, child_env

N = 200
_CHILD = """
import sys, tempfile
from pathlib import Path
from benchmarks.per_await import _code, ours
durable, n, call = sys.argv[1] == "on", int(sys.argv[2]), sys.argv[3]
ours(_code(n, call), n, Path(tempfile.mkdtemp()) if durable else None, False, "x")
"""


def _count(durable: bool, n: int, call: str) -> int:
    """Instructions of one child process running ``n`` awaits of ``call``."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                "-c",
                _CHILD,
                "on" if durable else "off",
                str(n),
                call,
            ],
            capture_output=True,
            text=True,
            env=child_env(PYTHONHASHSEED="0", TMPDIR=tmp),
            cwd=str(ROOT),
            timeout=600,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_await(call: str, n: int = N) -> tuple[float, float]:
    """(instructions per await without durability, instructions durability adds per await)."""
    off = _count(False, n, call) - _count(False, 0, call)
    on = _count(True, n, call) - _count(True, 0, call)
    return off / n, (on - off) / n


def run(quick: bool) -> list[Row]:
    if shutil.which("valgrind") is None:
        return [Row("instructions per await", None, "", note="skipped: valgrind not installed")]
    n = 50 if quick else N
    rows = []
    for call, what in (('Step("Main:01")', "the built-in Step"), ("Noop()", "a user function")):
        off, extra = per_await(call, n)
        rows.append(
            Row(
                f"instructions durability adds per await of {what}",
                extra,
                "instr",
                note=f"without durability the await takes {off:,.0f}; valgrind, {n} awaits",
            )
        )
    return rows


if __name__ == "__main__":  # python -m benchmarks.instructions [--quick]
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.name}: {row.value} ({row.note})")
