"""PostgresCheckpointProvider: executions in PostgreSQL, shared by workers on many machines.

Tables (created, or migrated, on first use; the version is in ``pb_schema``):

  pb_executions  one row per execution: status, owner, lease expiry, fencing
                 token, program and its hash, meta, inbox messages read
  pb_records     the execution's checksummed record frames, by sequence number
  pb_snapshots   compacted state that starts each generation
  pb_blobs       large values, once per content hash
  pb_inbox       messages for the execution (a person's replies), in order

psycopg is imported when a provider is first used, never by a default
(filesystem) run. :mod:`.postgres_log` holds the per-execution log.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .chain import DamagedLog, StorageError
from .log import ExecutionLocked, validate_execution_id
from .postgres_lease import ALIVE, LeaseLost, _who
from .postgres_log import PostgresExecutionLog
from .provider import FilesystemCheckpointProvider, replay_until

__all__ = ["LeaseLost", "PostgresCheckpointProvider", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
CHANNEL = "playbooks_work"
#: Statements that bring a schema from version N-1 to N (index N-1).
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS pb_executions (
            id text PRIMARY KEY,
            status text NOT NULL DEFAULT '',
            owner text,
            owner_pid integer,
            owner_started timestamptz,
            lease_until timestamptz,
            token bigint NOT NULL DEFAULT 0,
            program text,
            program_hash text,
            meta text,
            inbox_read bigint NOT NULL DEFAULT 0,
            created timestamptz NOT NULL DEFAULT now(),
            updated timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX IF NOT EXISTS pb_executions_status ON pb_executions (status, updated)",
        """CREATE TABLE IF NOT EXISTS pb_records (
            execution_id text NOT NULL,
            seq bigint NOT NULL,
            gen integer NOT NULL,
            frame bytea NOT NULL,
            PRIMARY KEY (execution_id, seq))""",
        """CREATE TABLE IF NOT EXISTS pb_snapshots (
            execution_id text NOT NULL,
            gen integer NOT NULL,
            frame bytea NOT NULL,
            PRIMARY KEY (execution_id, gen))""",
        """CREATE TABLE IF NOT EXISTS pb_blobs (
            execution_id text NOT NULL,
            sha text NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (execution_id, sha))""",
        """CREATE TABLE IF NOT EXISTS pb_inbox (
            execution_id text NOT NULL,
            seq bigserial,
            message text NOT NULL,
            created timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (execution_id, seq))""",
    ],
]
_TABLES = ("pb_records", "pb_snapshots", "pb_blobs", "pb_inbox", "pb_executions")


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        user, _, host = rest.rpartition("@")
        return f"{scheme}://{user.split(':')[0]}@{host}"
    return " ".join(p for p in dsn.split() if not p.startswith("password="))


class PostgresCheckpointProvider:
    """Executions in one PostgreSQL database (the schema of the DSN's search_path)."""

    def __init__(
        self,
        dsn: str,
        *,
        keep_last_n: int = 10,
        allow_pickle: bool = False,
        fsync: bool = True,
        lease: float = 15.0,
        reconnect_timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.keep_last_n = keep_last_n
        self.allow_pickle = allow_pickle
        self.fsync = fsync  # false: barriers commit asynchronously too
        self.lease = lease  # seconds; renewed every lease/3 by the owner
        self.reconnect_timeout = reconnect_timeout
        self.pickle_key = os.environ.get("PLAYBOOKS_PICKLE_KEY", "").encode() or None
        if allow_pickle and not self.pickle_key:
            raise StorageError(
                "allow_pickle is on but PLAYBOOKS_PICKLE_KEY is not set: pickles are signed with it"
            )
        self._shared_conn: Any = None
        self._shared_lock = threading.Lock()
        self._listen: Any = None
        self._schema_ready = False
        self._owners: dict[str, PostgresExecutionLog] = {}

    def __repr__(self) -> str:
        return f"PostgresCheckpointProvider({_redact(self.dsn)!r})"

    # ------------------------------------------------------------ connections
    @property
    def _psycopg(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise StorageError(
                "the postgres provider needs psycopg: pip install 'playbooks[postgres]'"
            ) from None
        return psycopg

    def _connect(self, *, sync: bool = True, retry: bool = False) -> Any:
        """A new autocommit connection; appends use one without synchronous commit."""
        psycopg = self._psycopg
        deadline = time.monotonic() + (self.reconnect_timeout if retry else 0)
        while True:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"cannot reach PostgreSQL at {_redact(self.dsn)}: "
                        f"{str(exc).strip().splitlines()[-1]}"
                    ) from None
                time.sleep(0.1)  # the server is restarting: try again shortly
        if not sync or not self.fsync:
            conn.execute("SET synchronous_commit = off")
        if not self._schema_ready:
            self._ensure_schema(conn)
        return conn

    def _ensure_schema(self, conn: Any) -> None:
        """Create or migrate the tables, once, under a lock other processes respect."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('playbooks:' || current_schema()))")
            conn.execute("CREATE TABLE IF NOT EXISTS pb_schema (version integer NOT NULL)")
            row = conn.execute("SELECT max(version) FROM pb_schema").fetchone()
            version = row[0] or 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"the database holds playbooks schema version {version}; this build "
                    f"knows versions up to {SCHEMA_VERSION}: upgrade playbooks"
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO pb_schema (version) VALUES (%s)", (number,))
        self._schema_ready = True

    def _shared(self) -> Any:
        if self._shared_conn is None or self._shared_conn.closed:
            self._shared_conn = self._connect(retry=True)
        return self._shared_conn

    def _shared_exec(self, sql: str, params: Any, fetch: bool) -> Any:
        psycopg = self._psycopg
        with self._shared_lock:
            for attempt in (0, 1):
                conn = self._shared()
                try:
                    cur = conn.execute(sql, params)
                    return cur.fetchall() if fetch else cur.rowcount
                except psycopg.OperationalError as exc:
                    if attempt or not conn.broken:
                        raise StorageError(f"PostgreSQL: {str(exc).strip()}") from None
                    self._shared_conn = None

    def _shared_query(self, sql: str, params: Any = ()) -> list[tuple]:
        return self._shared_exec(sql, params, True)

    def _shared_write(self, sql: str, params: Any = (), *, notify: bool = False) -> int:
        count = self._shared_exec(sql, params, False)
        if notify:
            self._notify(None)
        return count

    def _notify(self, conn: Any) -> None:
        """Wake idle workers: something may have become runnable."""
        if conn is None:
            self._shared_exec("SELECT pg_notify(%s, '')", (CHANNEL,), False)
        else:
            conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    def close(self) -> None:
        for conn in (self._shared_conn, self._listen):
            if conn is not None:
                conn.close()
        self._shared_conn = self._listen = None

    # ------------------------------------------------------------ the provider protocol
    def open_log(self, execution_id: str, *, create: bool = True) -> PostgresExecutionLog:
        owner = self._owners.get(execution_id)
        if owner is not None:  # a reader in the owner's process sees all it appended
            owner.flush()
        return PostgresExecutionLog(self, execution_id, create=create)

    def codec(self) -> dict[str, Any]:
        return {"allow_pickle": self.allow_pickle, "pickle_key": self.pickle_key}

    def _exists(self, execution_id: str) -> bool:
        return bool(
            self._shared_query("SELECT 1 FROM pb_executions WHERE id = %s", (execution_id,))
        )

    def list_executions(self) -> list[str]:
        return [r[0] for r in self._shared_query("SELECT id FROM pb_executions ORDER BY id")]

    def read_meta(self, execution_id: str) -> dict | None:
        rows = self._shared_query(
            "SELECT meta FROM pb_executions WHERE id = %s", (validate_execution_id(execution_id),)
        )
        if not rows or rows[0][0] is None:
            return None
        try:
            meta = json.loads(rows[0][0])
        except ValueError:
            raise StorageError(f"the meta of execution {execution_id} is not valid JSON") from None
        return meta if isinstance(meta, dict) else None

    def delete_execution(self, execution_id: str) -> None:
        """Remove every row of the execution; refused while a live process owns it."""
        log = self.open_log(execution_id, create=False)
        log.lock()
        log._stop.set()  # no renewal of a lease on a row about to go
        try:
            log._transaction(
                lambda: [
                    log._conn.execute(
                        f"DELETE FROM {t} WHERE {'id' if t == 'pb_executions' else 'execution_id'}"
                        " = %s",
                        (execution_id,),
                    )
                    for t in _TABLES
                ],
                [],
            )
            log._token = None  # nothing left to release
        finally:
            log.close()

    def owner_pid(self, execution_id: str) -> int | None:
        """The pid of the live owner (-1 when it cannot be told), or None."""
        rows = self._shared_query(
            f"SELECT e.owner, {ALIVE} FROM pb_executions e WHERE e.id = %s", (execution_id,)
        )
        if not rows or not rows[0][1]:
            return None
        pid = str(rows[0][0]).split(":")[1:2]
        return int(pid[0]) if pid and pid[0].isdigit() else -1

    def owner_name(self, execution_id: str) -> str | None:
        rows = self._shared_query(
            f"SELECT e.owner, {ALIVE} FROM pb_executions e WHERE e.id = %s", (execution_id,)
        )
        return _who(rows[0][0]) if rows and rows[0][1] else None

    def last_write(self, execution_id: str) -> float | None:
        rows = self._shared_query(
            "SELECT extract(epoch FROM updated)::float8 FROM pb_executions WHERE id = %s",
            (execution_id,),
        )
        return rows[0][0] if rows else None

    def gc(self, *, keep_last_n: int | None = None, only: str | None = None) -> dict:
        """Retention and unreferenced blobs of every execution not in use; returns counts."""
        counts = dict.fromkeys(
            "executions generations_removed blobs_removed skipped_in_use skipped_damaged "
            "bytes_freed".split(),
            0,
        )
        for execution_id in self.list_executions():
            if only is not None and execution_id != only:
                continue
            log = self.open_log(execution_id, create=False)
            try:
                log.lock()
            except ExecutionLocked:
                counts["skipped_in_use"] += 1
                continue
            try:
                counts["executions"] += 1
                before = log.disk_usage()
                try:
                    loaded = log.load()
                except StorageError:
                    counts["skipped_damaged"] += 1
                    continue
                if loaded.needs_snapshot:
                    counts["skipped_damaged"] += 1
                    continue
                counts["generations_removed"] += log.retain(keep_last_n)
                unused = sorted(log.blobs.names() - log.referenced_blobs())
                if unused:
                    log._transaction(lambda u=unused, g=log: [g.blobs.remove(s) for s in u], [])
                counts["blobs_removed"] += len(unused)
                counts["bytes_freed"] += max(0, before - log.disk_usage())
            finally:
                log.close()
        return counts

    # ------------------------------------------------------------ scale-out
    def append_inbox(self, execution_id: str, message: dict) -> None:
        """Store a message for the execution (one synchronous commit) and wake the workers."""
        validate_execution_id(execution_id)
        text = json.dumps(message, ensure_ascii=False)
        with self._shared_lock:
            conn = self._shared()
            with conn.transaction():
                rows = conn.execute(
                    "INSERT INTO pb_inbox (execution_id, message) SELECT id, %s "
                    "FROM pb_executions WHERE id = %s RETURNING seq",
                    (text, execution_id),
                ).fetchall()
                if not rows:
                    raise StorageError(f"no execution {execution_id} in PostgreSQL")
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, execution_id))

    def read_inbox(self, execution_id: str) -> list[dict]:
        rows = self._shared_query(
            "SELECT message FROM pb_inbox WHERE execution_id = %s ORDER BY seq", (execution_id,)
        )
        return [json.loads(r[0]) for r in rows]

    def runnable(self, limit: int) -> list[str]:
        """Queued; unfinished and owned by no live process (or its lease expired);
        waiting with an inbox message it has not read. Oldest first."""
        rows = self._shared_query(
            f"""SELECT e.id FROM pb_executions e
            WHERE e.status IN ('queued', 'running', 'interrupted', 'waiting') AND NOT {ALIVE}
              AND (e.status <> 'waiting' OR (SELECT count(*) FROM pb_inbox i
                                             WHERE i.execution_id = e.id) > e.inbox_read)
            ORDER BY e.updated, e.id LIMIT %s""",
            (limit,),
        )
        return [r[0] for r in rows]

    def wait_for_work(self, timeout: float) -> None:
        """Block until a NOTIFY (an enqueued run, a reply, a released lease) or timeout."""
        if self._listen is None or self._listen.closed:
            try:
                self._listen = self._connect(retry=False)
                self._listen.execute(f"LISTEN {CHANNEL}")
            except StorageError:
                self._listen = None
                time.sleep(min(timeout, 1.0))  # the database is away: poll again later
                return
        try:
            for _ in self._listen.notifies(timeout=timeout, stop_after=1):
                pass
        except self._psycopg.OperationalError:
            self._listen = None

    # ------------------------------------------------------------ the saver protocol
    @contextmanager
    def _writer(self, execution_id: str, *, create: bool = False) -> Iterator[Any]:
        owner = self._owners.get(execution_id)
        if owner is not None:
            yield owner
            return
        log = self.open_log(execution_id, create=create)
        try:
            log.lock()
            loaded = log.load()
            if loaded.damage is not None:
                raise DamagedLog(
                    f"execution {execution_id}: {loaded.damage.where()}; "
                    "resume it (see --accept-rollback) before changing its checkpoints",
                    loaded.damage,
                )
            if loaded.needs_snapshot:
                log.write_snapshot(replay_until(loaded, None).to_snapshot())
            yield log
        finally:
            log.close()

    # The saver methods are the filesystem provider's: they only use open_log,
    # _writer and codec, which this class provides.
    save_checkpoint = FilesystemCheckpointProvider.save_checkpoint
    load_checkpoint = FilesystemCheckpointProvider.load_checkpoint
    list_checkpoints = FilesystemCheckpointProvider.list_checkpoints
    delete_checkpoint = FilesystemCheckpointProvider.delete_checkpoint
    cleanup_old_checkpoints = FilesystemCheckpointProvider.cleanup_old_checkpoints
