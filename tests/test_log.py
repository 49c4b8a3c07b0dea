"""The per-execution log: reopen, damage, fallback, retention, blobs, lock, ids, modes."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing playbooks

import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from playbooks.durability.log import (
    MIN_SNAPSHOT_GAP,
    ExecutionLocked,
    ExecutionLog,
    StorageError,
    delete_execution,
    gc,
    list_executions,
    validate_execution_id,
)
from playbooks.durability.records import HEADER_SIZE, read_records

ROOT = Path(__file__).resolve().parent.parent


def ckpt(n: int, **vars) -> dict:
    return {"k": "ckpt", "n": n, "vars": vars}


def replay(loaded) -> dict:
    """The state model used in these tests: the latest value of each variable."""
    state = {"n": -1, "vars": {}} if loaded.snapshot is None else loaded.snapshot
    state = {"n": state["n"], "vars": dict(state["vars"])}
    for rec in loaded.records:
        state["n"] = rec["n"]
        state["vars"].update(rec["vars"])
    return state


def fill(log: ExecutionLog, start: int, stop: int, state: dict) -> None:
    for i in range(start, stop):
        log.append(ckpt(i, x=i * 10))
        state["n"], state["vars"]["x"] = i, i * 10


def test_reopen_append_load(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "run-1")
    state = {"n": -1, "vars": {}}
    fill(log, 0, 5, state)
    log.write_snapshot({"n": state["n"], "vars": dict(state["vars"])})
    fill(log, 5, 8, state)
    log.close()

    again = ExecutionLog(tmp_path, "run-1", create=False)
    loaded = again.load()
    assert loaded.generation == 1 and not loaded.rebuilt and loaded.warnings == []
    assert loaded.snapshot == {"n": 4, "vars": {"x": 40}}
    assert [r["n"] for r in loaded.records] == [5, 6, 7]
    fill(again, 8, 10, state)
    again.close()
    final = ExecutionLog(tmp_path, "run-1").load()
    assert replay(final) == {"n": 9, "vars": {"x": 90}}
    assert [r["n"] for r in ExecutionLog(tmp_path, "run-1").checkpoint_records()] == list(range(10))


def test_fresh_and_missing(tmp_path) -> None:
    loaded = ExecutionLog(tmp_path, "new").load()
    assert (loaded.snapshot, loaded.records, loaded.generation) == (None, [], 0)
    with pytest.raises(StorageError, match="no checkpoint data"):
        ExecutionLog(tmp_path, "absent", create=False)


def test_torn_tail_is_ignored_then_trimmed(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "t")
    state = {"n": -1, "vars": {}}
    fill(log, 0, 4, state)
    log.close()
    seg = tmp_path / "t" / "log-000000"
    good = seg.stat().st_size
    with open(seg, "ab") as f:  # half of a record: the process died mid-write
        f.write(b"\xfe\xb1\x01\x00\xff\x00\x00\x00\x12\x34")
    log = ExecutionLog(tmp_path, "t")
    loaded = log.load()
    assert [r["n"] for r in loaded.records] == [0, 1, 2, 3] and not loaded.warnings
    assert not loaded.needs_snapshot
    log.append(ckpt(4, x=40), sync=True)
    log.close()
    assert seg.stat().st_size > good
    loaded = ExecutionLog(tmp_path, "t").load()
    assert [r["n"] for r in loaded.records] == [0, 1, 2, 3, 4] and not loaded.warnings


def test_corrupt_record_in_the_middle(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "c")
    state = {"n": -1, "vars": {}}
    fill(log, 0, 6, state)
    log.close()
    seg = tmp_path / "c" / "log-000000"
    data = bytearray(seg.read_bytes())
    offset = read_records(bytes(data)).offsets[3]  # damage the 4th record (n=3)
    data[offset + HEADER_SIZE + 3] ^= 0x20
    seg.write_bytes(bytes(data))

    log = ExecutionLog(tmp_path, "c")
    loaded = log.load()
    assert replay(loaded) == {"n": 2, "vars": {"x": 20}}  # the last good record
    assert len(loaded.warnings) == 1
    assert f"log-000000: bad checksum at offset {offset}" in loaded.warnings[0]
    assert loaded.needs_snapshot and log.should_snapshot()
    with pytest.raises(StorageError, match="fresh snapshot"):
        log.append(ckpt(3, x=30))
    log.write_snapshot(replay(loaded))  # the lead's job after such a load
    log.append(ckpt(3, x=31))
    log.close()
    loaded = ExecutionLog(tmp_path, "c").load()
    assert replay(loaded) == {"n": 3, "vars": {"x": 31}} and not loaded.warnings
    assert seg.read_bytes() == bytes(data)  # the damaged evidence is not overwritten


def test_deleted_newest_snapshot_is_rebuilt_from_older_one(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "r", keep_last_n=100)
    state = {"n": -1, "vars": {}}
    for gen in range(3):
        fill(log, gen * 5, gen * 5 + 5, state)
        log.write_snapshot({"n": state["n"], "vars": dict(state["vars"])})
    fill(log, 15, 17, state)
    log.close()
    (tmp_path / "r" / "snap-000003").unlink()
    loaded = ExecutionLog(tmp_path, "r").load()
    assert loaded.rebuilt and loaded.generation == 2 and loaded.needs_snapshot
    assert replay(loaded) == {"n": 16, "vars": {"x": 160}}
    # a corrupt (not missing) newest snapshot behaves the same, with a warning
    snap2 = tmp_path / "r" / "snap-000002"
    snap2.write_bytes(snap2.read_bytes()[:-3] + b"xyz")
    loaded = ExecutionLog(tmp_path, "r").load()
    assert loaded.rebuilt and loaded.generation == 1 and "snap-000002" in loaded.warnings[0]
    assert replay(loaded) == {"n": 16, "vars": {"x": 160}}
    # no snapshot at all: generation 0's log from the start
    for name in ("snap-000001",):
        (tmp_path / "r" / name).unlink()
    loaded = ExecutionLog(tmp_path, "r").load()
    assert loaded.rebuilt and loaded.generation == 0 and loaded.snapshot is None
    assert replay(loaded) == {"n": 16, "vars": {"x": 160}}


def test_a_snapshot_comes_with_its_segment_so_a_missing_segment_is_damage(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "m")
    fill(log, 0, 3, {"n": -1, "vars": {}})
    log.write_snapshot({"n": 2, "vars": {"x": 20}})
    log.close()
    assert (tmp_path / "m" / "log-000001").exists()  # created before the snapshot
    loaded = ExecutionLog(tmp_path, "m").load()
    assert loaded.snapshot == {"n": 2, "vars": {"x": 20}} and loaded.records == []
    assert not loaded.rebuilt and not loaded.needs_snapshot and loaded.damage is None
    (tmp_path / "m" / "log-000001").unlink()
    loaded = ExecutionLog(tmp_path, "m").load()
    assert loaded.needs_snapshot and loaded.damage is not None
    assert loaded.damage.file == tmp_path / "m" / "log-000001" and loaded.damage.offset is None


def test_an_empty_segment_without_its_snapshot_is_an_interrupted_snapshot(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "o")
    fill(log, 0, 3, {"n": -1, "vars": {}})
    log.close()
    (tmp_path / "o" / "log-000001").touch()  # the crash came before the snapshot's rename
    log = ExecutionLog(tmp_path, "o")
    loaded = log.load()
    assert [r["n"] for r in loaded.records] == [0, 1, 2]
    assert not loaded.rebuilt and not loaded.needs_snapshot and not loaded.warnings
    log.append(ckpt(3, x=30))
    log.write_snapshot({"n": 3, "vars": {"x": 30}})
    log.append(ckpt(4, x=40))
    log.close()
    loaded = ExecutionLog(tmp_path, "o").load()
    assert loaded.snapshot == {"n": 3, "vars": {"x": 30}} and [r["n"] for r in loaded.records] == [
        4
    ]


def test_nothing_readable_raises(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "n", keep_last_n=0)
    for gen in range(3):
        fill(log, gen * 3, gen * 3 + 3, {"n": -1, "vars": {}})
        log.write_snapshot({"n": gen * 3 + 2, "vars": {}})
    log.close()
    folder = tmp_path / "n"
    assert not (folder / "log-000000").exists()  # retention removed generation 0
    for snap in folder.glob("snap-*"):
        snap.write_bytes(b"garbage that is not a snapshot")
    with pytest.raises(StorageError, match="no readable checkpoint data in"):
        ExecutionLog(tmp_path, "n").load()
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "log-000000").write_bytes(b"this is not a log at all" * 10)
    with pytest.raises(StorageError, match="no readable checkpoint data"):
        ExecutionLog(tmp_path, "g").load()


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_retention_keeps_the_directory_bounded(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "ret", keep_last_n=10)
    state = {"n": -1, "vars": {}}
    peak_files = peak_settled = peak_bytes = 0
    for i in range(1000):
        log.append(ckpt(i, x=i, pad="p" * 200))
        state["n"], state["vars"]["x"] = i, i
        if i % 25 == 24:
            log.write_snapshot({"n": i, "vars": dict(state["vars"])})
        peak_files = max(peak_files, len(_files(log.dir)))  # a rollover may be running
        log.wait()  # for it
        peak_settled = max(peak_settled, len(_files(log.dir)))
        peak_bytes = max(peak_bytes, log.disk_usage())
    log.close()
    # two generations (snapshot + segment) of 25 checkpoints each; while a new
    # one is being finished, the generation it drops and the snapshot's temporary file
    assert peak_settled <= 2 * 2, peak_settled
    assert peak_files <= 2 * 2 + 3, peak_files
    assert peak_bytes < 3 * 25 * 300, peak_bytes
    names = sorted(p.name for p in _files(log.dir))
    assert names == ["log-000039", "log-000040", "snap-000039", "snap-000040"]
    kept = log.checkpoint_records()
    assert len(kept) >= 10 and [r["n"] for r in kept] == list(range(1000 - len(kept), 1000))
    assert replay(ExecutionLog(tmp_path, "ret").load())["n"] == 999


def test_large_values_are_stored_once_and_collected(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "b", keep_last_n=1)
    big = "".join(chr(97 + (i * 7919) % 26) for i in range(20_000))
    items = [f"item {i} " + "z" * 300 for i in range(100)]
    log.append({"k": "llm", "text": big, "user": {"__blob__": "not ours"}})
    log.write_snapshot({"vars": {"items": items, "big": big}})
    blobs = log.dir / "blobs"
    first = {p.name: p.stat().st_mtime_ns for p in blobs.iterdir()}
    assert len(first) == 1 + 3  # the string once, three full 32-item chunks
    log.write_snapshot({"vars": {"items": items + ["more"], "big": big}})
    assert {p.name: p.stat().st_mtime_ns for p in blobs.iterdir()} == first  # not rewritten
    log.wait()  # the snapshot's own syncs have ended: another reader sees it
    loaded = ExecutionLog(tmp_path, "b").load()
    assert loaded.snapshot == {"vars": {"items": items + ["more"], "big": big}}
    assert ExecutionLog(tmp_path, "b").checkpoint_records() == []
    # once no retained generation uses the string, its blob goes away
    log.append(ckpt(0))
    log.write_snapshot({"vars": {"items": []}})
    log.append(ckpt(1))
    log.write_snapshot({"vars": {"items": []}})
    log.wait()
    assert not blobs.exists() or list(blobs.iterdir()) == []
    log.close()
    (blobs / ("0" * 64)).parent.mkdir(exist_ok=True)
    (blobs / ("0" * 64)).write_bytes(b"orphan")
    counts = gc(tmp_path, keep_last_n=1)
    assert counts["blobs_removed"] == 1 and counts["executions"] == 1


def test_escaped_user_keys_round_trip(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "e")
    rec = {"k": "x", "v": {"__blob__": 1, "__chunks__": [2], "__esc__": {"__esc__": 3}}}
    log.append(rec)
    log.close()
    assert ExecutionLog(tmp_path, "e").load().records == [rec]


LOCKER = """
import sys
from playbooks.durability.log import ExecutionLog
log = ExecutionLog(sys.argv[1], "owned")
log.lock()
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_owned_by_a_live_process_only(tmp_path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    try:
        assert child.stdout.readline() == b"locked\n"
        mine = ExecutionLog(tmp_path, "owned")
        with pytest.raises(ExecutionLocked, match=f"in use by process {child.pid}"):
            mine.lock()
        with pytest.raises(ExecutionLocked):
            delete_execution(tmp_path, "owned")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    mine.lock()  # the lock died with its owner
    mine.close()
    mine.lock()
    mine.close()


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 200, ".", "a b", "x\n"])
def test_invalid_ids_refused(tmp_path, bad) -> None:
    with pytest.raises(StorageError, match="invalid execution id"):
        validate_execution_id(bad)
    with pytest.raises(StorageError, match="invalid execution id"):
        ExecutionLog(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []


def test_modes_listing_and_delete(tmp_path) -> None:
    old = os.umask(0o002)  # a permissive umask must not leak into the files
    try:
        log = ExecutionLog(tmp_path, "p")
        log.lock()
        log.append({"k": "llm", "text": "q" * 10_000}, sync=True)
        log.write_snapshot({"n": 1})
        log.write_meta({"program": "x.pb"})
        log.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "p" / "blobs").stat().st_mode) == 0o700
    files = _files(tmp_path / "p")
    assert len(files) == 6  # lock, meta, snapshot, two segments, one blob
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert log.read_meta() == {"program": "x.pb"}
    assert log.disk_usage() == sum(p.stat().st_size for p in files)
    (tmp_path / "not-an-execution").mkdir()
    assert list_executions(tmp_path) == ["p"]
    delete_execution(tmp_path, "p")
    assert list_executions(tmp_path) == [] and not (tmp_path / "p").exists()


