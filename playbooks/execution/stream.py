"""One turn's LLM stream: received in its own task, recorded in batches.

Receiving does not wait for the code: while a statement runs (a nested
playbook call may take minutes), the rest of the response keeps arriving and
is written to the log, so a crash deep in a callee cuts no stream of its
callers. Text is written in batches, never after the code that came from it
has run: the consumer flushes what has arrived before it executes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..llm import LLMError, LLMRequest
from ..llm.client import notify
from .executor import PlaybookReturn, StreamingPythonExecutor
from .journal import detached_task
from .say_preview import partial_say, preview_listener

BATCH = 2048  # characters of text held back at most while the code is busy
RETURN_GRACE = 2.0  # seconds a stream may take to end once the code has returned


class _Recorder:
    def __init__(self, manager: Any, frame_id: str, turn: int) -> None:
        self.manager, self.frame_id, self.turn = manager, frame_id, turn
        self.pending: list[str] = []
        self.size = 0

    def add(self, chunk: str) -> None:
        self.pending.append(chunk)
        self.size += len(chunk)
        if self.size >= BATCH:
            self.flush()

    def flush(self, *, done: bool = False) -> None:
        if self.manager is not None and (self.pending or done):
            self.manager.record_text(self.frame_id, self.turn, "".join(self.pending), done=done)
        self.pending, self.size = [], 0


def _preview(received: str, frame_id: str, turn: int) -> None:
    """Every statement before the unfinished one has run: show a Say it begins."""
    listener = preview_listener()
    if listener is None:
        return
    found = partial_say(received)
    if found is not None and found.text:
        listener((frame_id, turn, found.offset), found.text)


async def run_stream(
    llm: Any,
    request: LLMRequest,
    executor: StreamingPythonExecutor,
    *,
    manager: Any,
    frame_id: str,
    turn: int,
) -> None:
    """Stream ``request`` into ``executor``; LLMError is raised as it came.

    The call's listeners hear "end" from the reader, once the whole text is
    recorded (or the call failed or was abandoned), never before: a call
    reported finished is never sent again. When the code returns before the
    stream ends (the closing fence and the token counts still on their way),
    the stream gets RETURN_GRACE seconds to end, unrecorded, and is abandoned
    after that (a model that writes on)."""
    queue: asyncio.Queue = asyncio.Queue()
    recorder = _Recorder(manager, frame_id, turn)

    async def receive() -> None:
        try:
            async with contextlib.aclosing(llm.stream(request)) as chunks:
                async for chunk in chunks:
                    recorder.add(chunk)
                    queue.put_nowait(chunk)
            recorder.flush(done=True)
            queue.put_nowait(None)
        except LLMError as error:
            queue.put_nowait(error)
        finally:
            notify("end", request)

    if manager is not None:
        manager.before_effect()  # a request is an effect: what led to it is on disk first
    task = detached_task(receive())
    received = ""
    returned = False
    try:
        while True:
            items = [await queue.get()]
            while not queue.empty() and isinstance(items[-1], str):
                items.append(queue.get_nowait())  # take all that arrived: one record
            text = "".join(i for i in items if isinstance(i, str))
            if text:
                recorder.flush()
                try:
                    await executor.add_chunk(text)
                except PlaybookReturn:
                    returned = True
                    raise
                received += text
                _preview(received, frame_id, turn)
            last = items[-1]
            if isinstance(last, LLMError):
                raise last
            if last is None:
                break
        await executor.finalize()
    finally:
        if not task.done() and returned:  # the token counts come last: a little wait
            recorder.manager = None  # the turn is over: its end is recorded by the caller
            await asyncio.wait({task}, timeout=RETURN_GRACE)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
