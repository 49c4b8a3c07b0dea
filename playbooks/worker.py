"""`playbooks worker`: claims runnable executions from the shared store and runs them.

A worker asks the provider which executions may be claimed (queued by `run
--detach`, owned by no live process, or waiting for a reply that has now
arrived), claims one by opening it (a live owner elsewhere refuses the claim),
resumes it from its latest state with the program and settings stored in it,
and runs it. An execution that has to wait for the person's reply stops as
`waiting` and gives its slot back; `playbooks reply` makes it runnable again,
and whichever worker claims it first goes on from there.

SIGTERM (or Ctrl-C) drains: no new claims; running executions may reach a wait
for a reply or their end for up to ``drain`` seconds, then the rest are
stopped and stay resumable, so another worker takes them over.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from .config import Config
from .executions import ENDED, provider_for, summarize, where_stored
from .exits import ExitCode
from .program import Runner, RunOptions

#: An execution that ended interrupted or was refused here is not claimed again
#: by this worker for this long (a model that keeps failing must not spin).
BACKOFF = 10.0


@dataclass
class WorkerOptions:
    concurrency: int = 1
    poll: float = 1.0  # seconds between looks at the store when nothing wakes us
    once: bool = False  # run what is runnable at start (each at most once), then exit
    until_idle: bool = False  # exit when nothing runs and nothing is runnable
    drain: float = 30.0  # seconds SIGTERM lets running executions go on
    json_mode: bool = False


class _Events(io.TextIOBase):
    """The `--json` events of one execution's run, as the Runner writes them."""

    def __init__(self, worker: Worker, execution_id: str) -> None:
        super().__init__()
        self.worker, self.execution_id = worker, execution_id
        self.started = False
        self.last_end: dict[str, Any] = {}
        self._partial = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                self._event(json.loads(line))
        return len(text)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in ("start", "resume") and not self.started:
            self.started = True
            at = "" if kind == "start" else f" at {event.get('at')} ({event.get('status')})"
            self.worker.report("started", self.execution_id, at.strip())
        elif kind == "end":
            self.last_end = event
        if self.worker.options.json_mode:
            self.worker.emit({**event, "execution_id": self.execution_id})


