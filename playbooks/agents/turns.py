"""An AI agent's turn loop: runs its playbook calls as frames, durably when given a manager.

A playbook call is a frame whose id is the call id of the await that made it
(``main/2.3.0/0.1.0``...), so after a crash the re-executed caller reaches
the same await, asks for the same frame, and the callee resumes where it was
instead of starting over: the whole chain is rebuilt, at any depth.

The first agent's frames start at ``main`` (as they always did); another
agent's at ``agent1001``. A public playbook another agent calls runs here, in
this agent's state, in a frame named after the caller's await with this
agent's prefix (``agent1001:main/1.3.0``), so a resumed caller finds it again.

A Markdown playbook is a loop of LLM turns; each turn streams one response
into a :class:`StreamingPythonExecutor`. A Python playbook's body runs
through the same executor, so its awaits are journaled the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..durability.state import agent_of
from ..execution.builtins import AwaitingInput, Conversation, ProgramEnd, make_builtins
from ..execution.executor import RERUN, PlaybookReturn, StreamingPythonExecutor
from ..execution.interpreter import (
    HANDLE,
    HANDLE_AGENT,
    PURE,
    RECENT_EVENTS,
    ROOT,
    SERVE,
    UNTIMED,
    Limits,
    ProgramFailed,
    _last_step,
    describe_error,
    short_repr,
    signature,
)
from ..execution.journal import CURRENT_CALL, note
from ..execution.nondeterminism import journal_globals
from ..execution.safety import Budget, check_statement, instrument, safe_builtins
from ..execution.stream import run_stream
from ..language import AgentSpec, PlaybookSpec
from ..llm import LLMError, LLMRequest, PlaybookInfo, TurnContext, build_messages
from ..llm.prompts import render_state

__all__ = ["AgentLoop", "Interpreter", "Limits", "ProgramEnd", "ProgramFailed"]

#: The playbook calls of the running task, outermost first (the prompt's call stack):
#: per task, since another agent's task may run one of this agent's playbooks.
_STACK: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "playbooks_call_stack", default=()
)


@dataclass
class AgentLoop:
    """One AI agent: its state, its frames, its LLM turns."""

    agent: AgentSpec
    python_globals: dict[str, Any]
    llm: Any
    conversation: Conversation
    manager: Any = None
    limits: Limits = field(default_factory=Limits)
    program_path: str = "<program>"
    on_event: Callable[[dict], None] | None = None
    llm_calls: int = 0
    #: The agent's id and frame-id prefix; the runtime it talks to other agents through.
    agent_id: int = 1000
    root: str = ROOT
    runtime: Any = None
    #: The name its LLM calls carry when the program has several agents ("" otherwise).
    request_agent: str = ""
    _claimed: set[str] = field(default_factory=set)
    #: The agent's state: one namespace shared by all its Markdown playbooks, so
    #: ``$name`` set by one playbook is read by another (arguments are per call).
    _state: dict[str, Any] | None = None
    _base: dict[str, int] = field(default_factory=dict)  # runtime-provided names in it
    _defined: set[str] = field(default_factory=set)  # names bound by imports/defs in it
    _prompt_memory: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        journal_globals(self.python_globals)  # the python blocks' clocks and chance replay too

    # -- entry -------------------------------------------------------------
    def restore(self) -> None:
        """Take back the agent's state and LLM call count from the durable state."""
        if self.manager is None:
            return
        state = self.manager.open()
        if self.root == ROOT:
            self.llm_calls = state.llm_calls - sum(state.agent_calls.values())
            saved = state.agent_vars
        else:
            self.llm_calls = state.agent_calls.get(self.root, 0)
            saved = state.other_vars.get(self.root, {})
        shared = self.agent_state()
        for name, value in saved.items():  # what returned playbooks left
            shared[name] = self.manager.decode(value)

    async def run(self, *, alone: bool = True) -> Any:
        """Run every begin playbook in order; then, if the agent has other triggers
        (or, with other agents, always), serve messages until none can come."""
        begin = self.agent.begin_playbooks
        if alone and not begin:
            begin = [self.agent.entry] if self.agent.entry else []
        if alone and not begin:
            raise ProgramFailed(f"agent {self.agent.name} has no playbooks to run")
        self.restore()
        result = None
        try:
            for spec in begin:
                result = await self.call(spec, (), {})
            if self.serves() or not alone:
                await self.call(SERVE, (), {})
        except ProgramEnd:
            if alone:
                return None
            raise
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
        if base and agent_of(base) != agent_of(self.root):  # another agent calls us
            base = f"{self.root}:{base}"
        base = base or self.root
        frame_id, n = base, 1
        while frame_id in self._claimed:
            frame_id = f"{base}#{n}"
            n += 1
        self._claimed.add(frame_id)
        return frame_id, parent

    def _bind(self, spec: PlaybookSpec, args: tuple, kwargs: dict) -> dict[str, Any]:
        if spec is SERVE:
            return {}
        if spec is HANDLE_AGENT:
            return dict(zip(spec.params, args, strict=False))
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
        meeting = None
        if self.runtime is not None and spec.metadata.get("meeting"):
            meeting = self.runtime.meeting_call(spec, kwargs)
        variables = self._bind(spec, args, kwargs)
        stored = None
        if self.manager is not None:
            stored = self.manager.frame(frame_id)
            if stored is not None and stored.result is not None:
                if "err" in stored.result:
                    raise self.manager.decode_error(stored.result["err"])
                return self.manager.decode(stored.result.get("ok"))
        if meeting is not None:  # the host opens it (again, on resume); an attendee joins
            known = stored.args.get("meeting_id") if stored is not None else None
            if known is not None and self.manager is not None:
                known = self.manager.decode(known)
            variables |= self.runtime.enter_meeting(self, frame_id, meeting, known)
        if self.manager is not None:
            if stored is None:
                self.manager.record_frame(
                    frame_id, parent=parent, playbook=spec.name, kind=spec.kind, args=variables
                )
            else:
                variables = {k: self.manager.decode(v) for k, v in stored.vars.items()} or variables
        try:
            return await self._enter(spec, frame_id, variables, stored)
        finally:
            if meeting is not None:
                self.runtime.leave_meeting(self, variables.get("meeting_id"))

    async def _enter(self, spec: PlaybookSpec, frame_id: str, variables: dict, stored: Any) -> Any:
        outside = CURRENT_CALL.get() is not None and agent_of(frame_id) != agent_of(
            CURRENT_CALL.get() or ""
        )
        label = f"{self.agent.name}.{spec.name}" if outside else spec.name
        stack = _STACK.set((*_STACK.get(), label))
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
            _STACK.reset(stack)
        if self.manager is not None:
            self.manager.record_end(frame_id, value)
        return value

    def _namespace(self, frame_id: str | None, *, generated: bool) -> dict[str, Any]:
        namespace: dict[str, Any] = dict(self.python_globals)
        namespace.update(self.callables())
        if self.runtime is not None:
            namespace.update(self.runtime.extras(self))
        namespace.update(
            make_builtins(
                agent=self.request_agent or self.agent.name,
                frame_id=frame_id,
                conversation=self.conversation,
                namespace=namespace,
                messaging=self.runtime,
                agent_id=self.agent_id,
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
        if name in UNTIMED or "." in name or self.agent.playbook(name) is not None:
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
        """The two calls of the serving loop: the next message (None when none can
        come), and one turn of the model on it with every trigger in view. A message
        from another agent is a dict (its id is journaled as consumed); the person's
        is their text."""
        reply = namespace["Yld"]

        async def from_person() -> str | None:
            try:
                return await reply("user")
            except AwaitingInput:  # the person's input ended: the conversation is over
                return None

        async def NextMessage() -> Any:
            if self.runtime is None or self.runtime.alone:
                return await from_person()
            message = await self.runtime.next_message(self.agent_id, person=self.serves())
            if message is None:
                return None
            if message == "person":
                return await from_person()
            note("received", message["id"])
            return message

        async def HandleMessage(message: Any) -> Any:
            invited = isinstance(message, dict) and message.get("invite")
            joining = self.agent.playbook(invited) if invited else None
            if joining is not None and joining.metadata.get("meeting"):
                return await self.call(joining, (), {"__join__": message["meeting"]})
            if isinstance(message, dict):
                sender = message.get("sender", "")
                return await self.call(HANDLE_AGENT, (message.get("text", ""), sender), {})
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
        if self.runtime is not None and not self.runtime.alone:  # what concerns this agent
            talk = [e for e in talk if self.runtime.concerns(self, e)]
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
            ]
            + (self.runtime.public_playbooks(self) if self.runtime is not None else []),
            agents=self.runtime.directory(self) if self.runtime is not None else [],
            args={f"${p}": short_repr(variables[p], 1000) for p in spec.params if p in variables},
            variables={
                f"${k}": short_repr(v, 1000) for k, v in variables.items() if k not in spec.params
            },
            call_stack=list(_STACK.get()),
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
        used = self.runtime.llm_calls() if self.runtime is not None else self.llm_calls
        if used >= self.limits.max_llm_calls:  # the budget of the whole execution
            raise ProgramFailed(
                f"playbook {spec.name} did not finish within max_llm_calls = "
                f"{self.limits.max_llm_calls} LLM calls"
            )
        index = self.llm_calls
        self.llm_calls += 1
        if self.manager is not None:
            self.manager.record_turn(frame_id, turn, llm=True)
        ctx = self._context(spec, history, variables, frame_id)
        await self._stream(executor, self._request(spec, ctx, index), frame_id, turn)

    async def _resume_turn(self, spec, executor, stored, turn, history, variables) -> None:
        text, done = stored.text(turn), stored.turn_done(turn)
        await executor.resume(text, stored.cursor, done=done, position=stored.pos)
        if done:
            return
        index = stored.calls[turn] if turn < len(stored.calls) else self.llm_calls - 1
        ctx = self._context(spec, history, variables, stored.id)
        request = self._request(spec, ctx, index, partial=text or None)
        await self._stream(executor, request, stored.id, turn)

    def _request(
        self, spec: PlaybookSpec, ctx: TurnContext, index: int, partial: str | None = None
    ) -> LLMRequest:
        """One LLM call; ``model:`` metadata of the playbook, else of the agent, picks its model."""
        model = spec.metadata.get("model") or self.agent.metadata.get("model")
        request = LLMRequest(build_messages(ctx), index, spec.name, partial=partial)
        request.agent = self.request_agent
        request.model = str(model) if model else None
        return request

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


#: The name this class had when it lived in ``execution.interpreter``.
Interpreter = AgentLoop
