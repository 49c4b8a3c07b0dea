"""Incremental checkpoints: encode only the variables a statement could have changed.

Encoding every variable after every statement makes a checkpoint cost as much
as the whole state. Instead the checkpoint manager keeps, per frame, the
object each variable held when it was last encoded and the ids of the mutable
objects reachable from it. After a statement it re-encodes:

- the names the statement mentions (``touched``, from its AST),
- every name whose object is not the one last encoded (rebound by any route,
  ``Var("name", v)`` included), and every new name,
- every name that shares a mutable object with one of those (aliases: two
  names for one list, a list inside another variable's container),

and everything when it cannot know better: no ``touched`` given, the first
checkpoint of a frame in this process, a touched value that holds code the
generated code defined itself (a function, lambda, generator or a class whose
methods have the namespace as their globals: calling it may change anything),
or a task running such code concurrently (until a checkpoint after it ends).

Trusted code (runtime built-ins, the agent's Python blocks, Python's builtins
and modules) is assumed to change only the objects handed to it: arguments
and the receiver of a method call, which are names the statement mentions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import types
from dataclasses import dataclass, field
from typing import Any

from . import serialization

_EMPTY: frozenset[int] = frozenset()
_IMMUTABLE_CONTAINERS = (tuple, frozenset)


def module_globals(g: Any) -> bool:
    """True when ``g`` is the ``__dict__`` of an imported module (trusted code's globals)."""
    if not isinstance(g, dict):
        return False
    mod = sys.modules.get(g.get("__name__", ""))  # type: ignore[arg-type]
    return mod is not None and getattr(mod, "__dict__", None) is g


def _code_object(v: Any) -> bool:
    """A function, method, generator or coroutine whose code runs with namespace globals."""
    if isinstance(v, (staticmethod, classmethod)):
        v = v.__func__
    if isinstance(v, property):
        return any(_code_object(f) for f in (v.fget, v.fset, v.fdel) if f is not None)
    if isinstance(v, types.MethodType):
        return _code_object(v.__func__)
    if isinstance(v, types.FunctionType):
        return not module_globals(v.__globals__)
    frame = getattr(v, "cr_frame", None) or getattr(v, "gi_frame", None)
    frame = frame or getattr(v, "ag_frame", None)
    return frame is not None and not module_globals(frame.f_globals)


_CLASS_VERDICTS: dict[type, bool] = {}


def code_defined_class(cls: type) -> bool:
    """A class with a method (in it or a base) written in generated code."""
    verdict = _CLASS_VERDICTS.get(cls)
    if verdict is None:
        verdict = any(
            _code_object(attr)
            for klass in cls.__mro__
            if klass is not object
            for attr in vars(klass).values()
        )
        if len(_CLASS_VERDICTS) > 10_000:
            _CLASS_VERDICTS.clear()
        _CLASS_VERDICTS[cls] = verdict
    return verdict


#: Python 3.10-3.11 keep every live task of the process in this weak set; when
#: it holds at most one (the task asking), no other task can be running code.
_TASK_REGISTRY: Any = getattr(asyncio.tasks, "_all_tasks", None)


def code_tasks_pending() -> bool:
    """Another task is running code that generated code defined (it may change anything)."""
    if _TASK_REGISTRY is not None and len(_TASK_REGISTRY) <= 1:
        return False  # the common case, without the cost of listing the tasks
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no running loop
        return False
    current = asyncio.current_task()
    for task in tasks:
        if task is current or task.done():
            continue
        coro: Any = task.get_coro()
        for _ in range(100):  # follow what the task is awaiting
            if coro is None:
                break
            if _code_object(coro):
                return True
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return False


def _walk(v: Any, reach: set[int], depth: int = 0) -> None:
    """Ids of the mutable objects reachable from ``v`` (for values encoded by copy)."""
    if depth > 200 or isinstance(v, (str, int, float, bytes, type(None))):
        return
    if not isinstance(v, _IMMUTABLE_CONTAINERS):
        if id(v) in reach:
            return
        reach.add(id(v))
    if isinstance(v, dict):
        for k, x in v.items():
            _walk(k, reach, depth + 1)
            _walk(x, reach, depth + 1)
    elif isinstance(v, (list, tuple, set, frozenset)):
        for x in v:
            _walk(x, reach, depth + 1)
    elif hasattr(v, "__dict__"):
        _walk(vars(v), reach, depth + 1)


class _Tracking(serialization._Encoder):
    """The checkpoint encoder, also noting reachable mutable objects and code."""

    def __init__(self, codec: dict[str, Any]) -> None:
        super().__init__(True, codec.get("allow_pickle", False), codec.get("pickle_key"))
        self.reach: set[int] = set()
        self.code = False  # reached code defined by generated code (or something opaque)

    def _container(self, v: Any, path: str, build: Any) -> Any:
        t = type(v)
        if t not in (tuple, frozenset):
            self.reach.add(id(v))
        if t not in (list, dict, set, tuple, frozenset):
            if code_defined_class(t):
                self.code = True
            elif dataclasses.is_dataclass(v) and hasattr(v, "__dict__"):
                names = {f.name for f in dataclasses.fields(v)}
                if not set(vars(v)) <= names:  # attributes outside the fields
                    _walk(vars(v), self.reach)
        return super()._container(v, path, build)

    def _typed(self, v: Any, path: str) -> Any:
        if isinstance(v, bytearray):
            self.reach.add(id(v))
        else:
            pyd = sys.modules.get("pydantic")
            if pyd is not None and isinstance(v, pyd.BaseModel):
                _walk(v, self.reach)
                if code_defined_class(type(v)):
                    self.code = True
        return super()._typed(v, path)

    def _fallback(self, v: Any, path: str, reason: str = "") -> dict:
        if not isinstance(v, types.ModuleType):
            self.code = True  # a function, a generator, an unknown object: may do anything
        return super()._fallback(v, path, reason)


@dataclass
class _Known:
    value: Any  # the object last encoded: held, so "is" means "not rebound"
    reach: frozenset[int]


@dataclass
class VariableCache:
    """What the last checkpoint of one frame encoded, to skip what cannot have changed."""

    known: dict[str, _Known] = field(default_factory=dict)
    vars_ref: Any = None  # the FrameState.vars dict this cache matches
    checkpoint: int = -1
    tasks: bool = False  # code-defined tasks were running at the last checkpoint
    full_encodes: int = 0  # how many checkpoints encoded everything (for tests)

    def matches(self, frame: Any) -> bool:
        return (
            frame is not None
            and frame.vars is self.vars_ref
            and frame.checkpoint == self.checkpoint
            and len(frame.vars) == len(self.known)
        )

    def synced(self, frame: Any) -> None:
        self.vars_ref = frame.vars
        self.checkpoint = frame.checkpoint

    def unchanged(
        self, variables: dict[str, Any], touched: frozenset[str] | set[str] | None, frame: Any
    ) -> bool:
        """Can nothing in ``variables`` differ from the frame's stored vars? (Then
        ``encode`` would return nothing: the common statement, answered without it.)"""
        if touched is None or self.tasks or not self.matches(frame):
            return False
        known = self.known
        if len(variables) != len(known) or not touched.isdisjoint(variables):
            return False
        for name, value in variables.items():
            k = known.get(name)
            if k is None or k.value is not value:
                return False
        return not code_tasks_pending()

    def encode(
        self,
        variables: dict[str, Any],
        touched: frozenset[str] | set[str] | None,
        frame: Any,
        codec: dict[str, Any],
    ) -> tuple[dict[str, Any], list[str]]:
        """Encoded values of every variable that may differ from the frame's stored vars."""
        tasks = code_tasks_pending()
        full = touched is None or self.tasks or tasks or not self.matches(frame)
        self.tasks = tasks
        if not full:
            assert touched is not None
            out, warnings, ok = self._incremental(variables, touched, codec)
            if ok:
                return out, warnings
        self.full_encodes += 1
        self.known = {}
        out, warnings = {}, []
        for name, value in variables.items():
            encoded, reach, _code, warns = _encode_one(name, value, codec)
            out[name] = encoded
            warnings += warns
            self.known[name] = _Known(value, reach)
        return out, warnings

    def _incremental(
        self, variables: dict[str, Any], touched: frozenset[str] | set[str], codec: dict[str, Any]
    ) -> tuple[dict[str, Any], list[str], bool]:
        known = self.known
        seen = {n for n in touched if n in variables}
        for name, value in variables.items():
            k = known.get(name)
            if k is None or k.value is not value:
                seen.add(name)
        pending = list(seen)
        for name in [n for n in known if n not in variables]:
            del known[name]
        out: dict[str, Any] = {}
        warnings: list[str] = []
        while pending:
            name = pending.pop()
            old = known.get(name)
            encoded, reach, code, warns = _encode_one(name, variables[name], codec)
            if code:
                return {}, [], False  # it may have changed anything
            out[name] = encoded
            warnings += warns
            known[name] = _Known(variables[name], reach)
            # aliases: any name sharing a mutable object it reached before or reaches now
            for shared in (old.reach if old else _EMPTY, reach):
                if not shared:
                    continue
                for other, k in known.items():
                    if other not in seen and k.reach and not k.reach.isdisjoint(shared):
                        seen.add(other)
                        pending.append(other)
        return out, warnings, True


def _encode_one(
    name: str, value: Any, codec: dict[str, Any]
) -> tuple[Any, frozenset[int], bool, list[str]]:
    encoder = _Tracking(codec)
    encoded = encoder.enc(value, f"${name}")
    reach = frozenset(encoder.reach) if encoder.reach else _EMPTY
    return encoded, reach, encoder.code, encoder.warnings
