"""Record/replay model: recorded responses make every example run offline.

A replay file is JSONL, one `{"call": n, "playbook": "Main", "response": "..."}`
per line. Calls are matched by their ordinal in the execution, which is stable
across crash and resume, so a resumed run replays the same responses.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .client import LLMClient, LLMError, LLMRequest

CHUNK_SIZE = 12


@dataclass
class ReplayEntry:
    call: int
    playbook: str
    response: str


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n")


def load_replay(path: str | os.PathLike[str]) -> dict[int, ReplayEntry]:
    """Read a replay file; a later line for the same call wins."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LLMError(f"replay {path}: cannot read: {exc.strerror or exc}") from None
    entries: dict[int, ReplayEntry] = {}
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
            or not isinstance(call, int)
            or isinstance(call, bool)
            or call < 0
        ):
            raise LLMError(
                f"replay {path}:{number}: expected an object with an integer 'call', "
                "a string 'playbook' and a string 'response'"
            )
        entries[call] = ReplayEntry(call, data.get("playbook", ""), data["response"])
        position += 1
    return entries


class ReplayClient:
    """Streams recorded responses by call index, in small chunks so the
    executor sees a real stream."""

    def __init__(self, path: str | os.PathLike[str], *, chunk_size: int = CHUNK_SIZE) -> None:
        self.path = str(path)
        self.chunk_size = max(1, chunk_size)
        self._entries: dict[int, ReplayEntry] | None = None

    def _entry(self, request: LLMRequest) -> ReplayEntry:
        if self._entries is None:
            self._entries = load_replay(self.path)
        n = request.call_index
        entry = self._entries.get(n)
        if entry is None:
            raise LLMError(
                f"replay {self.path} has no response for LLM call #{n} "
                f"(playbook {request.playbook})"
            )
        if entry.playbook and entry.playbook != request.playbook:
            raise LLMError(
                f"replay {self.path}: call #{n} was recorded for playbook "
                f"{entry.playbook}, but {request.playbook} asked"
            )
        return entry

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        entry = self._entry(request)
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
        for start in range(0, len(text), self.chunk_size):
            yield text[start : start + self.chunk_size]
            await asyncio.sleep(0)  # let the consumer run between chunks


class RecordingClient:
    """Wraps a client and appends each completed call to a replay file."""

    def __init__(self, inner: LLMClient, path: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.path = str(path)

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        received: list[str] = []
        async for text in self.inner.stream(request):
            received.append(text)
            yield text
        # Only reached when the stream completed: a cut call is never recorded.
        response = (request.partial or "") + "".join(received)
        self._append(
            {"call": request.call_index, "playbook": request.playbook, "response": response}
        )

    def _append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise LLMError(f"record {self.path}: cannot write: {exc.strerror or exc}") from None