def test_the_base_directory_it_creates_is_private(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        ExecutionLog(tmp_path / "made" / "base", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "made" / "base").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "made" / "base" / "x").stat().st_mode) == 0o700


def test_leftovers_of_an_interrupted_snapshot_are_ignored_then_removed(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "i")
    fill(log, 0, 3, {"n": -1, "vars": {}})
    log.close()
    folder = tmp_path / "i"
    (folder / "snap-000001.tmp").write_bytes(b"\xfe\xb1half a snapshot")
    (folder / "blobs").mkdir()
    (folder / "blobs" / f"{'a' * 64}.tmp").write_bytes(b"half a blob")
    log = ExecutionLog(tmp_path, "i")
    loaded = log.load()
    assert [r["n"] for r in loaded.records] == [0, 1, 2] and not loaded.warnings
    log.lock()
    assert not list(folder.rglob("*.tmp"))
    log.write_snapshot({"n": 2, "vars": {"x": 20}})
    log.close()
    assert ExecutionLog(tmp_path, "i").load().snapshot == {"n": 2, "vars": {"x": 20}}


def test_should_snapshot_follows_bytes_appended(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "s", fsync=False)
    assert not log.should_snapshot()
    while not log.should_snapshot():
        log.append({"k": "chunk", "text": "t" * 1000})
    assert MIN_SNAPSHOT_GAP <= log.disk_usage() < MIN_SNAPSHOT_GAP + 2000
    log.write_snapshot({"n": 0})
    assert not log.should_snapshot()
    log.close()
    again = ExecutionLog(tmp_path, "s", fsync=False)
    again.load()
    assert not again.should_snapshot()