class Worker:
    """One `playbooks worker` process: a loop of claims, up to ``concurrency`` at once."""

    def __init__(
        self,
        config: Config,
        options: WorkerOptions,
        *,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.provider = provider_for(config)
        self.tasks: dict[str, asyncio.Task] = {}
        self.backoff: dict[str, float] = {}
        self.counts = {"finished": 0, "waiting": 0, "failed": 0, "interrupted": 0, "refused": 0}
        self._stop: asyncio.Event | None = None

    # -- output ------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        self.out.flush()

    def report(self, what: str, execution_id: str, detail: str = "") -> None:
        """One line per execution started, finished, waiting, failed, interrupted, refused."""
        if self.options.json_mode:
            event = {"event": "worker", "status": what, "execution_id": execution_id}
            self.emit(event | ({"message": detail} if detail else {}))
        else:
            self.out.write(f"{what:<11} {execution_id}" + (f"  {detail}" if detail else "") + "\n")
            self.out.flush()

    def note(self, text: str) -> None:
        if self.options.json_mode:
            self.emit({"event": "worker", "status": "note", "message": text, "pid": os.getpid()})
        else:
            self.err.write(text + "\n")
            self.err.flush()

    # -- the loop ----------------------------------------------------------------
    def _signal(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            self._stop.set()

    async def serve(self) -> int:
        """Claim and run until stopped (or, with --once / --until-idle, until done)."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signal)
        opts = self.options
        self.note(
            f"worker {os.getpid()} ready: {where_stored(self.provider)}, "
            f"concurrency {opts.concurrency}, poll {opts.poll:g} s"
        )
        tried: set[str] = set()
        first: set[str] | None = None
        waiter: asyncio.Future | None = None
        try:
            while not self._stop.is_set():
                candidates = await self._candidates()
                if opts.once:
                    first = set(candidates) if first is None else first
                    candidates = [e for e in candidates if e in first and e not in tried]
                for execution_id in candidates[: opts.concurrency - len(self.tasks)]:
                    tried.add(execution_id)
                    self.tasks[execution_id] = asyncio.create_task(self._run_one(execution_id))
                if not self.tasks and not candidates and (opts.once or opts.until_idle):
                    break
                if waiter is None or waiter.done():
                    waiter = asyncio.ensure_future(
                        asyncio.to_thread(self.provider.wait_for_work, opts.poll)
                    )
                stop = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait(
                    {waiter, stop, *self.tasks.values()}, return_when=asyncio.FIRST_COMPLETED
                )
                stop.cancel()
        finally:
            await self._drain()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        done = ", ".join(f"{n} {k}" for k, n in self.counts.items() if n)
        self.note(f"worker {os.getpid()} stopped ({done or 'nothing run'})")
        return ExitCode.OK

    async def _candidates(self) -> list[str]:
        if len(self.tasks) >= self.options.concurrency:
            return []
        want = self.options.concurrency + len(self.tasks) + 8
        try:
            found = await asyncio.to_thread(self.provider.runnable, want)
        except Exception as error:  # a look that failed: the next poll looks again
            self.note(f"cannot list runnable executions: {type(error).__name__}: {error}")
            return []
        now = time.monotonic()
        found = [e for e in found if e not in self.tasks and self.backoff.get(e, 0.0) <= now]
        random.shuffle(found)  # workers that look at once try different ones first
        return found

    async def _drain(self) -> None:
        """Let running executions reach a wait or their end, for up to ``drain`` s."""
        if not self.tasks:
            return
        self.note(
            f"draining: {len(self.tasks)} execution(s) running; "
            f"they may go on for up to {self.options.drain:g} s"
        )
        _, pending = await asyncio.wait(list(self.tasks.values()), timeout=self.options.drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _run_one(self, execution_id: str) -> None:
        events = _Events(self, execution_id)
        notes = io.StringIO()
        options = RunOptions(
            execution_id=execution_id, stored=True, json_mode=True, stdin=io.StringIO("")
        )
        runner = Runner(self.config.model_copy(deep=True), options, out=events, err=notes)
        began = time.monotonic()
        try:
            code = await runner.run("")
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._ended(execution_id, "interrupted", "the worker stopped; it stays resumable")
            return
        except Exception as error:  # a bug: report it, keep serving the others
            self._ended(execution_id, "refused", f"unexpected {type(error).__name__}: {error}")
            return
        finally:
            self.tasks.pop(execution_id, None)
        if runner.claim_lost:
            return  # another worker was quicker: not ours
        if not events.started and code == ExitCode.USAGE:  # it ended meanwhile
            self.backoff[execution_id] = time.monotonic() + max(BACKOFF, 10 * self.options.poll)
            await asyncio.to_thread(self._mend, execution_id)
            return
        seconds = f"in {time.monotonic() - began:.2f} s"
        outcome = runner.outcome or "refused"
        if outcome == "finished":
            self._ended(execution_id, outcome, seconds)
        elif outcome == "waiting":
            hint = f"waiting for a reply: playbooks reply {execution_id} TEXT"
            self._ended(execution_id, outcome, hint)
        else:
            said = [line for line in notes.getvalue().splitlines() if line.strip()]
            why = events.last_end.get("message") or (said[-1] if said else f"exit {code}")
            self._ended(execution_id, outcome, str(why))

    def _mend(self, execution_id: str) -> None:
        """The meta is a cache of the log's status: a kill between writing the two
        can leave it saying "running" for an execution that ended. Mend it, so
        that it is not offered to workers again."""
        try:
            summary = summarize(self.provider, execution_id)
            if summary.status in ENDED:
                meta = self.provider.read_meta(execution_id) or {}
                log = self.provider.open_log(execution_id, create=False)
                try:
                    log.write_meta(meta | {"status": summary.status, "message": summary.message})
                finally:
                    log.close()
        except Exception:  # only a cache: the next look tries again
            pass

    def _ended(self, execution_id: str, outcome: str, detail: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if outcome in ("interrupted", "refused"):
            self.backoff[execution_id] = time.monotonic() + max(BACKOFF, 10 * self.options.poll)
        self.report(outcome, execution_id, detail)


def run_worker(config: Config, options: WorkerOptions) -> int:
    return asyncio.run(Worker(config, options).serve())
