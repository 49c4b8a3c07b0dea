"""The human agent ``user``: shows messages and supplies replies.

Replies come from ``--message`` values in order, then from the terminal or
stdin. ``consumed`` counts replies taken; it is restored from the durable
state on resume, so a reply that was received is never asked for again.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import IO, Any

from ..execution.builtins import AwaitingInput, OutputClosed


class Human:
    def __init__(
        self,
        *,
        messages: list[str] | None = None,
        json_mode: bool = False,
        consumed: int = 0,
        out: IO[str] | None = None,
        stdin: IO[str] | None = None,
    ) -> None:
        self.messages = list(messages or [])
        self.json_mode = json_mode
        self.consumed = consumed
        self.taken = 0  # --message values used by this process: the next one is the next reply
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin

    def emit(self, event: dict[str, Any]) -> None:
        """One JSON object per line, written and flushed when it happens."""
        if self.json_mode:
            self._write(json.dumps(event, ensure_ascii=False, default=str) + "\n")

    def show(self, text: str) -> None:
        if not self.json_mode:
            self._write(text + "\n")

    def _write(self, line: str) -> None:
        try:
            self.out.write(line)
            self.out.flush()
        except (BrokenPipeError, ValueError) as error:  # nobody is reading any more
            raise OutputClosed(f"the output was closed ({error})") from None

    def say(self, *, id: str, agent: str, to: str, text: str) -> None:
        self.emit({"event": "say", "id": id, "agent": agent, "to": to, "text": text})
        self.show(f"{agent}: {text}" if to == "user" else f"{agent} -> {to}: {text}")

    def step(self, *, agent: str, frame: str, step: str) -> None:
        self.emit({"event": "step", "agent": agent, "frame": frame, "step": step})

    async def reply(self, *, id: str, agent: str) -> str:
        self.emit({"event": "wait", "id": id, "agent": agent})
        given = self.taken < len(self.messages)
        if given:
            text = self.messages[self.taken]
            self.taken += 1
        else:
            text = await self._read()
        self.consumed += 1
        self.emit({"event": "reply", "id": id, "text": text})
        if not self.json_mode and given:
            self.show(f"user: {text}")
        return text

    async def _read(self) -> str:
        interactive = self.stdin.isatty()
        if interactive:
            self.out.write("> ")
            self.out.flush()
        line = await asyncio.to_thread(self.stdin.readline)
        if not line:
            raise AwaitingInput(
                "the program is waiting for the person's reply, but no --message values "
                "are left and stdin is closed"
            )
        return line.rstrip("\r\n")