def test_gc_trims_retains_and_skips_owned_executions(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "a", keep_last_n=1000)
    for gen in range(5):
        fill(log, gen * 4, gen * 4 + 4, {"n": -1, "vars": {}})
        log.write_snapshot({"n": gen * 4 + 3, "vars": {"x": gen}})
    log.append(ckpt(20, x=200))
    log.close()
    with open(tmp_path / "a" / "log-000005", "ab") as f:
        f.write(b"\xfe\xb1\x01")  # torn
    owned = ExecutionLog(tmp_path, "b")
    owned.append(ckpt(0))
    owned.lock()
    counts = gc(tmp_path, keep_last_n=4)
    owned.close()
    assert counts["executions"] == 1 and counts["skipped_in_use"] == 1
    assert counts["torn_tails_trimmed"] == 1
    assert counts["generations_removed"] == 4  # generations 4 and 5 remain
    names = sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != "lock")
    assert names == ["log-000004", "log-000005", "snap-000004", "snap-000005"]
    loaded = ExecutionLog(tmp_path, "a").load()
    assert replay(loaded) == {"n": 20, "vars": {"x": 200}} and not loaded.warnings


def test_damage_names_file_offset_and_the_records_past_it(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "d")
    log.append({"k": "turn", "f": "main", "t": 0, "llm": True})
    say = {"id": "main/0.1.0", "text": "hello"}
    log.append({"k": "await", "f": "main", "t": 0, "i": 1, "q": 0, "ok": None, "ev": {"say": say}})
    log.append({"k": "await", "f": "main", "t": 0, "i": 2, "q": 0, "ok": 5})
    log.append({"k": "turn", "f": "main", "t": 1, "llm": True})
    log.close()
    seg = tmp_path / "d" / "log-000000"
    data = bytearray(seg.read_bytes())
    offset = read_records(bytes(data)).offsets[1]
    data[offset + HEADER_SIZE + 5] ^= 0x01  # the record of the message shown
    seg.write_bytes(bytes(data))
    loaded = ExecutionLog(tmp_path, "d").load()
    assert [r["k"] for r in loaded.records] == ["turn"] and loaded.needs_snapshot
    damage = loaded.damage
    assert (damage.file, damage.offset, damage.reason) == (seg, offset, "bad checksum")
    assert [r["k"] for r in damage.lost] == ["await", "turn"]  # read past the damage
    effects = damage.effects()
    assert "2 later readable record(s)" in effects and "call main/0.2.0" in effects
    assert "LLM call of main turn 1" in effects and "the damaged record" in effects


