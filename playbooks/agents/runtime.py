"""The program's agents: ids, addresses, inboxes, routing, and when the program ends.

Every agent of the file starts, with ids from 1000 in file order. The first
agent that has a playbook to run keeps the frame-id prefix ``main`` (so
single-agent executions and their recordings stay as they were); every other
agent's frames start with ``agent<ID>``. AI agents run as asyncio tasks, each
with its own :class:`~.turns.AgentLoop` (state, frames) and inbox.

A message sent to an agent is stored with the sender's Say record (its id is
the sender's call id); its consumption is stored with the receiver's await
record. On resume the inboxes are rebuilt from that: messages sent and not
consumed, in sending order; a resend of a consumed message is dropped.

The program ends when every agent's task has ended: an agent that waits for
messages stops waiting when every agent waits and nothing is on its way (and
the person's input, read by the agent that serves the person, has ended), or
at once on ``EndProgram()`` / ``Yld("exit")`` from any agent.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..execution.builtins import ProgramEnd
from ..execution.interpreter import signature
from ..execution.journal import CURRENT_CALL, detached_task, note
from ..execution.say_preview import set_preview_listener
from ..language import AgentSpec, Program
from ..llm import PlaybookInfo
from ..llm.client import call_listener, set_call_listener
from .meetings import Meeting, Meetings
from .turns import AgentLoop, Limits, ProgramFailed

FIRST_ID = 1000
_AGENT_WORD = re.compile(r"^agent\s+", re.IGNORECASE)
_PERSON = ("user", "human", "person")


class NoMessageCanCome(Exception):
    """A wait for a message that no agent can send any more (every agent waits)."""


def _words(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def aliases(spec: AgentSpec) -> set[str]:
    """Every spelling an agent answers to: name, heading, each without a trailing "agent"."""
    out = set()
    for name in (spec.name, spec.title or spec.name):
        key = _words(name)
        out.add(key)
        if key.endswith("agent") and len(key) > len("agent"):
            out.add(key[: -len("agent")])
    return out


def callable_names(spec: AgentSpec) -> list[str]:
    """The names code calls the agent by: ``TaxAccountantAgent`` and ``TaxAccountant``."""
    names = [spec.name]
    if spec.name.endswith("Agent") and len(spec.name) > len("Agent"):
        names.append(spec.name[: -len("Agent")])
    return names


@dataclass
class Member:
    """One agent of the running program."""

    id: int
    spec: AgentSpec
    root: str
    loop: AgentLoop | None = None  # None: a human agent
    inbox: list[dict] = field(default_factory=list)
    waiter: asyncio.Future | None = None
    wait_from: int | None = None  # waiting for a message from this agent only
    wait_meeting: int | None = None  # waiting for a message of this meeting only
    person: bool = False  # waiting to serve: may read the person when nothing else can come
    given: dict[str, Any] = field(default_factory=dict)  # CreateAgent's arguments: its state
    done: bool = False
    task: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> str:
        return f"agent {self.id}"


class AgentProxy:
    """``Accountant`` in generated code: ``await Accountant.GetTaxRate(80000)`` runs
    that agent's public playbook in that agent and returns its value."""

    def __init__(self, member: Member) -> None:
        self._member = member

    def __getattr__(self, name: str) -> Callable[..., Any]:
        member = self._member
        spec = member.spec.playbook(name)
        public = [p.name for p in member.spec.playbooks if p.public]
        if spec is None or not spec.public:
            offer = ", ".join(public) if public else "none"
            what = (
                f"agent {member.name} has no playbook {name}"
                if spec is None
                else f"{name} of agent {member.name} is not public: other agents cannot call it"
            )
            raise AttributeError(f"{what} (its public playbooks: {offer})")
        loop = member.loop
        assert loop is not None

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await loop.call(spec, args, kwargs)

        call.__name__ = call.__qualname__ = f"{member.name}.{spec.name}"
        return call

    def __repr__(self) -> str:
        return f"<agent {self._member.name} ({self._member.address})>"


