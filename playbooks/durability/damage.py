"""What damaged storage would cost: the records recovery has to give up.

When a record in the middle of the log cannot be read, recovery can only go
on from the last good record before it. Whatever came after is lost, and the
effects those records stood for (messages shown, calls made, replies read)
would happen again. This module finds the records that are still readable
past the damage, so that the refusal can say which effects may repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .blobs import loads
from .records import HEADER, HEADER_SIZE, MAGIC, _check

_SHOWN = 8  # effects named in a message; the rest are counted


@dataclass
class Damage:
    """Recovery had to stop before the end of what was written."""

    file: Path
    offset: int | None  # None: the file itself is missing
    reason: str
    lost: list[dict] = field(default_factory=list)  # readable records past the damage
    unreadable: int = 0  # records (or stretches of bytes) past it that cannot be read

    def where(self) -> str:
        if self.offset is None:
            return f"{self.file}: {self.reason}"
        return f"{self.file} is damaged at offset {self.offset} ({self.reason})"

    def effects(self) -> str:
        """Which effects may repeat if recovery goes back before the damage."""
        named = [e for e in map(_effect, self.lost) if e]
        shown = ", ".join(named[:_SHOWN])
        if len(named) > _SHOWN:
            shown += f" and {len(named) - _SHOWN} more"
        if self.offset is None:
            unknown = "the missing file(s)"
        else:
            unknown = "the damaged record"
            if self.unreadable > 1:
                unknown += f" and {self.unreadable - 1} other unreadable part(s)"
        if not self.lost:
            return f"what {unknown} held cannot be read, so which effects may repeat is unknown"
        lost = f"{len(self.lost)} later readable record(s) would be lost"
        if named:
            return f"{lost}; effects that may repeat: {shown}, and whatever {unknown} held"
        return f"{lost} (none of them an effect), and whatever {unknown} held (unknown)"


def refusal(execution_id: str, damage: Damage) -> str:
    """The one-line refusal that names the file, the offset and the flag."""
    return (
        f"execution {execution_id}: {damage.where()}. Resuming would restart from the last "
        f"good record before it: {damage.effects()}. To resume from there anyway, run again "
        "with --accept-rollback (or start over with --fresh)"
    )


def _effect(record: dict) -> str | None:
    kind = record.get("k")
    if kind == "await":
        key = f"{record.get('f')}/{record.get('t')}.{record.get('i')}.{record.get('q')}"
        events = record.get("ev") if isinstance(record.get("ev"), dict) else {}
        say = events.get("say")
        if isinstance(say, dict):
            text = str(say.get("text", ""))
            text = text if len(text) <= 40 else text[:37] + "..."
            return f"message {say.get('id', key)} {text!r}"
        if "consumed" in events:
            return f"reply {events['consumed']} read at {key}"
        name = record.get("name") or record.get("call")
        return f"call {name} at {key}" if name else f"call {key}"
    if kind == "turn" and record.get("llm"):
        return f"LLM call of {record.get('f')} turn {record.get('t')}"
    if kind == "end":
        return f"return of {record.get('f')}"
    if kind == "put":
        return f"saved checkpoint {record.get('id')}"
    return None


def scan(data: bytes, start: int) -> tuple[list[dict], int]:
    """Records that still read after ``start`` (the damaged one is skipped):
    (records, number of unreadable stretches, the damaged one included)."""
    out: list[dict] = []
    unreadable = 1
    pos = data.find(MAGIC, start + 1)
    while pos != -1:
        payload, _ = _check(data, pos)
        if payload is None:
            pos = data.find(MAGIC, pos + 1)
            continue
        try:
            record = loads(payload)
        except ValueError:
            record = None
        if isinstance(record, dict):
            out.append(record)
        else:
            unreadable += 1
        end = pos + HEADER_SIZE + HEADER.unpack_from(data, pos)[3]
        if end < len(data) and not data.startswith(MAGIC, end):
            unreadable += 1
        pos = data.find(MAGIC, end)
    return out, unreadable


def records_of(data: bytes) -> list[dict]:
    """Every readable record of a whole file (for the files after the damage)."""
    records, _ = scan(b"\0" + data, 0)
    return records
