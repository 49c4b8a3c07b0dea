"""Crash-test writer: appends deterministic checkpoints until it is SIGKILLed.

Usage: python tests/writer_child.py DIR SEED

Step i's change depends only on (SEED, i, the state after step i-1), so the
test can compute the exact state after any prefix of checkpoints. After each
durable append it prints "durable i"; before a snapshot "snapshot i".
A second life on the same DIR recovers and continues where the first stopped.
"""

from __future__ import annotations

import random
import string
import sys
from typing import Any

from playbooks.durability.log import ExecutionLog, Loaded
from playbooks.durability.serialization import apply, diff

EXECUTION = "exec"
ALPHABET = string.ascii_letters + string.digits


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(ALPHABET, k=n))


def step(seed: int, i: int, variables: dict[str, Any]) -> dict[str, Any]:
    """The new values of the variables that step i changes (inputs untouched)."""
    rng = random.Random(f"{seed}:{i}")
    kind = rng.randrange(10)
    if kind < 4:  # a growing list: "ext" deltas, chunked blobs in snapshots
        items = list(variables.get("items", []))
        if len(items) >= 300:
            items = []
        items.append(_text(rng, rng.randint(0, 1500)))
        return {"items": items}
    if kind < 6:  # a growing string: "app" deltas, a blob once it is long
        text = variables.get("text", "")
        if len(text) > 100_000:
            text = ""
        return {"text": text + _text(rng, rng.randint(1, 3000))}
    if kind == 6:  # a large string: a blob referenced from the record
        return {"big": _text(rng, rng.randint(5_000, 40_000))}
    if kind == 7:  # a large inline record (up to ~200 KiB): room for a torn write
        return {"blk": [_text(rng, rng.randint(100, 7_000)) for _ in range(rng.randint(1, 31))]}
    if kind == 8:
        d = dict(variables.get("d", {}))
        d[f"k{rng.randrange(20)}"] = rng.randrange(10**9)
        return {"d": d}
    return {"x": rng.randrange(10**6)}


def record(i: int, variables: dict[str, Any], changes: dict[str, Any]) -> dict:
    deltas = {}
    for name, value in changes.items():
        delta = diff(variables.get(name), value)
        if delta is not None:
            deltas[name] = delta
    return {"k": "ckpt", "n": i, "vars": deltas}


def recover(loaded: Loaded) -> dict:
    """Snapshot + records -> state; the records must follow the snapshot without gaps."""
    base = loaded.snapshot or {"n": -1, "vars": {}}
    state = {"n": base["n"], "vars": dict(base["vars"])}
    for rec in loaded.records:
        assert rec["n"] == state["n"] + 1, f"gap: {state['n']} then {rec['n']}"
        state["n"] = rec["n"]
        for name, delta in rec["vars"].items():
            state["vars"][name] = apply(state["vars"].get(name), delta)
    return state


def expected(seed: int, k: int) -> dict:
    """The state after checkpoints 0..k."""
    variables: dict[str, Any] = {}
    for i in range(k + 1):
        variables.update(step(seed, i, variables))
    return {"n": k, "vars": variables}


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    log = ExecutionLog(directory, EXECUTION, keep_last_n=5)
    log.lock()
    loaded = log.load()
    state = recover(loaded)
    if loaded.needs_snapshot:
        log.write_snapshot(state)
    print(f"ready {state['n']}", flush=True)
    variables = state["vars"]
    i = state["n"] + 1
    while True:
        changes = step(seed, i, variables)
        log.append(record(i, variables, changes), sync=True)
        variables.update(changes)
        print(f"durable {i}", flush=True)
        if log.should_snapshot():
            print(f"snapshot {i}", flush=True)
            log.write_snapshot({"n": i, "vars": variables})
        i += 1


if __name__ == "__main__":
    main()
