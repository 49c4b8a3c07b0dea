"""Journaling of awaited calls in generated code.

Every ``await E`` in a statement is rewritten to go through the journal:
``await f(a, b)`` becomes ``await __pb_j__.call(f, a, b)`` and any other
``await x`` becomes ``await __pb_j__.wait(x)``. The callee and its arguments
are always evaluated (their side effects happen in every life); only the call
itself is skipped when the journal already holds its outcome. Each record
carries the callee's name and a digest of its arguments, and a replay that
reaches a different call at the same key stops with :class:`ReplayDivergence`
instead of handing the record to the wrong call.

Keys are ``(turn, statement, seq)``. Inside a statement ``seq`` counts the
awaits in the order they are reached, which is deterministic once earlier
awaits replay their results. Tasks started by the statement (``gather``,
``create_task``) get their own counters, named after the await that started
them and their order there (``3~0-0``, ``3~1-0``: the first await of the
first and second task started by await 3), so keys never depend on which task
finished first, nor on tasks an earlier, replayed await no longer starts.
Awaits made while another await runs (inside a function the code defined) are
keyed under it (``1>0``), so a replay that skips the outer await skips exactly
the inner ones with it.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import hashlib
import inspect
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

JOURNAL_NAME = "__pb_j__"

Key = tuple[int, int, "int | str"]

#: The call id of the await currently running (``frame/turn.stmt.seq``): a
#: playbook called from generated code uses it as its own frame id, so a
#: resumed caller finds the callee's frame again.
CURRENT_CALL: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "playbooks_current_call", default=None
)

#: Facts a built-in wants stored with its own journal record (a Say's text and
#: id, the index of the person's reply it consumed, the current step).
_EVENTS: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "playbooks_events", default=None
)


class ReplayDivergence(Exception):
    """On replay the code reached a different call than the one recorded at this point."""


def note(key: str, value: Any) -> None:
    """Attach ``key: value`` to the journal record of the await now running."""
    events = _EVENTS.get()
    if events is not None:
        events[key] = value


# ------------------------------------------------------------------ rewriting


class _AwaitRewriter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.count = 0

    def visit_Await(self, node: ast.Await) -> ast.AST:
        self.generic_visit(node)  # inner awaits live inside node.value
        self.count += 1
        at = {
            "lineno": node.lineno,
            "col_offset": node.col_offset,
            "end_lineno": node.end_lineno,
            "end_col_offset": node.end_col_offset,
        }
        load = ast.Load()
        journal = ast.Name(JOURNAL_NAME, load, **at)
        value = node.value
        if isinstance(value, ast.Call):
            method = ast.Attribute(journal, "call", load, **at)
            call = ast.Call(method, [value.func, *value.args], value.keywords, **at)
        else:
            method = ast.Attribute(journal, "wait", load, **at)
            call = ast.Call(method, [value], [], **at)
        return ast.Await(call, **at)


def journal_awaits(node: ast.stmt, source: str | None = None) -> tuple[ast.stmt, int]:
    """Rewrite every await in ``node``; returns the new node and how many sites.

    ``source``, when given, lets a statement with no ``await`` in its text skip
    the tree walk entirely (the common case for plain assignments)."""
    if source is not None and "await" not in source:
        return node, 0
    rewriter = _AwaitRewriter()
    return rewriter.visit(node), rewriter.count


# ------------------------------------------------------------------ identity


def callee_name(fn: Any) -> str:
    """The name a call is recorded under (a playbook's name, a function's name)."""
    if inspect.iscoroutine(fn):
        return getattr(fn, "__qualname__", None) or fn.__name__
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def _canon(value: Any, out: list[str], depth: int = 0) -> None:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        out.append(repr(value))
    elif depth > 6:
        out.append(type(value).__qualname__)
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        out.append(type(value).__name__ + "(")
        for item in items:
            _canon(item, out, depth + 1)
            out.append(",")
        out.append(")")
    elif isinstance(value, dict):
        out.append("{")
        for key, item in value.items():
            _canon(key, out, depth + 1)
            out.append(":")
            _canon(item, out, depth + 1)
            out.append(",")
        out.append("}")
    elif inspect.iscoroutine(value):
        out.append("<coroutine " + callee_name(value) + ">")
    else:  # an object's repr may hold its address: only its type is stable
        out.append("<" + type(value).__qualname__ + ">")


def digest(args: tuple, kwargs: dict) -> str:
    """A short, stable digest of call arguments (same values, same digest, in any life)."""
    out: list[str] = []
    _canon(args, out)
    _canon(dict(sorted(kwargs.items())), out)
    return hashlib.blake2b("".join(out).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


# ------------------------------------------------------------------ journal


@dataclass
class Entry:
    """A recorded outcome: a value, or an error to raise again, and what was called."""

    value: Any = None
    error: BaseException | None = None
    callee: str | None = None
    digest: str | None = None


Sink = Callable[..., Awaitable[None] | None]


@dataclass
class Journal:
    """Per-frame journal: looks up and stores the outcomes of one frame's awaits.

    ``lookup(key)`` returns the recorded :class:`Entry` or None; ``sink`` is
    called with ``(key, value, error, events, callee, digest)`` once an await
    finished for real.
    """

    frame_id: str
    lookup: Callable[[Key], Entry | None]
    sink: Sink | None = None
    around: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None
    barrier: Callable[[], None] | None = None  # makes the journal durable before an effect
    pure: frozenset[str] = frozenset()  # calls without effects: no barrier before them
    rerun: frozenset[str] = frozenset()  # pure calls whose bindings must happen on replay too

    def call_id(self, key: Key) -> str:
        return f"{self.frame_id}/{key[0]}.{key[1]}.{key[2]}"

    def scope(self, turn: int, statement: int) -> Scope:
        return Scope(self, turn, statement)

    def sink_now(
        self, key: Key, value: Any, error: BaseException | None, events: dict, callee: str, dig: str
    ) -> Any:
        if self.sink is None:
            return None
        return self.sink(key, value, error, events, callee, dig)


@dataclass
class Scope:
    """The awaits of one statement (or of one task it started): hands out keys."""

    journal: Journal
    turn: int
    statement: int
    prefix: str = ""
    seq: int = 0
    spawned: int = 0
    drawn: int = 0  # nondeterministic values drawn
    live: int = 0  # awaits that really ran
    sites: dict[str, int] = field(default_factory=dict)  # tasks started per await

    def next_key(self) -> Key:
        if not self.prefix:
            q: int | str = self.seq
        elif self.prefix.endswith(">"):
            q = f"{self.prefix}{self.seq}"
        else:
            q = f"{self.prefix}-{self.seq}"
        self.seq += 1
        return (self.turn, self.statement, q)

    def next_value_key(self) -> Key:
        sep = "" if not self.prefix or self.prefix.endswith(">") else "-"
        q = f"{self.prefix}{sep}r{self.drawn}"
        self.drawn += 1
        return (self.turn, self.statement, q)

    def inside(self, key: Key) -> Scope:
        """The awaits made while the await ``key`` runs (in a function the code defined):
        keyed under it, so a replay that skips ``key`` skips them too."""
        return Scope(self.journal, self.turn, self.statement, prefix=f"{key[2]}>")

    def child(self, site: str | None = None) -> Scope:
        """The scope of a task started here: by the await ``site`` (a key), or by plain code."""
        if site is not None:
            count = self.sites.get(site, 0)
            self.sites[site] = count + 1
            name = f"{site}~{count}"
        else:
            name = f"{self.prefix}-t{self.spawned}" if self.prefix else f"t{self.spawned}"
            self.spawned += 1
        return Scope(self.journal, self.turn, self.statement, prefix=name)


_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "playbooks_scope", default=None
)
#: The await (its ``seq`` as text) whose call is running in this task: tasks it starts are named after it.
_SITE: contextvars.ContextVar[str | None] = contextvars.ContextVar("playbooks_site", default=None)


def enter_scope(scope: Scope) -> contextvars.Token:
    _install_task_factory()
    return _SCOPE.set(scope)


def leave_scope(token: contextvars.Token) -> None:
    _SCOPE.reset(token)


def current_scope() -> Scope | None:
    return _SCOPE.get()


def _check(entry: Entry, key: Key, journal: Journal, callee: str, dig: str) -> None:
    if entry.callee is None:
        return  # recorded by a version that kept no identity
    if entry.callee != callee or (entry.digest is not None and entry.digest != dig):
        what = "other arguments" if entry.callee == callee else f"{callee}()"
        raise ReplayDivergence(
            f"replay divergence at {journal.call_id(key)}: the first run called "
            f"{entry.callee}() here, this run reached {what}; the recorded result is "
            "not used. The code must make the same calls in the same order as before."
        )


def _close(values: Any) -> None:
    for value in values:
        if inspect.iscoroutine(value):
            value.close()


class _Dispatch:
    """``__pb_j__`` in generated code: routes each await to the running statement's scope."""

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        scope = _SCOPE.get()
        if scope is None:  # not inside a journaled statement (a helper called later)
            return await fn(*args, **kwargs)
        journal = scope.journal
        key = scope.next_key()
        callee, dig = callee_name(fn), digest(args, kwargs)
        entry = journal.lookup(key)
        if entry is not None:
            _check(entry, key, journal, callee, dig)
            if callee in journal.rerun:
                await fn(*args, **kwargs)  # a binding must happen again; no effect outside
            else:
                _close(args)
                _close(kwargs.values())
            if entry.error is not None:
                raise entry.error
            return entry.value
        site = _SITE.set(str(key[2]))
        try:
            awaitable = fn(*args, **kwargs)  # gather() starts its tasks here
        finally:
            _SITE.reset(site)
        return await _record(scope, key, awaitable, callee, dig)

    async def wait(self, awaitable: Any) -> Any:
        scope = _SCOPE.get()
        if scope is None:
            return await awaitable
        journal = scope.journal
        key = scope.next_key()
        callee, dig = callee_name(awaitable), ""
        entry = journal.lookup(key)
        if entry is not None:
            _check(entry, key, journal, callee, dig)
            _close([awaitable])
            if entry.error is not None:
                raise entry.error
            return entry.value
        return await _record(scope, key, awaitable, callee, dig)


