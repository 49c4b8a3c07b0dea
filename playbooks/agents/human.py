"""The human agent ``user``: shows messages and supplies replies.

Replies come from ``--message`` values in order, then from the terminal or
stdin. ``consumed`` counts replies taken; it is restored from the durable
state on resume, so a reply that was received is never asked for again.
A reply read from a pipe is echoed, so the transcript shows both sides.
No stdin at all (``<&-``) is the same as an empty one: the run stops and
stays resumable, and the model is never blamed for it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import IO, Any

from .. import terminal as term
from ..execution.builtins import AwaitingInput, OutputClosed
from ..llm.client import set_call_listener

NO_MORE_INPUT = (
    "the program is waiting for the person's reply, but no --message values "
    "are left and stdin is closed"
)


class Human:
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
        # The spinner while the model is awaited; only one run per process shows it.
        set_call_listener(self.terminal.llm_event if self.terminal.live else None)

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

    def _write(self, line: str) -> None:
        self.terminal.status(None)  # the spinner's line is cleared first
        try:
            self.out.write(line)
            self.out.flush()
        except (BrokenPipeError, ValueError) as error:  # nobody is reading any more
            raise OutputClosed(f"the output was closed ({error})") from None

    def say(self, *, id: str, agent: str, to: str, text: str) -> None:
        self.emit({"event": "say", "id": id, "agent": agent, "to": to, "text": text})
        if to == "user":
            self._line(agent, text, term.AGENT_STYLE)
        else:
            self._line(f"{agent} -> {to}", text, term.OTHER_STYLE)

    def step(self, *, agent: str, frame: str, step: str) -> None:
        self.emit({"event": "step", "agent": agent, "frame": frame, "step": step})

    async def reply(self, *, id: str, agent: str) -> str:
        self.emit({"event": "wait", "id": id, "agent": agent})
        given = self.taken < len(self.messages)
        typed = False
        if given:
            text = self.messages[self.taken]
            self.taken += 1
        else:
            text, typed = await self._read(agent)
        self.consumed += 1
        self.emit({"event": "reply", "id": id, "text": text})
        if not typed:  # a --message or a piped line: show it, as if typed
            self._line("user", text, term.USER_STYLE)
        return text

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
