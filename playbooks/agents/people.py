"""The people of a program: the person ``user`` and every ``# Name:Human`` agent."""

from __future__ import annotations

from typing import Any

from .. import terminal as term
from ..execution.journal import note
from .human import Human


class Person(Human):
    """The people of the program: ``user`` and any ``# Name:Human`` agent. Each reply
    also goes into the durable transcript, next to the messages, so `executions
    show` can tell the whole conversation. A ``--message NAME:TEXT`` value whose
    NAME is a human agent's is that person's reply."""

    def __init__(self, *args: Any, humans: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queues: dict[str, list[str]] = {h.lower(): [] for h in humans}
        kept = []
        for message in self.messages:
            name, colon, text = message.partition(":")
            if colon and name.strip().lower() in self.queues:
                self.queues[name.strip().lower()].append(text.lstrip())
            else:
                kept.append(message)
        self.messages = kept

    async def reply(self, *, id: str, agent: str) -> str:
        text = await super().reply(id=id, agent=agent)
        note("say", {"event": "reply", "id": id, "agent": "user", "to": agent, "text": text})
        return text

    async def reply_from(self, *, id: str, agent: str, human: str) -> str:
        """A reply from the human agent ``human``: its --message values, then the terminal."""
        self.emit({"event": "wait", "id": id, "agent": agent, "from": human})
        queue = self.queues.get(human.lower(), [])
        typed = False
        if queue:
            text = queue.pop(0)
        else:
            if term.is_tty(self.stdin):
                self._write(f"{human}> ")
            text, typed = await self._read(f"{agent} (from {human})")
        self.consumed += 1
        self._note("reply", id=id, agent=agent, source=human, text=text)
        self.emit({"event": "reply", "id": id, "from": human, "text": text})
        if not typed:
            self._line(human, text, term.USER_STYLE)
        note("say", {"event": "reply", "id": id, "agent": human, "to": agent, "text": text})
        return text

    def pending(self, who: str) -> bool:
        """Is a --message reply waiting for ``who`` ("user" or a human agent)?"""
        if who == "user":
            return self.taken < len(self.messages)
        return bool(self.queues.get(who.lower()))

    def message(self, event: dict) -> None:
        """A message between agents: shown, and kept for the prompts of those it concerns."""
        self._note("say", id=event["id"], agent=event["from"], to=event["to"], text=event["text"])
        self.emit(event)
        self._line(f"{event['from']} -> {event['to']}", event["text"], term.OTHER_STYLE)
