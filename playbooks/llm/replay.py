"""Record/replay model: recorded responses make every example run offline.

A replay file is JSONL, one `{"call": n, "playbook": "Main", "response": "..."}`
per line. Calls are matched by their ordinal in the execution, which is stable
across crash and resume, so a resumed run replays the same responses. With
several agents each line also names its `"agent"` and `call` counts that
agent's calls, so the agents' interleaving cannot reorder them; a line without
an agent (a single-agent recording) answers whichever agent asks.

`replay:FILE` streams as fast as the code takes it (tests, CI). `replay+paced:FILE`
streams like a live model (a short wait before the first token, then about
25 tokens a second), so a person can watch a run and stop it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .client import LLMClient, LLMError, LLMRequest, notify

CHUNK_SIZE = 12


@dataclass(frozen=True)
class Pace:
    """How fast a paced replay streams: ``first`` seconds before the first
    chunk, then ``tokens_per_second`` chunks of ``chars_per_token`` characters."""

    tokens_per_second: float = 25.0
    chars_per_token: int = 4
    first: float = 0.6

    def delays(self, text: str) -> list[float]:
        """The wait before each chunk of ``text``; their sum is the call's duration."""
        count = -(-len(text) // self.chars_per_token)
        if count == 0:
            return []
        return [self.first] + [1.0 / self.tokens_per_second] * (count - 1)


#: The pace of ``replay+paced:``: a mid-sized hosted model.
LIVE_PACE = Pace()


@dataclass
class ReplayEntry:
    call: int
    playbook: str
    response: str
    agent: str = ""


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n")


def load_replay(path: str | os.PathLike[str]) -> dict[int, ReplayEntry]:
    """Read a replay file; a later line for the same call wins (lines of any agent)."""
    return {call: entry for (_, call), entry in load_replay_agents(path).items()}


def load_replay_agents(path: str | os.PathLike[str]) -> dict[tuple[str, int], ReplayEntry]:
    """Read a replay file by (agent, call); a later line for the same key wins."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LLMError(f"replay {path}: cannot read: {exc.strerror or exc}") from None
    entries: dict[tuple[str, int], ReplayEntry] = {}
    position = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LLMError(f"replay {path}:{number}: not valid JSON ({exc.msg})") from None
        call = data.get("call", position) if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("response"), str)
            or not isinstance(data.get("playbook", ""), str)
            or not isinstance(data.get("agent", ""), str)
            or not isinstance(call, int)
            or isinstance(call, bool)
            or call < 0
        ):
            raise LLMError(
                f"replay {path}:{number}: expected an object with an integer 'call', "
                "a string 'playbook' and a string 'response'"
            )
        agent = data.get("agent", "")
        entries[(agent, call)] = ReplayEntry(
            call, data.get("playbook", ""), data["response"], agent
        )
        position += 1
    return entries


class ReplayClient:
    """Streams recorded responses by call index, in small chunks so the
    executor sees a real stream."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        chunk_size: int = CHUNK_SIZE,
        pace: Pace | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.path = str(path)
        self.pace = pace
        self.chunk_size = pace.chars_per_token if pace else max(1, chunk_size)
        self.sleep = sleep
        self._entries: dict[tuple[str, int], ReplayEntry] | None = None

    def _entry(self, request: LLMRequest) -> ReplayEntry:
        if self._entries is None:
            self._entries = load_replay_agents(self.path)
        n = request.call_index
        entry = self._entries.get((request.agent, n)) or self._entries.get(("", n))
        if entry is None:
            who = f"agent {request.agent}, " if request.agent else ""
            raise LLMError(
                f"replay {self.path} has no response for LLM call #{n} "
                f"({who}playbook {request.playbook})"
            )
        if entry.playbook and entry.playbook != request.playbook:
            raise LLMError(
                f"replay {self.path}: call #{n} was recorded for playbook "
                f"{entry.playbook}, but {request.playbook} asked"
            )
        return entry

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        entry = self._entry(request)
        notify("start", request)
        async with contextlib.aclosing(self._stream(entry, request)) as texts:
            async for text in texts:
                yield text

    async def _stream(self, entry: ReplayEntry, request: LLMRequest) -> AsyncIterator[str]:
        text = entry.response
        if request.partial:
            text = _normalise(text)
            partial = _normalise(request.partial)
            if not text.startswith(partial):
                raise LLMError(
                    f"replay {self.path}: call #{request.call_index} "
                    f"({request.playbook}) was cut off with text that is not a "
                    "prefix of the recorded response"
                )
            text = text[len(partial) :]
        delays = self.pace.delays(text) if self.pace else []
        for number, start in enumerate(range(0, len(text), self.chunk_size)):
            if delays:
                await self.sleep(delays[number])
            if number == 0:
                notify("first", request)
            yield text[start : start + self.chunk_size]
            await asyncio.sleep(0)  # let the consumer run between chunks


class RecordingClient:
    """Wraps a client and appends each call to a replay file when its stream
    ends or is abandoned.

    A call abandoned before its stream ends (a run cancelled mid-call) keeps
    the text received until then: what the run executed, and more. Each call is one line,
    flushed and fsynced before the next call starts, so a kill loses nothing
    already recorded. A call that failed (an LLMError) is not recorded.
    """

    def __init__(self, inner: LLMClient, path: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.path = str(path)

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        received: list[str] = []
        complete = False
        failed = False
        try:
            async with contextlib.aclosing(self.inner.stream(request)) as texts:
                async for text in texts:
                    received.append(text)
                    yield text
            complete = True
        except LLMError:
            failed = True
            raise
        finally:
            # Reached also when the reader stopped early (GeneratorExit) or its
            # task was cancelled: a call abandoned after Return is still saved.
            if not failed and (complete or received or request.partial):
                response = (request.partial or "") + "".join(received)
                record: dict = {"call": request.call_index, "playbook": request.playbook}
                if request.agent:
                    record = {"agent": request.agent} | record
                record["response"] = response
                if not complete:
                    record["complete"] = False
                self._append(record)

    def _append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise LLMError(f"record {self.path}: cannot write: {exc.strerror or exc}") from None
