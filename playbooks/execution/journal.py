"""Journaling of awaited calls in generated code.

Every ``await E`` in a statement is rewritten so that, before ``E`` is even
evaluated, the journal is asked whether this await (identified by turn,
statement index and sequence number within the statement) already completed
in an earlier life of the process. If it did, its recorded result is returned
and ``E`` never runs; otherwise ``E`` runs and its outcome is written durably
before the code goes on. Sequence numbers are given in the order awaits are
*reached*, which is deterministic once earlier awaits replay their results.
"""

from __future__ import annotations

import ast
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

JOURNAL_NAME = "__pb_j__"
TEMP_PREFIX = "__pb_t"

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


def note(key: str, value: Any) -> None:
    """Attach ``key: value`` to the journal record of the await now running."""
    events = _EVENTS.get()
    if events is not None:
        events[key] = value


class _AwaitRewriter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.count = 0

    def visit_Await(self, node: ast.Await) -> ast.AST:
        self.generic_visit(node)  # inner awaits live inside node.value
        temp = f"{TEMP_PREFIX}{self.count}"
        self.count += 1
        # every new node sits where the await was, so tracebacks point at it
        at = {
            "lineno": node.lineno,
            "col_offset": node.col_offset,
            "end_lineno": node.end_lineno,
            "end_col_offset": node.end_col_offset,
        }
        load, store = ast.Load(), ast.Store()

        def method(owner: str, attr: str) -> ast.Attribute:
            return ast.Attribute(ast.Name(owner, load, **at), attr, load, **at)

        enter = ast.NamedExpr(
            ast.Name(temp, store, **at), ast.Call(method(JOURNAL_NAME, "enter"), [], [], **at), **at
        )
        record = ast.Call(
            method(JOURNAL_NAME, "record"), [ast.Name(temp, load, **at), node.value], [], **at
        )
        return ast.IfExp(
            ast.Attribute(enter, "done", load, **at),
            method(temp, "value"),
            ast.Await(record, **at),
            **at,
        )


def journal_awaits(node: ast.stmt, source: str | None = None) -> tuple[ast.stmt, int]:
    """Rewrite every await in ``node``; returns the new node and how many sites.

    ``source``, when given, lets a statement with no ``await`` in its text skip
    the tree walk entirely (the common case for plain assignments)."""
    if source is not None and "await" not in source:
        return node, 0
    rewriter = _AwaitRewriter()
    return rewriter.visit(node), rewriter.count


@dataclass
class Entry:
    """A recorded outcome: a value, or an error to raise again."""

    value: Any = None
    error: BaseException | None = None


@dataclass
class Token:
    key: tuple[int, int, int]
    done: bool
    entry: Entry | None = None

    @property
    def value(self) -> Any:
        assert self.entry is not None
        if self.entry.error is not None:
            raise self.entry.error
        return self.entry.value


Sink = Callable[[tuple[int, int, int], Any, BaseException | None, dict], Awaitable[None] | None]


@dataclass
class Journal:
    """Per-frame journal: hands out call ids and replays recorded outcomes.

    ``lookup(key)`` returns the recorded :class:`Entry` or None; ``sink`` is
    called with ``(key, value, error)`` once an await finished for real.
    """

    frame_id: str
    lookup: Callable[[tuple[int, int, int]], Entry | None]
    sink: Sink | None = None
    around: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None
    barrier: Callable[[], None] | None = None  # makes the journal durable before an effect
    pure: frozenset[str] = frozenset()  # calls without effects: no barrier before them
    turn: int = 0
    statement: int = 0
    seq: int = 0
    live: int = field(default=0)  # awaits that really ran in this statement

    def begin(self, turn: int, statement: int) -> None:
        self.turn, self.statement, self.seq, self.live = turn, statement, 0, 0

    def call_id(self, key: tuple[int, int, int]) -> str:
        return f"{self.frame_id}/{key[0]}.{key[1]}.{key[2]}"

    def enter(self) -> Token:
        key = (self.turn, self.statement, self.seq)
        self.seq += 1
        entry = self.lookup(key)
        return Token(key, entry is not None, entry)

    async def record(self, token: Token, awaitable: Awaitable[Any]) -> Any:
        self.live += 1
        if self.barrier is not None and getattr(awaitable, "__name__", "") not in self.pure:
            self.barrier()
        events: dict = {}
        reset_call = CURRENT_CALL.set(self.call_id(token.key))
        reset_events = _EVENTS.set(events)
        try:
            if self.around is not None:
                value = await self.around(awaitable)
            else:
                value = await awaitable
        except Exception as error:  # control flow (Return, EndProgram) is BaseException
            await self._sink(token.key, None, error, events)
            raise
        finally:
            _EVENTS.reset(reset_events)
            CURRENT_CALL.reset(reset_call)
        await self._sink(token.key, value, None, events)
        return value

    async def _sink(self, key, value: Any, error: BaseException | None, events: dict) -> None:
        if self.sink is None:
            return
        result = self.sink(key, value, error, events)
        if result is not None:
            await result
