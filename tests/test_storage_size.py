"""Storage grows with what changed, not with state size times steps (DESIGN §5.6)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing playbooks

import random
import string

from playbooks.durability.log import ExecutionLog
from playbooks.durability.serialization import apply, diff, encode

STEPS = 300
ITEM = 1024


def test_growing_list_costs_about_what_was_added(tmp_path) -> None:
    rng = random.Random(1234)
    log = ExecutionLog(tmp_path, "size", keep_last_n=10)
    items: list[str] = []
    old = encode(items)
    peak = 0
    snapshots = 0
    for i in range(STEPS):
        items.append("".join(rng.choices(string.ascii_lowercase, k=ITEM)))
        new = encode(items)
        log.append({"k": "ckpt", "n": i, "vars": {"items": diff(old, new)}})
        old = new
        if log.should_snapshot():
            log.write_snapshot({"vars": {"items": new}, "n": i})
            snapshots += 1
        peak = max(peak, log.disk_usage())
    log.close()
    changed = STEPS * ITEM
    total = log.disk_usage()
    print(
        f"\nstorage: {total} bytes on disk (peak {peak}) for {changed} bytes changed "
        f"= {total / changed:.2f}x, {snapshots} snapshots"
    )
    assert snapshots >= 2  # the bound holds with snapshots, not by avoiding them
    assert total <= 2 * changed and peak <= 2 * changed

    loaded = ExecutionLog(tmp_path, "size").load()
    value = loaded.snapshot["vars"]["items"]
    for rec in loaded.records:
        value = apply(value, rec["vars"]["items"])
    assert value == items
    assert len(loaded.records) < STEPS  # recovery starts from a snapshot, not the beginning
