"""A stand-in world for running model-written code that calls unknown things."""

from __future__ import annotations


class Anything:
    """Stands for any name a fixture response uses: awaitable, callable, iterable."""

    def __init__(self, log: list, name: str, budget: list | None = None) -> None:
        self._log, self._name, self._budget = log, name, budget

    def __call__(self, *args, **kwargs):
        self._log.append(
            (self._name, tuple(a if isinstance(a, (int, str)) else type(a).__name__ for a in args))
        )
        return self

    def __await__(self):
        if self._budget is not None:  # a "kill" at the n-th await that really runs
            self._budget[0] -= 1
            if self._budget[0] < 0:
                raise Stop()
        if False:
            yield
        return f"result of {self._name}"  # plain data, so it can be journaled

    def __getattr__(self, name: str):
        return Anything(self._log, f"{self._name}.{name}", self._budget)

    def __iter__(self):
        return iter(())

    def __aiter__(self):
        return self

    async def __anext__(self):
        raise StopAsyncIteration

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __bool__(self):
        return True

    def __format__(self, spec: str) -> str:
        return "1"

    def __getitem__(self, key):
        return self

    def __index__(self):
        return 1

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __mod__ = __getitem__
    __lt__ = __gt__ = __le__ = __ge__ = lambda self, other: False


class World(dict):
    """A namespace in which every unknown name is an :class:`Anything`."""

    def __init__(self, log: list, awaits_left: int | None = None) -> None:
        super().__init__()
        self.log = log
        self.budget = [awaits_left] if awaits_left is not None else None

    def __missing__(self, name: str):
        if name.startswith("__"):
            raise KeyError(name)
        return Anything(self.log, name, self.budget)


class Stop(BaseException):
    """Ends the code the way a kill would: nothing after it runs or is written."""
