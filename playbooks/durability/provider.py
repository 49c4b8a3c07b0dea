"""Where checkpoints live: the filesystem provider.

The provider owns the storage settings and opens one :class:`ExecutionLog`
per execution. Its ``*_checkpoint`` methods are the small, seed-compatible
saver protocol (save / load / list / delete / cleanup) built on that log.
The rest is what workers and the command line need from any store: the
person's durable inbox, which executions a worker may claim, a way to wait
for work, who owns an execution, and its size.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import log as logmod
from . import serialization
from .blobs import dumps, fsync_dir, loads
from .records import encode_record, read_records
from .state import ExecutionState

#: Per-execution files of the inbox: checksummed records, and the writers' lock.
INBOX, INBOX_LOCK = "inbox", "inbox.lock"
#: Touched (under the base path) whenever work may have appeared for a worker.
WAKE = ".wake"
ENDED = ("finished", "failed")


def split_checkpoint_id(checkpoint_id: str) -> tuple[str, int]:
    execution_id, sep, number = checkpoint_id.rpartition("_ckpt_")
    if not sep or not number.isdigit():
        raise ValueError(f"not a checkpoint id: {checkpoint_id!r} (expected EXECUTION_ckpt_N)")
    return logmod.validate_execution_id(execution_id), int(number)


class FilesystemCheckpointProvider:
    """Append-only logs and snapshots under ``base_path``, one folder per execution."""

    def __init__(
        self,
        base_path: str | os.PathLike[str] = ".checkpoints",
        *,
        fsync: bool = True,
        keep_last_n: int = 10,
        allow_pickle: bool = False,
    ) -> None:
        self.base_path = Path(base_path)
        self.fsync = fsync
        self.keep_last_n = keep_last_n
        self.allow_pickle = allow_pickle
        self.pickle_key = os.environ.get("PLAYBOOKS_PICKLE_KEY", "").encode() or None
        if allow_pickle and not self.pickle_key:
            raise logmod.StorageError(
                "allow_pickle is on but PLAYBOOKS_PICKLE_KEY is not set: pickles are signed with it"
            )

    def open_log(self, execution_id: str, *, create: bool = True) -> logmod.ExecutionLog:
        return logmod.ExecutionLog(
            self.base_path,
            execution_id,
            fsync=self.fsync,
            keep_last_n=self.keep_last_n,
            create=create,
        )

    def codec(self) -> dict[str, Any]:
        return {"allow_pickle": self.allow_pickle, "pickle_key": self.pickle_key}

    def list_executions(self) -> list[str]:
        return logmod.list_executions(self.base_path)

    def delete_execution(self, execution_id: str) -> None:
        logmod.delete_execution(self.base_path, execution_id)

    def read_meta(self, execution_id: str) -> dict | None:
        return self.open_log(execution_id, create=False).read_meta()

    def describe(self) -> str:
        """Where executions are stored, for messages."""
        return str(self.base_path)

    # -- the person's durable inbox ------------------------------------------
    # Appends take a lock of their own, never the execution's: a reply can be
    # written while a worker runs the execution. A reader needs no lock: a
    # record being written is a torn tail, and a torn tail is ignored.

    def _folder(self, execution_id: str) -> Path:
        folder = self.base_path / logmod.validate_execution_id(execution_id)
        if not folder.is_dir():
            raise logmod.StorageError(f"no execution {execution_id} in {self.base_path}")
        return folder

    def append_inbox(self, execution_id: str, message: dict) -> None:
        """Append one message durably (fsynced unless ``fsync`` is off)."""
        folder = self._folder(execution_id)
        path = folder / INBOX
        frame = encode_record(dumps(message))
        lock = os.open(folder / INBOX_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                found = read_records(_read_all(fd), str(path))
                if found.warning is not None:
                    raise logmod.StorageError(found.warning)
                if found.torn:  # a writer died mid-record: cut it before appending
                    os.ftruncate(fd, found.valid_end)
                view = memoryview(frame)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
                    if created:
                        fsync_dir(folder)
            finally:
                os.close(fd)
        finally:
            os.close(lock)
        self.wake()

    def read_inbox(self, execution_id: str) -> list[dict]:
        """Every message of the inbox, oldest first (a torn tail left out)."""
        path = self._folder(execution_id) / INBOX
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        found = read_records(data, str(path))
        if found.warning is not None:
            raise logmod.StorageError(found.warning)
        return [loads(payload) for payload in found.payloads]

    # -- what a worker may claim -----------------------------------------------

    def wake(self) -> None:
        """Tell waiting workers that work may have appeared."""
        try:
            self.base_path.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self.base_path / WAKE, "ab") as handle:
                # the size changes at every wake (mtimes can be too coarse)
                if handle.tell() >= 4096:
                    handle.truncate(0)
                handle.write(b".")
        except OSError:
            pass  # workers fall back on their poll interval

    def _wake_mark(self) -> tuple[int, int]:
        marks = []
        for path in (self.base_path / WAKE, self.base_path):
            try:
                st = os.stat(path)
                marks.append(st.st_mtime_ns ^ st.st_size)
            except OSError:
                marks.append(0)
        return marks[0], marks[1]

    def wait_for_work(self, timeout: float) -> None:
        """Return when work may have appeared (a run queued, a reply written: the
        wake file or the folder changed) or after ``timeout`` seconds."""
        start, deadline = self._wake_mark(), time.monotonic() + max(0.0, timeout)
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.05, left))
            if self._wake_mark() != start:
                return

    def runnable(self, limit: int) -> list[str]:
        """Executions a worker may try to claim, oldest first: queued (a detached
        run), unfinished and owned by no live process, or waiting for a reply
        that is now in the inbox. Only executions that carry their program can
        run anywhere. A claim may still fail: another worker can be quicker."""
        found: list[tuple[float, str]] = []
        table = _lock_table()  # read once: every execution is checked against it
        for execution_id in self.list_executions():
            try:
                meta = self.read_meta(execution_id) or {}
                if not meta.get("source") or meta.get("status") in ENDED:
                    continue
                if lock_owner(self.base_path / execution_id, table) is not None:
                    continue
                if meta.get("status") == "waiting":
                    if len(self.read_inbox(execution_id)) <= int(meta.get("inbox_read") or 0):
                        continue
            except (logmod.StorageError, OSError, ValueError):
                continue
            found.append((float(meta.get("created") or 0), execution_id))
        return [execution_id for _, execution_id in sorted(found)[: max(0, limit)]]

    # -- inspection ----------------------------------------------------------

    def owner(self, execution_id: str) -> int | None:
        """The pid of the live process that owns the execution, or None."""
        return lock_owner(self.base_path / execution_id)

    def last_write(self, execution_id: str) -> float | None:
        """When anything of the execution was last written (its newest file)."""
        newest = None
        for root, _dirs, files in os.walk(self.base_path / execution_id):
            for name in files:
                try:
                    mtime = os.lstat(os.path.join(root, name)).st_mtime
                except OSError:
                    continue
                newest = mtime if newest is None else max(newest, mtime)
        return newest

    def disk_usage(self, execution_id: str) -> int:
        return self.open_log(execution_id, create=False).disk_usage()

    def checkpoint_records(self, execution_id: str) -> list[dict]:
        """Retained checkpoint records, oldest first (for listing)."""
        return self.open_log(execution_id, create=False).checkpoint_records()

    def gc(self, keep_last_n: int) -> dict:
        """Retention and unused blobs for every execution not in use; returns counts."""
        return logmod.gc(self.base_path, keep_last_n=keep_last_n)

    # -- the saver protocol ------------------------------------------------
    # One storage story: these methods read and write the execution's own log,
    # the one the runtime appends to. Writes go through the owner: the log this
    # process already holds the lock on, or the lock taken for the call (a
    # live owner in another process refuses it with ExecutionLocked).

    @contextmanager
    def _writer(self, execution_id: str, *, create: bool = False) -> Iterator[logmod.ExecutionLog]:
        owner = logmod.owner_in_process(self.base_path, execution_id)
        if owner is not None:
            yield owner
            return
        log = self.open_log(execution_id, create=create)
        try:
            log.lock()
            loaded = log.load()
            if loaded.damage is not None:
                raise logmod.DamagedLog(
                    f"execution {execution_id}: {loaded.damage.where()}; "
                    "resume it (see --accept-rollback) before changing its checkpoints",
                    loaded.damage,
                )
            if loaded.needs_snapshot:  # rebuilt from an older snapshot: make it current
                log.write_snapshot(replay_until(loaded, None).to_snapshot())
            yield log
        finally:
            log.close()

    async def save_checkpoint(
        self,
        checkpoint_id: str,
        execution_state: dict[str, Any],
        namespace: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None:
        """Store a whole checkpoint given by the caller (the runtime writes deltas
        instead); it is carried into every snapshot, so compaction keeps it."""
        execution_id, _ = split_checkpoint_id(checkpoint_id)
        data = {
            "checkpoint_id": checkpoint_id,
            "execution_state": execution_state,
            "namespace": namespace,
            "metadata": metadata,
        }
        encoded = serialization.encode(data, "$checkpoint", **self.codec())
        with self._writer(execution_id, create=True) as log:
            log.append({"k": "put", "id": checkpoint_id, "data": encoded}, sync=True)

    async def load_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        """Any id list_checkpoints gives: a saved checkpoint, or the runtime's
        state right after checkpoint N, rebuilt from the generation that holds it."""
        execution_id, number = split_checkpoint_id(checkpoint_id)
        reader = self.open_log(execution_id, create=False)
        puts = reader.load().puts
        if checkpoint_id in puts:
            data = puts[checkpoint_id]
            return None if data is None else serialization.decode(data, **self.codec())
        gen = dict(reader.checkpoints()).get(number)
        if gen is None:
            return None
        state = replay_until(reader.load_generation(gen), number)
        if state is None:
            return None
        from .manager import checkpoint_view  # late: manager builds on this module

        return checkpoint_view(state, execution_id, **self.codec())

    async def list_checkpoints(self, execution_id: str) -> list[str]:
        """Every id load_checkpoint can load, oldest runtime checkpoint first."""
        reader = self.open_log(execution_id, create=False)
        puts = reader.load().puts
        ids = [f"{execution_id}_ckpt_{n}" for n, _ in reader.checkpoints()]
        ids = [i for i in ids if i not in puts]
        return ids + [i for i, data in puts.items() if data is not None]

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Records are append-only: a deleted checkpoint is marked as forgotten."""
        execution_id, _ = split_checkpoint_id(checkpoint_id)
        with self._writer(execution_id) as log:
            log.append({"k": "forget", "id": checkpoint_id}, sync=True)

    async def cleanup_old_checkpoints(self, execution_id: str, keep_last_n: int = 10) -> int:
        """Drop the oldest generations that keep_last_n newer checkpoints make
        unneeded; works while the execution is open. Returns how many ids went."""
        before = len(await self.list_checkpoints(execution_id))
        with self._writer(execution_id) as log:
            log.retain(keep_last_n)
        after = len(await self.list_checkpoints(execution_id))
        return max(0, before - after)


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _lock_table() -> str | None:
    try:
        return Path("/proc/locks").read_text()
    except OSError:
        return None


