"""Records sent without waiting, and the barrier that collects them in one round trip.

The owner's connection commits records asynchronously (``synchronous_commit =
off``). Waiting for each such commit costs a round trip per record and buys
little: a record lost with us is like one we never wrote, since the barrier
makes every record durable before any effect. So records go out in libpq's
pipeline mode, each statement followed by a Sync (so each commits on its own),
and their answers are read later, all at once. A record on its way is not safe
from our death, though: a server still answering earlier statements finds us
gone and ends the session without running the rest. What must outlive a kill
of this process (a finished LLM call) is waited for (``settle``).

The barrier goes down the same pipe: one statement that inserts the records
still pending, locks the execution's row only if the fencing token still
matches, and commits synchronously (``set_config('synchronous_commit', 'on',
true)`` inside the statement). The server runs it after every record sent
before it on this connection, so its one WAL flush covers them all; the client
then reads every answer in one wait. Statements are prepared once per
connection.

The first batch sent after a barrier (as a rule, the result of the effect the
barrier let through) goes as that same synchronous statement, not waited for.
Its WAL flush then runs on the server while the code up to the next effect
runs here; that barrier, with nothing sent since, only checks the fencing
token (read-only) and reads the answers. Every answer, the flushed commit's
included, is read before it returns, so the guarantee is the same: before an
effect, everything before it is flushed and the token is still ours.

Outside :meth:`collect` the connection is back in normal mode, so
psycopg can use it as usual. :class:`PipedWrites` is the part of the
execution's log that drives it: sending, the barrier, and checking the answers.
"""

from __future__ import annotations

import select
from binascii import hexlify
from collections.abc import Sequence
from typing import Any

from .chain import StorageError

_VALUES = "unnest($1::bigint[], $2::int[], $3::bytea[]) AS v(seq, gen, frame)"
# the fence: our token, and the record just before this batch stored ($6, NULL: none
# needed); so when one statement fails, every one sent after it writes nothing
_HELD = (
    "e.id = $4 AND e.token = $5 AND ($6::bigint IS NULL OR EXISTS (SELECT 1 FROM pb_records r "
    "WHERE r.execution_id = $4 AND r.seq = $6))"
)
_FENCE = f"{_HELD} FOR SHARE OF e"  # writes also lock the row: a claim waits for them
_SQL = {
    # one batch of records, fenced; commits asynchronously (the session's setting)
    b"pb_records": (
        "INSERT INTO pb_records (execution_id, seq, gen, frame) "
        f"SELECT e.id, v.seq, v.gen, v.frame FROM pb_executions e, {_VALUES} "
        f"WHERE {_FENCE} ON CONFLICT DO NOTHING"
    ),
    # the barrier with records: the same insert, committed as $7 says ('on': synchronously)
    b"pb_barrier": (
        "WITH sc AS (SELECT set_config('synchronous_commit', $7, true) AS c) "
        "INSERT INTO pb_records (execution_id, seq, gen, frame) "
        f"SELECT e.id, v.seq, v.gen, v.frame FROM sc, pb_executions e, {_VALUES} "
        f"WHERE {_FENCE} ON CONFLICT DO NOTHING"
    ),
    # the fence alone, read-only: the barrier once its flush was asked for earlier
    b"pb_check": (
        "SELECT 1 FROM pb_executions e "
        "WHERE $1::bigint[] IS NULL AND $2::int[] IS NULL AND $3::bytea[] IS NULL AND "
        f"{_HELD}"
    ),
    # the barrier with nothing left to insert: the row lock is a write, so the commit flushes
    b"pb_fence": (
        "WITH sc AS (SELECT set_config('synchronous_commit', $7, true) AS c) "
        "SELECT 1 FROM sc, pb_executions e "
        "WHERE $1::bigint[] IS NULL AND $2::int[] IS NULL AND $3::bytea[] IS NULL AND "
        f"{_FENCE}"
    ),
}

Record = tuple[int, int, bytes]  # (seq, gen, frame)
MAX_IN_FLIGHT = 64  # batches sent whose answers are not read yet


def _array(values: Sequence[int]) -> bytes:
    return b"{%s}" % b",".join([b"%d" % v for v in values])


def _bytea_array(frames: Sequence[bytes]) -> bytes:
    # the text form of bytea[]: each element quoted, its backslash escaped
    return b"{%s}" % b",".join([b'"\\\\x%s"' % hexlify(f) for f in frames])


