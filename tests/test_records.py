"""Record framing: a damaged file yields a prefix of its records, never a wrong one."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing playbooks

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from playbooks.durability.records import (
    FORMAT_VERSION,
    HEADER_SIZE,
    encode_record,
    read_records,
)

# random bytes, compressible text (forces the zlib path) and empty payloads
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, c: c * n, st.integers(1100, 4000), st.sampled_from([b"a", b"xy", b"{}"])),
    st.builds(
        lambda seed, n: bytes(random.Random(seed).choice(b"abc") for _ in range(n)),
        st.integers(0, 1000),
        st.integers(1025, 3000),
    ),
)
logs = st.lists(payloads, min_size=1, max_size=8)


def _frame(records: list[bytes]) -> tuple[bytes, list[int]]:
    data = b""
    ends = []
    for r in records:
        data += encode_record(r)
        ends.append(len(data))
    return data, ends


def test_round_trip_and_compression() -> None:
    big = b"abc" * 2000
    framed = encode_record(big)
    assert len(framed) < len(big) // 4  # compressible payloads are stored compressed
    assert encode_record(b"x" * 10)[2] == FORMAT_VERSION
    res = read_records(framed + encode_record(b"") + encode_record(b"tail"))
    assert res.payloads == [big, b"", b"tail"]
    assert not res.torn and res.warning is None


@settings(max_examples=150, deadline=None)
@given(logs, st.data())
def test_any_truncation_gives_exactly_a_prefix(records: list[bytes], data: st.DataObject) -> None:
    blob, ends = _frame(records)
    cut = data.draw(st.integers(0, len(blob)))
    res = read_records(blob[:cut], "log-000001")
    complete = sum(1 for e in ends if e <= cut)
    assert res.payloads == records[:complete]
    assert res.valid_end == (ends[complete - 1] if complete else 0)
    assert res.torn == (cut not in ends and cut != 0)
    assert res.warning is None


@settings(max_examples=300, deadline=None)
@given(logs, st.data())
def test_any_byte_flip_gives_a_prefix_never_a_wrong_record(
    records: list[bytes], data: st.DataObject
) -> None:
    blob, ends = _frame(records)
    pos = data.draw(st.integers(0, len(blob) - 1))
    mask = data.draw(st.integers(1, 255))
    damaged = bytearray(blob)
    damaged[pos] ^= mask
    res = read_records(bytes(damaged), "log-000003")
    hit = next(i for i, e in enumerate(ends) if pos < e)  # index of the damaged record
    assert res.payloads == records[:hit]
    if hit < len(records) - 1:  # damage with good records behind it is reported
        assert res.warning is not None and not res.torn
        start = ends[hit - 1] if hit else 0
        assert res.warning.startswith("log-000003: ") and f"offset {start}" in res.warning


def test_mid_file_corruption_warning_names_file_and_offset() -> None:
    blob, ends = _frame([b"one", b"two" * 10, b"three"])
    damaged = bytearray(blob)
    damaged[ends[0] + HEADER_SIZE + 2] ^= 0x40
    res = read_records(bytes(damaged), "log-000003")
    assert res.payloads == [b"one"]
    assert res.valid_end == ends[0]
    assert res.warning == (
        f"log-000003: bad checksum at offset {ends[0]}; recovery stops at the last good record"
    )


def test_torn_and_zero_filled_tails_are_quiet() -> None:
    blob, ends = _frame([b"one", b"two"])
    res = read_records(blob + encode_record(b"three")[:-1])
    assert res.payloads == [b"one", b"two"] and res.torn and res.warning is None
    res = read_records(blob + b"\0" * 4096)
    assert res.payloads == [b"one", b"two"] and res.torn and res.valid_end == ends[-1]


def test_future_version_stops_with_a_clear_warning() -> None:
    first = encode_record(b"one")
    future = bytearray(encode_record(b"two"))
    future[2] = FORMAT_VERSION + 1
    res = read_records(first + bytes(future) + encode_record(b"x"), "log-000007")
    assert res.payloads == [b"one"]
    assert "log-000007" in res.warning and f"version {FORMAT_VERSION + 1}" in res.warning
    assert f"offset {len(first)}" in res.warning


def test_garbage_is_corruption_not_a_torn_tail() -> None:
    res = read_records(encode_record(b"ok") + b"not a record at all", "log-000001")
    assert res.payloads == [b"ok"] and not res.torn and res.warning is not None


def test_a_complete_final_record_with_a_bad_checksum_is_damage_not_a_torn_tail() -> None:
    blob, ends = _frame([b'{"k":"one"}', b'{"k":"two"}'])
    for pos in (ends[0] + 9, ends[0] + HEADER_SIZE + 3, len(blob) - 1):  # crc, payload, last byte
        damaged = bytearray(blob)
        damaged[pos] ^= 0x04
        res = read_records(bytes(damaged), "log-000002")
        assert res.payloads == [b'{"k":"one"}'] and not res.torn
        assert res.warning == (
            f"log-000002: bad checksum at offset {ends[0]}; recovery stops at the last good record"
        )


def test_a_final_record_whose_length_grew_is_damage_not_a_torn_tail() -> None:
    blob, ends = _frame([b'{"k":"one"}', b'{"k":"two"}'])
    damaged = bytearray(blob)
    damaged[ends[0] + 4] += 7  # the declared length now runs past the end of the file
    res = read_records(bytes(damaged), "log-000002")
    assert res.payloads == [b'{"k":"one"}'] and not res.torn
    assert res.warning is not None and f"offset {ends[0]}" in res.warning
    # a write that really stopped short of its declared length is still a torn tail
    res = read_records(blob[:-3], "log-000002")
    assert res.payloads == [b'{"k":"one"}'] and res.torn and res.warning is None


def test_a_final_record_the_filesystem_zero_filled_is_a_torn_tail() -> None:
    blob, ends = _frame([b'{"k":"one"}', b'{"k":"two"}'])
    zeroed = blob[: ends[0] + HEADER_SIZE] + bytes(len(blob) - ends[0] - HEADER_SIZE)
    res = read_records(zeroed, "log-000002")
    assert res.payloads == [b'{"k":"one"}'] and res.torn and res.warning is None


# JSON values with the cases where writers differ: NaN and infinities, exponents,
# integers past 64 bits, escapes, non-ASCII and lone surrogates (legal in a str)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(alphabet=st.characters(codec=None, exclude_categories=())),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=400, deadline=None)
def test_a_record_reads_back_as_the_value_it_was_written_from(value) -> None:
    from playbooks.durability.blobs import dumps, loads

    assert repr(loads(dumps(value))) == repr(value)  # repr: NaN is not equal to itself


def test_the_fast_json_writer_is_used_and_refuses_what_json_refuses() -> None:
    from playbooks.durability import blobs

    # pydantic-core in the range pyproject allows reads back the same: every record uses it
    assert blobs._RUST is not None
    cycle: list = []
    cycle.append(cycle)
    for bad, error in ((cycle, ValueError), ({"x": object()}, TypeError)):
        try:
            blobs.dumps(bad)
        except error:
            continue
        raise AssertionError(f"{bad!r} was written")


# what the runtime writes: JSON text, which never ends in a NUL byte
json_payloads = st.lists(
    st.text(alphabet='abc{}:,"0123456789', min_size=1, max_size=400).map(
        lambda t: ("{" + t + "}").encode()
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(json_payloads, st.integers(1, 5000), st.data())
def test_a_write_that_stopped_short_in_reserved_zeros_is_a_quiet_torn_tail(
    records: list[bytes], reserve: int, data: st.DataObject
) -> None:
    """A log writer keeps zeros past its last record; a write cut anywhere (but in a
    record's last four bytes, indistinguishable from damage to them) leaves a
    prefix of its record followed by those zeros: a torn tail, never damage."""
    blob, ends = _frame(records)
    cut = data.draw(st.integers(0, len(blob)))
    complete = sum(1 for e in ends if e <= cut)
    if complete < len(records) and cut > ends[complete] - 4:
        cut = max(ends[complete] - 4, ends[complete - 1] if complete else 0)
    res = read_records(blob[:cut] + bytes(len(blob) - cut + reserve), "log-000001")
    assert res.payloads == records[:complete]
    assert res.valid_end == (ends[complete - 1] if complete else 0)
    assert res.torn and res.warning is None


@settings(max_examples=300, deadline=None)
@given(json_payloads, st.integers(1, 5000), st.data())
def test_a_byte_flip_before_reserved_zeros_gives_a_prefix_and_damage_to_a_record_is_reported(
    records: list[bytes], reserve: int, data: st.DataObject
) -> None:
    blob, ends = _frame(records)
    damaged = bytearray(blob + bytes(reserve))
    pos = data.draw(st.integers(0, len(damaged) - 1))
    damaged[pos] ^= data.draw(st.integers(1, 255))
    res = read_records(bytes(damaged), "log-000004")
    assert res.payloads == records[: len(res.payloads)]  # never a wrong record
    if pos < len(blob):  # inside a record, the last one included: reported, never quiet
        hit = next(i for i, e in enumerate(ends) if pos < e)
        assert res.payloads == records[:hit]
        assert res.warning is not None and not res.torn
        assert f"offset {ends[hit - 1] if hit else 0}" in res.warning
    else:  # in the zeros past the last record: every record is read
        assert res.payloads == records


def test_a_final_record_whose_length_grew_into_reserved_zeros_is_damage() -> None:
    blob, ends = _frame([b'{"k":"one"}', b'{"k":"two"}'])
    for grow in (1, 7, 300, 70000):
        damaged = bytearray(blob + bytes(4096))
        length = int.from_bytes(damaged[ends[0] + 4 : ends[0] + 8], "little") + grow
        damaged[ends[0] + 4 : ends[0] + 8] = length.to_bytes(4, "little")
        res = read_records(bytes(damaged), "log-000002")
        assert res.payloads == [b'{"k":"one"}'] and not res.torn, grow
        assert res.warning is not None and f"offset {ends[0]}" in res.warning
