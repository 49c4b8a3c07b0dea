"""``python -m tests.fuzz --many [--count N] [--seed S]``: thousands of programs.

Program i gets seed S+i; its shape is drawn from every shape, random mixes and
the reformatted corpus. Each runs at the executor level (every kill point);
every ``--cli-every``-th also runs at the CLI level. Prints the counts
(programs, trials, exact, divergent), a per-shape table and the first failures
with their seeds, so any one can be rerun with ``--only SHAPE --seed SEED``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from . import cli_level
from .corpus import corpus_shape, responses
from .differential import ProgramResult, run_executor
from .shapes import SHAPES, Shape, generate

EXECUTOR_SHAPES = [n for n, f in SHAPES.items() if n != "nested_calls"]
CLI_SHAPES = list(SHAPES)


def build(name: str, seed: int) -> Shape | None:
    if name == "corpus_multiline":
        return corpus_shape(seed, seed)
    return generate(name, seed)


def run_one(level: str, name: str, seed: int, repeated: int = 0) -> ProgramResult | None:
    """One program, every kill point, at one level (plus ``repeated`` trials
    with several lives killed in a row, at the executor level)."""
    shape = build(name, seed)
    if shape is None:
        return None
    if level == "cli":
        return cli_level.run_cli(shape, seed)
    return run_executor(shape, seed, lenient=name == "corpus_multiline", repeated=repeated)


Job = tuple  # (level, shape, seed[, repeated])


def plan(
    count: int,
    seed: int,
    cli_every: int,
    only: str | None,
    repeated: int = 0,
    level: str = "both",
) -> list[Job]:
    rng = random.Random(seed)
    names = EXECUTOR_SHAPES + ["mixed"] * 4 + (["corpus_multiline"] * 2 if responses() else [])
    jobs = []
    for i in range(count):
        s = seed + i
        name = only or rng.choice(names)
        if name != "nested_calls" and level != "cli":
            jobs.append(("executor", name, s, repeated))
        if level == "cli" or (cli_every and (i % cli_every == 0 or name == "nested_calls")):
            cli_name = only or rng.choice(CLI_SHAPES + ["mixed"])
            if cli_name != "corpus_multiline":
                jobs.append(("cli", cli_name, s))
    return jobs


def _run(job: Job) -> ProgramResult | None:
    return run_one(*job)


def run_all(
    jobs: list[Job], workers: int = 2, progress: bool = False, seconds: float | None = None
) -> list[ProgramResult]:
    """Run programs in ``workers`` processes forked from this warm one; with
    ``seconds``, stop starting programs once that time is spent."""
    end = time.monotonic() + seconds if seconds else None
    if workers <= 1 or len(jobs) <= 1:
        found = []
        for job in jobs:
            if end is not None and time.monotonic() > end:
                break
            found.append(_run(job))
        return [r for r in found if r is not None]
    context = multiprocessing.get_context("fork")
    found = []
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(_run, job) for job in jobs]
        for n, future in enumerate(futures, 1):
            found.append(future.result())
            if progress and n % 50 == 0:
                print(f"... {n}/{len(jobs)} programs", file=sys.stderr, flush=True)
            if end is not None and time.monotonic() > end:
                for rest in futures[n:]:
                    rest.cancel()
                print(f"time is up after {n} programs", file=sys.stderr, flush=True)
                break
    return [r for r in found if r is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    parser.add_argument("--many", action="store_true", help="run many generated programs")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli-every", type=int, default=25, help="0: executor level only")
    parser.add_argument("--only", choices=sorted([*SHAPES, "mixed", "corpus_multiline"]))
    parser.add_argument("--level", choices=["both", "executor", "cli"], default="both")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seconds", type=float, help="stop starting programs after this long")
    parser.add_argument(
        "--repeated", type=int, default=2, help="extra trials a program with several kills in a row"
    )
    parser.add_argument("--show", type=int, default=5, help="failures to print")
    args = parser.parse_args(argv)
    if not args.many:
        parser.error("give --many (see the module docstring)")
    jobs = plan(args.count, args.seed, args.cli_every, args.only, args.repeated, args.level)
    started = time.monotonic()
    results = run_all(jobs, args.jobs, progress=True, seconds=args.seconds)
    print(summary(results, time.monotonic() - started, args.show))
    return 0 if all(r.exact for r in results) else 1


def summary(results: list[ProgramResult], seconds: float, show: int) -> str:
    trials = sum(len(r.trials) for r in results)
    bad = sum(len(r.divergent) for r in results)
    lines = [
        f"programs={len(results)} trials={trials} exact={trials - bad} divergent={bad} "
        f"programs_exact={sum(r.exact for r in results)} "
        f"baseline_wrong={sum(r.baseline is not None for r in results)} ({seconds:.0f}s)",
        "",
        f"{'level':9} {'shape':22} {'programs':>8} {'exact':>6} {'trials':>7} {'divergent':>9}",
    ]
    table: Counter = Counter()
    for r in results:
        key = (r.level, r.shape)
        table[key + ("programs",)] += 1
        table[key + ("exact",)] += r.exact
        table[key + ("trials",)] += len(r.trials)
        table[key + ("divergent",)] += len(r.divergent)
    for level, shape in sorted({(r.level, r.shape) for r in results}):
        k = (level, shape)
        lines.append(
            f"{level:9} {shape:22} {table[k + ('programs',)]:>8} {table[k + ('exact',)]:>6} "
            f"{table[k + ('trials',)]:>7} {table[k + ('divergent',)]:>9}"
        )
    failures = [r for r in results if not r.exact]
    firsts = {(r.level, r.shape): r for r in reversed(failures)}  # the first of each shape
    failures = sorted(firsts.values(), key=lambda r: (r.level, r.shape))
    if failures:
        lines += [
            "",
            f"first failure of each failing shape, {len(failures)} shapes (rerun: --only SHAPE --seed SEED --count 1):",
        ]
        lines += [r.report(2) for r in failures[:show]]
        if len(failures) > show:
            lines.append(f"... (--show {len(failures)} prints all)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
