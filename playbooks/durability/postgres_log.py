"""One execution stored in PostgreSQL: records, snapshots, blobs; the lease is in postgres_lease.

The same records as the file log (``records.encode_record`` frames, checked
on every read), in rows instead of files. Generation G is snapshot G plus
the records appended after it; recovery reads the newest snapshot that
decodes and every record from its generation on, in sequence order.

Writes are cheap until they matter. A record is one INSERT on a connection
with ``synchronous_commit = off``, sent without waiting for its answer
(:mod:`.postgres_pipe`): it commits even if this process dies right after,
but is not yet flushed. The barrier before an effect (:meth:`sync`) goes down
the same connection after them: one statement that inserts what is pending,
checks the fencing token, and commits synchronously, so its one WAL flush
covers every record before it; all the answers come back in that one round
trip. (The first batch after a barrier, an effect's result as a rule, is
sent as such a synchronous commit at once, unwaited; the next barrier then
only checks the token and reads the answers.) Every write is conditional on
the token taken at the claim, and locks
the execution's row in share mode, so a claim (FOR UPDATE) and a stale owner's
write never interleave: once another process has claimed, the old owner's
writes touch nothing and it gets :class:`LeaseLost`. The lease itself is
renewed by a thread of its own, on a second connection.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import dumps
from .chain import Loaded, StorageError, _Gen, retention_victims
from .log import SNAPSHOT_FORMAT, record_payload, validate_execution_id
from .postgres_lease import _RENEW, Lease
from .postgres_pipe import PipedWrites, RecordPipe
from .postgres_read import PgBlobStore, PgReader
from .records import encode_record

if TYPE_CHECKING:
    from .postgres import PostgresCheckpointProvider

logger = logging.getLogger("playbooks.durability")
MIN_SNAPSHOT_GAP = 16 * 1024


class PostgresExecutionLog(Lease, PipedWrites, PgReader):
    """Storage of one execution in PostgreSQL; one owner (lease holder) appends."""

    def __init__(
        self, provider: PostgresCheckpointProvider, execution_id: str, *, create: bool = True
    ) -> None:
        self.execution_id = validate_execution_id(execution_id)
        self.provider = provider
        self.keep_last_n = max(0, provider.keep_last_n)
        self.dir = Path(f"postgres:{execution_id}")  # names the execution in messages
        if create:
            provider._shared_write(
                "INSERT INTO pb_executions (id) VALUES (%s) ON CONFLICT DO NOTHING",
                (execution_id,),
            )
        elif not provider._exists(execution_id):
            raise StorageError(f"no checkpoint data for execution {execution_id} in PostgreSQL")
        self.blobs = PgBlobStore(self)
        self._mutex = threading.RLock()
        self._conn: Any = None  # appends: synchronous_commit off
        self._lease: Any = None  # claim, barrier, renewal: synchronous commits
        self._token: int | None = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._loaded = False
        self._dirty = False  # committed asynchronously since the last barrier
        self._early_flush = False
        self._flushing = False
        self._pending: list[tuple[int, int, bytes]] = []  # (seq, gen, frame) not sent yet
        self._pipe: RecordPipe | None = None  # on _conn: records sent, answers not read
        self._sent: list[list[tuple[int, int, bytes]]] = []  # each batch the pipe holds
        self._anchor = 0  # the first seq whose predecessor need not be checked
        self._gen = 0
        self._gens: set[int] = set()
        self._seq = 0
        self._appended = 0
        self._snap_size = 0
        self._needs_snapshot = False
        self._stats: dict[int, _Gen] = {}
        self._puts: dict[str, Any] = {}

    # ------------------------------------------------------------ connections
    def _reconnect(self, which: str) -> Any:
        old = getattr(self, which)
        if old is not None:
            try:
                old.close()
            except Exception:
                pass
        conn = self.provider._connect(sync=which == "_lease", retry=True)
        setattr(self, which, conn)
        if which == "_conn":
            self._pipe = RecordPipe(conn, self.execution_id)
        return conn

    def _query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        if self._conn is None:
            return self.provider._shared_query(sql, params)
        return self._run("_conn", sql, params, fetch=True)

    def _write(self, sql: str, params: tuple | dict = ()) -> int:
        """A fenced write when owned; returns the row count."""
        if self._conn is None:
            return self.provider._shared_write(sql, params)
        return self._run("_conn", sql, params, fetch=False)

    def _run(self, which: str, sql: str, params: Any, *, fetch: bool) -> Any:
        psycopg = self.provider._psycopg
        if which == "_conn":
            self._collect()
        for attempt in (0, 1):
            conn = getattr(self, which) or self._reconnect(which)
            try:
                cur = conn.execute(sql, params)
                return cur.fetchall() if fetch else cur.rowcount
            except psycopg.OperationalError as exc:
                if attempt or not conn.broken:
                    raise StorageError(f"PostgreSQL: {str(exc).strip()}") from None
                self._recover(which)
        raise AssertionError("unreachable")

    def _recover(self, which: str) -> None:
        """A new connection after a broken one; when owned, check nothing was lost
        and point the lease at the new session (so no one takes it for dead)."""
        self._reconnect(which)
        if self._token is not None:
            self._check_continuity()
            if self._lost is None:
                try:  # else the renewal thread does it
                    self._lease.execute(_RENEW, self._renewal(self._token))
                except (self.provider._psycopg.OperationalError, AttributeError):
                    pass

    def _check_continuity(self) -> None:
        """After a reconnect: every record this process appended is still there
        (a database crash can lose commits that were not yet flushed)."""
        sql = "SELECT coalesce(max(seq), -1) FROM pb_records WHERE execution_id = %s"
        try:
            rows = self._conn.execute(sql, (self.execution_id,)).fetchall()
        except (self.provider._psycopg.OperationalError, AttributeError):
            rows = self._reconnect("_conn").execute(sql, (self.execution_id,)).fetchall()
        if rows[0][0] < self._seq - len(self._pending) - 1:
            self._lost = "records were lost when the database restarted"
            raise StorageError(
                f"execution {self.execution_id}: records appended since the last barrier "
                "were lost when the database restarted; run it again to resume from there"
            )

    def sync(self) -> None:
        """The barrier: one synchronous commit of the pending records that re-checks the
        token, after (and covering) every record sent before it; one round trip."""
        with self._mutex:
            self._fenced()
            if self._token is None:
                self.provider._shared_write(
                    "UPDATE pb_executions SET updated = now() WHERE id = %s", (self.execution_id,)
                )
                return
            if not (self._pending or self._dirty or self._sent):
                held = self._run(  # nothing new: only the fence, read-only (no WAL, no flush)
                    "_lease",
                    "SELECT 1 FROM pb_executions WHERE id = %s AND token = %s",
                    (self.execution_id, self._token),
                    fetch=True,
                )
                if not held:
                    raise self._lose(
                        f"lease lost: another process claimed it (our fencing token {self._token})"
                    )
                return
            self._barrier()

    def settle(self) -> None:
        """Wait for the answers of every record sent. A record sent is not yet safe
        from our death: a server still busy with earlier statements, finding us
        gone when it answers them, ends the session before it runs the rest."""
        with self._mutex:
            self._fenced()
            if self._token is None:
                return
            self._send()
            self._collect()

    def close(self) -> None:
        with self._mutex:
            self._stop.set()
            if self._token is not None:
                if self.provider._owners.get(self.execution_id) is self:
                    del self.provider._owners[self.execution_id]
                if self._lost is None:
                    try:  # one synchronous commit: everything appended is durable
                        self._collect()
                        self._run(
                            "_lease",
                            "UPDATE pb_executions SET owner = NULL, lease_until = NULL, "
                            "owner_pid = NULL, updated = now() WHERE id = %s AND token = %s;",
                            (self.execution_id, self._token),
                            fetch=False,
                        )
                        self.provider._notify(self._lease)
                    except StorageError as error:
                        logger.warning("execution %s: %s", self.execution_id, error)
                self._token = None
            for which in ("_conn", "_lease"):
                conn = getattr(self, which)
                if conn is not None:
                    conn.close()
                    setattr(self, which, None)
            self._pipe = None
            self._sent = []
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
            self._renewer = None

    def load(self) -> Loaded:
        """Newest valid snapshot + the records after it."""
        with self._mutex:
            self.flush()
            self._loaded = True
            loaded, info = self._chain()
            self._gen = info["top"]
            self._seq = self._anchor = info["seq"]
            self._stats = info["stats"]
            self._puts = dict(loaded.puts)
            self._appended = info["appended"]
            snaps = self._query(
                "SELECT gen, octet_length(frame) FROM pb_snapshots WHERE execution_id = %s",
                (self.execution_id,),
            )
            gens = self._query(
                "SELECT DISTINCT gen FROM pb_records WHERE execution_id = %s", (self.execution_id,)
            )
            self._gens = {g for g, _ in snaps} | {g for (g,) in gens} | {self._gen}
            self._snap_size = dict(snaps).get(loaded.generation, 0)
            self._needs_snapshot = loaded.needs_snapshot
            return loaded

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    # ------------------------------------------------------------ writing
    #: Kinds sent with the next record or barrier instead of at once: a
    #: statement's checkpoint is pure progress (DESIGN §4: durable at the next
    #: barrier), and anything sent later carries it first, so a kill loses at
    #: most a suffix of them; results of calls and streamed text go at once.
    DEFERRED = frozenset({"ckpt"})
    _VALUES = (
        "unnest(%(seqs)s::bigint[], %(gens)s::int[], %(frames)s::bytea[]) AS v(seq, gen, frame)"
    )
    _INSERT = (
        "INSERT INTO pb_records (execution_id, seq, gen, frame) "
        f"SELECT e.id, v.seq, v.gen, v.frame FROM pb_executions e, {_VALUES} "
        "WHERE e.id = %(id)s AND e.token = %(token)s FOR SHARE OF e ON CONFLICT DO NOTHING"
    )

    def append(self, record: dict, *, sync: bool = False) -> None:
        """Append one record (fenced); with sync it is durable when this returns."""
        with self._mutex:
            self._fenced()
            self._ensure_loaded()
            data, refs = record_payload(self, record)
            frame = encode_record(data)
            self._pending.append((self._seq, self._gen, frame))
            self._seq += 1
            self._appended += len(frame)
            stats = self._stats.get(self._gen)
            if stats is None:
                stats = self._stats[self._gen] = _Gen()
            stats.refs |= refs
            kind = record.get("k")
            if kind == "ckpt":
                stats.ckpts += 1
            elif kind == "put":
                self._puts[record["id"]] = record.get("data")
            elif kind == "forget":
                self._puts[record["id"]] = None
            if sync:
                self.sync()
            elif kind not in self.DEFERRED or self._token is None:
                self._send()

    def _params(self) -> dict:
        return {
            "seqs": [p[0] for p in self._pending],
            "gens": [p[1] for p in self._pending],
            "frames": [p[2] for p in self._pending],
            "id": self.execution_id,
            "token": self._token,
            "lease": self.provider.lease,
        }

    def _send(self) -> None:
        """Send the pending records: committed asynchronously, and, when owned, without
        waiting for the answer (the next barrier or read collects it)."""
        if not self._pending:
            return
        if self._token is None:  # not claimed (tools, tests): unfenced, like a file
            sql = (
                "INSERT INTO pb_records (execution_id, seq, gen, frame) "
                f"SELECT %(id)s, v.seq, v.gen, v.frame FROM {self._VALUES}"
            )
            if self._write(sql, self._params()) != len(self._pending):
                self._check_stored()
            self._pending.clear()
            return
        self._send_piped()

    def should_snapshot(self) -> bool:
        """Time for a snapshot: keeps recovery cost at most about twice a snapshot."""
        if not self._loaded:  # asked after every statement: no lock once loaded
            with self._mutex:
                self._ensure_loaded()
        return self._needs_snapshot or self._appended >= max(MIN_SNAPSHOT_GAP, self._snap_size)

    def write_snapshot(self, state: dict, *, checkpoints: int = 0) -> None:
        """Start generation G+1 from state and apply retention, in one fenced transaction."""
        with self._mutex:
            self._fenced()
            self._ensure_loaded()
            self._send()  # the records the snapshot follows go first
            new = max(self._gens | {self._gen}) + 1
            ext, refs = self.blobs.externalize(state)
            payload: dict[str, Any] = {
                "format": SNAPSHOT_FORMAT,
                "gen": new,
                "state": ext,
                "seq": self._seq,
            }
            if self._puts:
                payload["puts"], more = self.blobs.externalize(self._puts)
                refs |= more
            self._stats[new] = _Gen(0, set(refs))
            present = sorted(self._gens | {new})
            doomed = self._victims(present)
            payload["history"] = {
                str(g): {"ckpts": s.ckpts, "refs": sorted(s.refs)}
                for g, s in sorted(self._stats.items())
                if g < new and g in present and g not in doomed
            }
            data = encode_record(dumps(payload))
            self._transaction(
                lambda: self._write(
                    "INSERT INTO pb_snapshots (execution_id, gen, frame) VALUES (%s, %s, %s)",
                    (self.execution_id, new, data),
                ),
                doomed,
            )
            self._gens.add(new)
            self._gen = new
            self._anchor = self._seq  # what came before it may go with retention
            self._appended = 0
            self._snap_size = len(data)
            self._needs_snapshot = False

    def _transaction(self, body: Any, doomed: list[int]) -> None:
        """body() and the removal of the doomed generations, all or nothing, fenced."""
        if self._conn is None:
            raise StorageError(f"execution {self.execution_id}: only its owner can change it")
        self._collect()
        self._dirty = True
        self._flushing = False
        try:
            with self._conn.transaction():
                if self._token is not None:
                    held = self._conn.execute(
                        "SELECT 1 FROM pb_executions WHERE id = %s AND token = %s FOR SHARE",
                        (self.execution_id, self._token),
                    ).fetchall()
                    if not held:
                        raise self._lose(
                            "lease lost: another process claimed it "
                            f"(our fencing token {self._token})"
                        )
                body()
                self._drop(doomed)
        except self.provider._psycopg.OperationalError as exc:
            raise StorageError(f"PostgreSQL: {str(exc).strip()}") from None

    def retain(self, keep_last_n: int | None = None) -> int:
        with self._mutex:
            self._fenced()
            self._ensure_loaded()
            if self._needs_snapshot:
                return 0
            doomed = self._victims(sorted(self._gens), keep_last_n)
            if doomed:
                self._transaction(lambda: None, doomed)
            return len(doomed)

    def _victims(self, present: list[int], keep_last_n: int | None = None) -> list[int]:
        keep = self.keep_last_n if keep_last_n is None else max(0, keep_last_n)
        return retention_victims(present, self._stats, keep)

    def _drop(self, doomed: list[int]) -> None:
        if not doomed:
            return
        for table in ("pb_records", "pb_snapshots"):
            self._conn.execute(
                f"DELETE FROM {table} WHERE execution_id = %s AND gen = ANY(%s)",
                (self.execution_id, doomed),
            )
        freed: set[str] = set()
        for gen in doomed:
            self._gens.discard(gen)
            stats = self._stats.pop(gen, None)
            if stats:
                freed |= stats.refs
        for stats in self._stats.values():
            freed -= stats.refs
        for sha in freed:
            self.blobs.remove(sha)

    # ------------------------------------------------------------ metadata
    def read_meta(self) -> dict | None:
        return self.provider.read_meta(self.execution_id)

    def write_meta(self, meta: dict) -> None:
        """Meta and the columns workers query (status, program, hash), synchronously."""
        with self._mutex:
            self._fenced()
            params = {
                "id": self.execution_id,
                "meta": dumps(meta).decode("utf-8", "surrogatepass"),
                "status": str(meta.get("status") or ""),
                "program": meta.get("program"),
                "hash": meta.get("hash"),
                "read": meta.get("inbox_read"),
                "token": self._token,
            }
            sql = (
                "UPDATE pb_executions SET meta = %(meta)s, status = %(status)s, "
                "program = %(program)s, program_hash = %(hash)s, updated = now(), "
                "inbox_read = coalesce(%(read)s, (SELECT count(*) FROM pb_inbox i "
                "WHERE i.execution_id = %(id)s)) WHERE id = %(id)s"
            )
            if self._token is None:
                self.provider._shared_write(sql, params, notify=True)
                return
            self._collect()  # the records before it are in first
            if self._run("_lease", sql + " AND token = %(token)s", params, fetch=False) != 1:
                raise self._lose(
                    f"lease lost: another process claimed it (our fencing token {self._token})"
                )
            self.provider._notify(self._lease)

    # ------------------------------------------------------------ inspection
    def flush(self) -> None:
        """Send what is pending and wait for what is in flight (readers anywhere see it
        all); not a barrier."""
        with self._mutex:
            if self._lost is None:
                self._send()
                self._collect()
