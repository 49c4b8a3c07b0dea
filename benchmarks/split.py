"""Benchmark 1: the streaming splitter against one ``ast.parse`` of the whole text.

The splitter must decide, while the text streams in, which statements are
complete. That can only be cheap if each line is compiled a bounded number of
times; if it re-parsed the pending text per chunk, the cost per line would
grow with the response. So we report the ratio to a single parse for a
200-line and a 1000-line response, and the cost per line for both.
"""

from __future__ import annotations

import ast
import random
import time

from playbooks.execution.splitter import StatementSplitter

from .common import Row, Sample, reps

CHUNK = 5
SIZES = (200, 1000)


def _block(rng: random.Random, step: int) -> list[str]:
    """One step of a response in the dialect, in one of the shapes real models write."""
    sid = f"Main:{step:02d}"
    kind = rng.randrange(6)
    head = ["# trig? no", f'await Step("{sid}:EXE")']
    if kind == 0:
        return head + [
            f"$total = $total + {rng.randint(1, 9)}",
            'await Say("user", f"The total is now {$total}.")',
        ]
    if kind == 1:
        return head + [
            f"if $total > {rng.randint(5, 50)}:",
            '    await Say("user", "That is more than I expected.")',
            "    $big = True",
            "else:",
            "    $big = False",
        ]
    if kind == 2:
        return head + [
            "for $item in $items:",
            "    $total = $total + len($item)",
            f'    await Step("{sid}.01:EXE")',
        ]
    if kind == 3:
        return head + [
            "$profile = {",
            f'    "name": "user {rng.randint(1, 999)}",',
            f'    "score": {rng.randint(0, 100)},',
            '    "tags": ["new", "curious"],',
            "}",
        ]
    if kind == 4:
        return [
            f"# think: step {sid} needs the user's answer before it can go on",
            "# yld? yes",
            f'await Step("{sid}:QUE")',
            '$answer = await Say("user", "Which option do you prefer, A or B?")',
        ]
    return head + [
        f'$items = ["alpha", "beta", "gamma{rng.randint(0, 9)}"]',
        '$summary = ", ".join($items)',
    ]


def response(lines: int, seed: int = 7) -> str:
    """A deterministic fenced response of exactly ``lines`` lines."""
    rng = random.Random(seed)
    body: list[str] = []
    step = 1
    while True:
        block = _block(rng, step)
        if len(body) + len(block) > lines - 2:
            break
        body += block
        step += 1
    body += ["# yld? no"] * (lines - 2 - len(body))
    return "\n".join(["```python", *body, "```"])


def plain_python(text: str) -> str:
    """The same program as plain Python: no fence, no ``$`` (the generator uses ``$`` only in names)."""
    lines = text.split("\n")[1:-1]
    return "\n".join(lines).replace("$", "") + "\n"


def chunks(text: str, size: int = CHUNK) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def split_all(pieces: list[str]) -> int:
    splitter = StatementSplitter("<bench>")
    count = 0
    for piece in pieces:
        count += len(splitter.feed(piece))
    while more := splitter.finish():
        count += len(more)
    return count


def _cpu(fn, inner: int) -> float:
    """CPU seconds per call, over ``inner`` calls (CPU time: other load does not count)."""
    start = time.process_time()
    for _ in range(inner):
        fn()
    return (time.process_time() - start) / inner


def measure(lines: int, n: int, inner: int) -> tuple[Sample, Sample, Sample]:
    """(split seconds, parse seconds, ratio), each with ``n`` repetitions."""
    text = response(lines)
    plain = plain_python(text)
    pieces = chunks(text)
    expected = len(ast.parse(plain).body)
    found = split_all(pieces)
    if found != expected:
        raise AssertionError(f"splitter found {found} statements, ast.parse {expected}")
    splits, parses = [], []
    for _ in range(n):
        splits.append(_cpu(lambda: split_all(pieces), inner))
        parses.append(_cpu(lambda: ast.parse(plain), inner * 5))
    ratios = [s / p for s, p in zip(splits, parses, strict=True)]
    return Sample(splits), Sample(parses), Sample(ratios)


def run(quick: bool) -> list[Row]:
    n = reps(quick)
    inner = 2 if quick else 5
    rows: list[Row] = []
    ratio_of: dict[int, Sample] = {}
    for lines in SIZES:
        split_s, parse_s, ratio = measure(lines, n, max(1, inner * 200 // lines))
        ratio_of[lines] = ratio
        rows.append(
            split_s.scaled(1e6 / lines).row(
                f"split: {lines}-line response, {CHUNK}-char chunks, per line",
                "µs/line",
                note=f"whole response {split_s.median * 1e3:.2f} ms; "
                f"one ast.parse {parse_s.median * 1e3:.3f} ms "
                f"({parse_s.median * 1e6 / lines:.2f} µs/line)",
            )
        )
        rows.append(
            ratio.row(
                f"split: {lines}-line response vs one ast.parse",
                "×",
                target="≤ 10×",
                met=ratio.median <= 10,
                note="CPU time (process_time)",
            )
        )
    small, large = ratio_of[SIZES[0]], ratio_of[SIZES[1]]
    growth = large.median / small.median
    rows.append(
        Row(
            f"split: linearity, ratio at {SIZES[1]} lines / ratio at {SIZES[0]}",
            growth,
            "×",
            target="≤ 1.3×",
            met=growth <= 1.3,
            note="the splitter's cost per line relative to ast.parse does not grow with length",
        )
    )
    return rows