DISPATCH = _Dispatch()


async def _record(scope: Scope, key: Key, awaitable: Awaitable[Any], callee: str, dig: str) -> Any:
    journal = scope.journal
    scope.live += 1
    if journal.barrier is not None and callee not in journal.pure:
        journal.barrier()
    events: dict = {}
    reset_call = CURRENT_CALL.set(journal.call_id(key))
    reset_events = _EVENTS.set(events)
    reset_site = _SITE.set(None)
    reset_scope = _SCOPE.set(scope.inside(key))
    try:
        if journal.around is not None:
            value = await journal.around(awaitable)
        else:
            value = await awaitable
    except Exception as error:  # control flow (Return, EndProgram) is BaseException
        await _sink(journal, key, None, error, events, callee, dig)
        raise
    finally:
        _SCOPE.reset(reset_scope)
        _SITE.reset(reset_site)
        _EVENTS.reset(reset_events)
        CURRENT_CALL.reset(reset_call)
    await _sink(journal, key, value, None, events, callee, dig)
    return value


async def _sink(
    journal: Journal,
    key: Key,
    value: Any,
    error: BaseException | None,
    events: dict,
    callee: str,
    dig: str,
) -> None:
    result = journal.sink_now(key, value, error, events, callee, dig)
    if result is not None:
        await result


