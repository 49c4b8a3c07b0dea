"""The functions generated code calls: Step, Say, Yld, Return, Var, Artifact, EndProgram.

They are ordinary coroutines awaited through the journal, so a Say that was
delivered and journaled is never delivered again, and a reply that was
received is never asked for again. Facts they want kept (the message id and
text, which reply was consumed) go into their own journal record via ``note``.

Messages between agents go through :class:`Messaging` (the agents layer
implements it): a message's id is the sender's call id, stored with the Say's
record (``mail``), and the id of a message consumed is stored with the
receiving await's record (``received``), so inboxes can be rebuilt on resume.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from .executor import PlaybookReturn
from .journal import CURRENT_CALL, current_scope, note


class ProgramEnd(BaseException):
    """``EndProgram()``: the whole program finishes now."""


class AwaitingInput(BaseException):
    """A reply is needed and none can be had now; the execution stays resumable."""


class OutputClosed(BaseException):
    """Nobody reads the output any more; the execution stays resumable."""


class Conversation(Protocol):
    """The person on the other side (implemented by the agents layer)."""

    consumed: int

    def say(self, *, id: str, agent: str, to: str, text: str) -> None: ...

    async def reply(self, *, id: str, agent: str) -> str: ...

    def step(self, *, agent: str, frame: str, step: str) -> None: ...


class Messaging(Protocol):
    """The other agents of the program (implemented by the agents layer)."""

    def address(self, target: str) -> tuple[str, int | None, str]:
        """``(kind, agent id, name)``: kind is "person" (the user or a human agent),
        "agent", "meeting", or "unknown"."""
        ...

    def send(self, *, id: str, sender: int, to: int, text: str) -> dict: ...

    async def receive(
        self,
        *,
        receiver: int,
        source: int | None,
        meeting: int | None = None,
        id: str = "",
        agent: str = "",
    ) -> dict: ...

    def broadcast(self, *, id: str, sender: int, meeting: int, text: str) -> list[dict]: ...

    async def ask(self, *, id: str, agent: str, human: str) -> str: ...


@dataclass
class Artifact:
    name: str
    summary: str
    content: str


def make_builtins(
    *,
    agent: str,
    frame_id: str | None,
    conversation: Conversation,
    namespace: dict[str, Any],
    messaging: Messaging | None = None,
    agent_id: int = 1000,
) -> dict[str, Any]:
    """Built-ins bound to one namespace: a frame's, or (``frame_id`` None) the agent's,
    where the frame is the one whose statement is running."""

    def frame() -> str:
        if frame_id is not None:
            return frame_id
        scope = current_scope()
        return scope.journal.frame_id if scope is not None else "main"

    def call_id() -> str:
        return CURRENT_CALL.get() or f"{frame()}/direct"

    async def Step(step: str) -> None:
        note("step", str(step))
        conversation.step(agent=agent, frame=frame(), step=str(step))

    def where(target: Any) -> tuple[str, int | None, str]:
        if messaging is None:
            return "person", None, str(target)
        return messaging.address(str(target))

    async def Say(target: str, text: Any) -> None:
        kind, to, name = where(target)
        if kind == "meeting" and messaging is not None and to is not None:
            mails = messaging.broadcast(id=call_id(), sender=agent_id, meeting=to, text=str(text))
            note("mail", mails)
            shown = {"id": call_id(), "agent": agent, "from": agent, "to": name}
            note("say", {"event": "message", **shown, "text": str(text)})
            return
        if kind == "agent" and messaging is not None and to is not None:
            mail = messaging.send(id=call_id(), sender=agent_id, to=to, text=str(text))
            note("mail", mail)
            shown = {"id": mail["id"], "agent": agent, "from": agent, "to": name}
            note("say", {"event": "message", **shown, "text": mail["text"]})
            return
        message = {"id": call_id(), "agent": agent, "to": name, "text": str(text)}
        conversation.say(**message)
        note("say", message)

    async def Yld(source: str = "user") -> str:
        target = str(source).strip().lower()
        if target == "exit":
            raise ProgramEnd()
        if target == "call":  # the reference dialect's "let queued work run"
            await asyncio.sleep(0)
            return ""
        kind, source_id, name = where(source)
        if kind in ("agent", "meeting") and messaging is not None:
            meeting = source_id if kind == "meeting" else None
            source_id = None if kind == "meeting" else source_id
            message = await messaging.receive(
                receiver=agent_id, source=source_id, meeting=meeting, id=call_id(), agent=agent
            )
            note("received", message["id"])
            if message.get("person"):  # a person of the meeting answered
                note("consumed", conversation.consumed)
            return str(message["text"])
        if kind == "person" and messaging is not None and name != "user":
            text = await messaging.ask(id=call_id(), agent=agent, human=name)
        else:
            text = await conversation.reply(id=call_id(), agent=agent)
        note("consumed", conversation.consumed)
        return text

    async def Return(value: Any = None) -> None:
        raise PlaybookReturn(value)

    async def Var(name: str, value: Any) -> Any:
        namespace[str(name).lstrip("$")] = value
        return value

    async def MakeArtifact(name: str, summary: str, content: str) -> Artifact:
        artifact = Artifact(str(name), str(summary), str(content))
        namespace[str(name).lstrip("$")] = artifact
        return artifact

    async def EndProgram() -> None:
        raise ProgramEnd()

    MakeArtifact.__name__ = "Artifact"
    return {
        "Step": Step,
        "Say": Say,
        "Yld": Yld,
        "WaitForMessage": Yld,
        "Return": Return,
        "Var": Var,
        "Artifact": MakeArtifact,
        "EndProgram": EndProgram,
    }
