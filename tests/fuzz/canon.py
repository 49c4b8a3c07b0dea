"""Comparing runs: what the world saw, with nondeterministic values renamed.

Two uninterrupted runs of a program that calls ``uuid.uuid4()`` see different
ids, so a trace is compared after each nondeterministic value (a uuid, a
timestamp, a ``random.random()`` float, a datetime) is replaced by a name given
in order of first appearance (``<nd0>``, ``<nd1>``, ...). A run that shows one
id before a crash and another after differs from the reference, which shows
one id twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

NONDET = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # uuid
    r"|(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])"  # uuid hex
    r"|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?"  # datetime
    r"|(?<![\d.])1\d{9}\.\d+"  # time.time()
    r"|(?<![\d.])\d\.\d+e-\d+"  # tiny floats
    r"|(?<![\d.])0\.\d{5,}"  # random.random()
)


@dataclass
class Run:
    """What one run (all its lives joined) showed the world."""

    trace: list[Any] = field(default_factory=list)  # effects, in order
    shown: list[Any] = field(default_factory=list)  # CLI: say events (id, text), in order
    outcome: str = "finished"  # "finished", or "Type: message" of the error that ended it
    variables: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what each life did, for reports
    bounds: list[int] = field(default_factory=list)  # effects seen when each life ended


def _sort_concurrent(trace: list[Any]) -> list[Any]:
    """Runs of effects tagged ``~`` (made under gather) may come in any order."""
    out: list[Any] = []
    group: list[Any] = []
    for item in trace:
        if _concurrent(item):
            group.append(item)
            continue
        out += sorted(group, key=lambda x: json.dumps(x, sort_keys=True))
        group = []
        out.append(item)
    return out + sorted(group, key=lambda x: json.dumps(x, sort_keys=True))


def _concurrent(item: Any) -> bool:
    """``["~F", [1]]`` or ``["Emit", ["~work", ...]]``: made under gather."""
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
        return False
    args = item[1]
    tag = args[0] if isinstance(args, list) and args and isinstance(args[0], str) else ""
    return item[0].startswith("~") or tag.startswith("~")


def canonical(run: Run) -> dict[str, Any]:
    """The run with nondeterministic values renamed in order of first appearance."""
    names: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"<nd{len(names)}>")

    def walk(value: Any) -> Any:
        if isinstance(value, float):
            text = repr(value)
            return rename(NONDET.fullmatch(text)) if NONDET.fullmatch(text) else value
        if isinstance(value, str):
            return NONDET.sub(rename, value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(value[k]) for k in sorted(value)}
        return value

    data = {"trace": run.trace, "shown": run.shown, "outcome": run.outcome}
    out = walk(data | {"variables": run.variables})
    out["trace"] = _sort_concurrent(out["trace"])
    return out


def _first_difference(what: str, a: list[Any], b: list[Any]) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    want = json.dumps(a[i]) if i < len(a) else "(nothing more)"
    saw = json.dumps(b[i]) if i < len(b) else "(nothing more)"
    return f"{what} {i + 1}: expected {want}, got {saw} ({len(a)} vs {len(b)} in all)"


def difference(reference: Run, trial: Run) -> str | None:
    """None if the runs match; else a short account of the first difference."""
    ref, got = canonical(reference), canonical(trial)
    if ref == got:
        return None
    parts = [
        _first_difference(what, ref[key], got[key])
        for key, what in (("trace", "effect"), ("shown", "message shown"))
        if ref[key] != got[key]
    ]
    if ref["outcome"] != got["outcome"]:
        parts.append(f"outcome: expected {ref['outcome'][:300]!r}, got {got['outcome'][:300]!r}")
    if ref["variables"] != got["variables"]:
        keys = sorted(set(ref["variables"]) | set(got["variables"]))
        diff = [
            f"{k}: {json.dumps(ref['variables'].get(k, '<unset>'))} vs "
            f"{json.dumps(got['variables'].get(k, '<unset>'))}"
            for k in keys
            if ref["variables"].get(k, "<unset>") != got["variables"].get(k, "<unset>")
        ]
        parts.append("variables: " + "; ".join(diff)[:400])
    return " | ".join(parts)
