"""Reading an execution stored in PostgreSQL: snapshots, records, blobs.

The read side of :class:`~playbooks.durability.postgres_log.PostgresExecutionLog`
(as ``chain.py`` is for the file log). Frames are checked as the file log
checks them; a frame that does not check is damage, reported with its
sequence number, never skipped.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import BlobStore, MissingBlob, loads
from .chain import _MARKERS, DamagedLog, Loaded, _Gen
from .damage import Damage
from .records import HEADER_SIZE, _check

if TYPE_CHECKING:
    from .postgres_log import PostgresExecutionLog


def _frame_payload(frame: bytes) -> tuple[bytes | None, str]:
    """The payload of a stored frame, or (None, why it cannot be used)."""
    payload, reason = _check(frame, 0)
    if payload is not None and len(frame) != HEADER_SIZE + int.from_bytes(frame[4:8], "little"):
        return None, "bad record length"
    if reason in ("short", "beyond"):
        reason = "truncated record"
    return payload, reason


class PgBlobStore(BlobStore):
    """Large values of one execution, by content hash, in ``pb_blobs``."""

    def __init__(self, log: PostgresExecutionLog) -> None:
        super().__init__(Path(str(log.dir)) / "blobs", False)
        self._log = log

    def names(self) -> set[str]:
        if self._known is None:
            rows = self._log._query(
                "SELECT sha FROM pb_blobs WHERE execution_id = %s", (self._log.execution_id,)
            )
            self._known = {r[0] for r in rows}
        return self._known

    def put(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        if sha not in self.names():
            self._log._write(
                "INSERT INTO pb_blobs (execution_id, sha, data) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (self._log.execution_id, sha, zlib.compress(content, 1)),
            )
            self.names().add(sha)
        return sha

    def get(self, sha: str, cache: dict[str, bytes] | None = None) -> bytes:
        if cache is not None and sha in cache:
            return cache[sha]
        rows = self._log._query(
            "SELECT data FROM pb_blobs WHERE execution_id = %s AND sha = %s",
            (self._log.execution_id, sha),
        )
        if not rows:
            raise MissingBlob(f"blob {str(sha)[:12]} is missing")
        try:
            content = zlib.decompress(rows[0][0])
        except zlib.error as exc:
            raise MissingBlob(f"blob {sha[:12]} is damaged ({exc})") from None
        if hashlib.sha256(content).hexdigest() != sha:
            raise MissingBlob(f"blob {sha[:12]} does not match its hash")
        if cache is not None:
            cache[sha] = content
        return content

    def remove(self, sha: str) -> int:
        self._log._write(
            "DELETE FROM pb_blobs WHERE execution_id = %s AND sha = %s",
            (self._log.execution_id, sha),
        )
        self.names().discard(sha)
        return 0


class PgReader:
    """Read-only access to one execution's rows."""

    execution_id: str
    dir: Path
    blobs: PgBlobStore
    _mutex: threading.RLock

    def _query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        raise NotImplementedError

    def flush(self) -> None:
        """Send what this process has pending (the owner overrides it)."""

    def _snapshots(self, newest: int | None) -> list[tuple[int, bytes]]:
        sql = "SELECT gen, frame FROM pb_snapshots WHERE execution_id = %s"
        params: tuple = (self.execution_id,)
        if newest is not None:
            sql += " AND gen <= %s"
            params += (newest,)
        return self._query(sql + " ORDER BY gen DESC", params)

    def _read_snapshot(self, gen: int, frame: bytes, cache: dict) -> tuple[dict, dict, set, dict]:
        payload, reason = _frame_payload(bytes(frame))
        if payload is None:
            raise ValueError(reason)
        obj = loads(payload)
        if obj.get("gen") != gen or not isinstance(obj.get("state"), dict):
            raise ValueError("unexpected content")
        refs: set[str] = set()
        state = self.blobs.resolve(obj["state"], refs, cache)
        puts = self.blobs.resolve(obj.get("puts", {}), refs, cache)
        history = obj.get("history") if isinstance(obj.get("history"), dict) else {}
        obj["_seq"] = obj.get("seq", 0)
        return state, history, refs, {"puts": puts, "seq": obj["_seq"]}

    def _chain(self, newest: int | None = None) -> tuple[Loaded, dict]:
        """The newest readable snapshot (at or below ``newest``) and the records after it."""
        cache: dict[str, bytes] = {}
        warnings: list[str] = []
        snapshot, base, history, refs, extra = None, None, {}, set(), {"puts": {}, "seq": 0}
        first_bad: tuple[int, str] | None = None
        for gen, frame in self._snapshots(newest):
            try:
                snapshot, history, refs, extra = self._read_snapshot(gen, frame, cache)
            except (ValueError, AttributeError, MissingBlob) as exc:
                first_bad = first_bad or (gen, str(exc))
                warnings.append(
                    f"{self.dir}/snapshot-{gen}: unreadable ({exc}); "
                    "falling back to an older snapshot and the records"
                )
                continue
            base = gen
            break
        sql = "SELECT seq, gen, frame FROM pb_records WHERE execution_id = %s AND gen >= %s"
        params: tuple = (self.execution_id, base or 0)
        if newest is not None:
            sql += " AND gen <= %s"
            params += (newest,)
        rows = self._query(sql + " ORDER BY seq", params)
        if base is None:
            if rows and rows[0][1] != 0 or first_bad is not None and not rows:
                gen, why = first_bad or (0, "missing")
                damage = Damage(self.dir / f"snapshot-{gen}", 0, why)
                reason = (
                    "; ".join(w.split(";")[0] for w in warnings) or "its first records are gone"
                )
                raise DamagedLog(f"no readable checkpoint data in {self.dir} ({reason})", damage)
            base = 0
        stats: dict[int, _Gen] = {}
        for key, info in history.items():
            try:
                stats[int(key)] = _Gen(int(info["ckpts"]), set(info["refs"]))
            except (ValueError, TypeError, KeyError):
                continue
        stats[base] = _Gen(0, set(refs))
        records: list[dict] = []
        damage = None
        appended = 0
        for index, (seq, gen, frame) in enumerate(rows):
            payload, reason = _frame_payload(bytes(frame))
            record: Any = None
            if payload is not None:
                try:
                    record = loads(payload)
                    if _MARKERS.search(payload):
                        record = self.blobs.resolve(
                            record, stats.setdefault(gen, _Gen()).refs, cache
                        )
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                except (ValueError, MissingBlob) as exc:
                    record, reason = None, f"unreadable record: {exc}"
            if record is None:
                lost = [r for r in map(self._decode_quietly, rows[index + 1 :]) if r is not None]
                damage = Damage(self.dir / "records", seq, reason, lost, 1)
                warnings.append(
                    f"{self.dir}/records: {reason} at offset {seq}; "
                    "recovery stops at the last good record"
                )
                break
            records.append(record)
            appended += len(frame)
            kind = record.get("k")
            if kind == "ckpt":
                stats.setdefault(gen, _Gen()).ckpts += 1
        puts = dict(extra["puts"])
        for record in records:
            if record.get("k") == "put":
                puts[record.get("id")] = record.get("data")
            elif record.get("k") == "forget":
                puts[record.get("id")] = None
        top = max([g for g, _ in self._snapshots(newest)[:1]] + [r[1] for r in rows[-1:]] + [base])
        loaded = Loaded(
            snapshot,
            records,
            base,
            warnings,
            base != top,
            damage is not None or base != top,
            damage,
            puts,
        )
        last = rows[-1][0] + 1 if rows else 0
        info = {"stats": stats, "top": top, "seq": max(last, extra["seq"]), "appended": appended}
        return loaded, info

    @staticmethod
    def _decode_quietly(row: tuple) -> dict | None:
        payload, _ = _frame_payload(bytes(row[2]))
        try:
            record = loads(payload) if payload is not None else None
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def load_generation(self, gen: int) -> Loaded:
        with self._mutex:
            return self._chain(gen)[0]

    def disk_usage(self) -> int:
        rows = self._query(
            "SELECT (SELECT coalesce(sum(octet_length(frame)), 0) FROM pb_records "
            "WHERE execution_id = %(id)s) + (SELECT coalesce(sum(octet_length(frame)), 0) "
            "FROM pb_snapshots WHERE execution_id = %(id)s) + (SELECT "
            "coalesce(sum(octet_length(data)), 0) FROM pb_blobs WHERE execution_id = %(id)s)",
            {"id": self.execution_id},
        )
        return int(rows[0][0])

    def _all_records(self) -> list[tuple[int, dict]]:
        self.flush()
        rows = self._query(
            "SELECT seq, gen, frame FROM pb_records WHERE execution_id = %s ORDER BY seq",
            (self.execution_id,),
        )
        out = []
        for row in rows:
            record = self._decode_quietly(row)
            if record is None:
                break
            out.append((row[1], record))
        return out

    def checkpoint_records(self) -> list[dict]:
        with self._mutex:
            return [r for _, r in self._all_records() if r.get("k") == "ckpt"]

    def checkpoints(self) -> list[tuple[int, int]]:
        """(number, generation) of retained checkpoints whose generation can be rebuilt."""
        with self._mutex:
            rows = self._all_records()
            snaps = {g for g, _ in self._snapshots(None)}
            first = min([g for g, _ in rows] + list(snaps), default=0)
            if first != 0 and first not in snaps:
                return []
            return [(r["n"], g) for g, r in rows if r.get("k") == "ckpt" and "n" in r]

    def referenced_blobs(self) -> set[str]:
        refs: set[str] = set()
        for _, record in self._all_records():
            self.blobs.resolve(record, refs)
        for gen, frame in self._snapshots(None):
            try:
                refs |= self._read_snapshot(gen, frame, {})[2]
            except (ValueError, AttributeError, MissingBlob):
                continue
        return refs
