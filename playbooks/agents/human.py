"""The human agent ``user``: shows messages and supplies replies.

Replies come from ``--message`` values in order, then from the terminal or
stdin. ``consumed`` counts replies taken; it is restored from the durable
state on resume, so a reply that was received is never asked for again.
With durability on, the execution's durable inbox holds every reply in order
(``playbooks reply`` writes there; a ``--message`` or typed reply is written
there before it is used), so reply N is ``inbox[N]`` and ``consumed`` is
also the number of inbox messages read.
A reply read from a pipe is echoed, so the transcript shows both sides.
No stdin at all (``<&-``) is the same as an empty one: the run stops and
stays resumable, and the model is never blamed for it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import IO, Any, Protocol

from .. import terminal as term
from ..execution.builtins import AwaitingInput, OutputClosed
from ..execution.say_preview import set_preview_listener
from ..llm.client import set_call_listener

NO_MORE_INPUT = (
    "the program is waiting for the person's reply, but no --message values "
    "are left and stdin is closed"
)


class Inbox(Protocol):
    """The execution's durable inbox of the person's replies."""

    def read(self) -> list[dict]: ...

    def append(self, message: dict) -> None: ...


class Human:
    inbox: Inbox | None = None  # set when the run is durable

    def __init__(
        self,
        *,
        messages: list[str] | None = None,
        json_mode: bool = False,
        consumed: int = 0,
        out: IO[str] | None = None,
        stdin: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.messages = list(messages or [])
        self.json_mode = json_mode
        self.consumed = consumed
        self.taken = 0  # --message values used by this process: the next one is the next reply
        self.out = out or sys.stdout
        self.stdin = stdin if stdin is not None else sys.stdin  # None when closed
        self.terminal = term.Terminal(self.out, err or sys.stderr, json_mode=json_mode)
        # What was said, replied and marked in this process, in order: the
        # interpreter tells the model what happened since its last turn from it.
        self.log: list[dict[str, Any]] = []
        self.err = err or sys.stderr
        # The text of a Say to the person shown while its statement streams in
        # (never in --json): the terminal line is left open until the Say runs.
        self._preview: str | None = None
        self._preview_agent = ""
        self._preview_key: tuple = ()
        self._previewed: set[tuple] = set()
        # The spinner while the model is awaited, retry notes and token counts;
        # only one run per process shows them.
        set_call_listener(self._llm_event)
        set_preview_listener(None if json_mode else self.preview)

    def emit(self, event: dict[str, Any]) -> None:
        """One JSON object per line, written and flushed when it happens."""
        if self.json_mode:
            self._write(json.dumps(event, ensure_ascii=False, default=str) + "\n")

    def show(self, text: str) -> None:
        if not self.json_mode:
            self._write(text + "\n")

    def _line(self, who: str, text: str, style: str) -> None:
        if not self.json_mode:
            self._write(self.terminal.line(who, text, style=style))

    def _llm_event(self, event: str, request: Any) -> None:
        if self.terminal.live:
            self.terminal.llm_event(event, request)
        if event == "retry":
            where = f"LLM call #{request.call_index} ({request.playbook})"
            self.emit(
                {
                    "event": "llm_retry",
                    "call": request.call_index,
                    "playbook": request.playbook,
                    "reason": request.retry_reason,
                    "delay": request.retry_delay,
                    **_agent(request),
                }
            )
            if not self.json_mode:
                self.err.write(
                    f"note: {where} failed: {request.retry_reason}; "
                    f"retrying in {request.retry_delay:g} s\n"
                )
                self.err.flush()
        elif event == "end" and request.usage is not None:
            self.emit(
                {
                    "event": "llm",
                    "call": request.call_index,
                    "playbook": request.playbook,
                    "prompt_tokens": request.usage.get("prompt_tokens"),
                    "completion_tokens": request.usage.get("completion_tokens"),
                    **_agent(request),
                }
            )

    def preview(self, key: tuple, text: str) -> None:
        """Show more of a Say to the person whose statement is still streaming in."""
        if key in self._previewed:
            return  # that Say has run: its line is complete
        if self._preview is not None and key == self._preview_key:
            if text.startswith(self._preview) and len(text) > len(self._preview):
                self._raw(text[len(self._preview) :])
                self._preview = text
            return
        frame = str(key[0]) if key else ""
        agent = next(
            (
                e["agent"]
                for e in reversed(self.log)
                if e.get("frame") == frame or str(e.get("id", "")).startswith(frame + "/")
            ),
            next((e["agent"] for e in reversed(self.log) if "agent" in e), "agent"),
        )
        self._close_preview()
        prefix = self.terminal.line(agent, "", style=term.AGENT_STYLE).rstrip("\n")
        self._raw(prefix + text)
        self._preview, self._preview_key, self._preview_agent = text, key, agent

    def _close_preview(self) -> None:
        if self._preview is not None:
            self._preview = None
            self._previewed.add(self._preview_key)  # its Say will be shown whole
            self._raw("\n")

    def _raw(self, text: str) -> None:
        self.terminal.status(None)
        try:
            self.out.write(text)
            self.out.flush()
        except (BrokenPipeError, ValueError) as error:  # nobody is reading any more
            raise OutputClosed(f"the output was closed ({error})") from None

    def _write(self, line: str) -> None:
        self._close_preview()  # a Say shown in part, then something else: end its line
        self.terminal.status(None)  # the spinner's line is cleared first
        try:
            self.out.write(line)
            self.out.flush()
        except (BrokenPipeError, ValueError) as error:  # nobody is reading any more
            raise OutputClosed(f"the output was closed ({error})") from None

    def _note(self, kind: str, **fields: Any) -> None:
        self.log.append({"seq": len(self.log), "kind": kind, **fields})

    def say(self, *, id: str, agent: str, to: str, text: str) -> None:
        self._note("say", id=id, agent=agent, to=to, text=text)
        self.emit({"event": "say", "id": id, "agent": agent, "to": to, "text": text})
        shown = self._preview
        if to == "user" and shown is not None and agent == self._preview_agent:
            self._preview = None  # this Say completes the line its preview began
            self._previewed.add(self._preview_key)
            if text.startswith(shown):
                self._raw(text[len(shown) :] + "\n")
                return
            self._raw("\n")  # it came out otherwise (an f-string field...): show it whole
        if to == "user":
            self._line(agent, text, term.AGENT_STYLE)
        else:
            self._line(f"{agent} -> {to}", text, term.OTHER_STYLE)

    def step(self, *, agent: str, frame: str, step: str) -> None:
        self._note("step", agent=agent, frame=frame, step=step)
        self.emit({"event": "step", "agent": agent, "frame": frame, "step": step})

    def detach(self) -> None:
        """The run is over: stop listening to LLM calls and Say previews (they are global)."""
        set_call_listener(None)
        set_preview_listener(None)

    async def reply(self, *, id: str, agent: str) -> str:
        self.emit({"event": "wait", "id": id, "agent": agent})
        text = self._from_inbox()
        typed = False
        if text is None:
            given = self.taken < len(self.messages)
            if given:
                text = self.messages[self.taken]
                self.taken += 1
            else:
                text, typed = await self._read(agent)
            text = self._keep(text, agent, "message" if given else "stdin")
        self.consumed += 1
        self._note("reply", id=id, agent=agent, source="user", text=text)
        self.emit({"event": "reply", "id": id, "text": text})
        if not typed:  # a --message or a piped line: show it, as if typed
            self._line("user", text, term.USER_STYLE)
        return text

    def _from_inbox(self) -> str | None:
        """The next reply when the inbox already holds it (``playbooks reply``)."""
        if self.inbox is None:
            return None
        messages = self._inbox_read()
        return _text(messages[self.consumed]) if len(messages) > self.consumed else None

    def _inbox_read(self) -> list[dict]:
        """The inbox; one that cannot be read stops the run (resumable), never the model."""
        assert self.inbox is not None
        try:
            return self.inbox.read()
        except Exception as error:
            raise AwaitingInput(f"the replies inbox cannot be read: {error}") from None

    def _keep(self, text: str, agent: str, via: str) -> str:
        """Write a reply into the inbox before it is used, then take reply number
        ``consumed`` from there (a ``playbooks reply`` may have come first)."""
        if self.inbox is None:
            return text
        held = len(self._inbox_read())
        message = {"text": text, "from": "user", "to": agent, "via": via, "ts": time.time()}
        try:
            for _ in range(held, self.consumed):  # older executions kept no inbox
                self.inbox.append({"skip": True})
            self.inbox.append(message)
        except Exception as error:
            raise AwaitingInput(f"the reply could not be stored: {error}") from None
        messages = self._inbox_read()
        return _text(messages[self.consumed]) if len(messages) > self.consumed else text

    async def _read(self, agent: str) -> tuple[str, bool]:
        """The next line of stdin and whether a person typed it at a terminal."""
        stdin = self.stdin
        if stdin is None or getattr(stdin, "closed", False):
            raise AwaitingInput(NO_MORE_INPUT)
        interactive = term.is_tty(stdin)
        if interactive:
            self._write("> ")
        else:
            self.terminal.status(f"waiting for a reply to {agent} on stdin")
        try:
            line = await asyncio.to_thread(stdin.readline)
        except (OSError, ValueError):  # closed or unreadable: no reply can be had
            line = ""
        finally:
            self.terminal.status(None)
        if not line:
            raise AwaitingInput(NO_MORE_INPUT)
        return line.rstrip("\r\n"), interactive


def _text(message: dict) -> str:
    return str(message.get("text", ""))


def _agent(request: Any) -> dict[str, str]:
    """The calling agent, in a program of several (``call`` counts that agent's calls)."""
    return {"agent": request.agent} if request.agent else {}
