"""The lease on one execution in PostgreSQL: claim, fencing token, renewal, loss.

A claim raises the execution's fencing token in one transaction (database
clock), unless a live owner holds the lease. Every later write of the owner is
conditional on that token; a thread renews the lease on a connection of its
own, so blocking code cannot let it expire. Once another process has claimed,
the old owner gets :class:`LeaseLost` from every write and barrier, and says so
in one log line. :class:`Lease` is that part of PostgresExecutionLog.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .chain import StorageError
from .log import ExecutionLocked

logger = logging.getLogger("playbooks.durability")

ALIVE = """(e.owner IS NOT NULL AND e.lease_until > now() AND EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.pid = e.owner_pid AND a.backend_start = e.owner_started))"""
#: The owner's session is its writer's: a killed owner's records still in that
#: session's input are run before it ends, so a claim waits for them (ALIVE).
_RENEW = """UPDATE pb_executions SET lease_until = now() + make_interval(secs => %(lease)s),
    owner_pid = %(pid)s, owner_started = (SELECT backend_start
    FROM pg_stat_activity WHERE pid = %(pid)s), updated = now()
    WHERE id = %(id)s AND token = %(token)s RETURNING 1"""


class LeaseLost(StorageError):
    """Another process claimed this execution: this one may not write nor cause an effect."""


class Lease:
    """Ownership of a PostgresExecutionLog (a part of it)."""

    execution_id: str
    provider: Any
    _conn: Any
    _pipe: Any
    _lease: Any
    _token: int | None
    _owner: str
    _lost: str | None
    _stop: threading.Event
    _renewer: threading.Thread | None
    _mutex: Any
    _pending: list

    def _reconnect(self, which: str) -> Any:
        raise NotImplementedError

    def _run(self, which: str, sql: str, params: Any, *, fetch: bool) -> Any:
        raise NotImplementedError

    def _renewal(self, token: int) -> dict:
        pid = self._conn.info.backend_pid if self._conn is not None else None
        return {"id": self.execution_id, "lease": self.provider.lease, "token": token, "pid": pid}

    def _fenced(self) -> None:
        if self._lost is not None:
            raise LeaseLost(f"execution {self.execution_id}: {self._lost}")

    def _lose(self, why: str) -> LeaseLost:
        """Record the loss once, with one log line; later writes raise at once."""
        self._pending.clear()
        if self._lost is None:
            self._lost = why
            logger.error("execution %s: %s; this process stops it", self.execution_id, why)
        self._stop.set()
        return LeaseLost(f"execution {self.execution_id}: {why}")

    # ------------------------------------------------------------ ownership
    @property
    def fenced(self) -> bool:
        """Owned through a lease: every barrier re-checks the token, even with nothing new."""
        return self._token is not None

    @property
    def lost(self) -> bool:
        """Another process claimed the execution: nothing more may be written."""
        return self._lost is not None

    def lock(self) -> None:
        """Claim the execution: raise its fencing token, take the lease (database clock)."""
        with self._mutex:
            if self._token is not None:
                return
            lease = self._lease or self._reconnect("_lease")
            self._reconnect("_conn")  # the writer first: the lease names its session
            try:
                token = self._claim(lease)
            except BaseException:
                self._conn.close()
                self._conn = self._pipe = None
                raise
            self._token = token
            self._lost = None
            self.provider._owners[self.execution_id] = self
            self._stop.clear()
            self._renewer = threading.Thread(
                target=self._renew_loop, name=f"lease-{self.execution_id}", daemon=True
            )
            self._renewer.start()

    def _claim(self, lease: Any) -> int:
        """Raise the token in one transaction, unless a live owner holds the lease."""
        with lease.transaction():
            rows = lease.execute(
                f"SELECT e.owner, {ALIVE} FROM pb_executions e WHERE e.id = %s "
                "FOR UPDATE SKIP LOCKED",
                (self.execution_id,),
            ).fetchall()
            if not rows:
                raise ExecutionLocked(
                    f"execution ID {self.execution_id} is being claimed by another process"
                )
            owner, alive = rows[0]
            if alive:
                raise ExecutionLocked(
                    f"execution ID {self.execution_id} is in use by {_who(owner)}"
                )
            token = lease.execute(
                "UPDATE pb_executions SET token = token + 1, owner = %s "
                "WHERE id = %s RETURNING token",
                (self._owner, self.execution_id),
            ).fetchone()[0]
            lease.execute(_RENEW, self._renewal(token))
        return token

    def _renew_loop(self) -> None:
        """Keep the lease from a thread of its own, so blocking code cannot expire it."""
        interval = max(0.05, self.provider.lease / 3)
        while not self._stop.wait(interval):
            try:
                self._renew()
            except LeaseLost:
                return
            except Exception:  # the database is away: try again next round
                continue

    def _renew(self) -> None:
        with self._mutex:
            if self._token is None or self._lost is not None or self._stop.is_set():
                return
            if not self._run("_lease", _RENEW, self._renewal(self._token), fetch=True):
                raise self._lose(
                    f"lease lost: another process claimed it (our fencing token {self._token})"
                )


def _who(owner: str | None) -> str:
    host, _, rest = (owner or "unknown").partition(":")
    pid = rest.partition(":")[0]
    return f"process {pid} on {host}" if pid else owner or "another process"
