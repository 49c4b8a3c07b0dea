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


def test_an_unchanged_long_text_is_hashed_once_and_rewritten_if_its_blob_went(tmp_path) -> None:
    """Snapshots externalize the same long text again and again: the store knows it
    by identity and skips encoding and hashing it, but never trusts a blob that is gone."""
    from playbooks.durability.blobs import BLOB_KEY, BlobStore

    store = BlobStore(tmp_path / "blobs", fsync=False)
    text = "a long response " * 1000
    puts: list[int] = []
    real_put = store.put

    def counting_put(content: bytes) -> str:
        puts.append(len(content))
        return real_put(content)

    store.put = counting_put  # type: ignore[method-assign]
    first, refs = store.externalize({"response": text, "short": "x"})
    again, refs_again = store.externalize({"response": text, "short": "y"})
    assert len(puts) == 1
    assert first["response"] == again["response"] and refs == refs_again
    sha = first["response"][BLOB_KEY]
    store.remove(sha)
    third, _ = store.externalize({"response": text})
    assert len(puts) == 2 and third["response"][BLOB_KEY] == sha
    assert (tmp_path / "blobs" / sha).exists()
    equal_but_new = "".join(["a long response "] * 1000)  # another object: hashed again
    store.externalize({"response": equal_but_new})
    assert len(puts) == 3
    assert store.resolve(third, set()) == {"response": text}
