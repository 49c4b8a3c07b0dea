"""The interpreter: runs playbook calls as frames, durably when given a manager.

A playbook call is a frame whose id is the call id of the await that made it
(``main/2.3.0/0.1.0``...), so after a crash the re-executed caller reaches
the same await, asks for the same frame, and the callee resumes where it was
instead of starting over: the whole chain is rebuilt, at any depth.

A Markdown playbook is a loop of LLM turns; each turn streams one response
into a :class:`StreamingPythonExecutor`. A Python playbook's body runs
through the same executor, so its awaits are journaled the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..language import AgentSpec, PlaybookSpec
from ..llm import LLMError, LLMRequest, PlaybookInfo, TurnContext, build_messages
from ..llm.prompts import render_state
from .builtins import AwaitingInput, Conversation, ProgramEnd, make_builtins
from .executor import RERUN, PlaybookReturn, StreamingPythonExecutor
from .journal import CURRENT_CALL
from .nondeterminism import journal_globals
from .safety import Budget, SafetyError, check_statement, instrument, safe_builtins
from .stream import run_stream

ROOT = "main"
#: Awaits without a timeout: the person's reply, and the built-ins (quick, local).
UNTIMED = frozenset(
    {
        "Yld",
        "Step",
        "Say",
        "Return",
        "Var",
        "Artifact",
        "EndProgram",
        "NextMessage",
        "HandleMessage",
    }
)
#: Built-ins with no effect outside the process: no fsync is needed before them.
PURE = frozenset({"Step", "Return", "Var", "Artifact"})


def _runtime_playbook(name: str, kind: str, description: str, **fields: Any) -> PlaybookSpec:
    """A playbook the runtime itself adds to an agent (not written in the program)."""
    base: dict[str, Any] = dict(params=[], returns=None, triggers=[], steps=[], notes="")
    base.update(line=0, public=False, source="")
    return PlaybookSpec(name=name, kind=kind, description=description, **(base | fields))


SERVE = _runtime_playbook(
    "ServeMessages",
    "python",
    "After the begin playbooks: answer each message of the person.",
    body_source=(
        "while True:\n"
        "    message = await __pb_next__()\n"
        "    if message is None:\n"
        "        break\n"
        "    await __pb_handle__(message)\n"
    ),
    body_line=1,
)
HANDLE = _runtime_playbook(
    "HandleMessage",
    "markdown",
    "Handle one message from the user, with every playbook's triggers in view.",
    params=["message"],
    source="""## HandleMessage($message)
