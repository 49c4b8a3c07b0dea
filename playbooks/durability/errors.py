"""Recorded exceptions: stored by type and ``args``, raised again as themselves.

A replayed ``await`` that raised in the first life must raise the same thing
again, or an ``except KeyError`` branch taken then is skipped now. The type is
kept as module and qualname; it is found again among the builtins, in a loaded
module, or (for a class the generated code defined) through ``resolve``. A
class that cannot be found comes back as a :class:`ReplayedError` subclass
carrying the original name, so ``except Exception`` still catches it and the
message still names the type.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from . import serialization


class ReplayedError(Exception):
    """Base of stand-ins for exception types that could not be rebuilt."""


_stand_ins: dict[tuple[str, str], type[ReplayedError]] = {}


def _stand_in(module: str, qualname: str) -> type[ReplayedError]:
    key = (module, qualname)
    if key not in _stand_ins:
        name = qualname.rsplit(".", 1)[-1] or "Error"
        _stand_ins[key] = type(
            name, (ReplayedError,), {"__module__": module, "__qualname__": qualname}
        )
    return _stand_ins[key]


def encode_error(error: BaseException, **codec: Any) -> dict:
    """Type, args (typed JSON where possible) and message of ``error``."""
    cls = type(error)
    data: dict[str, Any] = {
        "type": cls.__name__,
        "module": cls.__module__,
        "qualname": cls.__qualname__,
        "message": str(error),
    }
    try:
        data["args"] = serialization.encode(list(error.args), "args", **codec)
    except serialization.Unserializable:
        data["args"] = None
    return data


def _find(module: str, qualname: str, resolve: Callable[[str], Any] | None) -> Any:
    if module == "builtins" and "." not in qualname:
        found = getattr(builtins, qualname, None)
        if isinstance(found, type):
            return found
    found = serialization._lookup(f"{module}:{qualname}")
    if found is None and resolve is not None:
        try:
            found = resolve(qualname)
        except Exception:
            found = None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def decode_error(
    data: dict, *, resolve: Callable[[str], Any] | None = None, **codec: Any
) -> BaseException:
    """Rebuild a recorded error: the same type with the same ``args``."""
    module = data.get("module") or "builtins"
    qualname = data.get("qualname") or data.get("type") or "Exception"
    message = data.get("message", "")
    args: tuple = (message,)
    if data.get("args") is not None:
        try:
            args = tuple(serialization.decode(data["args"], **codec))
        except Exception:
            args = (message,)
    elif "args" not in data and message == "":
        args = ()
    cls = _find(module, qualname, resolve) or _stand_in(module, qualname)
    try:
        error = cls(*args)
    except Exception:  # a constructor that does not take its own args back
        error = cls.__new__(cls)
    error.args = args
    return error
