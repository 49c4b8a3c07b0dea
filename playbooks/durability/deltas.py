"""Compact deltas between two encoded values (what a checkpoint stores for a variable)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _canonical(encoded: Any) -> str:
    return json.dumps(encoded, sort_keys=True, separators=(",", ":"))


def _same(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart (JSON does)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and _same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _size(v: Any) -> int:
    return len(json.dumps(v, separators=(",", ":")))


def diff(old: Any, new: Any) -> dict | None:
    """A compact delta from old to new (both encoded); None when they are equal."""
    if _same(old, new):
        return None
    if type(old) is list and type(new) is list and len(new) >= len(old):
        if all(_same(x, y) for x, y in zip(old, new, strict=False)):
            return {"op": "ext", "v": new[len(old) :]}
    elif type(old) is str and type(new) is str and new.startswith(old):
        return {"op": "app", "v": new[len(old) :]}
    elif type(old) is dict and type(new) is dict:
        delta = _dict_delta(old, new)
        if delta is not None:
            return delta
    return {"op": "set", "v": new}


def _dict_delta(old: dict, new: dict) -> dict | None:
    sets: dict[str, Any] = {}
    subs: dict[str, Any] = {}
    dels = [k for k in old if k not in new]
    for k, v in new.items():
        if k not in old:
            sets[k] = v
            continue
        d = diff(old[k], v)
        if d is None:
            continue
        if d["op"] == "set":
            sets[k] = v
        else:
            subs[k] = d
    delta: dict[str, Any] = {"op": "upd", "set": sets, "del": dels}
    if subs:
        delta["sub"] = subs
    return delta if _size(delta) < _size({"op": "set", "v": new}) else None


def apply(old: Any, delta: dict) -> Any:
    """Apply a diff() result: apply(old, diff(old, new)) == new. old is not changed."""
    op = delta.get("op")
    if op == "set":
        return delta["v"]
    if op == "ext" and isinstance(old, list):
        return old + delta["v"]
    if op == "app" and isinstance(old, str):
        return old + delta["v"]
    if op == "upd" and isinstance(old, dict):
        out = dict(old)
        for k in delta.get("del", ()):
            out.pop(k, None)
        out.update(delta.get("set", {}))
        for k, sub in delta.get("sub", {}).items():
            out[k] = apply(out.get(k), sub)
        return out
    raise ValueError(f"delta {op!r} does not apply to a value of type {type(old).__name__}")


def stable_hash(encoded: Any) -> str:
    """Content hash of an encoded value, for cheap 'did it change?' checks."""
    return hashlib.sha256(_canonical(encoded).encode("utf-8")).hexdigest()
