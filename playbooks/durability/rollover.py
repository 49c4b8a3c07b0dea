"""The syncs that finish a new generation, run beside the next appends.

Starting a generation (ExecutionLog.write_snapshot) makes four things durable:
the old segment, the new segment's directory entry, the snapshot and its name.
Each is a journal commit: about 4 ms here, once every ~150 awaits, which was a
sixth of what durability added to a pure await. A thread does them while the
next awaits run:

- the old segment and the new one's name come first (``durable``): a record in
  the new segment is synced before an effect only once they are on disk;
- the snapshot comes next, and only the next snapshot, a read of the files or
  close wait for it: recovery never needs it, it only makes recovery shorter.

A kill or a power loss before the snapshot is on disk leaves the newest
segment without it. Recovery then reads from the snapshot before, through the
old segment (cut at its last record before the first append to the new one)
and the new one: the same state, exactly.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


class Rollover(threading.Thread):
    """One generation's finishing syncs; ``error`` holds what failed, if anything.

    What needs no wait for the disk (opening files, writing the snapshot's
    bytes) is done by ``begin`` in the caller's thread. The thread makes only
    the calls that wait: each one costs it the GIL back, which a busy caller
    gives up only every few milliseconds."""

    def __init__(
        self, old_fd: int | None, snapshot: Path, *, fsync: bool, doomed: list[Path]
    ) -> None:
        # not a daemon: a process that ends normally finishes its snapshot first
        super().__init__(name=f"playbooks-rollover-{snapshot.name}")
        self.old_fd = old_fd
        self.snapshot = snapshot
        self.tmp = snapshot.with_name(f"{snapshot.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        self.fsync = fsync
        self.doomed = doomed  # files of generations retention dropped: after the snapshot
        self.freed: set[str] = set()  # blobs only they used: the log removes them after
        self.fds: list[int] = [] if old_fd is None else [old_fd]
        self.error: BaseException | None = None
        self.durable = threading.Event()  # set once the new segment's records can be synced
        self.durable_failed = False  # the error came before that (the record must not be)
        self.ended = False

    @classmethod
    def begin(
        cls,
        old_fd: int | None,
        snapshot: Path,
        data: bytes,
        *,
        fsync: bool,
        doomed: list[Path],
        freed: set[str],
    ) -> Rollover:
        """Write the snapshot's bytes to its temporary file, then start the syncs."""
        job = cls(old_fd, snapshot, fsync=fsync, doomed=doomed)
        try:
            job.fds.append(os.open(snapshot.parent, os.O_RDONLY))
            job.fds.append(os.open(job.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            view = memoryview(data)
            while view:
                view = view[os.write(job.fds[-1], view) :]
            job.freed = freed
            job.start()
        except BaseException:
            job.close()
            raise
        return job

    def run(self) -> None:
        try:
            self._syncs()
        finally:
            self.ended = True

    def _syncs(self) -> None:
        *_, dir_fd, tmp_fd = self.fds
        try:
            if self.old_fd is not None and self.fsync:
                os.fdatasync(self.old_fd)  # the chain through it needs all of it
            if self.fsync:  # the segment's name is on disk before its records or snapshot
                os.fsync(dir_fd)
        except BaseException as exc:  # raised by the log in the caller's thread
            self.error, self.durable_failed = exc, True
            return
        finally:
            self.durable.set()
        try:
            if self.fsync:
                os.fsync(tmp_fd)
            os.replace(self.tmp, self.snapshot)
            if self.fsync:
                os.fsync(dir_fd)
            for path in self.doomed:
                path.unlink(missing_ok=True)
        except BaseException as exc:  # raised by the log in the caller's thread
            self.error = exc

    def close(self) -> None:
        """Close its files (once it has ended)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []
