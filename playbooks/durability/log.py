"""The per-execution checkpoint log: snapshots, append-only segments, blobs.

Layout of <base>/<execution_id>/ (0700, files 0600):
  snap-GGGGGG   compacted state that starts generation G (written atomically)
  log-GGGGGG    records appended after snapshot G (generation 0 has no snapshot);
                created before its snapshot, so a snapshot without it means it was lost;
                the newest has zeros reserved past its last record while open (segment.py)
  blobs/        large values, stored once by content hash
  meta.json     small metadata for listing
  lock          owner lock (flock), holds the owner's pid

Recovery reads the newest valid snapshot plus the records after it, so its cost
is bounded by the snapshot policy, not by the length of the history. Retention
keeps at least two generations so that a lost newest snapshot can be rebuilt
from the previous one and the log. Damage that stops recovery before the end
of what was written is reported (``Loaded.damage``), never silently skipped:
the owner refuses it unless told to roll back (see CheckpointManager.open).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from playbooks.durability.blobs import (
    INLINE_MAX,
    BlobStore,
    dumps,
    fsync_dir,
    loads,
    write_atomic,
)
from playbooks.durability.chain import (
    _FILE,
    _MARKERS,
    SEG,
    SNAP,
    ChainReader,
    DamagedLog,
    Loaded,
    StorageError,
    _Bad,
    _Gen,
    retention_victims,
)
from playbooks.durability.damage import Damage
from playbooks.durability.records import encode_record
from playbooks.durability.rollover import Rollover
from playbooks.durability.segment import Segment

__all__ = ["DamagedLog", "ExecutionLocked", "ExecutionLog", "Loaded", "StorageError"]

MIN_SNAPSHOT_GAP = 64 * 1024  # bytes of records between snapshots, at least
SNAPSHOT_FORMAT = 1
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


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


def record_payload(log: Any, record: dict) -> tuple[bytes, set[str] | frozenset[str]]:
    """A record's bytes for the log, large values moved to the log's blobs, and the
    blobs it refers to; refused while recovery still owes a fresh snapshot."""
    if log._needs_snapshot:
        raise StorageError(
            f"execution {log.execution_id}: write a fresh snapshot before appending "
            "(recovery did not end at the end of the log)"
        )
    data = dumps(record)
    if len(data) > INLINE_MAX or (b'"__' in data and _MARKERS.search(data)):
        ext, refs = log.blobs.externalize(record)
        return dumps(ext), refs
    return data, _NO_REFS  # nothing in it can be large: no walk needed


_NO_REFS: frozenset[str] = frozenset()


#: Logs owned (locked) by this process, by folder: the saver protocol writes
#: through the owner instead of opening a second writer on the same files.
_OWNERS: dict[str, ExecutionLog] = {}
_OWNERS_LOCK = threading.Lock()


def owner_in_process(base_path: str | Path, execution_id: str) -> ExecutionLog | None:
    """The log of this process that owns the execution, if one does."""
    key = os.path.realpath(Path(base_path) / validate_execution_id(execution_id))
    with _OWNERS_LOCK:
        return _OWNERS.get(key)


class ExecutionLog(ChainReader):
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
        self._seg: Segment | None = None  # the newest segment, once opened for appends
        self._trim_to: int | None = None  # torn tail of the newest segment, cut on reopen
        self._appended = 0
        self._snap_size = 0
        self._needs_snapshot = False
        self._stats: dict[int, _Gen] = {}
        self._puts: dict[str, Any] = {}
        self._lock_fd: int | None = None
        self._rollover: Rollover | None = None  # the last snapshot's syncs, if still running

    # ------------------------------------------------------------ files

    def _close_segment(self, sync: bool = False) -> None:
        """Close the open segment, its reserved zeros cut off (synced with ``sync``)."""
        try:
            self._settle_rollover()
        finally:  # a failed rollover is raised; the segment is closed all the same
            fd = self._release_segment()
            if fd is not None:
                try:
                    if sync and self.fsync:
                        os.fdatasync(fd)
                finally:
                    os.close(fd)

    def _release_segment(self) -> int | None:
        """The open segment's descriptor, no longer the log's, cut at its last record."""
        seg, self._seg = self._seg, None
        return None if seg is None else seg.release()

    def _rollover_durable(self) -> None:
        """Wait until records of the new generation can be synced (rollover.py)."""
        assert self._rollover is not None
        self._rollover.durable.wait()
        if self._rollover.durable_failed:
            self._settle_rollover()  # raises it

    def _settle_rollover(self) -> None:
        """Wait for the last snapshot's syncs (see rollover.py), then remove the
        blobs that only the generations it dropped used."""
        job, self._rollover = self._rollover, None
        if job is None:
            return
        job.join()
        job.close()
        self._remove_blobs(job.freed)
        if job.error is not None:
            self._needs_snapshot = True
            raise StorageError(f"cannot write {job.snapshot}: {job.error}") from job.error

    # ------------------------------------------------------------ reading

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
            self._settle_rollover()
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

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    # ------------------------------------------------------------ writing

    def _segment(self) -> Segment:
        if self._seg is None:
            seg = Segment(self._path(SEG, self._gen), trim_to=self._trim_to, fsync=self.fsync)
            self._trim_to = None
            if seg.created and self.fsync:
                fsync_dir(self.dir)
            self._seg = seg
        return self._seg

    def append(self, record: dict, *, sync: bool = False) -> None:
        """Append one record; with sync it is on disk when this returns."""
        with self._mutex:
            if not self._loaded:
                self.load()
            if sync and self._rollover is not None:  # the generation it goes to, on disk first
                self._rollover_durable()
            data, refs = record_payload(self, record)
            frame = encode_record(data)
            seg = self._seg or self._segment()
            try:
                seg.write(frame)
            except OSError as exc:
                raise StorageError(f"cannot append to {self._path(SEG, self._gen)}: {exc}") from exc
            self._appended += len(frame)
            stats = self._stats.get(self._gen)
            if stats is None:
                stats = self._stats[self._gen] = _Gen()
            if refs:
                stats.refs |= refs
            kind = record.get("k")
            if kind == "ckpt" or "ck" in record:  # an await may carry a checkpoint
                stats.ckpts += 1
            elif kind == "put":
                self._puts[record["id"]] = record.get("data")
            elif kind == "forget":
                self._puts[record["id"]] = None  # remembered, so compaction keeps it forgotten
            if sync and self.fsync:
                os.fdatasync(seg.fd)

    def sync(self) -> None:
        with self._mutex:
            if self._rollover is not None:
                self._rollover_durable()
            if self._seg is not None and self.fsync:
                os.fdatasync(self._seg.fd)

    def wait(self) -> None:
        """Wait for the background work of the last snapshot (rollover.py)."""
        with self._mutex:
            self._settle_rollover()

    def settle(self) -> None:
        """Nothing to do: an appended record is in the kernel's page cache already."""

    def should_snapshot(self) -> bool:
        """Time for a snapshot: keeps recovery cost at most about twice a snapshot.

        Asked after every statement. (It does not hand the GIL to a running
        rollover: each hand-over cost this thread two wake-ups, about 4 µs per
        await on average, while a sync that needs the rollover waits for it
        without the GIL anyway.)"""
        if not self._loaded:  # no lock once loaded
            with self._mutex:
                self._ensure_loaded()
        return self._needs_snapshot or self._appended >= max(MIN_SNAPSHOT_GAP, self._snap_size)

    def write_snapshot(self, state: dict, *, checkpoints: int = 0) -> None:
        """Start a new generation from state, then apply retention.

        Returns once appends go to the new generation; its syncs run beside
        them (rollover.py): ``sync()`` waits for the part a synced record
        needs, ``wait()`` and ``close()`` for all of it. Until then a reader
        rebuilds the same state from the snapshot before: a snapshot is the
        state its records led to. checkpoints is accepted for callers that
        count; the log counts the "ckpt" records itself.
        """
        with self._mutex:
            self._ensure_loaded()
            self._settle_rollover()
            if self._seg is None and self._trim_to is not None:
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
            old = self._release_segment()  # synced by the rollover: the fallback chain needs it
            seg = None
            try:
                seg = Segment(self._path(SEG, new), fsync=self.fsync)
                self._rollover = Rollover.begin(
                    old,
                    self._path(SNAP, new),
                    data,
                    fsync=self.fsync,
                    doomed=[self._path(p, g) for g in doomed for p in (SNAP, SEG)],
                    freed=self._forget(doomed),
                )
            except BaseException:
                for fd in (old, None if seg is None else seg.fd):
                    if fd is not None:
                        os.close(fd)
                raise
            repair = self._needs_snapshot
            self._seg = seg
            self._gen = new
            self._appended = 0
            self._snap_size = len(data)
            self._needs_snapshot = False
            if repair:  # its records may not rebuild a repaired state: no window then
                self._settle_rollover()

    def retain(self, keep_last_n: int | None = None) -> int:
        """Apply retention now (the owner, or a holder of the lock); returns the
        number of generations removed. Nothing goes while damage is unrepaired."""
        with self._mutex:
            self._ensure_loaded()
            self._settle_rollover()
            if self._needs_snapshot:
                return 0
            snaps, segs = self._scan()
            doomed = self._victims(sorted(set(snaps) | set(segs)), keep_last_n)
            self._drop(doomed)
            return len(doomed)

    # ------------------------------------------------------------ retention

    def _victims(self, present: list[int], keep_last_n: int | None = None) -> list[int]:
        keep = self.keep_last_n if keep_last_n is None else max(0, keep_last_n)
        return retention_victims(present, self._stats, keep)

    def _drop(self, doomed: list[int]) -> int:
        """Delete whole generations and the blobs only they used; returns blobs removed."""
        freed = self._forget(doomed)
        for gen in doomed:
            for prefix in (SNAP, SEG):
                self._path(prefix, gen).unlink(missing_ok=True)
        return self._remove_blobs(freed)

    def _forget(self, doomed: list[int]) -> set[str]:
        """Stop counting dropped generations; returns the blobs they used."""
        freed: set[str] = set()
        for gen in doomed:
            stats = self._stats.pop(gen, None)
            if stats:
                freed |= stats.refs
        return freed

    def _remove_blobs(self, freed: set[str]) -> int:
        """Remove those of ``freed`` that no retained generation uses (counted now:
        a record appended since may use one again)."""
        if not freed:
            return 0
        freed = set(freed)
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
            try:
                self._close_segment(sync=True)
            finally:
                if self._lock_fd is not None:
                    with _OWNERS_LOCK:
                        key = os.path.realpath(self.dir)
                        if _OWNERS.get(key) is self:
                            del _OWNERS[key]
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

    # ------------------------------------------------------------ inspection

    def disk_usage(self) -> int:
        """Bytes of the execution's files, less the zeros this log has reserved."""
        self.wait()
        total = -self._seg.spare if self._seg is not None else 0
        for root, _dirs, files in os.walk(self.dir):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def _all_records(self, refs: set[str]) -> list[dict]:
        """Valid records of every retained segment, oldest first; collects blob refs."""
        self.wait()
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
        with self._mutex:
            self._settle_rollover()
            return super().checkpoints()

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