def test_a_torn_tail_before_a_later_generation_is_damage(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "tt", keep_last_n=100)
    fill(log, 0, 3, {"n": -1, "vars": {}})
    log.write_snapshot({"n": 2, "vars": {"x": 20}})
    fill(log, 3, 5, {"n": 2, "vars": {"x": 20}})
    log.close()
    (tmp_path / "tt" / "snap-000001").unlink()  # recovery must replay log-000000 in full
    seg0 = tmp_path / "tt" / "log-000000"
    os.truncate(seg0, seg0.stat().st_size - 3)
    loaded = ExecutionLog(tmp_path, "tt").load()
    assert loaded.damage is not None and loaded.damage.file == seg0
    assert [r["n"] for r in loaded.records] == [0, 1]  # never 0, 1, 3, 4
    assert [r["n"] for r in loaded.damage.lost] == [3, 4]


def test_log_files_gone_with_the_folder_kept_is_damage(tmp_path) -> None:
    log = ExecutionLog(tmp_path, "gone")
    fill(log, 0, 3, {"n": -1, "vars": {}})
    log.write_meta({"program": "x.pb"})
    log.close()
    (tmp_path / "gone" / "log-000000").unlink()
    loaded = ExecutionLog(tmp_path, "gone").load()
    assert loaded.damage is not None and loaded.damage.file == tmp_path / "gone"
    assert loaded.needs_snapshot and "missing" in loaded.warnings[0]
    # a folder that was never started (no meta.json) is simply new
    assert ExecutionLog(tmp_path, "new").load().damage is None


