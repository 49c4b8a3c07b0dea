"""Layouts a model really writes: one call or value rendered flat, split over
lines, with a hanging indent, or wrapped in parentheses. The meaning never
changes; only the line structure does, which is what resume must survive."""

from __future__ import annotations

import random

STYLES = ("flat", "split", "hang", "paren")


def call(rng: random.Random, fn: str, args: list[str], indent: str = "") -> str:
    """``fn(args)`` in a random layout; continuation lines are indented from ``indent``."""
    if not args:
        return f"{fn}()"
    style = rng.choice(STYLES)
    inner = indent + "    "
    if style == "split":
        comma = "," if rng.random() < 0.7 else ""
        body = f",\n{inner}".join(args)
        return f"{fn}(\n{inner}{body}{comma}\n{indent})"
    if style == "hang" and len(args) > 1:
        pad = indent + " " * rng.choice([4, 8, len(fn) + 1])
        return f"{fn}({args[0]},\n" + ",\n".join(pad + a for a in args[1:]) + ")"
    return f"{fn}({', '.join(args)})"


def awaited(
    rng: random.Random, fn: str, args: list[str], indent: str = "", target: str | None = None
) -> str:
    """One statement ``[target = ]await fn(args)`` in a random layout (no trailing newline)."""
    expr = f"await {call(rng, fn, args, indent)}"
    if target is not None and rng.random() < 0.25:
        return f"{indent}{target} = (\n{indent}    {expr}\n{indent})"
    if target is None and rng.random() < 0.1:
        return f"{indent}(\n{indent}    {expr}\n{indent})"
    return f"{indent}{target} = {expr}" if target is not None else f"{indent}{expr}"


def value_list(rng: random.Random, items: list[str], indent: str = "") -> str:
    """A list literal, flat or one item a line."""
    if rng.random() < 0.5:
        return "[" + ", ".join(items) + "]"
    inner = indent + "    "
    return "[\n" + "".join(f"{inner}{i},\n" for i in items) + f"{indent}]"


def value_dict(rng: random.Random, pairs: list[tuple[str, str]], indent: str = "") -> str:
    """A dict literal, flat or one pair a line."""
    if rng.random() < 0.4:
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    inner = indent + "    "
    return "{\n" + "".join(f"{inner}{k}: {v},\n" for k, v in pairs) + f"{indent}}}"
