"""Benchmark 6: cold start, what a person waits for before anything happens.

``playbooks --help`` shows the cost of starting the command at all; a resume
whose next step needs no LLM call (``examples/numbers_sum.pb``, killed after
its third await) shows the cost of coming back after a crash, from process
start to the first resumed line of output. Heavy imports (litellm) must not
sit on either path.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from .common import PLAYBOOKS_BIN, ROOT, Row, Sample, child_env, reps, temp_dir
from .recovery import first_resumed_say, fresh_copy

EXAMPLE = ROOT / "examples" / "numbers_sum.pb"
CONFIG = '[durability]\nenabled = true\npath = ".checkpoints"\nfsync = true\n'
CRASH_AT = "await:3"  # after "summed 500 numbers": the resume's next output is "summed 750"


def help_time() -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [str(PLAYBOOKS_BIN), "--help"], env=child_env(), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or "usage" not in done.stdout:
        raise RuntimeError(f"playbooks --help failed: {done.stderr}")
    return elapsed


def interrupted(folder: Path) -> Path:
    """numbers_sum.pb killed after its third await; returns the program's path."""
    program = folder / EXAMPLE.name
    shutil.copy(EXAMPLE, program)
    (folder / "playbooks.toml").write_text(CONFIG)
    done = subprocess.run(
        [str(PLAYBOOKS_BIN), "run", str(program), "--json"],
        cwd=folder,
        env=child_env(PLAYBOOKS_CRASH_AT=CRASH_AT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != -9:
        raise RuntimeError(
            f"numbers_sum was not interrupted: exit {done.returncode}\n{done.stderr}"
        )
    return program


def resume_time(folder: Path, program: Path, rep: str) -> float:
    elapsed, _resume, say = first_resumed_say(fresh_copy(folder, rep), program)
    if not say["text"].startswith("summed 750"):
        raise AssertionError(f"first resumed output was {say['text']!r}")
    return elapsed


def run(quick: bool) -> list[Row]:
    count = reps(quick)
    help_time()  # warm the page cache, as any second start would be
    helps = Sample([help_time() for _ in range(count)])
    with temp_dir() as tmp:
        program = interrupted(tmp)
        resume_time(tmp, program, "warmup")
        resumes = Sample([resume_time(tmp, program, str(rep)) for rep in range(count)])
    return [
        helps.scaled(1e3).row(
            "cold start: `playbooks --help`",
            "ms",
            target="≤ 1000 ms",
            met=helps.median <= 1.0,
            note="process start to exit",
        ),
        resumes.scaled(1e3).row(
            "cold start: resume of numbers_sum.pb (no LLM call needed)",
            "ms",
            target="≤ 1000 ms",
            met=resumes.median <= 1.0,
            note=f"killed at {CRASH_AT}; process start to the first resumed say line",
        ),
    ]