def kill_when_appended(script: str, *args: str) -> None:
    """Run ``script`` in a child process and SIGKILL it once it prints "appended"."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    try:
        assert child.stdout.readline() == b"appended\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


APPENDER = """
import sys
from playbooks.durability.log import ExecutionLog
log = ExecutionLog(sys.argv[1], "kept")
for i in range(int(sys.argv[2])):
    log.append({"k": "ckpt", "n": i, "vars": {"x": i}}, sync=True)
print("appended", flush=True)
sys.stdin.read()
"""


def test_zeros_reserved_past_the_last_record_survive_a_kill_as_the_end_of_the_log(
    tmp_path,
) -> None:
    """The open segment keeps zeros ahead of its records (an fdatasync then changes
    no file size); killed, they are read as the end of the log and cut on reopen."""
    kill_when_appended(APPENDER, str(tmp_path), "30")
    seg = tmp_path / "kept" / "log-000000"
    data = seg.read_bytes()
    found = read_records(data, seg.name)
    assert len(found.payloads) == 30 and found.warning is None
    assert len(data) > found.valid_end and not data[found.valid_end :].strip(b"\0")

    log = ExecutionLog(tmp_path, "kept")
    loaded = log.load()
    assert [r["n"] for r in loaded.records] == list(range(30))
    assert not loaded.warnings and loaded.damage is None and not loaded.needs_snapshot
    log.append(ckpt(30, x=30), sync=True)
    end = read_records(seg.read_bytes()).valid_end
    assert seg.stat().st_size > end  # reserved again, after the dead writer's zeros were cut
    files = sum(p.stat().st_size for p in seg.parent.rglob("*") if p.is_file())
    assert log.disk_usage() == files - (seg.stat().st_size - end)  # the reserve is not data
    log.close()
    after = read_records(seg.read_bytes(), seg.name)
    assert len(after.payloads) == 31 and not after.torn and after.valid_end == seg.stat().st_size


STALLED_ROLLOVER = """
import sys, threading
from playbooks.durability import rollover
from playbooks.durability.log import ExecutionLog
rollover.Rollover.run = lambda self: threading.Event().wait()  # its syncs never end
log = ExecutionLog(sys.argv[1], "mid")
for i in range(10):
    log.append({"k": "ckpt", "n": i, "vars": {"x": i}})