class RecordPipe:
    """Statements queued on one psycopg connection's libpq handle, read back together.

    This is the per-effect path, so it is written for few interpreted steps."""

    def __init__(self, conn: Any, execution_id: str) -> None:
        from psycopg import pq

        status = pq.ExecStatus
        self._sync_ok, self._failed = int(status.PIPELINE_SYNC), int(status.FATAL_ERROR)
        self._tuples, self._command = int(status.TUPLES_OK), int(status.COMMAND_OK)
        self._aborted = int(status.PIPELINE_ABORTED)
        self.conn = conn
        self.pgconn = conn.pgconn
        self.execution_id = execution_id.encode()
        self._token = (-1, b"")  # the token, and its text
        self._prepared = False
        self._queue: list[str] = []  # what each answer is: "prepare", "rows", "fence", "sync"

    @property
    def busy(self) -> bool:
        """Statements were sent whose answers are not read yet."""
        return bool(self._queue)

    def send(self, records: Sequence[Record], token: int, after: int | None) -> None:
        """Queue a fenced, asynchronously committed insert of ``records`` (which needs
        record ``after`` stored, unless None); do not wait."""
        self._start()
        self.pgconn.send_query_prepared(b"pb_records", self._params(records, token, after))
        self._sync("rows")

    def barrier(
        self, records: Sequence[Record], token: int, after: int | None, *, synchronous: bool
    ) -> None:
        """Queue the barrier: the fenced insert of ``records`` (or, with none, the
        fence alone), committed synchronously unless ``synchronous`` is false."""
        self._start()
        params = self._params(records, token, after)
        params.append(b"on" if synchronous else b"off")
        if records:
            self.pgconn.send_query_prepared(b"pb_barrier", params)
            self._sync("rows")
        else:
            self.pgconn.send_query_prepared(b"pb_fence", params)
            self._sync("fence")

    def check(self, token: int, after: int | None) -> None:
        """Queue the fence alone (read-only): we still hold the token, and record
        ``after`` is stored (None: no record needed)."""
        self._start()
        self.pgconn.send_query_prepared(b"pb_check", self._params((), token, after))
        self._sync("fence")

    def collect(self) -> list[int]:
        """Wait for every queued answer; the row count of each statement, in order.
        A failed statement raises StorageError; a broken connection, OperationalError."""
        pgconn = self.pgconn
        counts: list[int] = []
        error: str | None = None
        try:
            if pgconn.flush():
                self._flush()
            for kind in self._queue:
                result = self._next() if pgconn.is_busy() else pgconn.get_result()
                if kind == "sync":
                    if result is None or result.status != self._sync_ok:
                        raise StorageError("PostgreSQL: the pipeline lost its place")
                    continue
                while result is not None:
                    status = result.status
                    if status == self._command:
                        if kind == "rows":
                            counts.append(int(result.command_tuples or 0))
                    elif status == self._tuples:
                        counts.append(result.ntuples)
                    elif status == self._failed:
                        if error is None:
                            error = (result.error_message or b"").decode(errors="replace")
                    elif status == self._aborted and kind != "prepare":
                        counts.append(0)
                    result = self._next() if pgconn.is_busy() else pgconn.get_result()
        finally:
            self._queue.clear()
            if pgconn.pipeline_status and not self.conn.broken:
                try:
                    pgconn.exit_pipeline_mode()
                except Exception:
                    pass
        if error is not None:
            raise StorageError(f"PostgreSQL: {error.strip()}")
        return counts

    # ------------------------------------------------------------------ internals
    def _params(self, records: Sequence[Record], token: int, after: int | None) -> list:
        if self._token[0] != token:
            self._token = (token, b"%d" % token)
        tail = [self.execution_id, self._token[1], None if after is None else b"%d" % after]
        if not records:
            return [None, None, None, *tail]
        if len(records) == 1:  # the common case, without the joins
            seq, gen, frame = records[0]
            return [b"{%d}" % seq, b"{%d}" % gen, b'{"\\\\x%s"}' % hexlify(frame), *tail]
        return [
            _array([r[0] for r in records]),
            _array([r[1] for r in records]),
            _bytea_array([r[2] for r in records]),
            *tail,
        ]

    def _start(self) -> None:
        pgconn = self.pgconn
        if not pgconn.pipeline_status:
            pgconn.enter_pipeline_mode()
        if not self._prepared:  # once per connection: a new one gets a new pipe
            for name, sql in _SQL.items():
                pgconn.send_prepare(name, sql.encode())
                self._queue.append("prepare")
            self._prepared = True

    def _sync(self, kind: str) -> None:
        self._queue += (kind, "sync")
        pgconn = self.pgconn
        pgconn.pipeline_sync()
        if pgconn.flush():  # what libpq could not send at once
            self._flush()

    def _flush(self) -> None:
        """Push every queued byte to the server (the statements commit without us)."""
        while self.pgconn.flush():
            select.select([self.pgconn.socket], [self.pgconn.socket], [], 1.0)
            self.pgconn.consume_input()

    def _next(self) -> Any:
        """The next result (blocking until it has arrived)."""
        pgconn = self.pgconn
        while pgconn.is_busy():  # parses what was read already; reads only when it must
            select.select([pgconn.socket], [], [], 1.0)
            pgconn.consume_input()
        return pgconn.get_result()


