"""Typed JSON encoding, unserializable values, signed pickle and deltas."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before importing playbooks

import dataclasses
import datetime as dt
import decimal
import enum
import io
import json
import math
import pathlib
import threading
import uuid
import zoneinfo

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playbooks.durability.serialization import (
    DecodeError,
    NotCheckpointed,
    Unserializable,
    apply,
    decode,
    diff,
    encode,
    encode_variables,
    stable_hash,
)


class Point(pydantic.BaseModel):
    x: int
    when: dt.datetime
    tags: tuple[str, ...] = ()
    raw: bytes = b""


@dataclasses.dataclass(frozen=True)
class Box:
    name: str
    items: list
    created: dt.date


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


class Opaque:
    """A class with slots: not JSON-typed, but picklable."""

    __slots__ = ("v",)

    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.v == self.v


def roundtrip(value, **kw):
    return decode(json.loads(json.dumps(encode(value, **kw))), **kw)


TYPED = [
    (1, 2.5, "s", None, True),
    {1, "a", (2, 3)},
    frozenset({b"x", 4}),
    b"\x00\xffbytes",
    bytearray(b"mutable"),
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
    dt.datetime(2024, 5, 6, 7, 8, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
    dt.date(1999, 12, 31),
    dt.time(23, 59, 1, 5, tzinfo=dt.timezone.utc),
    dt.timedelta(days=-2, seconds=5, microseconds=7),
    decimal.Decimal("3.1400"),
    {1: "int key", (1, 2): "tuple key", None: 0},
    {"__t": "looks like a tag", "other": [1]},
    complex(1, -2),
    pathlib.Path("/tmp/x"),
    uuid.UUID(int=12345),
    Color.RED,
    Color.BLUE,
    Box("b", [1, {"k": (1, 2)}], dt.date(2020, 2, 2)),
    Point(x=3, when=dt.datetime(2021, 1, 1, 12), tags=("a", "b"), raw=b"hi"),
]


@pytest.mark.parametrize("value", TYPED, ids=lambda v: type(v).__name__)
def test_typed_values_round_trip(value) -> None:
    out = roundtrip(value)
    assert out == value and type(out) is type(value)
    if isinstance(value, dt.datetime):
        assert out.tzinfo == value.tzinfo and out.fold == value.fold


def test_special_floats_round_trip() -> None:
    out = roundtrip([math.inf, -math.inf, math.nan, -0.0])
    assert out[:2] == [math.inf, -math.inf] and math.isnan(out[2])
    assert math.copysign(1, out[3]) == -1
    assert "NaN" not in json.dumps(encode(math.nan))  # tagged, so strict JSON


json_ish = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=5),
        st.dictionaries(st.integers(), inner, max_size=3),
        st.frozensets(st.integers(), max_size=4),
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_ish)
def test_nested_values_round_trip(value) -> None:
    assert roundtrip(value) == value
    enc = encode(value)
    assert stable_hash(enc) == stable_hash(json.loads(json.dumps(enc)))


def test_class_lookup_prefers_resolve_and_never_falls_back_to_a_dict(caplog) -> None:
    enc = json.loads(json.dumps(encode(Box("n", [], dt.date(2020, 1, 1)))))
    enc["cls"] = "program_block:Box"  # defined in a program's python block
    lost = decode(enc)
    assert isinstance(lost, NotCheckpointed)  # not a dict that code would misuse
    with pytest.raises(RuntimeError, match="module program_block is not loaded"):
        lost.name  # noqa: B018
    assert "program_block:Box" in caplog.text
    assert decode(enc, resolve=lambda path: Box if path == "program_block:Box" else None) == Box(
        "n", [], dt.date(2020, 1, 1)
    )
    enc["cls"] = "os:system"  # a function, not a dataclass: never called
    assert isinstance(decode(enc), NotCheckpointed)
    enc["cls"] = f"{__name__}:Gone"
    with pytest.raises(RuntimeError, match="class Gone is not in module"):
        str(decode(enc))


class Plain:
    """A plain class: its instances are their attributes."""

    def __init__(self, name: str, items: list) -> None:
        self.name = name
        self.items = items

    def __eq__(self, other: object) -> bool:
        return type(other) is Plain and vars(other) == vars(self)


def test_plain_class_instances_round_trip_whole_or_not_at_all() -> None:
    value = Plain("p", [1, Box("b", [], dt.date(2020, 1, 1)), {"k": (1, 2)}])
    out = roundtrip(value)
    assert type(out) is Plain and out == value
    assert type(out.items[1]) is Box
    with pytest.raises(Unserializable) as err:
        encode(Plain("p", [lambda: 1]), "$p")  # one bad attribute: no half object
    assert err.value.path == "$p.items[0]"
    encoded, warnings = encode_variables({"p": Plain("p", [os])})
    assert encoded["p"]["__t"] == "unserializable" and "$p.items[0]" in warnings[0]


@pytest.mark.parametrize(
    "make, type_name",
    [
        (lambda: os, "module"),
        (lambda: lambda: 1, "function"),
        (lambda: io.StringIO(), "_io.StringIO"),
        (lambda: (i for i in range(3)), "generator"),
        (lambda: threading.Lock(), "_thread.lock"),
    ],
)
def test_unserializable_named_by_path_and_type(make, type_name) -> None:
    value = make()
    with pytest.raises(Unserializable) as err:
        encode({"cfg": {"client": value}}, "$x")
    assert err.value.path == "$x['cfg']['client']" and err.value.type_name == type_name
    assert str(err.value) == f"cannot checkpoint $x['cfg']['client'] (type {type_name})"


def test_encode_variables_marks_parts_and_warns(tmp_path) -> None:
    async def fetch() -> int:
        return 1

    coro = fetch()
    with open(tmp_path / "f.txt", "w") as handle:
        enc, warnings = encode_variables(
            {
                "cfg": {"client": handle, "n": 1},
                "job": coro,
                "ok": [1, 2],
                "box": Box("b", [os], dt.date(2020, 1, 1)),
            }
        )
    coro.close()
    assert enc["ok"] == [1, 2] and enc["cfg"]["n"] == 1
    joined = "\n".join(warnings)
    assert "$cfg['client'] (type _io.TextIOWrapper)" in joined
    assert "$job (type coroutine)" in joined
    assert "$box.items[0] (type module)" in joined
    assert len(warnings) == 3
    out = decode(json.loads(json.dumps(enc)))
    assert out["ok"] == [1, 2] and out["cfg"]["n"] == 1 and out["box"].name == "b"
    lost = out["cfg"]["client"]
    assert isinstance(lost, NotCheckpointed)
    for use in (
        lambda: lost.write,
        lambda: lost(),
        lambda: str(lost),
        lambda: repr(lost),
        lambda: bool(lost),
        lambda: iter(lost),
        lambda: len(lost),
        lambda: lost == 1,
        lambda: lost["k"],
        lambda: lost + 1,
        lambda: hash(lost),
    ):
        with pytest.raises(RuntimeError, match=r"\$cfg\['client'\] \(type _io.TextIOWrapper\)"):
            use()
    # re-checkpointing a lost value keeps its original name
    again, warnings2 = encode_variables({"c": lost})
    assert again["c"]["path"] == "$cfg['client']" and len(warnings2) == 1


def test_cycles_are_unserializable_not_infinite() -> None:
    a: list = [1]
    a.append(a)
    with pytest.raises(Unserializable, match="cycle"):
        encode(a, "$a")
    enc, warnings = encode_variables({"a": a})
    assert enc["a"][0] == 1 and enc["a"][1]["path"] == "$a[1]" and len(warnings) == 1
    shared = [1]
    assert roundtrip([shared, shared]) == [[1], [1]]  # shared, not cyclic: fine


KEY = b"k" * 32


def test_pickle_off_by_default() -> None:
    with pytest.raises(Unserializable):
        encode(Opaque(1))
    enc = json.loads(json.dumps(encode(Opaque(1), allow_pickle=True, pickle_key=KEY)))
    assert enc["__t"] == "pickle"
    with pytest.raises(DecodeError, match="pickle is not enabled"):
        decode(enc)


def test_pickle_with_good_key_loads() -> None:
    assert roundtrip({"o": Opaque(7)}, allow_pickle=True, pickle_key=KEY) == {"o": Opaque(7)}


class Boom:
    def __reduce__(self):
        return (os._exit, (3,))  # would kill the test process if ever unpickled


def test_tampered_or_wrong_key_pickle_is_refused_before_loading() -> None:
    good = encode(Opaque(1), allow_pickle=True, pickle_key=KEY)
    evil = encode(Boom(), allow_pickle=True, pickle_key=b"attacker-key")
    swapped = dict(good, v=evil["v"])  # payload replaced, signature kept
    for enc, key in ((evil, KEY), (swapped, KEY), (good, b"other key")):
        with pytest.raises(DecodeError, match="bad signature"):
            decode(enc, allow_pickle=True, pickle_key=key)


# ---------------------------------------------------------------- diff / apply

encoded_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=4), inner, max_size=6)
    ),
    max_leaves=25,
)


@st.composite
def edited(draw, value):
    """A value derived from another by the edits programs make."""
    kind = draw(st.integers(0, 4))
    if isinstance(value, list) and kind < 2:
        return value + draw(st.lists(encoded_values, max_size=3))
    if isinstance(value, str) and kind < 2:
        return value + draw(st.text(max_size=5))
    if isinstance(value, dict) and kind < 3:
        out = dict(value)
        for k in draw(st.lists(st.sampled_from(sorted(value)), max_size=2)) if value else []:
            out.pop(k, None)
        for k in list(out)[:2]:
            out[k] = draw(edited(out[k]))
        out.update(draw(st.dictionaries(st.text(max_size=4), encoded_values, max_size=2)))
        return out
    return draw(encoded_values)


def _strict(v):
    return json.dumps(v, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_apply_diff_gives_new(data) -> None:
    old = data.draw(encoded_values)
    new = data.draw(edited(old))
    delta = diff(old, new)
    if delta is None:
        assert _strict(old) == _strict(new)
        return
    snapshot = _strict(old)
    assert _strict(apply(old, delta)) == _strict(new)
    assert _strict(old) == snapshot  # old is not modified
    assert _strict(apply(json.loads(json.dumps(old)), json.loads(json.dumps(delta)))) == _strict(
        new
    )


def test_deltas_are_compact() -> None:
    base = ["x" * 100] * 50
    assert diff(base, base + ["y"]) == {"op": "ext", "v": ["y"]}
    assert diff("abc", "abcdef") == {"op": "app", "v": "def"}
    big = {"a": "x" * 1000, "b": 1, "c": [1] * 100}
    assert diff(big, dict(big, b=2)) == {"op": "upd", "set": {"b": 2}, "del": []}
    assert diff(big, {**big, "c": [1] * 101})["sub"] == {"c": {"op": "ext", "v": [1]}}
    assert diff({"a": 1}, {"b": 2}) == {"op": "set", "v": {"b": 2}}
    assert diff(1, True) == {"op": "set", "v": True}  # 1 and True differ in JSON
    assert diff([1, 2], [1, 2]) is None