log.write_snapshot({"n": 9, "vars": {"x": 9}})
for i in range(10, 15):
    log.append({"k": "ckpt", "n": i, "vars": {"x": i}})
print("appended", flush=True)
sys.stdin.read()
"""


def test_a_kill_while_a_new_generation_is_finished_resumes_exactly(tmp_path) -> None:
    """Killed before the new snapshot is written (its syncs run beside the next
    appends), recovery reads from the generation before, through both segments."""
    kill_when_appended(STALLED_ROLLOVER, str(tmp_path))
    folder = tmp_path / "mid"
    assert (folder / "log-000001").stat().st_size > 0 and not (folder / "snap-000001").exists()
    log = ExecutionLog(tmp_path, "mid")
    loaded = log.load()
    assert loaded.snapshot is None and [r["n"] for r in loaded.records] == list(range(15))
    assert loaded.rebuilt and not loaded.warnings and loaded.damage is None
    assert replay(loaded) == {"n": 14, "vars": {"x": 14}}
    log.write_snapshot(replay(loaded))  # what the owner does with a rebuilt state
    log.append(ckpt(15, x=15), sync=True)
    log.close()
    again = ExecutionLog(tmp_path, "mid").load()
    assert not again.rebuilt and again.generation == 2 and replay(again)["n"] == 15


def test_a_sync_waits_for_the_new_generation_to_be_on_disk(tmp_path, monkeypatch) -> None:
    """A record of the new generation is synced before an effect only once the
    old segment and the new one's name are on disk, however slow that is; the
    snapshot itself may follow (recovery can do without it)."""
    synced: list[int] = []
    fsync = os.fsync
    slow = threading.Event()

    def slow_fsync(fd: int) -> None:  # the rollover's: the directory, then the snapshot
        slow.wait(0.5)  # never set: syncs slower than the appends after them
        fsync(fd)
        synced.append(fd)

    log = ExecutionLog(tmp_path, "w")
    log.append(ckpt(0, x=0))
    monkeypatch.setattr(os, "fsync", slow_fsync)
    log.write_snapshot({"n": 0, "vars": {"x": 0}})
    log.append(ckpt(1, x=1))
    assert synced == []  # appends do not wait
    log.append(ckpt(2, x=2), sync=True)
    assert len(synced) >= 1  # the directory's, before the record's own
    log.close()
    assert len(synced) == 3  # close waits for the snapshot too
    assert (tmp_path / "w" / "snap-000001").exists()


@pytest.mark.parametrize("broken", ["fsync", "replace"])
def test_a_new_generation_that_cannot_be_written_is_reported(tmp_path, monkeypatch, broken) -> None:
    """A failed sync of the old segment or of the new one's name is raised at the
    next sync, before its record is written; a failed snapshot (recovery can do
    without it) at the next snapshot or close. Nothing is lost either way."""

    def fail(*args, **kwargs) -> None:
        raise OSError(5, "Input/output error")

    log = ExecutionLog(tmp_path, "io")
    log.lock()
    log.append(ckpt(0, x=0))
    monkeypatch.setattr(os, broken, fail)  # the directory's sync, or the snapshot's rename
    log.write_snapshot({"n": 0, "vars": {"x": 0}})
    log.append(ckpt(1, x=1))
    if broken == "fsync":
        with pytest.raises(StorageError, match="snap-000001: .*Input/output error"):
            log.append(ckpt(2, x=2), sync=True)  # not written, never reported as durable
        log.close()
        kept = [0, 1]
    else:
        log.append(ckpt(2, x=2), sync=True)
        with pytest.raises(StorageError, match="snap-000001: .*Input/output error"):
            log.close()
        kept = [0, 1, 2]
    monkeypatch.undo()
    again = ExecutionLog(tmp_path, "io")
    again.lock()  # the lock went with close
    loaded = again.load()
    assert [r["n"] for r in loaded.records] == kept and loaded.rebuilt
    again.close()
