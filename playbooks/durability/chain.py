"""Reading an execution's files: the newest readable snapshot and the segments after it.

The read side of :class:`~playbooks.durability.log.ExecutionLog`. Recovery
takes the newest snapshot that reads, falls back to older ones, then replays
every segment from there on. Anything that stops it before the end of what was
written is returned as a :class:`~playbooks.durability.damage.Damage` (file,
offset, the records still readable past it), never skipped over.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playbooks.durability.blobs import BlobStore, MissingBlob, loads
from playbooks.durability.damage import Damage, records_of, scan
from playbooks.durability.records import read_records
from playbooks.durability.state import unfold

SNAP = "snap-"
SEG = "log-"
#: Byte patterns of the keys externalize() writes; a payload without them needs no resolve().
_MARKERS = re.compile(rb'"(?:__blob__|__chunks__|__esc__)"')
_FILE = re.compile(r"(snap|log)-(\d{6,})")


class StorageError(Exception):
    """Checkpoint storage cannot do what was asked (one clear line)."""


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


def retention_victims(present: list[int], stats: dict[int, _Gen], keep: int) -> list[int]:
    """Oldest generations that can go: the rest still hold ``keep`` checkpoints
    and at least two generations remain (one rule for every provider)."""
    kept = list(present)
    doomed: list[int] = []
    while len(kept) > 2:
        if sum(stats.get(g, _Gen()).ckpts for g in kept[1:]) < keep:
            break
        doomed.append(kept.pop(0))
    return doomed


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


class ChainReader:
    """Read-only access to the snapshot and segment files of one execution."""

    dir: Path
    blobs: BlobStore
    _mutex: threading.RLock

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

    def _file_size(self, prefix: str, gen: int) -> int:
        try:
            return self._path(prefix, gen).stat().st_size
        except FileNotFoundError:
            return 0

    def _unreadable(self, warnings: list[str]) -> str:
        detail = f" ({'; '.join(w.split(';')[0] for w in warnings)})" if warnings else ""
        return f"no readable checkpoint data in {self.dir}{detail}"

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
            for part in unfold(record):  # a checkpoint carried by an await comes first
                out.append(part)
                if part.get("k") == "ckpt":
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
