"""StreamingPythonExecutor: runs model-written code while it streams in.

Each top-level statement runs as soon as the splitter proves it complete.
Every await inside it goes through the frame's :class:`Journal`, and after
each statement a checkpoint records what its variables became (durable at the
next barrier). On resume the executor is re-entered at the first unfinished
statement of the stored response (a structural index, never a text search)
and the finished awaits of that statement replay their recorded results.
Imports, ``def`` and ``class`` statements the code ran are kept as source and
run again on resume, since functions, classes and modules are not data.
"""

from __future__ import annotations

import ast
import inspect
import linecache
from collections.abc import Callable
from itertools import filterfalse
from operator import is_not
from types import ModuleType
from typing import Any

from .journal import (
    DISPATCH,
    JOURNAL_NAME,
    Entry,
    Journal,
    enter_scope,
    journal_awaits,
    leave_scope,
)
from .nondeterminism import journaled_builtins
from .splitter import Statement, StatementSplitter
from .touched import merge_touched, touched_names

RETURN_NAME = "__pb_return__"
CODE_MODULE = "__pb_code__"  # ``__name__`` of generated code: classes it defines say so
#: Built-ins of the dialect that bind a name: run again when their call replays.
RERUN = frozenset({"Var", "Artifact"})
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_NO_CHANGE = (ast.Pass, ast.Break, ast.Continue)


class PlaybookReturn(BaseException):
    """Raised by ``Return(...)`` (and ``return`` in a Python playbook) to end a frame."""

    def __init__(self, value: Any = None) -> None:
        super().__init__(value)
        self.value = value


class _ReturnToRaise(ast.NodeTransformer):
    """``return x`` at the top scope of a Python playbook body ends the frame."""

    def visit_Return(self, node: ast.Return) -> ast.AST:
        at = {k: getattr(node, k) for k in ("lineno", "col_offset", "end_lineno", "end_col_offset")}
        args = [node.value] if node.value else []
        call = ast.Call(ast.Name(RETURN_NAME, ast.Load(), **at), args, [], **at)
        return ast.Raise(exc=call, cause=None, **at)

    def _skip(self, node: ast.AST) -> ast.AST:
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _skip


def response_line(error: BaseException, filename: str) -> int | None:
    """The line of the response where ``error`` happened, in the response's numbering."""
    if isinstance(error, SyntaxError) and error.filename == filename:
        return error.lineno
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line if line is not None else getattr(error, "lineno", None)


