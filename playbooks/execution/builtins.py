"""The functions generated code calls: Step, Say, Yld, Return, Var, Artifact, EndProgram.

They are ordinary coroutines awaited through the journal, so a Say that was
delivered and journaled is never delivered again, and a reply that was
received is never asked for again. Facts they want kept (the message id and
text, which reply was consumed) go into their own journal record via ``note``.
"""

from __future__ import annotations

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


@dataclass
class Artifact:
    name: str
    summary: str
    content: str


def make_builtins(
    *, agent: str, frame_id: str | None, conversation: Conversation, namespace: dict[str, Any]
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

    async def Say(target: str, text: Any) -> None:
        message = {"id": call_id(), "agent": agent, "to": str(target), "text": str(text)}
        conversation.say(**message)
        note("say", message)

    async def Yld(source: str = "user") -> str:
        target = str(source).strip().lower()
        if target == "exit":
            raise ProgramEnd()
        if target == "call":  # the reference dialect's "let queued work run": nothing waits
            return ""
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
