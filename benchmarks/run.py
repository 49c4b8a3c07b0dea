"""Run the benchmarks, print the table, write benchmarks/results.md.

python -m benchmarks [--quick] [--only NAME ...]
python benchmarks/run.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from benchmarks.common import Row, machine  # noqa: E402

#: name on the command line -> (module, title)
MEASUREMENTS: dict[str, tuple[str, str]] = {
    "split": ("benchmarks.split", "1. Streaming split"),
    "statement": ("benchmarks.per_statement", "2. Executor overhead per statement"),
    "await": ("benchmarks.per_await", "3. Overhead per await (durability)"),
    "recovery": ("benchmarks.recovery", "4. Recovery time"),
    "storage": ("benchmarks.storage", "5. Storage growth"),
    "coldstart": ("benchmarks.cold_start", "6. Cold start"),
    "resume": ("benchmarks.resume_api", "7. resume_from_checkpoint after many statements"),
    "ckptcost": ("benchmarks.checkpoint_cost", "8. Checkpoint cost follows the change"),
    "postgres": ("benchmarks.postgres", "9. Effects on PostgreSQL"),
    "workers": ("benchmarks.workers", "10. Workers: takeover after SIGKILL, throughput"),
    "instructions": ("benchmarks.instructions", "11. Instructions per await (counted by valgrind)"),
}
RESULTS = Path(__file__).resolve().parent / "results.md"


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cells(row: Row) -> list[str]:
    spread = f"{fmt(row.spread[0])}–{fmt(row.spread[1])}" if row.spread else ""
    met = {True: "yes", False: "**NO**", None: ""}[row.met]
    return [row.name, fmt(row.value), spread, row.unit, row.target, met, row.note]


HEADER = ["measurement", "median", "min–max", "unit", "target", "met", "note"]


def markdown(sections: list[tuple[str, list[Row]]]) -> str:
    lines = []
    for title, rows in sections:
        lines += [f"### {title}", "", "| " + " | ".join(HEADER) + " |"]
        lines.append("|" + "|".join(["---"] * len(HEADER)) + "|")
        for row in rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |")
        lines.append("")
    return "\n".join(lines)


def plain(sections: list[tuple[str, list[Row]]]) -> str:
    table = [HEADER[:6]]
    for _title, rows in sections:
        table += [cells(row)[:6] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(6)]
    out = []
    for i, r in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_results(
    sections: list[tuple[str, list[Row]]], quick: bool, elapsed: float, path: Path = RESULTS
) -> None:
    info = machine()
    mode = "quick (smoke test: fewer steps and repetitions)" if quick else "full"
    text = [
        "# Benchmark results",
        "",
        "Produced by `python -m benchmarks` (see README.md in this folder). "
        "Medians of the repetitions; min–max is the spread over them.",
        "",
        f"Mode: {mode}; took {elapsed:.0f} s.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        "",
        "## Results",
        "",
        markdown(sections),
    ]
    path.write_text("\n".join(text))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(MEASUREMENTS),
        metavar="NAME",
        help=f"run only this measurement (repeatable): {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"where to write the table (default {RESULTS}; with --only, nowhere)",
    )
    args = parser.parse_args(argv)
    chosen = args.only or list(MEASUREMENTS)
    sections: list[tuple[str, list[Row]]] = []
    failed = False
    started = time.perf_counter()
    for name in MEASUREMENTS:
        if name not in chosen:
            continue
        module_name, title = MEASUREMENTS[name]
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            rows = importlib.import_module(module_name).run(args.quick)
        except Exception as error:  # one broken measurement must not hide the others
            traceback.print_exc()
            rows = [Row(f"{name}: failed", None, "", note=f"error: {error}".splitlines()[0])]
            failed = True
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        sections.append((title, rows))
    elapsed = time.perf_counter() - started
    print(plain(sections))
    output = args.output or (None if args.only else RESULTS)
    if output is not None:  # a partial run never overwrites the full table
        write_results(sections, args.quick, elapsed, output)
        print(f"\nwrote {output} ({elapsed:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
