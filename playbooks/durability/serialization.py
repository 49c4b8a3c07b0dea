"""Typed JSON encoding of program values, compact deltas, opt-in signed pickle.

Checkpoints must survive a restart of the interpreter, so values are written
as plain JSON with small type tags ({"__t": TAG, ...}) instead of pickle: a
checkpoint file can then never run code when it is loaded. Values that cannot
be represented are named (path and type) instead of failing the run.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import hmac
import importlib
import json
import logging
import math
import pathlib
import pickle
import sys
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

from .deltas import apply, diff, stable_hash

__all__ = ["DecodeError", "NotCheckpointed", "Unserializable", "apply", "decode", "diff"]
__all__ += ["encode", "encode_variables", "stable_hash", "type_name"]

TAG = "__t"
logger = logging.getLogger("playbooks.durability")


class Unserializable(Exception):
    """A value (or part of one) that cannot be written to a checkpoint."""

    def __init__(self, path: str, type_name: str, reason: str = "") -> None:
        self.path = path
        self.type_name = type_name
        self.reason = reason
        text = f"cannot checkpoint {path} (type {type_name})"
        super().__init__(f"{text}: {reason}" if reason else text)


class DecodeError(ValueError):
    """Checkpoint data that must not or cannot be turned back into a value."""


def type_name(value: Any) -> str:
    """A readable type name for messages: 'function', 'httpx.Client'."""
    t = type(value)
    mod = getattr(t, "__module__", "builtins")
    return t.__qualname__ if mod == "builtins" else f"{mod}.{t.__qualname__}"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _sign(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _canonical(encoded: Any) -> str:
    return json.dumps(encoded, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- NotCheckpointed


def _nc_raise(obj: NotCheckpointed) -> NoReturn:
    path = object.__getattribute__(obj, "_nc_path")
    tname = object.__getattribute__(obj, "_nc_type")
    why = object.__getattribute__(obj, "_nc_why")
    raise RuntimeError(
        f"{path} (type {tname}) {why or 'could not be checkpointed'}, "
        "so it is not available after resume"
    )


class NotCheckpointed:
    """Stands in, after resume, for a value that could not be checkpointed.

    Any use raises a RuntimeError naming the variable, so a resumed run fails
    loudly where it touches the lost value and nowhere else.
    """

    __slots__ = ("_nc_path", "_nc_type", "_nc_why")
    _ALLOWED = frozenset(
        {
            "__class__",
            "_nc_path",
            "_nc_type",
            "_nc_why",
            "__copy__",
            "__deepcopy__",
            "__reduce__",
            "__reduce_ex__",
        }
    )

    def __init__(self, path: str, type_name: str, why: str = "") -> None:
        object.__setattr__(self, "_nc_path", path)
        object.__setattr__(self, "_nc_type", type_name)
        object.__setattr__(self, "_nc_why", why)

    def __getattribute__(self, name: str) -> Any:
        if name in NotCheckpointed._ALLOWED:
            return object.__getattribute__(self, name)
        _nc_raise(self)

    def __copy__(self) -> NotCheckpointed:
        return self

    def __deepcopy__(self, memo: dict) -> NotCheckpointed:
        return self

    def __reduce__(self) -> tuple:
        get = object.__getattribute__
        return (
            NotCheckpointed,
            (get(self, "_nc_path"), get(self, "_nc_type"), get(self, "_nc_why")),
        )


def _nc_fail(self: NotCheckpointed, *args: Any, **kwargs: Any) -> NoReturn:
    _nc_raise(self)


for _name in (
    "__call__ __str__ __repr__ __format__ __bytes__ __bool__ __iter__ __aiter__ __next__ "
    "__anext__ __reversed__ __len__ __contains__ __getitem__ __setitem__ __delitem__ "
    "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __hash__ __int__ __float__ __complex__ "
    "__index__ __round__ __add__ __radd__ __iadd__ __sub__ __rsub__ __mul__ __rmul__ "
    "__truediv__ __rtruediv__ __floordiv__ __mod__ __pow__ __neg__ __pos__ __abs__ "
    "__and__ __or__ __xor__ __invert__ __enter__ __exit__ __aenter__ __aexit__ __await__ "
    "__setattr__ __delattr__ __dir__ __fspath__ __getstate__"
).split():
    setattr(NotCheckpointed, _name, _nc_fail)


# ---------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self, mark: bool, allow_pickle: bool, pickle_key: bytes | None) -> None:
        if allow_pickle and not pickle_key:
            raise ValueError("allow_pickle needs a pickle_key to sign pickled values")
        self.mark = mark
        self.allow_pickle = allow_pickle
        self.key = pickle_key
        self.active: set[int] = set()
        self.warnings: list[str] = []

    def enc(self, v: Any, path: str) -> Any:
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            return v
        if t is float:
            return v if math.isfinite(v) else {TAG: "float", "v": repr(v)}
        if t is NotCheckpointed:
            p = object.__getattribute__(v, "_nc_path")
            tn = object.__getattribute__(v, "_nc_type")
            return self._marker(Unserializable(p, tn, "it was already lost at an earlier resume"))
        try:
            return self._typed(v, path)
        except Unserializable as exc:
            if not self.mark:
                raise
            return self._marker(exc)
        except RecursionError:
            exc = Unserializable(path, type_name(v), "it is nested too deeply")
            if not self.mark:
                raise exc from None
            return self._marker(exc)

    def _marker(self, exc: Unserializable) -> dict:
        self.warnings.append(f"{exc}; it will not be available after resume")
        return {TAG: "unserializable", "path": exc.path, "type": exc.type_name}

    def _container(self, v: Any, path: str, build: Callable[[], Any]) -> Any:
        key = id(v)
        if key in self.active:
            raise Unserializable(path, type_name(v), "it contains itself (a reference cycle)")
        self.active.add(key)
        try:
            return build()
        finally:
            self.active.discard(key)

    def _typed(self, v: Any, path: str) -> Any:
        if isinstance(v, enum.Enum):
            return {
                TAG: "enum",
                "cls": _class_path(type(v)),
                "name": v.name,
                "v": self.enc(v.value, f"{path}.value"),
            }
        pyd = sys.modules.get("pydantic")
        if pyd is not None and isinstance(v, pyd.BaseModel):
            try:
                dumped = v.model_dump(mode="json", round_trip=True)
            except Exception as exc:  # arbitrary field types
                return self._fallback(v, path, f"its fields are not JSON-serializable ({exc})")
            return {TAG: "pydantic", "cls": _class_path(type(v)), "v": self.enc(dumped, path)}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._container(v, path, lambda: self._dataclass(v, path))
        if _plain_class(type(v)):
            return self._container(v, path, lambda: self._object(v, path))
        if isinstance(v, str):
            return str.__str__(v)
        if isinstance(v, int):
            return int.__int__(v)
        if isinstance(v, float):
            return self.enc(float.__float__(v), path)
        if isinstance(v, list):
            return self._container(
                v, path, lambda: [self.enc(x, f"{path}[{i}]") for i, x in enumerate(v)]
            )
        if isinstance(v, tuple):
            return self._container(
                v,
                path,
                lambda: {TAG: "tuple", "v": [self.enc(x, f"{path}[{i}]") for i, x in enumerate(v)]},
            )
        if isinstance(v, dict):
            return self._container(v, path, lambda: self._dict(v, path))
        if isinstance(v, (set, frozenset)):
            tag = "frozenset" if isinstance(v, frozenset) else "set"

            def build() -> dict:
                items = [self.enc(x, f"{path}{{item {i}}}") for i, x in enumerate(v)]
                return {TAG: tag, "v": sorted(items, key=_canonical)}

            return self._container(v, path, build)
        if isinstance(v, (bytes, bytearray)):
            tag = "bytes" if isinstance(v, bytes) else "bytearray"
            return {TAG: tag, "v": base64.b64encode(bytes(v)).decode("ascii")}
        if isinstance(v, (dt.datetime, dt.time)):
            out: dict[str, Any] = {
                TAG: "datetime" if isinstance(v, dt.datetime) else "time",
                "v": v.isoformat(),
            }
            zone = getattr(v.tzinfo, "key", None)
            if isinstance(zone, str) and type(v.tzinfo).__name__ == "ZoneInfo":
                out["zone"] = zone
            if v.fold:
                out["fold"] = 1
            return out
        if isinstance(v, dt.date):
            return {TAG: "date", "v": v.isoformat()}
        if isinstance(v, dt.timedelta):
            return {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]}
        if isinstance(v, decimal.Decimal):
            return {TAG: "decimal", "v": str(v)}
        if isinstance(v, complex):
            return {TAG: "complex", "v": [self.enc(v.real, path), self.enc(v.imag, path)]}
        if isinstance(v, pathlib.PurePath):
            return {TAG: "path", "v": str(v)}
        if isinstance(v, uuid.UUID):
            return {TAG: "uuid", "v": str(v)}
        return self._fallback(v, path)

    def _dataclass(self, v: Any, path: str) -> dict:
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(v):
            try:
                value = getattr(v, f.name)
            except AttributeError:  # an init=False field that was never set
                continue
            fields[f.name] = self.enc(value, f"{path}.{f.name}")
        return {TAG: "dataclass", "cls": _class_path(type(v)), "v": fields}

    def _object(self, v: Any, path: str) -> dict:
        """An instance of a plain class: its attributes, all of them or none (no half objects)."""
        mark, self.mark = self.mark, False
        try:
            attrs = {k: self.enc(x, f"{path}.{k}") for k, x in vars(v).items()}
        finally:
            self.mark = mark
        return {TAG: "object", "cls": _class_path(type(v)), "v": attrs}

    def _dict(self, v: dict, path: str) -> Any:
        if TAG not in v and all(type(k) is str for k in v):
            return {k: self.enc(x, f"{path}[{k!r}]") for k, x in v.items()}
        items = []
        for i, (k, x) in enumerate(v.items()):
            items.append([self.enc(k, f"{path}{{key {i}}}"), self.enc(x, f"{path}[{k!r}]")])
        return {TAG: "dict", "items": items}

    def _fallback(self, v: Any, path: str, reason: str = "") -> dict:
        if self.allow_pickle:
            try:
                data = pickle.dumps(v, protocol=4)
            except Exception as exc:
                reason = f"pickle failed too ({exc})"
            else:
                assert self.key is not None
                return {
                    TAG: "pickle",
                    "type": type_name(v),
                    "v": base64.b64encode(data).decode("ascii"),
                    "sig": _sign(self.key, data),
                }
        raise Unserializable(path, type_name(v), reason)


_PLAIN: dict[type, bool] = {}


def _plain_class(t: type) -> bool:
    """Instances of ``t`` are their ``__dict__``: a Python class found again by module:qualname,
    without slots, builtin bases or its own pickling (exceptions, functions... are not)."""
    verdict = _PLAIN.get(t)
    if verdict is None:
        verdict = (
            t.__module__ != "builtins"
            and all(
                k is object
                or (
                    k.__flags__ & (1 << 9)
                    and k.__module__ != "builtins"
                    and "__slots__" not in vars(k)
                )
                for k in t.__mro__
            )
            and t.__reduce_ex__ is object.__reduce_ex__
            and t.__reduce__ is object.__reduce__
            and getattr(t, "__getstate__", object.__getstate__) is object.__getstate__
            and not hasattr(t, "__setstate__")
            and _lookup(_class_path(t)) is t
        )
        if len(_PLAIN) > 10_000:
            _PLAIN.clear()
        _PLAIN[t] = verdict
    return verdict


def encode(
    value: Any,
    path: str = "$value",
    *,
    allow_pickle: bool = False,
    pickle_key: bytes | None = None,
) -> Any:
    """Encode to JSON-able data; raises Unserializable naming the failing part."""
    return _Encoder(False, allow_pickle, pickle_key).enc(value, path)


def encode_variables(variables: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], list[str]]:
    """Encode each variable; unserializable parts become markers plus a warning."""
    encoder = _Encoder(True, kw.get("allow_pickle", False), kw.get("pickle_key"))
    out = {name: encoder.enc(value, f"${name}") for name, value in variables.items()}
    return out, encoder.warnings


# ---------------------------------------------------------------- decoding


def _lookup(path: str) -> Any:
    """Import module:qualname without running anything but the module import."""
    mod, _, qual = path.partition(":")
    if not mod or not qual or "<locals>" in qual:
        return None
    try:
        obj: Any = sys.modules.get(mod) or importlib.import_module(mod)
    except Exception:
        return None
    for part in qual.split("."):
        obj = getattr(obj, "__dict__", {}).get(part)
        if obj is None:
            return None
    return obj


def _is_model(c: Any) -> bool:
    pyd = sys.modules.get("pydantic")
    return pyd is not None and isinstance(c, type) and issubclass(c, pyd.BaseModel)


def _is_dataclass(c: Any) -> bool:
    return isinstance(c, type) and dataclasses.is_dataclass(c)


def _is_enum(c: Any) -> bool:
    return isinstance(c, type) and issubclass(c, enum.Enum)


_SIMPLE: dict[str, Callable[[Any], Any]] = {
    "float": float,
    "bytes": base64.b64decode,
    "bytearray": lambda v: bytearray(base64.b64decode(v)),
    "date": dt.date.fromisoformat,
    "timedelta": lambda v: dt.timedelta(*v),  # days, seconds, microseconds
    "decimal": decimal.Decimal,
    "path": pathlib.Path,
    "uuid": uuid.UUID,
}


class _Decoder:
    def __init__(
        self,
        resolve: Callable[[str], type | None] | None,
        allow_pickle: bool,
        pickle_key: bytes | None,
    ) -> None:
        self.resolve = resolve
        self.allow_pickle = allow_pickle
        self.key = pickle_key

    def dec(self, x: Any) -> Any:
        if isinstance(x, list):
            return [self.dec(i) for i in x]
        if not isinstance(x, dict):
            return x
        tag = x.get(TAG)
        if tag is None:
            return {k: self.dec(v) for k, v in x.items()}
        simple = _SIMPLE.get(tag) if isinstance(tag, str) else None
        handler = getattr(self, f"_t_{tag}", None) if isinstance(tag, str) else None
        if simple is None and handler is None:
            raise DecodeError(f"unknown type tag {tag!r} in checkpoint data")
        try:
            return simple(x["v"]) if simple is not None else handler(x)
        except DecodeError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed {tag!r} value in checkpoint data ({exc})") from None

    def _cls(self, path: str, check: Callable[[Any], bool]) -> Any:
        if self.resolve is not None:
            try:
                found = self.resolve(path)
            except Exception:
                found = None
            if found is not None and check(found):
                return found
        if check is _is_model and "pydantic" not in sys.modules:
            importlib.import_module("pydantic")
        found = _lookup(path)
        return found if check(found) else None

    def _lost(self, path: Any, why: str) -> NotCheckpointed:
        """A typed value whose class cannot be had: never a silent dict in its place."""
        path = str(path)
        mod, _, qual = path.partition(":")
        if not why:
            loaded = mod in sys.modules
            why = (
                f"cannot be rebuilt: class {qual} is not in module {mod}"
                if loaded
                else f"cannot be rebuilt: module {mod} is not loaded"
            )
        logger.warning("a checkpointed instance of %s %s", path, why)
        return NotCheckpointed(f"an instance of {qual or path}", path, why)

    def _t_tuple(self, x: dict) -> tuple:
        return tuple(self.dec(i) for i in x["v"])

    def _t_set(self, x: dict) -> set:
        return {self.dec(i) for i in x["v"]}

    def _t_frozenset(self, x: dict) -> frozenset:
        return frozenset(self.dec(i) for i in x["v"])

    def _t_complex(self, x: dict) -> complex:
        re, im = (self.dec(i) for i in x["v"])
        return complex(re, im)

    def _zone(self, value: Any, x: dict) -> Any:
        if "zone" in x:
            try:
                import zoneinfo

                value = value.replace(tzinfo=zoneinfo.ZoneInfo(x["zone"]))
            except Exception:
                pass  # keep the fixed offset that isoformat recorded
        return value.replace(fold=x.get("fold", 0))

    def _t_datetime(self, x: dict) -> dt.datetime:
        return self._zone(dt.datetime.fromisoformat(x["v"]), x)

    def _t_time(self, x: dict) -> dt.time:
        return self._zone(dt.time.fromisoformat(x["v"]), x)

    def _t_dict(self, x: dict) -> dict:
        return {self.dec(k): self.dec(v) for k, v in x["items"]}

    def _t_unserializable(self, x: dict) -> NotCheckpointed:
        return NotCheckpointed(str(x.get("path")), str(x.get("type")))

    def _t_enum(self, x: dict) -> Any:
        value = self.dec(x["v"])
        cls = self._cls(x["cls"], _is_enum)
        if cls is None:
            return self._lost(x["cls"], "")
        if x.get("name") in cls.__members__:
            return cls.__members__[x["name"]]
        try:
            return cls(value)
        except Exception:
            return self._lost(x["cls"], f"cannot be rebuilt: {value!r} is no longer a member")

    def _t_pydantic(self, x: dict) -> Any:
        fields = self.dec(x["v"])
        cls = self._cls(x["cls"], _is_model)
        if cls is None:
            return self._lost(x["cls"], "")
        try:
            return cls.model_validate_json(json.dumps(fields))
        except Exception as exc:
            return self._lost(x["cls"], f"cannot be rebuilt: its fields no longer validate ({exc})")

    def _t_dataclass(self, x: dict) -> Any:
        fields = {k: self.dec(v) for k, v in x["v"].items()}
        cls = self._cls(x["cls"], _is_dataclass)
        if cls is None:
            return self._lost(x["cls"], "")
        if not set(fields) <= {f.name for f in dataclasses.fields(cls)}:
            return self._lost(x["cls"], "cannot be rebuilt: its class has other fields now")
        try:
            obj = object.__new__(cls)
            for k, v in fields.items():
                object.__setattr__(obj, k, v)
        except Exception as exc:
            return self._lost(x["cls"], f"cannot be rebuilt ({exc})")
        return obj

    def _t_object(self, x: dict) -> Any:
        attrs = {k: self.dec(v) for k, v in x["v"].items()}
        cls = self._cls(x["cls"], lambda c: isinstance(c, type) and _plain_class(c))
        if cls is None:
            return self._lost(x["cls"], "")
        obj = object.__new__(cls)
        obj.__dict__.update(attrs)
        return obj

    def _t_pickle(self, x: dict) -> Any:
        what = x.get("type", "?")
        if not self.allow_pickle:
            raise DecodeError(
                f"checkpoint holds a pickled value (type {what}) but pickle is not enabled; "
                "refusing to load it"
            )
        if not self.key:
            raise DecodeError("pickle is enabled but no pickle_key was given to verify it")
        data = base64.b64decode(x["v"])
        if not hmac.compare_digest(_sign(self.key, data), str(x.get("sig", ""))):
            raise DecodeError(
                f"pickled value (type {what}) has a bad signature; refusing to load it"
            )
        return pickle.loads(data)


def decode(
    data: Any,
    *,
    resolve: Callable[[str], type | None] | None = None,
    allow_pickle: bool = False,
    pickle_key: bytes | None = None,
) -> Any:
    """Rebuild a value from encode() output (after a JSON round trip)."""
    return _Decoder(resolve, allow_pickle, pickle_key).dec(data)
