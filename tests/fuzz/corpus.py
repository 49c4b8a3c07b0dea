"""The 25 real responses of ../shared/corpus, reformatted into multi-line layouts.

Each one-line statement at column 0 keeps its meaning and gets a new line
structure: call arguments split over lines (one a line, or a hanging indent),
or the right-hand side of an assignment wrapped in parentheses. Lines inside a
triple-quoted string are left alone.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

from .layout import call
from .shapes import Shape

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
SAMPLE = CORPUS / "llm-responses.sample.json"


def responses() -> list[str]:
    """The corpus responses, or [] when ../shared is absent."""
    if not SAMPLE.exists():
        return []
    return json.loads(SAMPLE.read_text())


def _span(line: bytes, node: ast.AST) -> str:
    return line[node.col_offset : node.end_col_offset].decode()  # type: ignore[attr-defined]


def _relayout(line: str, rng: random.Random) -> str:
    probe = line.replace("$", "_")  # same length; `$x` is not Python
    try:
        tree = ast.parse(probe)
    except SyntaxError:
        return line
    if len(tree.body) != 1 or tree.body[0].end_lineno != 1:
        return line
    node = tree.body[0]
    raw = line.encode()
    value = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
    inner = value.value if isinstance(value, ast.Await) else value
    if isinstance(inner, ast.Call) and (inner.args or inner.keywords) and rng.random() < 0.8:
        args = [_span(raw, a) for a in inner.args]
        args += [
            _span(raw, k) if k.arg is None else f"{k.arg}={_span(raw, k.value)}"
            for k in inner.keywords
        ]
        head = raw[: inner.col_offset].decode()
        tail = raw[inner.end_col_offset :].decode()
        return head + call(rng, _span(raw, inner.func), args) + tail
    if isinstance(node, ast.Assign) and value is not None:
        head = raw[: value.col_offset].decode()
        tail = raw[value.end_col_offset :].decode()
        return f"{head}(\n    {_span(raw, value)}\n){tail}"
    return line


def reformat(text: str, rng: random.Random) -> str:
    """``text`` with its one-line statements given multi-line layouts."""
    out = []
    in_string = False
    for line in text.split("\n"):
        starts_inside = in_string
        if line.count('"""') % 2 == 1:
            in_string = not in_string
        if starts_inside or in_string or not line[:1].isalpha() and line[:1] != "$":
            out.append(line)
            continue
        out.append(_relayout(line, rng))
    return "\n".join(out)


def corpus_shape(number: int, seed: int) -> Shape | None:
    """Corpus response ``number`` in a multi-line layout chosen by ``seed``."""
    texts = responses()
    if not texts:
        return None
    rng = random.Random(f"corpus:{number}:{seed}")
    body = reformat(texts[number % len(texts)], rng).strip("\n") + "\n"
    return Shape("corpus_multiline", body, fenced=True)