def draw(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A nondeterministic value (a clock, a random number, a uuid): journaled like an await.

    Outside a journaled statement it is simply computed."""
    scope = _SCOPE.get()
    if scope is None:
        return fn(*args, **kwargs)
    journal = scope.journal
    key = scope.next_value_key()
    entry = journal.lookup(key)
    if entry is not None:
        _check(entry, key, journal, name, "")
        if entry.error is not None:
            raise entry.error
        return entry.value
    try:
        value = fn(*args, **kwargs)
    except Exception as error:
        journal.sink_now(key, None, error, {}, name, "")
        raise
    journal.sink_now(key, value, None, {}, name, "")
    return value


# ------------------------------------------------------------------ tasks


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine, **kwargs: Any) -> asyncio.Task:
    """Tasks created inside a statement get their own key counter, named by creation order."""
    scope = _SCOPE.get()
    if scope is None:
        return asyncio.Task(coro, loop=loop, **kwargs)
    child = scope.child(_SITE.get())
    call = child.journal.call_id((child.turn, child.statement, child.prefix))
    context = kwargs.pop("context", None)
    if context is None:
        context = contextvars.copy_context()
    context.run(_enter_task, child, call)
    if sys.version_info >= (3, 11):
        return asyncio.Task(coro, loop=loop, context=context, **kwargs)
    return context.run(asyncio.Task, coro, loop=loop, **kwargs)  # 3.10 copies the running context


def _enter_task(scope: Scope, call: str) -> None:
    """In a new task's context: its own key counter, and the frame id its playbook calls get."""
    _SCOPE.set(scope)
    _SITE.set(None)
    CURRENT_CALL.set(call)


def _install_task_factory() -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if loop.get_task_factory() is None:
        loop.set_task_factory(_task_factory)


def detached_task(coro: Coroutine) -> asyncio.Task:
    """A task of the runtime's own (an LLM stream reader): outside every statement's keys."""
    token = _SCOPE.set(None)
    try:
        return asyncio.get_running_loop().create_task(coro)
    finally:
        _SCOPE.reset(token)


__all__ = [
    "CURRENT_CALL",
    "DISPATCH",
    "JOURNAL_NAME",
    "Entry",
    "Journal",
    "ReplayDivergence",
    "Scope",
    "callee_name",
    "detached_task",
    "digest",
    "draw",
    "journal_awaits",
    "note",
]
