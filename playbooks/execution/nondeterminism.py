"""Clocks, random numbers and uuids that return the first life's values on replay.

A statement re-entered after a crash must compute what it computed before, or
an order id made with ``uuid4()`` differs between the message sent before the
crash and the one sent after. The modules generated code imports (and the
ones a ``.pb`` python block uses) get their nondeterministic functions
replaced by journaled ones: each call inside a journaled statement draws its
value through :func:`journal.draw`, keyed by its order in the statement, so a
replay gets the recorded value back, inside loops too. Outside a statement
they behave as the originals.

Choices among the caller's objects (``choice``, ``sample``, ``shuffle``) draw
indices, not the objects, so a replay hands back the caller's own objects.
``random.SystemRandom`` and ``os.urandom`` are not covered.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import random as _random
import time as _time
import types
import uuid as _uuid
from collections.abc import Callable
from typing import Any

from .journal import draw

MODULES = ("time", "random", "uuid", "datetime")


def _drawn(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def journaled(*args: Any, **kwargs: Any) -> Any:
        return draw(name, fn, *args, **kwargs)

    journaled.__name__ = getattr(fn, "__name__", name)
    journaled.__qualname__ = journaled.__name__
    journaled.__doc__ = getattr(fn, "__doc__", None)
    journaled.__wrapped__ = fn  # type: ignore[attr-defined]
    return journaled


def _now_only(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``localtime()`` reads the clock only when called without a time."""

    def journaled(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return fn(*args, **kwargs)
        return draw(name, fn)

    journaled.__name__ = fn.__name__
    journaled.__wrapped__ = fn  # type: ignore[attr-defined]
    return journaled


# ---------------------------------------------------------------- random


def _choice(seq: Any) -> Any:
    if not len(seq):
        raise IndexError("Cannot choose from an empty sequence")
    return seq[draw("random.choice", _random.randrange, len(seq))]


def _sample(population: Any, k: int, **kwargs: Any) -> list:
    pool = list(population)
    picked = draw("random.sample", _random.sample, range(len(pool)), k, **kwargs)
    return [pool[i] for i in picked]


def _choices(population: Any, weights: Any = None, *, cum_weights: Any = None, k: int = 1) -> list:
    pool = list(population)
    picked = draw(
        "random.choices",
        _random.choices,
        range(len(pool)),
        weights,
        cum_weights=cum_weights,
        k=k,
    )
    return [pool[i] for i in picked]


def _shuffle(x: list) -> None:
    order = list(range(len(x)))
    order = draw("random.shuffle", lambda: _random.sample(order, len(order)))
    x[:] = [x[i] for i in order]


_RANDOM_VALUES = (
    "random uniform triangular randint randrange getrandbits gauss normalvariate "
    "lognormvariate expovariate vonmisesvariate gammavariate betavariate paretovariate "
    "weibullvariate randbytes binomialvariate"
).split()


def _random_overrides() -> dict[str, Any]:
    table: dict[str, Any] = {
        name: _drawn(f"random.{name}", getattr(_random, name))
        for name in _RANDOM_VALUES
        if hasattr(_random, name)
    }
    table.update(choice=_choice, sample=_sample, choices=_choices, shuffle=_shuffle)
    return table


# ---------------------------------------------------------------- datetime


class _ClassProxy:
    """A stand-in for ``datetime.datetime`` / ``datetime.date`` whose clock reads are journaled."""

    def __init__(self, real: type, overrides: dict[str, Callable[..., Any]]) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_overrides", overrides)

    def __getattr__(self, name: str) -> Any:
        overrides = object.__getattribute__(self, "_overrides")
        if name in overrides:
            return overrides[name]
        return getattr(object.__getattribute__(self, "_real"), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return object.__getattribute__(self, "_real")(*args, **kwargs)

    def __instancecheck__(self, obj: Any) -> bool:
        return isinstance(obj, object.__getattribute__(self, "_real"))

    def __subclasscheck__(self, cls: type) -> bool:
        return issubclass(cls, object.__getattribute__(self, "_real"))

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object.__getattribute__(self, "_real"),)

    def __eq__(self, other: Any) -> bool:
        real = object.__getattribute__(self, "_real")
        return other is self or other is real

    def __hash__(self) -> int:
        return hash(object.__getattribute__(self, "_real"))

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_real"))


def _clock(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def journaled(*args: Any, **kwargs: Any) -> Any:
        return draw(name, real, *args, **kwargs)

    journaled.__name__ = name.rsplit(".", 1)[-1]
    return journaled


DATETIME = _ClassProxy(
    _dt.datetime,
    {
        "now": _clock("datetime.now", _dt.datetime.now),
        "today": _clock("datetime.today", _dt.datetime.today),
        "utcnow": _clock("datetime.utcnow", _dt.datetime.utcnow),
    },
)
DATE = _ClassProxy(_dt.date, {"today": _clock("date.today", _dt.date.today)})


# ---------------------------------------------------------------- tables


def _overrides(name: str) -> dict[str, Any]:
    if name == "time":
        table = {
            n: _drawn(f"time.{n}", getattr(_time, n))
            for n in (
                "time",
                "time_ns",
                "monotonic",
                "monotonic_ns",
                "perf_counter",
                "perf_counter_ns",
            )
        }
        table.update(
            {
                n: _now_only(f"time.{n}", getattr(_time, n))
                for n in ("localtime", "gmtime", "ctime", "asctime", "strftime")
            }
        )
        # strftime(format) reads the clock without a time argument
        table["strftime"] = lambda fmt, *t: (
            _time.strftime(fmt, *t) if t else draw("time.strftime", _time.strftime, fmt)
        )
        return table
    if name == "random":
        return _random_overrides()
    if name == "uuid":
        return {n: _drawn(f"uuid.{n}", getattr(_uuid, n)) for n in ("uuid1", "uuid4")}
    if name == "datetime":
        return {"datetime": DATETIME, "date": DATE}
    return {}


_TABLES = {name: _overrides(name) for name in MODULES}
_BY_ORIGINAL: dict[int, Any] = {}
for _module_name, _table in _TABLES.items():
    _real_module = {"time": _time, "random": _random, "uuid": _uuid, "datetime": _dt}[_module_name]
    for _attr, _replacement in _table.items():
        _BY_ORIGINAL[id(getattr(_real_module, _attr))] = _replacement


def journal_module(module: types.ModuleType) -> types.ModuleType:
    """Replace, in a module object the runtime made for the code, what reads a clock or chance."""
    table = _TABLES.get(module.__name__)
    if table:
        for attr, replacement in table.items():
            if attr in module.__dict__:
                setattr(module, attr, replacement)
    return module


def journaled_copy(module: types.ModuleType) -> types.ModuleType:
    """A copy of a real module with its clock and chance journaled (for ``.pb`` python blocks)."""
    copy = types.ModuleType(module.__name__, module.__doc__)
    copy.__dict__.update(
        {k: v for k, v in vars(module).items() if k not in ("__name__", "__doc__")}
    )
    return journal_module(copy)


def journal_globals(namespace: dict[str, Any]) -> None:
    """Make a python block's globals journaled: its modules, the functions it imported
    by name, and the imports its functions make later (inside a function body)."""
    namespace["__builtins__"] = journaled_builtins()
    copies: dict[str, types.ModuleType] = {}
    for name, value in list(namespace.items()):
        if isinstance(value, types.ModuleType) and value.__name__ in _TABLES:
            if value.__name__ not in copies:
                copies[value.__name__] = journaled_copy(value)
            namespace[name] = copies[value.__name__]
        elif not isinstance(value, types.ModuleType):
            try:
                replacement = _BY_ORIGINAL.get(id(value))
            except TypeError:
                replacement = None
            if replacement is not None:
                namespace[name] = replacement


_COPIES: dict[str, types.ModuleType] = {}


def _journaled_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> Any:
    module = builtins.__import__(name, globals, locals, fromlist, level)
    if level or module.__name__ not in _TABLES:
        return module
    if module.__name__ not in _COPIES:
        _COPIES[module.__name__] = journaled_copy(module)
    return _COPIES[module.__name__]


def journaled_builtins() -> dict[str, Any]:
    """The builtins for code given no ``__builtins__`` of its own: its imports of
    time, random, uuid and datetime hand out the journaled versions."""
    table = dict(vars(builtins))
    table["__import__"] = _journaled_import
    return table
