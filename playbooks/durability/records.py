"""Record framing for append-only files.

Every record carries its length and a CRC32 so that a reader can tell a torn
tail (the file ends short of the last record's declared length: the process
died in the middle of a write, ignore it) from damage (report it, never load
it): a bad record anywhere but that tail, including a full-length final
record whose CRC fails.

Header (12 bytes): magic (2) | version (1) | flags (1) | length (4, LE) | crc32 (4, LE).
The CRC covers the first 8 header bytes and the payload as stored, so a flipped
flag or length can never turn a good record into a different one.

A writer may reserve space past its last record (zeros: see ExecutionLog), so
"the end of the file" below means the end of the file or the zeros after the
last byte written: a write that stopped short leaves a prefix of its record and
then zeros, while damage leaves written bytes where they should not be.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

FORMAT_VERSION = 1
MAGIC = b"\xfe\xb1"  # 0xFE never occurs in UTF-8, so it cannot appear in JSON text
FLAG_ZLIB = 0x01
KNOWN_FLAGS = FLAG_ZLIB
COMPRESS_OVER = 1024
HEADER = struct.Struct("<2sBBII")
HEADER_SIZE = HEADER.size  # 12
#: A final record ending in this many zero bytes was cut short by the filesystem
#: (size extended, data never written: power loss), not damaged later. JSON
#: never ends in NUL and a zlib stream ends in its checksum.
ZERO_TAIL = 4


class CorruptRecord(Exception):
    """A record that must not be loaded; the message names file and byte offset."""


def _crc(head8: bytes, stored: bytes) -> int:
    return zlib.crc32(stored, zlib.crc32(head8)) & 0xFFFFFFFF


_LEADS = {f: MAGIC + bytes((FORMAT_VERSION, f)) for f in (0, FLAG_ZLIB)}
_U32 = struct.Struct("<I").pack


def encode_record(payload: bytes) -> bytes:
    """Frame one payload; compress it when that pays off (long, repetitive JSON)."""
    flags = 0
    stored = payload
    if len(payload) > COMPRESS_OVER:
        packed = zlib.compress(payload, 1)
        if len(packed) < len(payload):
            stored, flags = packed, FLAG_ZLIB
    head8 = _LEADS[flags] + _U32(len(stored))  # the first 8 bytes of HEADER
    return b"".join((head8, _U32(zlib.crc32(stored, zlib.crc32(head8)) & 0xFFFFFFFF), stored))


@dataclass
class ReadResult:
    payloads: list[bytes]
    valid_end: int
    torn: bool
    warning: str | None
    offsets: list[int] = field(default_factory=list)  # start offset of each payload's record


def _check(data: bytes, pos: int) -> tuple[bytes | None, str]:
    """Try to read one complete record at pos: (payload, "") or (None, reason).

    Reasons: "short" (file ends inside the header), "beyond" (the file ends
    inside the payload), or a human-readable description of the corruption.
    """
    if len(data) - pos < HEADER_SIZE:
        return None, "short"
    magic, version, flags, length, crc = HEADER.unpack_from(data, pos)
    if magic != MAGIC:
        return None, "bad record header"
    if version != FORMAT_VERSION:
        return None, (
            f"record format version {version} (this build reads version {FORMAT_VERSION})"
        )
    if flags & ~KNOWN_FLAGS:
        return None, "unknown record flags"
    end = pos + HEADER_SIZE + length
    if end > len(data):
        return None, "beyond"
    stored = data[pos + HEADER_SIZE : end]
    if _crc(data[pos : pos + 8], stored) != crc:
        return None, "bad checksum"
    if flags & FLAG_ZLIB:
        try:
            return zlib.decompress(stored), ""
        except zlib.error:
            return None, "undecodable compressed payload"
    return stored, ""


def _whole_with_bad_length(data: bytes, pos: int, end: int) -> bool:
    """Do the bytes from pos to end, or to the last byte written before it (a
    compressed payload may itself end in a few zero bytes), form a complete
    record whose length field alone was changed? (A torn write never passes
    this CRC.)"""
    crc = HEADER.unpack_from(data, pos)[4]
    start = pos + HEADER_SIZE
    last = start + len(data[start:end].rstrip(b"\0"))
    for stop in {end, *range(last, min(last + ZERO_TAIL, end) + 1)}:
        stored = data[start:stop]
        if _crc(data[pos : pos + 4] + _U32(len(stored)), stored) == crc:
            return True
    return False


def _stopped_short(data: bytes, pos: int, reason: str) -> bool:
    """Is the failed record at pos a write that stopped short (a torn tail:
    the process or the machine died), rather than damage to written bytes?"""
    rest = data[pos:]
    if reason == "short":
        return rest.startswith(MAGIC[: len(rest)]) or not rest.strip(b"\0")
    if reason == "beyond":
        # short of its declared length: torn, unless the bytes are a whole
        # record whose length field alone was damaged
        return not _whole_with_bad_length(data, pos, len(data)) and not _valid_record_after(
            data, pos + 1
        )
    if reason == "bad checksum":
        # a full-length final record whose CRC fails is damage; only a record
        # whose last bytes, and all after it, are zeros (never written: a
        # zero-filled or reserved tail) counts as torn
        end = pos + HEADER_SIZE + HEADER.unpack_from(data, pos)[3]
        return (
            not data[end - ZERO_TAIL :].strip(b"\0")
            and not _whole_with_bad_length(data, pos, end)
            and not _valid_record_after(data, pos + 1)
        )
    # a bad magic, version or flags byte: torn only if what was written is the
    # start of a record's first four bytes, zeros after it
    written = rest.rstrip(b"\0")
    return len(written) <= 4 and any(lead.startswith(written) for lead in _LEADS.values())


def _valid_record_after(data: bytes, start: int) -> bool:
    """Is there a complete, valid record somewhere after start? (Tells a torn
    tail from a corrupted length field with good data behind it.)"""
    pos = data.find(MAGIC, start)
    while pos != -1:
        payload, _ = _check(data, pos)
        if payload is not None:
            return True
        pos = data.find(MAGIC, pos + 1)
    return False


def read_records(data: bytes, name: str = "<log>") -> ReadResult:
    """Return the longest valid prefix of records; never a wrong record."""
    payloads: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    size = len(data)
    while pos < size:
        payload, reason = _check(data, pos)
        if payload is not None:
            payloads.append(payload)
            offsets.append(pos)
            pos += HEADER_SIZE + HEADER.unpack_from(data, pos)[3]
            continue
        if _stopped_short(data, pos, reason):
            return ReadResult(payloads, pos, True, None, offsets)
        reason = {"short": "bad record header", "beyond": "bad record length"}.get(reason, reason)
        if reason.startswith("record format version"):
            warning = f"{name}: unsupported {reason} at offset {pos}; recovery stops there"
        else:
            warning = f"{name}: {reason} at offset {pos}; recovery stops at the last good record"
        return ReadResult(payloads, pos, False, warning, offsets)
    return ReadResult(payloads, pos, False, None, offsets)
