"""Meetings: several agents talking together while the host's meeting playbook runs.

A playbook with ``meeting: true`` called by its host opens a meeting (numbers
from 100) with the attendees it names (or its ``required_attendees``); each AI
attendee is invited by a message, and joins by running its own playbook of the
same name if it has one (else its model handles the invitation). ``Say("meeting
100", text)`` reaches every other attendee, ``Yld("meeting 100")`` waits for the
next meeting message; ``MeetingState`` keeps the meeting's shared state. The
meeting ends when the host's playbook returns.

Durability: the meeting number is stored with the host's frame (its
``$meeting_id``), so a resumed host reopens the same meeting and re-sends the
invitations, which attendees that already took them drop (their ids were
consumed). Broadcast messages are stored with the Say's record like any
message; the end of a meeting with the host's await record; shared state
writes with the MeetingState record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..execution.journal import note

if TYPE_CHECKING:
    from .runtime import Member
    from .turns import AgentLoop

PERSON = ("user", "human", "person")


@dataclass
class Meeting:
    """A meeting: open while its host's meeting playbook runs."""

    number: int
    host: int
    topic: str
    attendees: list[int]
    open: bool = True
    people: list[str] = field(default_factory=list)  # "user" and human agents attending

    @property
    def address(self) -> str:
        return f"meeting {self.number}"


class Meetings:
    """The meeting half of :class:`~.runtime.AgentRuntime` (a mixin: it uses its members)."""

    meetings: dict[int, Meeting]
    members: list[Member]
    _consumed: set[str]
    on_message: Any
    conversation: Any

    if TYPE_CHECKING:

        def find(self, target: str) -> Member | None: ...
        def member(self, agent_id: int) -> Member: ...
        def _of(self, loop: AgentLoop) -> Member: ...
        def _deliver(self, target: Member, message: dict) -> None: ...
        def _wake(self, member: Member, value: Any) -> None: ...
        def _call_name(self, member: Member) -> str: ...
        async def ask(self, *, id: str, agent: str, human: str) -> str: ...

    def meeting_call(self, spec: Any, kwargs: dict) -> dict:
        """Take a meeting playbook's own arguments (topic, attendees) out of a call."""
        attendees = kwargs.pop("attendees", None)
        if attendees is None:
            attendees = spec.metadata.get("required_attendees") or []
        if isinstance(attendees, str):
            attendees = [attendees]
        return {
            "join": kwargs.pop("__join__", None),
            "playbook": spec.name,
            "topic": str(kwargs.pop("topic", "") or spec.title or spec.name),
            "attendees": list(attendees),
        }

    def enter_meeting(self, loop: AgentLoop, frame_id: str, call: dict, known: Any) -> dict:
        """The host opens its meeting (again, on resume) and invites the attendees; an
        attendee joins. Returns the variables the meeting playbook runs with."""
        me = self._of(loop)
        if call["join"] is not None:
            held = self.meetings.get(call["join"])
            number = call["join"]
            return {"meeting_id": f"meeting {number}", "meeting_topic": held.topic if held else ""}
        if known:
            number = int(str(known).split()[-1])
        else:
            number = max([99, *self.meetings]) + 1
        attendees = []
        people: list[str] = []
        for who in call["attendees"]:
            member = self.find(str(who))
            if member is None and str(who).lower() not in PERSON:
                raise ValueError(f"meeting attendee {who!r}: no such agent")
            if member is None:
                people.append("user")
            elif member.loop is None:
                people.append(member.spec.title or member.name)
            elif member is not me and member.id not in attendees:
                attendees.append(member.id)
        meeting = Meeting(number, me.id, call["topic"], attendees, people=people)
        self.meetings[number] = meeting
        for member_id in attendees:
            member = self.member(member_id)
            if member.loop is None:
                continue
            invite = f"You are invited to {meeting.address} by {me.name}: {meeting.topic}"
            mail = {"id": f"{frame_id}>invite{member_id}", "from": me.id, "to": member_id}
            mail |= {"text": invite, "meeting": number, "invite": call["playbook"]}
            if mail["id"] not in self._consumed and all(
                m["id"] != mail["id"] for m in member.inbox
            ):
                self._deliver(member, mail | {"sender": meeting.address})
        names = [self.member(a).address for a in attendees]
        return {"meeting_id": meeting.address, "meeting_topic": meeting.topic, "attendees": names}

    def leave_meeting(self, loop: AgentLoop, address: Any) -> None:
        """The host's meeting playbook returned: the meeting ends for everyone."""
        if not address:
            return
        held = self.meetings.get(int(str(address).split()[-1]))
        if held is None or held.host != self._of(loop).id or not held.open:
            return
        held.open = False
        note("closed", held.number)
        for member in self.members:
            if member.waiter is not None and member.wait_meeting == held.number:
                self._wake(member, self._ended(member, held))

    async def person_in_meeting(self, held: Meeting, *, id: str, agent: str) -> dict:
        """Nothing can come from the AI attendees: the people of the meeting speak."""
        pending = getattr(self.conversation, "pending", None)
        ready = [p for p in held.people if pending is not None and pending(p)]
        who = (ready or held.people)[0]  # whoever has a reply waiting speaks first
        if who == "user":
            text = await self.conversation.reply(id=id, agent=agent)
        else:
            text = await self.ask(id=id, agent=agent, human=who)
        return {"id": f"{id}>person", "from": held.host, "text": f"{who}: {text}", "person": True}

    def _ended(self, member: Member, held: Meeting) -> dict:
        marker = f"{held.address}>ended{member.id}"
        self._consumed.add(marker)
        return {"id": marker, "from": held.host, "text": f"({held.address} has ended)"}

    def broadcast(self, *, id: str, sender: int, meeting: int, text: str) -> list[dict]:
        """A message to every other attendee of a meeting (the host included)."""
        held = self.meetings.get(meeting)
        if held is None or not held.open:
            raise ValueError(f"meeting {meeting} is not open: it has ended or never started")
        source = self.member(sender)
        if self.on_message is not None:
            event = {"event": "message", "id": id, "from": self._call_name(source)}
            self.on_message(event | {"to": held.address, "text": text})
        mails = []
        for member_id in [held.host, *held.attendees]:
            member = self.member(member_id)
            if member_id == sender or member.loop is None:
                continue
            mail = {"id": f"{id}>{member_id}", "from": sender, "to": member_id}
            mail |= {"text": f"{source.name}: {text}", "meeting": meeting}
            mails.append(mail)
            if mail["id"] not in self._consumed and all(
                m["id"] != mail["id"] for m in member.inbox
            ):
                self._deliver(member, mail | {"sender": held.address})
        return mails
