"""The per-execution checkpoint log: snapshots, append-only segments, blobs.

Layout of <base>/<execution_id>/ (0700, files 0600):
  snap-GGGGGG   compacted state that starts generation G (written atomically)
  log-GGGGGG    records appended after snapshot G (generation 0 has no snapshot)
  blobs/        large values, stored once by content hash
  meta.json     small metadata for listing
  lock          owner lock (flock), holds the owner's pid

Recovery reads the newest valid snapshot plus the records after it, so its cost
is bounded by the snapshot policy, not by the length of the history. Retention
keeps at least two generations so that a lost newest snapshot can be rebuilt
from the previous one and the log.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playbooks.durability.blobs import (
    INLINE_MAX,
    BlobStore,
    MissingBlob,
    dumps,
    fsync_dir,
    loads,
    write_atomic,
)
from playbooks.durability.damage import Damage, records_of, scan
from playbooks.durability.records import encode_record, read_records

SNAP = "snap-"
SEG = "log-"
MIN_SNAPSHOT_GAP = 16 * 1024
#: Byte patterns of the keys externalize() writes; a payload without them needs no resolve().
_MARKERS = re.compile(rb'"(?:__blob__|__chunks__|__esc__)"')
SNAPSHOT_FORMAT = 1
_FILE = re.compile(r"(snap|log)-(\d{6,})")
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class StorageError(Exception):
    """Checkpoint storage cannot do what was asked (one clear line)."""


class ExecutionLocked(StorageError):
    """Another live process owns the execution."""


def validate_execution_id(execution_id: str) -> str:
    """Refuse anything that could name a path outside the base directory."""
    if not isinstance(execution_id, str) or not _ID.fullmatch(execution_id):
        raise StorageError(
            f"invalid execution id {execution_id!r}: use letters, digits, _ and - "
            "(1 to 128 characters)"
        )
    return execution_id


@dataclass
class Loaded:
    snapshot: dict | None
    records: list[dict]
    generation: int
    warnings: list[str]
    rebuilt: bool
    needs_snapshot: bool = False  # append is refused until write_snapshot()
    damage: Damage | None = None  # recovery stopped before the end of what was written
    puts: dict[str, Any] = field(default_factory=dict)  # saver-protocol checkpoints


class DamagedLog(StorageError):
    """Stored records cannot be used as they are; names the file and the offset."""

    def __init__(self, message: str, damage: Damage) -> None:
        super().__init__(message)
        self.damage = damage
        self.file = damage.file
        self.offset = damage.offset


@dataclass
class _Gen:
    """What retention needs to know about one generation."""

    ckpts: int = 0
    refs: set[str] = field(default_factory=set)


@dataclass
class _Chain:
    """What one pass over a snapshot and the segments after it found."""

    snapshot: dict | None = None
    base: int | None = None
    records: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damage: Damage | None = None
    stats: dict[int, _Gen] = field(default_factory=dict)
    puts: dict[str, Any] = field(default_factory=dict)
    appended: int = 0
    trim_to: int | None = None


class _Bad(Exception):
    def __init__(self, message: str, name: str, offset: int | None, reason: str) -> None:
        super().__init__(message)
        self.name, self.offset, self.reason = name, offset, reason


#: Logs owned (locked) by this process, by folder: the saver protocol writes
#: through the owner instead of opening a second writer on the same files.
_OWNERS: dict[str, ExecutionLog] = {}
_OWNERS_LOCK = threading.Lock()


def owner_in_process(base_path: str | Path, execution_id: str) -> ExecutionLog | None:
    """The log of this process that owns the execution, if one does."""
    key = os.path.realpath(Path(base_path) / validate_execution_id(execution_id))
    with _OWNERS_LOCK:
        return _OWNERS.get(key)


class ExecutionLog:
    """Storage of one execution; one owner appends, anyone may load."""

    def __init__(
        self,
        base_path: str | Path,
        execution_id: str,
        *,
        fsync: bool = True,
        keep_last_n: int = 10,
        create: bool = True,
    ) -> None:
        self.execution_id = validate_execution_id(execution_id)
        self.base = Path(base_path)
        self.dir = self.base / execution_id
        self.fsync = fsync
        self.keep_last_n = max(0, keep_last_n)
        if create:
            if not self.base.is_dir():  # ours: private (parents keep the umask)
                self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.mkdir(self.dir, 0o700)
            except FileExistsError:
                pass
            os.chmod(self.dir, 0o700)
        elif not self.dir.is_dir():
            raise StorageError(f"no checkpoint data for execution {execution_id} in {self.base}")
        self.blobs = BlobStore(self.dir / "blobs", fsync)
        self._mutex = threading.RLock()
        self._loaded = False
        self._gen = 0  # the generation appends go to
        self._fd: int | None = None
        self._seg_size = 0
        self._trim_to: int | None = None  # torn tail of the newest segment, cut on reopen
        self._appended = 0
        self._snap_size = 0
        self._needs_snapshot = False
        self._stats: dict[int, _Gen] = {}
        self._puts: dict[str, Any] = {}
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ files

    def _path(self, prefix: str, gen: int) -> Path:
        return self.dir / f"{prefix}{gen:06d}"

    def _scan(self) -> tuple[list[int], list[int]]:
        snaps: list[int] = []
        segs: list[int] = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            names = []
        for name in names:
            m = _FILE.fullmatch(name)
            if m:
                (snaps if m.group(1) == "snap" else segs).append(int(m.group(2)))
        snaps.sort()
        segs.sort()
        if segs and segs[-1] > 0 and segs[-1] not in snaps and segs[-1] > max(snaps, default=-1):
            if self._file_size(SEG, segs[-1]) == 0:
                segs.pop()  # created by a snapshot that a crash stopped before its rename
        return snaps, segs

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------ reading

    def _read_snapshot(self, gen: int, cache: dict) -> tuple[dict, dict, set[str], dict]:
        name = f"{SNAP}{gen:06d}"
        try:
            data = self._path(SNAP, gen).read_bytes()
        except OSError as exc:
            raise _Bad(f"{name}: unreadable ({exc.strerror})", name, None, "unreadable") from None
        rr = read_records(data, name)
        if rr.warning:
            raise _Bad(rr.warning.split(";")[0], name, rr.valid_end, "damaged")
        if len(rr.payloads) != 1 or rr.valid_end != len(data):
            at = rr.valid_end if rr.payloads == [] else rr.offsets[-1]
            raise _Bad(f"{name}: incomplete snapshot at offset {at}", name, at, "incomplete")
        refs: set[str] = set()
        try:
            obj = loads(rr.payloads[0])
            if obj.get("gen") != gen or not isinstance(obj.get("state"), dict):
                raise ValueError("unexpected content")
            state = self.blobs.resolve(obj["state"], refs, cache)
            puts = self.blobs.resolve(obj.get("puts", {}), refs, cache)
        except (ValueError, AttributeError, MissingBlob) as exc:
            raise _Bad(f"{name}: unreadable snapshot ({exc})", name, 0, str(exc)) from None
        history = obj.get("history")
        return state, history if isinstance(history, dict) else {}, refs, puts

    def _read_segment(
        self, gen: int, cache: dict, stats: _Gen, out: list[dict]
    ) -> tuple[tuple[int, str] | None, int, int | None]:
        """Append the segment's valid records to out: (damage, bytes, trim_to),
        damage being (offset, reason) of the first record that cannot be used."""
        name = f"{SEG}{gen:06d}"
        data = self._path(SEG, gen).read_bytes()
        rr = read_records(data, name)
        for payload, offset in zip(rr.payloads, rr.offsets, strict=True):
            try:
                record = loads(payload)
                if _MARKERS.search(payload):  # most records hold no reference: skip the walk
                    record = self.blobs.resolve(record, stats.refs, cache)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, MissingBlob) as exc:
                return (offset, f"unreadable record: {exc}"), offset, None
            out.append(record)
            if record.get("k") == "ckpt":
                stats.ckpts += 1
        if rr.warning:
            reason = rr.warning.split(" at offset ")[0].removeprefix(f"{name}: ")
            return (rr.valid_end, reason), rr.valid_end, None
        return None, rr.valid_end, rr.valid_end if rr.torn else None

    def _lost_after(self, gen: int, offset: int | None, newest: int) -> tuple[list[dict], int]:
        """Readable records past a damage point in segment gen, later segments included."""
        lost: list[dict] = []
        unreadable = 1
        if offset is not None:
            try:
                lost, unreadable = scan(self._path(SEG, gen).read_bytes(), offset)
            except OSError:
                pass
        for later in range(gen + 1, newest + 1):
            try:
                lost += records_of(self._path(SEG, later).read_bytes())
            except OSError:
                continue
        return lost, unreadable

    def _read_chain(self, newest: int | None = None) -> _Chain:
        """The newest readable snapshot at or below ``newest`` and the records
        of every segment from it up to ``newest`` (pure: changes nothing)."""
        snaps, segs = self._scan()
        top = max(snaps + segs)
        newest = top if newest is None else newest
        snaps = [g for g in snaps if g <= newest]
        chain = _Chain()
        cache: dict[str, bytes] = {}
        history: dict = {}
        refs: set[str] = set()
        first_bad: _Bad | None = None
        for gen in reversed(snaps):
            try:
                chain.snapshot, history, refs, chain.puts = self._read_snapshot(gen, cache)
            except _Bad as exc:
                first_bad = first_bad or exc
                chain.warnings.append(f"{exc}; falling back to an older snapshot and the log")
                continue
            chain.base = gen
            break
        if chain.base is None:
            if 0 not in segs:
                bad = first_bad
                damage = Damage(
                    self.dir / (bad.name if bad else f"{SEG}000000"),
                    bad.offset if bad else None,
                    bad.reason if bad else "missing",
                )
                raise DamagedLog(self._unreadable(chain.warnings), damage)
            chain.base = 0
        present = set(snaps) | set(segs)
        for key, info in history.items():
            try:
                if int(key) in present:
                    chain.stats[int(key)] = _Gen(int(info["ckpts"]), set(info["refs"]))
            except (ValueError, TypeError, KeyError):
                continue
        chain.stats[chain.base] = _Gen(0, refs)
        for gen in range(chain.base, newest + 1):
            name = f"{SEG}{gen:06d}"
            if gen not in segs:
                if gen == newest == 0:
                    continue  # generation 0's log is not created yet
                chain.warnings.append(f"{name}: missing; recovery stops at generation {gen}")
                lost, _ = self._lost_after(gen, None, top)
                chain.damage = Damage(self.dir / name, None, "missing", lost, 1)
                break
            try:
                bad, size, trim_to = self._read_segment(
                    gen, cache, chain.stats.setdefault(gen, _Gen()), chain.records
                )
            except OSError as exc:
                bad, size, trim_to = (0, f"unreadable ({exc.strerror})"), 0, None
            chain.appended += size
            if bad is None and trim_to is not None and gen != top:
                bad = (trim_to, "ends inside a record, yet a later generation follows it")
            if bad is not None:
                offset, reason = bad
                chain.warnings.append(
                    f"{name}: {reason} at offset {offset}; recovery stops at the last good record"
                )
                lost, unreadable = self._lost_after(gen, offset, top)
                chain.damage = Damage(self.dir / name, offset, reason, lost, unreadable)
                break
            if gen == top:
                chain.trim_to = trim_to
        for record in chain.records:
            kind = record.get("k")
            if kind == "put":
                chain.puts[record.get("id")] = record.get("data")
            elif kind == "forget":
                chain.puts[record.get("id")] = None
        return chain

    def load(self) -> Loaded:
        """Newest valid snapshot + the records after it (read-only)."""
        with self._mutex:
            self._close_segment()
            self._loaded = True
            self._trim_to = None
            snaps, segs = self._scan()
            if not snaps and not segs:
                self._gen, self._appended, self._snap_size = 0, 0, 0
                self._stats, self._puts = {}, {}
                self._needs_snapshot = False
                if (self.dir / "meta.json").exists():  # started once: its log was removed
                    self._needs_snapshot = True
                    reason = "no readable log: its log files are missing (meta.json is there)"
                    damage = Damage(self.dir, None, reason)
                    warning = f"{self.dir}: {reason}"
                    return Loaded(None, [], 0, [warning], False, True, damage)
                return Loaded(None, [], 0, [], False)
            self._needs_snapshot = True  # until this load succeeds
            chain = self._read_chain()
            assert chain.base is not None
            if chain.snapshot is None and not chain.records and chain.damage is not None:
                raise DamagedLog(self._unreadable(chain.warnings), chain.damage)
            newest = max(snaps + segs)
            rebuilt = chain.base != newest
            self._gen = newest
            self._stats = chain.stats
            self._puts = chain.puts
            self._appended = chain.appended
            self._trim_to = chain.trim_to
            self._snap_size = self._file_size(SNAP, chain.base) if chain.base in snaps else 0
            self._needs_snapshot = chain.damage is not None or rebuilt
            return Loaded(
                chain.snapshot,
                chain.records,
                chain.base,
                chain.warnings,
                rebuilt,
                self._needs_snapshot,
                chain.damage,
                dict(chain.puts),
            )

    def load_generation(self, gen: int) -> Loaded:
        """What recovery would have read when ``gen`` was the newest generation
        (for loading an older checkpoint; read-only, changes nothing)."""
        with self._mutex:
            snaps, segs = self._scan()
            if not snaps and not segs:
                return Loaded(None, [], 0, [], False)
            chain = self._read_chain(gen)
            assert chain.base is not None
            return Loaded(
                chain.snapshot,
                chain.records,
                chain.base,
                chain.warnings,
                chain.base != gen,
                chain.damage is not None,
                chain.damage,
                dict(chain.puts),
            )

    def _unreadable(self, warnings: list[str]) -> str:
        detail = f" ({'; '.join(w.split(';')[0] for w in warnings)})" if warnings else ""
        return f"no readable checkpoint data in {self.dir}{detail}"

    def _file_size(self, prefix: str, gen: int) -> int:
        try:
            return self._path(prefix, gen).stat().st_size
        except FileNotFoundError:
            return 0

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    # ------------------------------------------------------------ writing

    def _segment_fd(self) -> int:
        if self._fd is None:
            path = self._path(SEG, self._gen)
            existed = path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if self._trim_to is not None:
                os.ftruncate(fd, self._trim_to)  # drop the torn tail before appending
                if self.fsync:
                    os.fsync(fd)
                self._trim_to = None
            self._seg_size = os.fstat(fd).st_size
            if not existed and self.fsync:
                fsync_dir(self.dir)
            self._fd = fd
        return self._fd

    def append(self, record: dict, *, sync: bool = False) -> None:
        """Append one record; with sync it is on disk when this returns."""
        with self._mutex:
            self._ensure_loaded()
            if self._needs_snapshot:
                raise StorageError(
                    f"execution {self.execution_id}: write a fresh snapshot before appending "
                    "(recovery did not end at the end of the log)"
                )
            data = dumps(record)
            if len(data) > INLINE_MAX or _MARKERS.search(data):
                ext, refs = self.blobs.externalize(record)
                data = dumps(ext)
            else:  # nothing in it can be large: no walk needed
                refs = set()
            frame = encode_record(data)
            fd = self._segment_fd()
            start = self._seg_size
            try:
                view = memoryview(frame)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                os.ftruncate(fd, start)  # never leave half a record before the next one
                raise StorageError(f"cannot append to {self._path(SEG, self._gen)}: {exc}") from exc
            self._seg_size = start + len(frame)
            self._appended += len(frame)
            stats = self._stats.setdefault(self._gen, _Gen())
            stats.refs |= refs
            kind = record.get("k")
            if kind == "ckpt":
                stats.ckpts += 1
            elif kind == "put":
                self._puts[record["id"]] = record.get("data")
            elif kind == "forget":
                self._puts[record["id"]] = None  # remembered, so compaction keeps it forgotten
            if sync and self.fsync:
                os.fdatasync(fd)

    def sync(self) -> None:
        with self._mutex:
            if self._fd is not None and self.fsync:
                os.fdatasync(self._fd)

    def should_snapshot(self) -> bool:
        """Time for a snapshot: keeps recovery cost at most about twice a snapshot."""
        with self._mutex:
            self._ensure_loaded()
            return self._needs_snapshot or self._appended >= max(MIN_SNAPSHOT_GAP, self._snap_size)

    def write_snapshot(self, state: dict, *, checkpoints: int = 0) -> None:
        """Start a new generation from state, then apply retention.

        checkpoints is accepted for callers that count; the log counts the
        "ckpt" records itself.
        """
        with self._mutex:
            self._ensure_loaded()
            if self._fd is not None:
                if self.fsync:  # the fallback chain needs the whole segment on disk
                    os.fdatasync(self._fd)
                self._close_segment()
            elif self._trim_to is not None:
                path = self._path(SEG, self._gen)
                if path.exists():
                    os.truncate(path, self._trim_to)
            self._trim_to = None
            snaps, segs = self._scan()
            new = max(snaps + segs + [self._gen]) + 1
            ext, refs = self.blobs.externalize(state)
            payload = {"format": SNAPSHOT_FORMAT, "gen": new, "state": ext}
            if self._puts:  # saver-protocol checkpoints outlive the records that stored them
                payload["puts"], more = self.blobs.externalize(self._puts)
                refs |= more
            self._stats[new] = _Gen(0, set(refs))
            present = sorted(set(snaps) | set(segs) | {new})
            doomed = self._victims(present)
            payload["history"] = {
                str(g): {"ckpts": s.ckpts, "refs": sorted(s.refs)}
                for g, s in sorted(self._stats.items())
                if g < new and g in present and g not in doomed
            }
            data = encode_record(dumps(payload))
            # The segment exists before its snapshot does, so that a snapshot
            # without its segment means the segment was lost, not never written.
            fd = os.open(self._path(SEG, new), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                if self.fsync:
                    fsync_dir(self.dir)
                write_atomic(self._path(SNAP, new), data, self.fsync)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._seg_size = fd, os.fstat(fd).st_size
            self._gen = new
            self._appended = 0
            self._snap_size = len(data)
            self._needs_snapshot = False
            self._drop(doomed)

    def retain(self, keep_last_n: int | None = None) -> int:
        """Apply retention now (the owner, or a holder of the lock); returns the
        number of generations removed. Nothing goes while damage is unrepaired."""
        with self._mutex:
            self._ensure_loaded()
            if self._needs_snapshot:
                return 0
            snaps, segs = self._scan()
            doomed = self._victims(sorted(set(snaps) | set(segs)), keep_last_n)
            self._drop(doomed)
            return len(doomed)

    # ------------------------------------------------------------ retention

    def _victims(self, present: list[int], keep_last_n: int | None = None) -> list[int]:
        """Oldest generations that can go: the rest still hold keep_last_n
        checkpoints and at least two generations remain."""
        keep = self.keep_last_n if keep_last_n is None else max(0, keep_last_n)
        kept = list(present)
        doomed: list[int] = []
        while len(kept) > 2:
            held = sum(self._stats.get(g, _Gen()).ckpts for g in kept[1:])
            if held < keep:
                break
            doomed.append(kept.pop(0))
        return doomed

    def _drop(self, doomed: list[int]) -> int:
        """Delete whole generations and the blobs only they used; returns blobs removed."""
        freed: set[str] = set()
        for gen in doomed:
            for prefix in (SNAP, SEG):
                self._path(prefix, gen).unlink(missing_ok=True)
            stats = self._stats.pop(gen, None)
            if stats:
                freed |= stats.refs
        if not freed:
            return 0
        for stats in self._stats.values():
            freed -= stats.refs
        for sha in freed:
            self.blobs.remove(sha)
        return len(freed)

    # ------------------------------------------------------------ metadata, lock

    def read_meta(self) -> dict | None:
        try:
            data = (self.dir / "meta.json").read_bytes()
        except FileNotFoundError:
            return None
        try:
            meta = loads(data)
        except ValueError:
            raise StorageError(f"{self.dir / 'meta.json'} is not valid JSON") from None
        return meta if isinstance(meta, dict) else None

    def write_meta(self, meta: dict) -> None:
        write_atomic(self.dir / "meta.json", dumps(meta), self.fsync)

    def lock(self) -> None:
        """Become the owner; the lock dies with the process (no stale leases)."""
        with self._mutex:
            if self._lock_fd is not None:
                return
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ExecutionLocked(
                    f"execution ID {self.execution_id} is in use by process {pid}"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._lock_fd = fd
            with _OWNERS_LOCK:
                _OWNERS[os.path.realpath(self.dir)] = self
            self._remove_tmp()

    def _remove_tmp(self) -> int:
        removed = 0
        for folder in (self.dir, self.blobs.dir):
            if folder.is_dir():
                for path in folder.glob("*.tmp"):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None and self.fsync:
                os.fdatasync(self._fd)
            self._close_segment()
            if self._lock_fd is not None:
                with _OWNERS_LOCK:
                    key = os.path.realpath(self.dir)
                    if _OWNERS.get(key) is self:
                        del _OWNERS[key]
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # ------------------------------------------------------------ inspection

    def disk_usage(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def _all_records(self, refs: set[str]) -> list[dict]:
        """Valid records of every retained segment, oldest first; collects blob refs."""
        out: list[dict] = []
        cache: dict[str, bytes] = {}
        for gen in self._scan()[1]:
            stats = _Gen()
            try:
                self._read_segment(gen, cache, stats, out)
            except OSError:
                continue
            refs |= stats.refs
        return out

    def checkpoints(self) -> list[tuple[int, int]]:
        """(number, generation) of every retained "ckpt" record that
        load_generation(generation) can rebuild, oldest first."""
        with self._mutex:
            snaps, segs = self._scan()
            out: list[tuple[int, int]] = []
            cache: dict[str, bytes] = {}
            reachable = False  # the state at the start of this generation is known
            for gen in segs:
                if not reachable or gen - 1 not in segs:
                    reachable = gen == 0
                if not reachable and gen in snaps:
                    try:
                        self._read_snapshot(gen, cache)
                        reachable = True
                    except _Bad:
                        pass
                if not reachable:
                    continue
                records: list[dict] = []
                try:
                    bad, _, trim_to = self._read_segment(gen, cache, _Gen(), records)
                except OSError:
                    bad, trim_to = (0, "unreadable"), None
                out += [(r["n"], gen) for r in records if r.get("k") == "ckpt" and "n" in r]
                reachable = bad is None and trim_to is None
            return out

    def checkpoint_records(self) -> list[dict]:
        """Retained "ckpt" records, oldest first (for listing, not recovery)."""
        with self._mutex:
            return [r for r in self._all_records(set()) if r.get("k") == "ckpt"]

    def referenced_blobs(self) -> set[str]:
        """Every blob a readable snapshot or record of this execution uses."""
        refs: set[str] = set()
        self._all_records(refs)
        for gen in self._scan()[0]:
            try:
                refs |= self._read_snapshot(gen, {})[2]
            except _Bad:
                continue
        return refs


def list_executions(base_path: str | Path) -> list[str]:
    base = Path(base_path)
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        folder = base / name
        if not _ID.fullmatch(name) or not folder.is_dir():
            continue
        if any(_FILE.fullmatch(n) or n == "meta.json" for n in os.listdir(folder)):
            out.append(name)
    return out


def delete_execution(base_path: str | Path, execution_id: str) -> None:
    """Remove an execution; refused while a live process owns it."""
    log = ExecutionLog(base_path, execution_id, create=False)
    log.lock()
    try:
        shutil.rmtree(log.dir)
    finally:
        log.close()


def gc(base_path: str | Path, *, keep_last_n: int, only: str | None = None) -> dict:
    """Offline clean-up of every execution not in use (or just ``only``); returns counts."""
    counts: dict[str, int] = dict.fromkeys(
        "executions generations_removed blobs_removed torn_tails_trimmed tmp_removed "
        "skipped_in_use skipped_damaged bytes_freed".split(),
        0,
    )
    for execution_id in list_executions(base_path):
        if only is not None and execution_id != only:
            continue
        log = ExecutionLog(base_path, execution_id, keep_last_n=keep_last_n, create=False)
        try:
            log.lock()
        except ExecutionLocked:
            counts["skipped_in_use"] += 1
            continue
        try:
            counts["executions"] += 1
            before = log.disk_usage()
            counts["tmp_removed"] += log._remove_tmp()
            try:
                loaded = log.load()
            except StorageError:
                counts["skipped_damaged"] += 1
                continue
            if loaded.needs_snapshot:
                counts["skipped_damaged"] += 1  # keep everything a repair might need
                continue
            if log._trim_to is not None:
                os.truncate(log._path(SEG, log._gen), log._trim_to)
                log._trim_to = None
                counts["torn_tails_trimmed"] += 1
            counts["generations_removed"] += log.retain()
            used = log.referenced_blobs()
            for sha in sorted(log.blobs.names() - used):
                log.blobs.remove(sha)
                counts["blobs_removed"] += 1
            counts["bytes_freed"] += max(0, before - log.disk_usage())
        finally:
            log.close()
    return counts