class StreamingPythonExecutor:
    """Executes streamed code statement by statement, durably when given a manager.

    ``namespace`` entries given by the caller are runtime-provided (functions,
    stubs, built-ins): they are never checkpointed. Everything else the code
    binds is a variable and is checkpointed.
    """

    def __init__(
        self,
        agent: Any = None,
        *,
        namespace: dict[str, Any] | None = None,
        checkpoint_manager: Any = None,
        frame_id: str = "main",
        turn: int = 0,
        filename: str | None = None,
        line_offset: int = 0,
        python_body: bool = False,
        checker: Callable[[ast.stmt], ast.stmt] | None = None,
        around: Callable[[Any], Any] | None = None,
        variables: dict[str, Any] | None = None,
        record_text: bool = True,
        pure: frozenset[str] = frozenset(),
        rerun: frozenset[str] = RERUN,
        provided: dict[str, int] | None = None,
        defined: set[str] | None = None,
        opaque: frozenset[str] = frozenset(),
    ) -> None:
        self.agent = agent
        self.namespace: dict[str, Any] = namespace if namespace is not None else {}
        self.checkpoint_manager = checkpoint_manager
        self.frame_id = frame_id
        self.turn = turn
        self.filename = filename or f"<llm:{frame_id}:{turn}>"
        self.line_offset = line_offset
        self.python_body = python_body
        self.checker = checker
        self.cursor = 0  # statements of this response finished
        self.executed: list[str] = []
        self.error: BaseException | None = None
        self.finalized = False
        # runtime-provided entries (never checkpointed): given, or what the namespace holds now
        self._provided = (
            provided if provided is not None else {k: id(v) for k, v in self.namespace.items()}
        )
        # the objects themselves, for an identity check without building ids
        self._provided_names = [k for k in self._provided if k in self.namespace]
        self._provided_objects = [self.namespace[k] for k in self._provided_names]
        self._provided_intact = len(self._provided_names) == len(self._provided) and all(
            id(v) == self._provided[k]
            for k, v in zip(self._provided_names, self._provided_objects, strict=True)
        )
        if variables:
            self.namespace.update(variables)
        self._record_text = record_text
        self._splitter = StatementSplitter(self.filename)
        self._skip = 0
        self._skip_to: tuple[int, int] | None = None  # (line, col) of the last statement run
        self._index_base = 0
        self.position: tuple[int, int] | None = None
        self._replay: dict[Any, dict] = {}
        self.definitions: list[str] = []  # imports/defs/classes run so far (source)
        # names they bound, not data to checkpoint (shared by the frames of one namespace)
        self._defined: set[str] = defined if defined is not None else set()
        # calls of these may change any variable (playbooks sharing the agent's state)
        self._opaque = opaque
        # what the statements since the last checkpoint may have touched (None: anything)
        self.pending_touched: frozenset[str] | None = frozenset()
        self._known_response: str | None = None
        self._recorded = 0  # characters of the response already durable
        self._recorded_done = False
        barrier = checkpoint_manager.before_effect if checkpoint_manager is not None else None
        self.journal = Journal(
            frame_id,
            lookup=self._lookup,
            sink=self._sink,
            around=around,
            barrier=barrier,
            pure=pure,
            rerun=rerun,
        )
        self.namespace[JOURNAL_NAME] = DISPATCH
        self.namespace.setdefault("__name__", CODE_MODULE)
        if "__builtins__" not in self.namespace:  # imports of clocks and chance replay too
            self.namespace["__builtins__"] = journaled_builtins()
        if python_body:
            self.namespace[RETURN_NAME] = PlaybookReturn

    # -- public API --------------------------------------------------------
    def set_llm_response(self, text: str) -> None:
        """The whole response is already known: it is what checkpoints store."""
        self._known_response = text

    async def add_chunk(self, text: str) -> None:
        if self.finalized:
            raise RuntimeError("add_chunk after finalize: this response is finished")
        if self.error is not None:
            return
        await self._run_all(lambda: self._splitter.feed(text))

    async def finalize(self) -> None:
        if self.finalized:
            return
        self.finalized = True
        if self.error is None:
            # finish() hands back what is complete, then raises a pending error next call
            while await self._run_all(self._splitter.finish):
                pass
        self._flush_text(done=True)
        if self.checkpoint_manager is not None:
            self.checkpoint_manager.flush()  # the last statement's checkpoint, if kept back
            self.checkpoint_manager.barrier()

    @property
    def llm_response(self) -> str:
        return self._known_response if self._known_response is not None else self._splitter.text

    @property
    def code(self) -> str:
        return self._splitter.code

    @property
    def executed_code(self) -> str:
        return "\n".join(self.executed)

    def variables(self) -> dict[str, Any]:
        """What the code bound: everything that is not runtime-provided.

        Called after every statement of a durable run, so the usual case (no
        runtime-provided name rebound or deleted) is answered by C-level
        iteration over the namespace; a rebound one takes the full look."""
        provided, namespace = self._provided, self.namespace
        if not self._provided_intact or any(
            map(is_not, map(namespace.get, self._provided_names), self._provided_objects)
        ):
            return {
                k: v
                for k, v in namespace.items()
                if not k.startswith("__") and provided.get(k) != id(v)
            }
        mine = filterfalse(provided.__contains__, namespace)
        return {k: namespace[k] for k in mine if not k.startswith("__")}

    @classmethod
    async def resume_from_checkpoint(
        cls,
        agent: Any,
        checkpoint_data: dict[str, Any],
        namespace: dict[str, Any] | None = None,
        *,
        checkpoint_manager: Any = None,
        **options: Any,
    ) -> StreamingPythonExecutor:
        """Restore variables over ``namespace`` and run only the code not yet run."""
        meta = checkpoint_data["metadata"]
        cursor = meta.get("cursor") or {}
        executor = cls(
            agent,
            namespace=namespace,
            checkpoint_manager=checkpoint_manager,
            frame_id=cursor.get("frame", meta.get("frame", "main")),
            turn=cursor.get("turn", 0),
            **options,
        )
        executor.namespace.update(checkpoint_data.get("namespace") or {})
        executor.restore_definitions(cursor.get("definitions") or [])
        for key, entry in (cursor.get("awaits") or {}).items():
            executor._replay[parse_key(key)] = entry
        text = meta.get("llm_response") or ""
        await executor.resume(
            text,
            cursor.get("statement", 0),
            done=meta.get("llm_response_complete", False),
            position=cursor.get("position"),
        )
        return executor

    async def resume(
        self, text: str, statements_done: int, *, done: bool, position: Any = None
    ) -> None:
        """Feed the stored ``text``, skipping the first ``statements_done`` statements.

        ``position`` (line and column where the last finished statement ends,
        and the line where it starts) lets the code before it be blanked out
        instead of parsed again, so a resume costs the same after ten
        statements or ten thousand. The kept text starts at the first line of
        that statement, so a statement spread over lines is never cut.
        """
        self._skip = statements_done
        self.cursor = statements_done
        self._recorded = len(text)
        self._recorded_done = done
        if position and statements_done:
            start = int(position[2]) if len(position) > 2 else int(position[0])
            offset = int(position[3]) if len(position) > 4 else -1
            if 0 <= offset <= len(text) and start > 1 and "\r" not in text:
                self._splitter.skip(text, offset, start - 1, fenced=bool(position[4]))
                text = text[offset:]
            else:
                text = self._blank_until(text, start)
            self._skip_to = (int(position[0]), int(position[1]))
        if text:
            await self.add_chunk(text)
        if done:
            await self.finalize()

    # -- internals ---------------------------------------------------------
    @staticmethod
    def _blank_until(text: str, line: int) -> str:
        """Lines before ``line`` become blank (a fence line if code was inside one)."""
        if line <= 1:
            return text
        lines = text.split("\n", line - 1)
        head, rest = lines[:-1], lines[-1]
        fenced = sum(1 for h in head if h.lstrip().startswith("```")) % 2 == 1
        return ("```python" if fenced else "") + "\n" * len(head) + rest

    def restore_definitions(self, sources: list[str]) -> None:
        """Run again the imports, defs and classes of earlier statements (after a resume)."""
        for source in sources:
            node = ast.parse(source).body[0]
            self._exec_definition(node)
            self.definitions.append(source)

    def inherit_definitions(self, sources: list[str]) -> None:
        """Definitions an earlier turn of the same frame ran: already in the variables."""
        for source in sources:
            self._defined.update(_bound_names(ast.parse(source).body[0]))
        self.definitions = list(sources)

    def _exec_definition(self, node: ast.stmt) -> None:
        if self.checker is not None:
            node = self.checker(node)
        node, _ = journal_awaits(node)
        code = compile(
            ast.Module(body=[node], type_ignores=[]), self.filename, "exec", dont_inherit=True
        )
        exec(code, self.namespace)  # noqa: S102 - code that already ran once
        self._defined.update(_bound_names(node))

    def _resolve(self, qualname: str) -> Any:
        """A class defined by this code (an exception type being replayed)."""
        obj: Any = self.namespace
        for part in qualname.split("."):
            obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    def _lookup(self, key: Any) -> Entry | None:
        raw = None
        if self.checkpoint_manager is not None:
            raw = self.checkpoint_manager.lookup(self.frame_id, key)
        if raw is None:
            raw = self._replay.get(key)
        if raw is None:
            return None
        entry = Entry(callee=raw.get("c"), digest=raw.get("d"))
        if "err" in raw:
            if self.checkpoint_manager is not None:
                entry.error = self.checkpoint_manager.decode_error(raw["err"], self._resolve)
            else:
                from ..durability.errors import decode_error  # durability is below us

                entry.error = decode_error(raw["err"], resolve=self._resolve)
        elif self.checkpoint_manager is not None:
            entry.value = self.checkpoint_manager.decode(raw.get("ok"))
        else:
            from ..durability.serialization import decode

            entry.value = decode(raw.get("ok"))
        return entry

    def _sink(
        self, key, value: Any, error: BaseException | None, events: dict, callee: str, dig: str
    ) -> None:
        if self.checkpoint_manager is not None:
            self.checkpoint_manager.record_await(
                self.frame_id, key, value, error, events, callee=callee, digest=dig
            )

    def _flush_text(self, *, done: bool = False) -> None:
        """Make the response text durable up to here before code from it runs."""
        if self._recorded_done or self.checkpoint_manager is None or not self._record_text:
            return  # all of it is recorded already, or nothing is
        if self._known_response is not None:
            target, done = self._known_response, True
        else:
            target = self._splitter.text
        new = target[self._recorded :]
        if new or (done and not self._recorded_done):
            self.checkpoint_manager.record_text(self.frame_id, self.turn, new, done=done)
            self._recorded = len(target)
            self._recorded_done = done

    async def _run_all(self, produce: Callable[[], list[Statement]]) -> int:
        try:
            statements = produce()
        except SyntaxError as error:
            self._fail(error)
            raise
        for statement in statements:
            await self._run(statement)
        return len(statements)

    async def _run(self, statement: Statement) -> None:
        end = (statement.end_line, statement.node.end_col_offset or 0)
        if self._skip_to is not None:
            if end <= self._skip_to:
                return  # finished before the crash, on the line kept for context
            self._index_base = self._skip - statement.index
            self._skip_to = None
        index = statement.index + self._index_base
        if index < self._skip:
            return
        self._flush_text()
        scope = self.journal.scope(self.turn, index)
        node = statement.node
        start = statement.start_line  # before any rewrite moves it into the file's numbering
        definition = isinstance(node, _DEFINITIONS)
        names = _bound_names(node)
        touched = touched_names(node)
        if touched is not None and (touched & self._opaque or self._names_code(touched)):
            touched = None  # a playbook call, or code the code defined, may change any variable
        # counted before it runs: a statement that fails halfway still changed things
        self.pending_touched = merge_touched(self.pending_touched, touched)
        if definition:  # kept as the model wrote it: checks and rewrites run again on resume
            self._pending_definition = ast.unparse(node)
        try:
            if self.python_body:
                node = _ReturnToRaise().visit(node)
            elif self.checker is not None:
                node = self.checker(node)
            node, _ = journal_awaits(node, statement.source)
            if self.line_offset:
                ast.increment_lineno(node, self.line_offset)
            code = compile(
                ast.Module(body=[node], type_ignores=[]),
                self.filename,
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
            token = enter_scope(scope)
            try:
                result = eval(code, self.namespace)  # noqa: S307 - this is the product
                if inspect.iscoroutine(result):
                    await result
            finally:
                leave_scope(token)
        except Exception as error:
            self._fail(error)
            raise
        self.cursor = index + 1
        self.position = (end[0], end[1], start, statement.start_offset, int(statement.fenced))
        self.executed.append(statement.source)
        if definition:
            self._defined.update(names)
            self.definitions.append(self._pending_definition)
        else:
            self._defined.difference_update(names)
        if self.checkpoint_manager is not None and not isinstance(statement.node, _NO_CHANGE):
            self.checkpoint_manager.record_checkpoint(
                self.frame_id,
                turn=self.turn,
                cursor=self.cursor,
                statement=statement.source,
                variables=self.checkpoint_variables(),
                position=self.position,
                definitions=self.definitions[-1:] if definition else None,
                touched=self.pending_touched,
                lazy=True,  # if it changed nothing, it rides on the next await record
            )
            self.pending_touched = frozenset()

    def _names_code(self, touched: frozenset[str]) -> bool:
        """Does the statement name a function or class that a definition bound?

        Those are not checkpointed (they are run again on resume), so the
        checkpoint cannot see what calling one reaches through its globals:
        ``def add(): items.append(1)`` then ``add()`` changes ``$items``
        without naming it. Only a module is safe to name."""
        defined = self._defined
        if not defined:
            return False
        namespace = self.namespace
        return any(
            not isinstance(namespace.get(name), ModuleType) for name in touched if name in defined
        )

    def checkpoint_variables(self) -> dict[str, Any]:
        """The variables that are data: what imports and defs bound is run again instead."""
        variables = self.variables()
        for name in self._defined:
            variables.pop(name, None)
        return variables

    def end_response(self) -> None:
        """The caller stopped reading the stream (after an error): what we have is all."""
        self.finalized = True
        self._flush_text(done=True)
        if self.checkpoint_manager is not None:
            self.checkpoint_manager.flush()  # the last statement's checkpoint, if kept back
            self.checkpoint_manager.barrier()

    def _fail(self, error: BaseException) -> None:
        self.error = error
        if self.filename.startswith("<"):  # a real file is read from disk by linecache
            lines = self.llm_response.splitlines(keepends=True)
            linecache.cache[self.filename] = (len(self.llm_response), None, lines, self.filename)
        error.response_line = response_line(error, self.filename)  # type: ignore[attr-defined]


def parse_key(key: str) -> tuple[int, int, int | str]:
    """``"t.i.q"`` back to a journal key (``q`` is a number, or a task/value name)."""
    t, i, q = key.split(".", 2)
    return int(t), int(i), (int(q) if q.isdigit() else q)


def _bound_names(node: ast.stmt) -> set[str]:
    """Top-level names a statement binds (for definitions: the name it defines)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).partition(".")[0] for a in node.names}
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
    return names