A message from the user has arrived: $message.
Handle it: if one of the playbooks' triggers matches it, call that playbook;
otherwise answer the user with Say. Call Return() when the message is handled.
If the user wants to stop, call EndProgram().
""",
)


class ProgramFailed(BaseException):
    """The program cannot go on (LLM unreachable, call budget spent): exit 1."""


@dataclass
class Limits:
    max_llm_calls: int = 50
    allowed_imports: tuple[str, ...] = ()
    statement_timeout: float = 300.0
    loop_budget: int = 10_000_000
    max_alloc: int = 100_000_000


def short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: BaseException) -> str:
    line = getattr(error, "response_line", None)
    where = f"line {line}: " if line else ""
    if isinstance(error, SafetyError):
        return str(error)
    if isinstance(error, SyntaxError):
        return f"{where}SyntaxError: {error.msg}"
    return f"{where}{type(error).__name__}: {error}"


#: Messages shown to a call's first turn from before it started.
RECENT_EVENTS = 10
_STEP_CALL = re.compile(r"""Step\(\s*["']([^"']+)["']""")


def _last_step(history: list) -> str:
    """The last step the model's code marked, when no live record of it exists (resume)."""
    for response, _ in reversed(history):
        found = _STEP_CALL.findall(response or "")
        if found:
            return found[-1]
    return ""


def signature(spec: PlaybookSpec) -> str:
    params = ", ".join(f"${p}" for p in spec.params)
    returns = f" -> {spec.returns}" if spec.returns else ""
    return f"{spec.name}({params}){returns}"


@dataclass
class Interpreter:
    agent: AgentSpec
    python_globals: dict[str, Any]
    llm: Any
    conversation: Conversation
    manager: Any = None
    limits: Limits = field(default_factory=Limits)
    program_path: str = "<program>"
    on_event: Callable[[dict], None] | None = None
    llm_calls: int = 0
    _claimed: set[str] = field(default_factory=set)
    _stack: list[str] = field(default_factory=list)
    #: The agent's state: one namespace shared by all its Markdown playbooks, so
    #: ``$name`` set by one playbook is read by another (arguments are per call).
    _state: dict[str, Any] | None = None
    _base: dict[str, int] = field(default_factory=dict)  # runtime-provided names in it
    _defined: set[str] = field(default_factory=set)  # names bound by imports/defs in it
    _prompt_memory: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        journal_globals(self.python_globals)  # the python blocks' clocks and chance replay too

    # -- entry -------------------------------------------------------------
    async def run(self) -> Any:
        """Run every begin playbook in order; then, if the agent has other triggers,
        serve the person's messages until their input ends or the program is ended."""
        begin = self.agent.begin_playbooks or ([self.agent.entry] if self.agent.entry else [])
        if not begin:
            raise ProgramFailed(f"agent {self.agent.name} has no playbooks to run")
        if self.manager is not None:
            state = self.manager.open()
            self.llm_calls = state.llm_calls
            shared = self.agent_state()
            for name, value in state.agent_vars.items():  # what returned playbooks left
                shared[name] = self.manager.decode(value)
        result = None
        try:
            for spec in begin:
                result = await self.call(spec, (), {})
            if self.serves():
                await self.call(SERVE, (), {})
        except ProgramEnd:
            return None
        return result

    def serves(self) -> bool:
        """Does the agent answer messages after its begin playbooks (other triggers)?"""
        return any(p.triggers and not p.begin for p in self.agent.playbooks)

    def callables(self) -> dict[str, Callable[..., Any]]:
        """Every playbook of the agent as an awaitable function."""
        table = {}
        for spec in self.agent.playbooks:

            async def call(*args: Any, _spec: PlaybookSpec = spec, **kwargs: Any) -> Any:
                return await self.call(_spec, args, kwargs)

            call.__name__ = call.__qualname__ = spec.name
            table[spec.name] = call
        return table

    # -- a playbook call is a frame ------------------------------------------
    def _frame_id(self) -> tuple[str, str | None]:
        base = CURRENT_CALL.get()
        parent = base.rsplit("/", 1)[0] if base else None
        base = base or ROOT
        frame_id, n = base, 1
        while frame_id in self._claimed:
            frame_id = f"{base}#{n}"
            n += 1
        self._claimed.add(frame_id)
        return frame_id, parent

    def _bind(self, spec: PlaybookSpec, args: tuple, kwargs: dict) -> dict[str, Any]:
        if spec is SERVE:
            return {}
        if spec.kind == "python":
            fn = self.python_globals[spec.name]
            bound = inspect.signature(fn).bind(*args, **kwargs)
            bound.apply_defaults()
            return dict(bound.arguments)
        names = list(spec.params)
        if len(args) > len(names):
            raise TypeError(
                f"{spec.name}() takes {len(names)} arguments but {len(args)} were given"
            )
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            values[key.lstrip("$")] = value
        return values

    async def call(self, spec: PlaybookSpec, args: tuple, kwargs: dict) -> Any:
        frame_id, parent = self._frame_id()
        variables = self._bind(spec, args, kwargs)
        stored = None
        if self.manager is not None:
            stored = self.manager.frame(frame_id)
            if stored is not None and stored.result is not None:
                if "err" in stored.result:
                    raise self.manager.decode_error(stored.result["err"])
                return self.manager.decode(stored.result.get("ok"))
            if stored is None:
                self.manager.record_frame(
                    frame_id, parent=parent, playbook=spec.name, kind=spec.kind, args=variables
                )
            else:
                variables = {k: self.manager.decode(v) for k, v in stored.vars.items()} or variables
        self._stack.append(spec.name)
        try:
            if spec.kind == "python":
                value = await self._run_python(spec, frame_id, variables, stored)
            else:
                value = await self._run_markdown(spec, frame_id, variables, stored)
        except Exception as error:
            if self.manager is not None:
                self.manager.record_end(frame_id, error=error)
            raise
        finally:
            self._stack.pop()
        if self.manager is not None:
            self.manager.record_end(frame_id, value)
        return value

    def _namespace(self, frame_id: str | None, *, generated: bool) -> dict[str, Any]:
        namespace: dict[str, Any] = dict(self.python_globals)
        namespace.update(self.callables())
        namespace.update(
            make_builtins(
                agent=self.agent.name,
                frame_id=frame_id,
                conversation=self.conversation,
                namespace=namespace,
            )
        )
        if generated:
            limits = self.limits
            namespace["__builtins__"] = safe_builtins(limits.allowed_imports)
            namespace["__pb_budget__"] = Budget(limits.loop_budget, limits.max_alloc)
        return namespace

    def _checker(self, namespace: dict[str, Any]) -> Callable[[Any], Any]:
        budget = namespace["__pb_budget__"]
        allowed = self.limits.allowed_imports

        def check(node: Any) -> Any:
            check_statement(node, allowed_imports=allowed)
            budget.reset()
            return instrument(node)

        return check

    async def _around(self, awaitable: Any) -> Any:
        """A per-await timeout, except for the person's reply, built-ins and playbook calls."""
        name = getattr(awaitable, "__name__", "")
        if name in UNTIMED or self.agent.playbook(name) is not None:
            return await awaitable
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(self.limits.statement_timeout):
                return await awaitable
        return await asyncio.wait_for(awaitable, self.limits.statement_timeout)

    def _executor(
        self, frame_id: str, namespace: dict, variables: dict, **options: Any
    ) -> StreamingPythonExecutor:
        """An executor for one frame; the text is recorded by the caller (or is the program)."""
        return StreamingPythonExecutor(
            None,
            namespace=namespace,
            variables=variables,
            checkpoint_manager=self.manager,
            frame_id=frame_id,
            around=self._around,
            record_text=False,
            pure=PURE,
            rerun=RERUN,
            **options,
        )

    # -- Python playbooks ----------------------------------------------------
    async def _run_python(
        self, spec: PlaybookSpec, frame_id: str, variables: dict, stored: Any
    ) -> Any:
        namespace = self._namespace(frame_id, generated=False)
        if spec is SERVE:
            namespace.update(self._serving(namespace))
        executor = self._executor(
            frame_id,
            namespace,
            variables,
            filename="<serve>" if spec is SERVE else self.program_path,
            line_offset=spec.body_line - 1,
            python_body=True,
        )
        cursor = stored.cursor if stored is not None else 0
        if stored is not None:
            executor.restore_definitions(stored.defs)
        try:
            position = stored.pos if stored is not None else None
            await executor.resume(spec.body_source, cursor, done=True, position=position)
        except PlaybookReturn as done:
            return done.value
        return None

    def _serving(self, namespace: dict[str, Any]) -> dict[str, Any]:
        """The two calls of the serving loop: the next message (None when input ends),
        and one turn of the model on it with every trigger in view."""
        reply = namespace["Yld"]

        async def NextMessage() -> str | None:
            try:
                return await reply("user")
            except AwaitingInput:  # the person's input ended: the conversation is over
                return None

        async def HandleMessage(message: str) -> Any:
            return await self.call(HANDLE, (message,), {})

        return {"__pb_next__": NextMessage, "__pb_handle__": HandleMessage}

    # -- Markdown playbooks: a loop of LLM turns -------------------------------
    def _opaque(self) -> frozenset[str]:
        """Calls that may change the agent's variables behind a statement's back."""
        return frozenset(p.name for p in self.agent.playbooks) | {"HandleMessage"}

    def agent_state(self) -> dict[str, Any]:
        """The namespace every Markdown playbook of this agent runs in (made once)."""
        if self._state is None:
            self._state = self._namespace(None, generated=True)
            self._base = {k: id(v) for k, v in self._state.items()}
        return self._state

    async def _run_markdown(
        self, spec: PlaybookSpec, frame_id: str, variables: dict, stored: Any
    ) -> Any:
        namespace = self.agent_state()
        missing = object()
        saved = {name: namespace.get(name, missing) for name in spec.params}
        namespace.update(variables)  # the arguments, or on resume the state it had saved
        try:
            return await self._turns(spec, frame_id, namespace, variables, stored)
        finally:  # the caller's values of the argument names come back
            for name, value in saved.items():
                if value is missing:
                    namespace.pop(name, None)
                else:
                    namespace[name] = value

    async def _turns(
        self, spec: PlaybookSpec, frame_id: str, namespace: dict, variables: dict, stored: Any
    ) -> Any:
        turn = stored.turn if stored is not None else 0
        history: list[tuple[str, str]] = []
        if stored is not None:
            for t in range(turn):
                obs = stored.observations[t] if t < len(stored.observations) else ""
                history.append((stored.text(t), obs))
        resuming = stored is not None and turn < len(stored.texts)
        definitions: list[str] = []
        while True:
            executor = self._executor(
                frame_id,
                namespace,
                {},
                turn=turn,
                checker=self._checker(namespace),
                provided=self._base,
                defined=self._defined,
                opaque=self._opaque(),
            )
            if stored is not None and not definitions:
                executor.restore_definitions(stored.defs)
            else:
                executor.inherit_definitions(definitions)
            try:
                if resuming:
                    assert stored is not None
                    await self._resume_turn(spec, executor, stored, turn, history, variables)
                else:
                    await self._new_turn(spec, executor, frame_id, turn, history, variables)
                outcome = "The code ran to its end without calling Return. Continue with the next steps, or Return."
            except PlaybookReturn as done:
                return done.value
            except Exception as error:  # the model's code failed: tell it next turn
                executor.end_response()
                self._turn_done(frame_id, turn)
                message = describe_error(error)
                if self.on_event is not None:
                    self.on_event(
                        {
                            "event": "code_error",
                            "playbook": spec.name,
                            "frame": frame_id,
                            "turn": turn,
                            "message": message,
                        }
                    )
                outcome = (
                    f"Your code failed at {message}. Nothing after it ran. Fix it and continue."
                )
            resuming = False
            variables = executor.variables()
            definitions = executor.definitions
            if self.manager is not None:
                if executor.error is not None:  # the failed statement may have changed some
                    self.manager.record_checkpoint(
                        frame_id,
                        turn=turn,
                        cursor=executor.cursor,
                        statement="",
                        variables=executor.checkpoint_variables(),
                        position=executor.position,
                        touched=executor.pending_touched,
                    )
                self.manager.record_observation(frame_id, turn, outcome)
            history.append((executor.llm_response, outcome))
            turn += 1

    def _context(
        self, spec: PlaybookSpec, history: list, variables: dict, frame_id: str = ""
    ) -> TurnContext:
        """What the model is told this turn; the conversation's log (if it keeps
        one) gives what was said and replied since this frame's last turn."""
        memory = self._prompt_memory.setdefault(frame_id, {"mark": None, "earlier": []})
        log = list(getattr(self.conversation, "log", []))
        talk = [e for e in log if e.get("kind") in ("say", "reply")]
        if memory["mark"] is None:  # first turn of this call: the recent conversation
            events = talk[-RECENT_EVENTS:]
        else:
            events = [e for e in talk if e["seq"] >= memory["mark"]]
        memory["mark"] = len(log)
        steps = [e["step"] for e in log if e.get("kind") == "step" and e.get("frame") == frame_id]
        last_step = steps[-1] if steps else _last_step(history)
        ctx = TurnContext(
            agent_name=self.agent.name,
            agent_description=self.agent.description,
            playbook_name=spec.name,
            playbook_source=spec.source,
            playbooks=[
                PlaybookInfo(p.name, signature(p), p.description, list(p.triggers), p.kind)
                for p in self.agent.playbooks
            ],
            args={f"${p}": short_repr(variables[p], 1000) for p in spec.params if p in variables},
            variables={
                f"${k}": short_repr(v, 1000) for k, v in variables.items() if k not in spec.params
            },
            call_stack=list(self._stack),
            history=list(history),
            signature=signature(spec),
            description=spec.description,
            triggers=list(spec.triggers),
            notes=spec.notes,
            steps=[(f"{spec.name}:{s.id}", s.text) for s in spec.all_steps()],
            last_step=last_step if history else "",
            events=events,
            earlier=list(memory["earlier"][: len(history)]),
        )
        earlier = memory["earlier"]
        del earlier[len(history) :]
        earlier.extend([""] * (len(history) - len(earlier)))
        earlier.append(render_state(ctx))
        return ctx

    async def _new_turn(self, spec, executor, frame_id, turn, history, variables) -> None:
        if self.llm_calls >= self.limits.max_llm_calls:
            raise ProgramFailed(
                f"playbook {spec.name} did not finish within max_llm_calls = "
                f"{self.limits.max_llm_calls} LLM calls"
            )
        index = self.llm_calls
        self.llm_calls += 1
        if self.manager is not None:
            self.manager.record_turn(frame_id, turn, llm=True)
        ctx = self._context(spec, history, variables, frame_id)
        await self._stream(
            executor, LLMRequest(build_messages(ctx), index, spec.name), frame_id, turn
        )

    async def _resume_turn(self, spec, executor, stored, turn, history, variables) -> None:
        text, done = stored.text(turn), stored.turn_done(turn)
        await executor.resume(text, stored.cursor, done=done, position=stored.pos)
        if done:
            return
        index = stored.calls[turn] if turn < len(stored.calls) else self.llm_calls - 1
        ctx = self._context(spec, history, variables, stored.id)
        request = LLMRequest(build_messages(ctx), index, spec.name, partial=text or None)
        await self._stream(executor, request, stored.id, turn)

    def _turn_done(self, frame_id: str, turn: int) -> None:
        if self.manager is not None:
            frame = self.manager.frame(frame_id)
            if frame is None or not frame.turn_done(turn):
                self.manager.record_text(frame_id, turn, "", done=True)

    async def _stream(
        self, executor: StreamingPythonExecutor, request: LLMRequest, frame_id: str, turn: int
    ) -> None:
        try:
            await run_stream(
                self.llm, request, executor, manager=self.manager, frame_id=frame_id, turn=turn
            )
        except LLMError as error:
            raise ProgramFailed(str(error)) from None