class PipedWrites:
    """The owner's writes through a :class:`RecordPipe` (a part of PostgresExecutionLog)."""

    execution_id: str
    provider: Any
    _conn: Any
    _pipe: RecordPipe | None
    _pending: list[Record]
    _sent: list[list[Record]]
    _token: int | None
    _seq: int
    _anchor: int
    _dirty: bool
    # the first batch after a barrier (an effect's result, as a rule) commits
    # synchronously, unwaited: its WAL flush overlaps the code that runs until the
    # next barrier, which then only checks the fence and reads the answers
    _early_flush: bool  # the next batch sent commits synchronously
    _flushing: bool  # everything sent is covered by a synchronous commit sent since

    def _query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        raise NotImplementedError

    def _reconnect(self, which: str) -> Any:
        raise NotImplementedError

    def _recover(self, which: str) -> None:
        raise NotImplementedError

    def _lose(self, why: str) -> StorageError:
        raise NotImplementedError

    def _send_piped(self) -> None:
        """Send the pending records without waiting (the next barrier or read collects)."""
        assert self._token is not None
        if len(self._sent) >= MAX_IN_FLIGHT:  # a long stream between barriers: read up
            self._collect()
        for attempt in (0, 1):
            if self._conn is None:
                self._reconnect("_conn")
            assert self._pipe is not None
            early = self._early_flush
            try:
                after = self._after(self._pending[0][0])
                if early:  # the barrier's statement, not waited for
                    self._pipe.barrier(self._pending, self._token, after, synchronous=True)
                else:
                    self._pipe.send(self._pending, self._token, after)
            except self.provider._psycopg.OperationalError as exc:  # in flight goes again too
                self._pending[:0] = [r for b in self._sent for r in b]
                self._sent = []
                if attempt or not self._conn.broken:
                    raise StorageError(f"PostgreSQL: {str(exc).strip()}") from None
                self._recover("_conn")
                continue
            self._sent.append(self._pending)
            self._pending = []
            self._dirty = True
            self._early_flush = False
            self._flushing = early
            return

    def _barrier(self) -> None:
        """Send the pending records as the barrier and read every answer: one round trip."""
        assert self._token is not None
        for attempt in (0, 1):
            if self._conn is None:
                self._reconnect("_conn")
            assert self._pipe is not None
            batch, self._pending = self._pending, []
            batches, self._sent = [*self._sent, batch], []
            try:
                after = self._after(batch[0][0] if batch else self._seq)
                if self._flushing and not batch:  # its flush is on its way: fence, wait
                    self._pipe.check(self._token, after)
                else:
                    self._pipe.barrier(batch, self._token, after, synchronous=self.provider.fsync)
                counts = self._pipe.collect()
            except self.provider._psycopg.OperationalError as exc:  # all goes again
                self._pending = [r for b in batches for r in b] + self._pending
                if attempt or not self._conn.broken:
                    raise StorageError(f"PostgreSQL: {str(exc).strip()}") from None
                self._recover("_conn")
                continue
            *records, fence = counts
            self._check_counts(batches[:-1], records)
            if fence != (len(batch) or 1):
                if not batch:
                    raise self._lose(
                        f"lease lost: another process claimed it (our fencing token {self._token})"
                    )
                self._check_counts([batch], [fence])
            self._dirty = self._flushing = False
            self._early_flush = self.provider.fsync
            return

    def _collect(self) -> None:
        """Read the answers of the records sent without waiting; check each count."""
        if self._pipe is None or not self._pipe.busy:
            return
        batches, self._sent = self._sent, []
        try:
            counts = self._pipe.collect()
        except self.provider._psycopg.OperationalError:
            # the connection broke: what was in flight goes again (it is idempotent)
            self._pending[:0] = [r for batch in batches for r in batch]
            if not self._conn.broken:
                raise StorageError(f"execution {self.execution_id}: PostgreSQL failed") from None
            self._recover("_conn")
            return
        self._check_counts(batches, counts)

    def _after(self, seq: int) -> int | None:
        """The record a write starting at ``seq`` needs stored first (None: none)."""
        return seq - 1 if seq > self._anchor else None

    def _check_counts(self, batches: list[list[tuple[int, int, bytes]]], counts: list[int]) -> None:
        for batch, count in zip(batches, counts, strict=True):
            if count != len(batch):  # fenced out, or a retry of rows already stored
                waiting, self._pending = self._pending, batch
                try:
                    self._check_stored()
                finally:
                    self._pending = waiting

    def _check_stored(self) -> None:
        """Fewer rows than records went in: fenced out, or a retry of a commit that made it."""
        first = self._pending[0][0]
        rows = self._query(
            "SELECT e.token, r.seq, r.frame FROM pb_executions e LEFT JOIN pb_records r "
            "ON r.execution_id = e.id AND r.seq >= %s WHERE e.id = %s",
            (first, self.execution_id),
        )
        if not rows or rows[0][0] != self._token:
            raise self._lose(
                f"lease lost: another process claimed it (our fencing token {self._token})"
            )
        stored = {seq: bytes(frame) for _, seq, frame in rows if seq is not None}
        for seq, _, frame in self._pending:
            if stored.get(seq) != frame:
                raise StorageError(f"execution {self.execution_id}: record {seq} was not stored")