def lock_owner(directory: Path, table: str | None = None) -> int | None:
    """The pid of the live process holding the execution's lock, or None.

    Read from /proc/locks where it exists (``table``: its text, read once for
    many executions), so that looking never takes the lock (a brief probe could
    make a starting owner see "in use"); elsewhere a shared-lock probe answers."""
    lock = directory / "lock"
    try:
        st = os.stat(lock)
    except OSError:
        return None
    table = table if table is not None else _lock_table()
    if table is None:
        return _probe(lock)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    recorded = _recorded_pid(lock)
    for line in table.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK" or not parts[5].endswith(f":{st.st_ino}"):
            continue
        pid = int(parts[4]) if parts[4].isdigit() else 0
        # some filesystems report another device number here: the pid then decides
        if parts[5] == device or (recorded is not None and pid == recorded):
            return pid or recorded or -1
    return None


def _recorded_pid(lock: Path) -> int | None:
    try:
        text = lock.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _probe(lock: Path) -> int | None:
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _recorded_pid(lock) or -1
    finally:
        os.close(fd)  # also releases the probe's lock
    return None


def replay_until(loaded: logmod.Loaded, counter: int | None) -> ExecutionState | None:
    """The state right after checkpoint ``counter`` (None if it is not in
    ``loaded``); with counter None, the state at the end of ``loaded``."""
    state = ExecutionState.from_snapshot(loaded.snapshot) if loaded.snapshot else ExecutionState()
    if counter is not None and state.counter == counter:
        return state
    for record in loaded.records:
        state.apply(record)
        if counter is not None and record.get("k") == "ckpt" and record["n"] == counter:
            return state
    return state if counter is None else None
