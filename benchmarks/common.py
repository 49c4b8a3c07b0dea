"""What every measurement shares: the result row, statistics, temp dirs, the machine.

Each measurement module exposes ``run(quick: bool) -> list[Row]``; the runner
only formats rows, so a module decides itself what its figures mean.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PLAYBOOKS_BIN = Path(sys.executable).parent / "playbooks"

# litellm may be imported by anything below: never fetch its cost map
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass
class Row:
    """One reported figure. ``spread`` is (min, max) over the repetitions."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    spread: tuple[float, float] | None = None


@dataclass
class Sample:
    """Repeated measurements of one quantity."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def scaled(self, factor: float) -> Sample:
        return Sample([v * factor for v in self.values])

    def row(self, name: str, unit: str, **fields: object) -> Row:
        return Row(name, self.median, unit, spread=(self.low, self.high), **fields)  # type: ignore[arg-type]


def repeat(fn: Callable[[], float], reps: int, warmup: int = 1) -> Sample:
    """Call ``fn`` (which returns one measured value) ``warmup`` + ``reps`` times."""
    for _ in range(warmup):
        fn()
    return Sample([fn() for _ in range(reps)])


def reps(quick: bool, full: int = 7, fast: int = 5) -> int:
    """At least five repetitions even in quick mode: every figure is a median of >= 5."""
    return fast if quick else full


@contextmanager
def temp_dir(prefix: str = "pb-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dir_size(path: Path) -> int:
    """Apparent size of every file under ``path`` (what a user sees with ``du -b``)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def clock() -> float:
    return time.perf_counter()


# -- the comparison libraries live in their own venv --------------------------


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def comparison_python(module: str) -> str | None:
    """The interpreter that can import ``module``: this one, else .venv-bench, else None."""
    if has_module(module):
        return sys.executable
    if BENCH_PYTHON.exists():
        probe = subprocess.run(
            [str(BENCH_PYTHON), "-c", f"import {module}"],
            capture_output=True,
            env=child_env(),
        )
        if probe.returncode == 0:
            return str(BENCH_PYTHON)
    return None


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PLAYBOOKS_CRASH_AT", None)
    env.update(extra)
    return env


def run_compare(python: str, kind: str, *args: str, timeout: float = 600) -> dict:
    """Run ``benchmarks.compare KIND ARGS`` with ``python``; it prints one JSON object."""
    done = subprocess.run(
        [python, "-m", "benchmarks.compare", kind, *args],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=str(ROOT),
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"compare {kind} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the machine ----------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _filesystem(path: str) -> str:
    """The mount that holds ``path``, from /proc/mounts (longest matching mount point)."""
    best = ("", "unknown", "unknown")
    real = os.path.realpath(path)
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, point, fstype, *_ = line.split()
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, fstype, device)
    except OSError:
        pass
    return f"{best[1]} ({best[2]} on {best[0] or '?'})"


def machine() -> dict[str, str]:
    tmp = tempfile.gettempdir()
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": _ram(),
        "Python": f"{platform.python_version()} ({sys.executable})",
        "OS": f"{platform.system()} {platform.release()}",
        "temp dir": f"{tmp}, {_filesystem(tmp)}",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
