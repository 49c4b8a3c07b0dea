"""The effects generated code calls, for the executor level.

Every effect appends one JSON line to the trace file and fsyncs it, so the
trace is what the world saw, across process lives. The N-th effect of a life
can SIGKILL the process before it happens (``kill_before``), which is "killed
just before effect N". Effects yield to the event loop a few times (a number
fixed by their arguments) so that concurrent calls really interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import types
from pathlib import Path
from typing import Any


def encode(value: Any) -> Any:
    """A JSON form of any value, for traces and final variables."""
    try:
        return _encode(value)
    except Exception as error:  # a value the runtime restored as unusable
        return f"<unusable {type(value).__name__}: {str(error)[:80]}>"


def _encode(value: Any) -> Any:
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "args": [encode(a) for a in value.args]}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(repr(v) for v in value)
    if isinstance(value, types.ModuleType):
        return f"<module {value.__name__}>"
    if isinstance(value, type):
        return f"<class {value.__name__}>"
    if callable(value):
        return f"<function {getattr(value, '__name__', '?')}>"
    if hasattr(value, "isoformat"):
        return str(value)
    return f"<{type(value).__name__}>"


def _delay(name: str, args: tuple) -> int:
    return sum(map(ord, name + json.dumps(encode(list(args))))) % 3


class Effects:
    """The effect functions of one process life."""

    def __init__(
        self, trace: Path, mode_file: Path | None, kill_before: int | None, fsync: bool = False
    ) -> None:
        self.trace = trace
        self.fsync = fsync
        self.mode_file = mode_file
        self.kill_before = kill_before
        self.count = 0

    def _write(self, name: str, args: tuple) -> None:
        line = json.dumps([name, encode(list(args))], sort_keys=True) + "\n"
        fd = os.open(self.trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # a SIGKILL keeps it; fsync is for power loss
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    async def effect(self, name: str, args: tuple) -> None:
        self.count += 1
        if self.count == self.kill_before:
            os.kill(os.getpid(), signal.SIGKILL)
        for _ in range(_delay(name, args)):
            await asyncio.sleep(0)
        self._write(name, args)

    def replies(self) -> int:
        try:
            return sum(1 for line in self.trace.read_text().splitlines() if '"Yld"' in line)
        except FileNotFoundError:
            return 0

    def namespace(self) -> dict[str, Any]:
        """Fresh functions for one namespace (``Var`` binds into that namespace)."""
        ns: dict[str, Any] = {}
        fx = self

        async def Say(to: Any, text: Any = "") -> None:
            await fx.effect("Say", (to, text))

        async def Emit(tag: Any, *values: Any) -> str:
            await fx.effect("Emit", (tag, *values))
            return f"ok:{tag}"

        async def F(x: Any, mark: str = "") -> Any:
            await fx.effect(mark + "F", (x,))
            return x * 2 if isinstance(x, int) else f"f({x})"

        async def Items() -> list:
            await fx.effect("Items", ())
            return [1, 2, 3]

        async def Lookup(key: Any) -> str:
            await fx.effect("Lookup", (key,))
            if str(key).startswith("missing"):
                raise KeyError(key)
            return f"val:{key}"

        async def Check(n: Any) -> Any:
            await fx.effect("Check", (n,))
            if isinstance(n, int) and n % 3 == 2:
                raise ValueError("bad", n)
            return n

        async def Fetch(side: Any, i: Any) -> str:
            await fx.effect("Fetch", (side, i))
            return f"fetched:{side}:{i}"

        async def Store(side: Any, i: Any) -> str:
            await fx.effect("Store", (side, i))
            return f"stored:{side}:{i}"

        async def Yld(source: Any = "user") -> str:
            n = fx.replies()
            await fx.effect("Yld", (source,))
            return f"reply {n}"

        async def Step(step: Any) -> None:
            await fx.effect("Step", (step,))

        async def Return(value: Any = None) -> None:
            await fx.effect("Return", (value,))

        async def Var(name: Any, value: Any) -> Any:
            ns[str(name).lstrip("$")] = value
            return value

        def ReadMode() -> str:
            if fx.mode_file is None:
                return "a"
            return fx.mode_file.read_text().strip()

        for fn in (Say, Emit, F, Items, Lookup, Check, Fetch, Store, Yld, Step, Return, Var):
            ns[fn.__name__] = fn
        ns["ReadMode"] = ReadMode
        return ns


class LenientWorld(dict):
    """For corpus responses: any unknown capitalised name is an effect."""

    def __init__(self, effects: Effects) -> None:
        super().__init__(effects.namespace())
        self._effects = effects

    def __missing__(self, name: str) -> Any:
        if not name[:1].isupper():
            raise KeyError(name)
        fx = self._effects

        async def anything(*args: Any, **kwargs: Any) -> str:
            await fx.effect(name, args + tuple(f"{k}={v!r}" for k, v in kwargs.items()))
            return f"result of {name}"

        anything.__name__ = name
        return anything
