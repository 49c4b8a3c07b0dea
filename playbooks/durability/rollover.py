"""The syncs that finish a new generation, run beside the next appends.

Starting a generation (ExecutionLog.write_snapshot) makes four things durable:
the old segment, the new segment's directory entry, the snapshot and its name.
Each is a journal commit: about 4 ms here, once every ~150 awaits, which was a
sixth of what durability added to a pure await. One thread per process does
them, in order, while the next awaits run:

- the old segment and the new one's name come first (``durable``): a record in
  the new segment is synced before an effect only once they are on disk;
- the snapshot comes next, and only the next snapshot, a read of the files or
  close wait for it: recovery never needs it, it only makes recovery shorter.

A kill or a power loss before the snapshot is on disk leaves the newest
segment without it. Recovery then reads from the snapshot before, through the
old segment (cut at its last record before the first append to the new one)
and the new one: the same state, exactly.

The thread lives as long as the process: starting one per generation made
the caller wait for it to be scheduled, about 0.6 ms each time here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections import deque
from pathlib import Path


class Rollover:
    """One generation's finishing syncs; ``error`` holds what failed, if anything.

    What needs no wait for the disk (opening files, writing the snapshot's
    bytes) is done by ``begin`` in the caller's thread. The worker makes only
    the calls that wait: each one costs it the GIL back, which a busy caller
    gives up only every few milliseconds."""

    def __init__(
        self, old_fd: int | None, snapshot: Path, *, fsync: bool, doomed: list[Path]
    ) -> None:
        self.old_fd = old_fd
        self.snapshot = snapshot
        self.tmp = snapshot.with_name(f"{snapshot.name}.{os.getpid()}.{id(self)}.tmp")
        self.fsync = fsync
        self.doomed = doomed  # files of generations retention dropped: after the snapshot
        self.freed: set[str] = set()  # blobs only they used: the log removes them after
        self.fds: list[int] = [] if old_fd is None else [old_fd]
        self.error: BaseException | None = None
        self.durable = threading.Event()  # set once the new segment's records can be synced
        self.durable_failed = False  # the error came before that (the record must not be)
        self.ended = False
        self._done = threading.Event()

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
        """Write the snapshot's bytes to its temporary file, then queue the syncs."""
        job = cls(old_fd, snapshot, fsync=fsync, doomed=doomed)
        try:
            job.fds.append(os.open(snapshot.parent, os.O_RDONLY))
            job.fds.append(os.open(job.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            view = memoryview(data)
            while view:
                view = view[os.write(job.fds[-1], view) :]
            job.freed = freed
            _WORKER.submit(job)
        except BaseException:
            job.close()
            raise
        return job

    def finish(self) -> None:
        """Run by the worker: the syncs, then the news that they ended."""
        try:
            self.run()
        except BaseException as exc:  # run() records its own; anything else lands here
            self.error = self.error or exc
        finally:
            self.ended = True
            self.durable.set()
            self._done.set()

    def join(self) -> None:
        """Wait until the syncs have ended."""
        self._done.wait()

    def abandon(self) -> None:
        """Never run here (a forked child): told as a failure, so nothing waits for it."""
        if not self.durable.is_set():
            self.durable_failed = True
        self.error = RuntimeError("its syncs were left to the parent process (fork)")
        self.ended = True
        self.durable.set()
        self._done.set()

    def run(self) -> None:
        """The syncs, in order; what fails is kept in ``error`` for the log to raise."""
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


class _Worker:
    """The process's one rollover thread, started by the first job.

    A daemon, so an idle one never keeps the process alive; a process that
    ends normally waits for the jobs it queued first (atexit)."""

    def __init__(self) -> None:
        self._jobs: deque[Rollover] = deque()  # queued or running, in order
        self._ready = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def submit(self, job: Rollover) -> None:
        with self._ready:
            if self._thread is None:  # started first: a job queued with no thread would hang exit
                thread = threading.Thread(
                    target=self._serve, name="playbooks-rollover", daemon=True
                )
                thread.start()
                self._thread = thread
            self._jobs.append(job)
            self._ready.notify()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                job = self._jobs[0]
            job.finish()
            with self._ready:
                self._jobs.popleft()

    def drain(self) -> None:
        """Wait for every job queued so far (they run in order: for the last one)."""
        with self._ready:
            last = self._jobs[-1] if self._jobs else None
        if last is not None:
            last.join()

    def forget(self) -> None:
        """In a forked child: the thread is the parent's, and so are its jobs."""
        left = list(self._jobs)
        self.__init__()  # type: ignore[misc]
        for job in left:
            job.abandon()


_WORKER = _Worker()
atexit.register(_WORKER.drain)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKER.forget)