class AgentRuntime(Meetings):
    """Implements the execution side's ``Messaging`` for every agent of a program."""

    def __init__(
        self,
        program: Program,
        python_globals: Callable[[AgentSpec], dict[str, Any]],
        *,
        llm: Any,
        conversation: Any,
        manager: Any = None,
        limits: Limits | None = None,
        program_path: str = "<program>",
        on_event: Callable[[dict], None] | None = None,
        on_message: Callable[[dict], None] | None = None,
    ) -> None:
        self.program = program
        self._globals = python_globals
        self.llm = llm
        self.conversation = conversation
        self.manager = manager
        self.limits = limits or Limits()
        self.program_path = program_path
        self.on_event = on_event
        self.on_message = on_message
        self.members: list[Member] = []
        self.meetings: dict[int, Meeting] = {}
        self.shared: dict[int, dict[str, Any]] = {}  # each meeting's shared state
        self._consumed: set[str] = set()
        main = main_agent(program)
        if main is None:
            raise ProgramFailed(f"{program.path}: no agent has a playbook to run")
        ai = [a for a in program.agents if a.kind != "human"]
        self.alone = len(ai) == 1
        for number, spec in enumerate(program.agents):
            root = "main" if spec is main else f"agent{FIRST_ID + number}"
            self._add(Member(FIRST_ID + number, spec, root))
        self.main = next(m for m in self.members if m.root == "main")

    # -- members ---------------------------------------------------------------
    def _add(self, member: Member) -> Member:
        if member.spec.kind != "human":
            member.loop = AgentLoop(
                agent=member.spec,
                python_globals=self._globals(member.spec),
                llm=self.llm,
                conversation=self.conversation,
                manager=self.manager,
                limits=self.limits,
                program_path=self.program_path,
                on_event=self.on_event,
                agent_id=member.id,
                root=member.root,
                runtime=self,
                request_agent="" if self.alone else self._call_name(member),
            )
        if member.loop is not None and member.given:
            member.loop.agent_state().update(member.given)
        self.members.append(member)
        if len([m for m in self.members if m.loop is not None]) > 1:
            self.alone = False
        return member

    def _call_name(self, member: Member) -> str:
        """The agent named in its LLM calls: its name, with its id when CreateAgent made it."""
        declared = any(m.spec is member.spec and m.id < member.id for m in self.members)
        return f"{member.name} {member.id}" if declared else member.name

    def llm_calls(self) -> int:
        """LLM calls of every agent so far (``max_llm_calls`` bounds the execution)."""
        return sum(m.loop.llm_calls for m in self.members if m.loop is not None)

    def _ai(self) -> list[Member]:
        return [m for m in self.members if m.loop is not None]

    def member(self, agent_id: int) -> Member:
        return next(m for m in self.members if m.id == agent_id)

    def _of(self, loop: AgentLoop) -> Member:
        return next(m for m in self.members if m.loop is loop)

    def find(self, target: str) -> Member | None:
        text = target.strip()
        rest = _AGENT_WORD.sub("", text)
        if rest.isdigit():
            return next((m for m in self.members if m.id == int(rest)), None)
        for candidate in (rest, text):
            key = _words(candidate)
            for member in self.members:
                if key and key in aliases(member.spec):
                    return member
        return None

    # -- Messaging (the execution side's protocol) ------------------------------
    def address(self, target: str) -> tuple[str, int | None, str]:
        text = str(target).strip()
        if text.lower() in _PERSON:
            return "person", None, "user"
        if text.lower().startswith("meeting"):
            number = text.split(",")[0].split()[-1]
            return "meeting", int(number) if number.isdigit() else None, f"meeting {number}"
        member = self.find(text)
        if member is None:
            return "unknown", None, text
        if member.loop is None:
            return "person", member.id, member.spec.title or member.name
        return "agent", member.id, member.name

    def send(self, *, id: str, sender: int, to: int, text: str) -> dict:
        """Deliver a message (or drop a resend of one already consumed)."""
        mail = {"id": id, "from": sender, "to": to, "text": text}
        source, target = self.member(sender), self.member(to)
        names = self._call_name(source), self._call_name(target)
        event = {"event": "message", "id": id, "from": names[0], "to": names[1]}
        if self.on_message is not None:
            self.on_message(event | {"text": text})
        if id in self._consumed or any(m["id"] == id for m in target.inbox):
            return mail
        self._deliver(target, mail | {"sender": source.address})
        return mail

    def _deliver(self, target: Member, message: dict) -> None:
        waiter = target.waiter
        if waiter is not None and not waiter.done() and self._matches(target, message):
            self._wake(target, message)
            return
        target.inbox.append(message)

    @staticmethod
    def _matches(member: Member, message: dict) -> bool:
        if member.wait_meeting is not None:
            return message.get("meeting") == member.wait_meeting and "invite" not in message
        if member.wait_from is not None:
            return message["from"] == member.wait_from and "meeting" not in message
        return True

    def _wake(self, member: Member, value: Any) -> None:
        waiter = member.waiter
        member.waiter, member.wait_from, member.person = None, None, False
        member.wait_meeting = None
        if waiter is None or waiter.done():
            return
        if isinstance(value, BaseException):
            waiter.set_exception(value)
        else:
            if isinstance(value, dict):
                self._consumed.add(value["id"])
            waiter.set_result(value)

    def _take(self, member: Member) -> dict | None:
        for index, message in enumerate(member.inbox):
            if self._matches(member, message):
                del member.inbox[index]
                self._consumed.add(message["id"])
                return message
        return None

    async def _wait(
        self, member: Member, source: int | None, *, person: bool, meeting: int | None = None
    ) -> Any:
        member.wait_from, member.wait_meeting = source, meeting
        found = self._take(member)
        if found is None and meeting is not None:
            held = self.meetings.get(meeting)
            if held is not None and not held.open:
                found = self._ended(member, held)
        if found is not None:
            member.wait_from = member.wait_meeting = None
            return found
        member.waiter = asyncio.get_running_loop().create_future()
        member.person = person
        waiter = member.waiter
        self._settle()
        return await waiter

    async def receive(
        self,
        *,
        receiver: int,
        source: int | None,
        meeting: int | None = None,
        id: str = "",
        agent: str = "",
    ) -> dict:
        """The next message for ``receiver`` (from ``source`` only, or of ``meeting``;
        in a meeting with people, theirs when no AI attendee can say anything)."""
        held = self.meetings.get(meeting) if meeting is not None else None
        person = held is not None and held.open and bool(held.people)
        found = await self._wait(self.member(receiver), source, person=person, meeting=meeting)
        if found == "person" and held is not None:
            return await self.person_in_meeting(held, id=id, agent=agent)
        return found

    async def next_message(self, receiver: int, *, person: bool) -> Any:
        """For a serving agent: a message, ``"person"`` (read the person now), or None."""
        return await self._wait(self.member(receiver), None, person=person)

    async def ask(self, *, id: str, agent: str, human: str) -> str:
        """A reply from a human agent other than ``user``."""
        ask = getattr(self.conversation, "reply_from", None)
        if ask is None:
            return await self.conversation.reply(id=id, agent=agent)
        return await ask(id=id, agent=agent, human=human)

    def _settle(self) -> None:
        """Every AI agent waits (or is done): let the person speak, or end the waits."""
        ai = self._ai()
        if any(not m.done and m.waiter is None for m in ai):
            return
        waiting = [m for m in ai if m.waiter is not None]
        for member in waiting:
            if member.person:
                self._wake(member, "person")
                return
        for member in waiting:
            if member.wait_meeting is not None:
                self._wake(
                    member,
                    NoMessageCanCome(
                        f"no message can come in meeting {member.wait_meeting}: every agent "
                        "is waiting and none is on its way"
                    ),
                )
            elif member.wait_from is None:
                self._wake(member, None)
            else:
                source = self.member(member.wait_from)
                self._wake(
                    member,
                    NoMessageCanCome(
                        f"no message can come from {source.name} ({source.address}): every "
                        "agent is waiting and none is on its way; do not wait for it again "
                        "unless you sent it something that needs an answer"
                    ),
                )

    # -- what generated code and prompts see ----------------------------------
    def extras(self, loop: AgentLoop) -> dict[str, Any]:
        """Names added to an agent's namespace: the other agents, and CreateAgent."""
        me = self._of(loop)
        out: dict[str, Any] = {}
        for member in self._ai():
            if member is me:
                continue
            for name in callable_names(member.spec):
                out.setdefault(name, AgentProxy(member))

        async def CreateAgent(agent_type: str, *args: Any, **kwargs: Any) -> str:
            """A new agent of a declared type; a second argument (or ``name=``) names it,
            and the keyword arguments become its variables."""
            given = dict(kwargs)
            if args:
                given.setdefault("name", args[0])
            return self._create(str(agent_type), given)

        async def MeetingState(meeting: str, **updates: Any) -> dict:
            """The meeting's shared state, after writing ``updates`` into it (journaled)."""
            kind, number, _ = self.address(str(meeting))
            if kind != "meeting" or number is None:
                raise ValueError(
                    f"MeetingState: {meeting!r} is not a meeting (write 'meeting 100')"
                )
            if updates:
                try:
                    json.dumps(updates)
                except (TypeError, ValueError):
                    raise TypeError("MeetingState: values must be plain data") from None
                self.shared.setdefault(number, {}).update(updates)
                note("shared", {"meeting": number, "set": updates})
            return json.loads(json.dumps(self.shared.get(number, {})))

        out["CreateAgent"] = CreateAgent
        out["MeetingState"] = MeetingState
        return out

    def public_playbooks(self, loop: AgentLoop) -> list[PlaybookInfo]:
        """Other agents' public playbooks, as the model may call them."""
        me = self._of(loop)
        out = []
        for member in self._ai():
            if member is me:
                continue
            for spec in member.spec.playbooks:
                if spec.public:
                    name = f"{member.name}.{spec.name}"
                    out.append(
                        PlaybookInfo(
                            name,
                            f"{member.name}.{signature(spec)}",
                            spec.description,
                            list(spec.triggers),
                            spec.kind,
                        )
                    )
        return out

    def directory(self, loop: AgentLoop) -> list[str]:
        """One line per other agent (empty when the agent is alone)."""
        if self.alone and not any(m.loop is None for m in self.members):
            return []
        me = self._of(loop)
        lines = []
        for member in self.members:
            if member is me:
                continue
            kind = "a person" if member.loop is None else "an AI agent"
            about = (member.spec.description or member.spec.title or "").strip()
            about = about.splitlines()[0] if about else ""
            lines.append(
                f"{member.name} ({member.address}, {kind})" + (f": {about}" if about else "")
            )
        return lines

    def concerns(self, loop: AgentLoop, event: dict) -> bool:
        """Does a said/replied event belong in this agent's prompt?"""
        me = self._of(loop)
        names = {self._call_name(me), me.address}
        if me is self.main:
            names.add("user")
        return event.get("agent") in names or event.get("to") in names

    # -- CreateAgent --------------------------------------------------------------
    def _create(self, agent_type: str, given: dict[str, Any]) -> str:
        spec = self.program.agent(agent_type) or next(
            (m.spec for m in self.members if m.name == agent_type), None
        )
        if spec is None or spec.kind == "human":
            known = ", ".join(a.name for a in self.program.agents if a.kind != "human")
            raise ValueError(f"CreateAgent: no AI agent type {agent_type!r}; types: {known}")
        number = max(m.id for m in self.members) + 1
        given = {k: v for k, v in given.items() if isinstance(v, (str, int, float, bool))}
        member = self._add(Member(number, spec, f"agent{number}", given=given))
        note("agent", {"id": number, "type": spec.name, "given": given})
        self._start(member)
        return member.address

    def _recreate(self) -> None:
        """The agents CreateAgent made before a crash come back (their frames resume)."""
        if self.manager is None:
            return
        for made in self.manager.open().created:
            spec = self.program.agent(made["type"])
            if spec is not None and all(m.id != made["id"] for m in self.members):
                given = made.get("given") or {}
                self._add(Member(made["id"], spec, f"agent{made['id']}", given=given))

    def _restore_inboxes(self) -> None:
        if self.manager is None:
            return
        state = self.manager.open()
        self._consumed.update(state.received)
        for number, shared in state.shared.items():
            self.shared[int(number)] = dict(shared)
        for number in state.closed:  # their hosts' playbooks returned
            self.meetings[number] = Meeting(number, 0, "", [], open=False)
        for mail in state.mail.values():
            target = next((m for m in self.members if m.id == mail["to"]), None)
            source = next((m for m in self.members if m.id == mail["from"]), None)
            if target is not None:
                sender = source.address if source else f"agent {mail['from']}"
                if "meeting" in mail:
                    sender = f"meeting {mail['meeting']}"
                target.inbox.append(dict(mail, sender=sender))

    # -- running -------------------------------------------------------------------
    async def _life(self, member: Member) -> Any:
        CURRENT_CALL.set(None)  # an agent's own frames start at its root
        assert member.loop is not None
        try:
            return await member.loop.run(alone=self.alone)
        finally:
            member.done = True
            self._settle()

    def _start(self, member: Member) -> None:
        """The agent's task starts in an empty context: outside every statement's keys
        and records, whichever await (CreateAgent) started it. Only the listener of
        LLM calls comes along, so the person's output hears every agent's calls."""
        listener = call_listener()

        def start() -> asyncio.Task:
            set_call_listener(listener)
            return detached_task(self._life(member))

        member.task = contextvars.Context().run(start)

    async def run(self) -> Any:
        """Run every agent; the first agent's result is the program's."""
        self._recreate()
        self._restore_inboxes()
        if self.alone:
            result = await self._life(self.main)
            made = [m.task for m in self._ai() if m.task is not None]  # by CreateAgent
            try:
                for task in made:
                    await task
            except ProgramEnd:
                return None
            finally:
                await self._stop()
            return result
        # A Say shown while it streams would be cut by the other agents' lines: with
        # several agents, each line is shown whole when its Say runs.
        set_preview_listener(None)
        for member in self._ai():
            if member.task is None:
                self._start(member)
        try:
            while True:
                tasks = [m.task for m in self._ai() if m.task is not None and not m.task.done()]
                failed = next(
                    (
                        m.task
                        for m in self._ai()
                        if m.task is not None
                        and m.task.done()
                        and not m.task.cancelled()
                        and m.task.exception() is not None
                    ),
                    None,
                )
                if failed is not None:
                    error = failed.exception()
                    if isinstance(error, ProgramEnd):
                        return None
                    assert error is not None
                    raise error
                if not tasks:
                    break
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._stop()
        assert self.main.task is not None
        return self.main.task.result()

    async def _stop(self) -> None:
        tasks = [m.task for m in self._ai() if m.task is not None and not m.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def main_agent(program: Program) -> AgentSpec | None:
    """The agent whose frames start at ``main``: the first AI agent with a playbook."""
    return next((a for a in program.agents if a.kind != "human" and a.entry is not None), None)


def roster(program: Program) -> list[dict]:
    """What the execution record keeps of the agents (for `executions show`)."""
    main = main_agent(program)
    return [
        {
            "id": FIRST_ID + n,
            "name": a.name,
            "kind": a.kind,
            "root": "main" if a is main else f"agent{FIRST_ID + n}",
        }
        for n, a in enumerate(program.agents)
    ]
