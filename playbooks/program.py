"""Loads a program, picks or resumes its execution, runs it to the end.

Exit codes: 0 finished, 1 the program failed, 2 bad input or usage,
3 refused to resume (lock held, program changed, unreadable checkpoints).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .agents.agent import Agent
from .agents.human import Human
from .config import Config
from .durability import log as logmod
from .durability.manager import CheckpointManager
from .durability.provider import FilesystemCheckpointProvider
from .execution.builtins import AwaitingInput, OutputClosed
from .execution.interpreter import Interpreter, Limits, ProgramFailed
from .language import Program, ProgramError, load_program
from .llm import LLMError, make_client

OK, FAILED, USAGE, REFUSED = 0, 1, 2, 3


class Refused(Exception):
    """Resuming is refused: exit 3 with this one line."""


class BadInput(Exception):
    """Bad input or usage: exit 2 with this one line."""


@dataclass
class RunOptions:
    messages: list[str] = field(default_factory=list)
    json_mode: bool = False
    fresh: bool = False
    execution_id: str | None = None
    force: bool = False
    accept_rollback: bool = False  # resume past damaged records (effects may repeat)


def new_execution_id(program_path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", Path(program_path).stem)[:40] or "run"
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stem}-{stamp}-{secrets.token_hex(3)}"


def provider_for(config: Config) -> FilesystemCheckpointProvider:
    d = config.durability
    return FilesystemCheckpointProvider(
        d.path, fsync=d.fsync, keep_last_n=d.keep_last_n, allow_pickle=d.allow_pickle
    )


def find_unfinished(provider: FilesystemCheckpointProvider, program_path: str) -> str | None:
    """The newest execution of this program that has not ended.

    ``meta.json`` is a cache of the log's status; a kill between the two writes
    can leave it saying "running" for an execution whose log says it ended,
    so the log has the last word (and the cache is mended)."""
    candidates: list[tuple[float, str, dict]] = []
    for execution_id in provider.list_executions():
        try:
            meta = provider.read_meta(execution_id)
        except logmod.StorageError:
            continue
        if meta and meta.get("program") == program_path and meta.get("status") == "running":
            candidates.append((float(meta.get("created", 0)), execution_id, meta))
    for _, execution_id, meta in sorted(candidates, reverse=True):
        try:
            state = CheckpointManager(execution_id, provider).read_state()
        except logmod.StorageError:
            return execution_id  # unreadable: let the resume say so
        if state is None or state.status == "running":
            return execution_id
        log = provider.open_log(execution_id, create=False)
        log.write_meta({**meta, "status": state.status})
        log.close()
    return None


def where(state: Any) -> str:
    """Where a resume starts, for people: the innermost frame's step and statement."""
    stack = state.call_stack()
    if not stack:
        return "the start"
    top = stack[-1]
    depth = f", depth {len(stack)}" if len(stack) > 1 else ""
    return f"{top.step or top.playbook}, statement {top.cursor + 1}{depth}"


class Runner:
    """One `playbooks run` / `playbooks resume`."""

    def __init__(
        self,
        config: Config,
        options: RunOptions,
        *,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.manager: CheckpointManager | None = None

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def _agent(self, program: Program) -> Agent:
        for spec in program.agents:
            if spec.entry is not None:
                return Agent.load(spec, program.path)
        raise BadInput(f"{program.path}: no agent has a playbook to run")

    def _open_execution(self, program: Program, human: Human) -> None:
        provider = provider_for(self.config)
        path = str(Path(program.path).resolve())
        execution_id = self.options.execution_id
        if execution_id is None and not self.options.fresh:
            execution_id = find_unfinished(provider, path)
        resumed = execution_id is not None and execution_id in provider.list_executions()
        execution_id = execution_id or new_execution_id(program.path)
        manager = CheckpointManager(execution_id, provider)
        try:
            state = manager.open(accept_rollback=self.options.accept_rollback)
        except logmod.ExecutionLocked as error:
            raise Refused(str(error)) from None
        self.manager = manager
        if resumed and state.program:
            if state.status != "running":
                manager.close()
                raise Refused(
                    f"execution {execution_id} has already {state.status}; use --fresh to start again"
                )
            if state.program.get("hash") != program.source_hash and not self.options.force:
                manager.close()
                raise Refused(
                    f"{program.path} changed since execution {execution_id} started; "
                    "resume it anyway with --force, or start again with --fresh"
                )
            checkpoint = state.counter
            self.note(f"resuming {execution_id} at {where(state)} (checkpoint {checkpoint})")
            human.emit(
                {
                    "event": "resume",
                    "execution_id": execution_id,
                    "checkpoint": checkpoint,
                    "at": where(state),
                }
            )
        else:
            manager.record_program(program=path, hash=program.source_hash, created=time.time())
            self.note(f"execution {execution_id}")
            human.emit({"event": "start", "execution_id": execution_id})
        self._write_meta("running")
        human.consumed = state.consumed

    def _write_meta(self, status: str, message: str = "") -> None:
        """meta.json: a cache of the log's program and status, for listing executions."""
        assert self.manager is not None
        program = self.manager.open().program
        meta = {"execution_id": self.manager.execution_id, "status": status, "message": message}
        meta.update({k: program.get(k) for k in ("program", "hash", "created")})
        self.manager.write_meta(meta | {"updated": time.time()})

    def _finish(self, status: str, message: str = "") -> None:
        if self.manager is None:
            return
        if status != "running":
            self.manager.record_status(status, message)
        self._write_meta(status, message)
        self.manager.close()

    def _code_error(self, human: Human, event: dict) -> None:
        human.emit(event)
        if not self.options.json_mode:
            self.note(
                f"{event['playbook']}: the model's code failed at {event['message']}; "
                "it is told and tries again"
            )

    async def run(self, program_path: str) -> int:
        try:
            program = load_program(program_path)
            agent = self._agent(program)
        except ProgramError as error:
            self.note(f"error: {error}")
            return USAGE
        except BadInput as error:
            self.note(f"error: {error}")
            return USAGE
        human = Human(
            messages=self.options.messages, json_mode=self.options.json_mode, out=self.out
        )
        try:
            if self.config.durability.enabled:
                self._open_execution(program, human)
        except Refused as error:
            self.note(f"error: {error}")
            return REFUSED
        except logmod.StorageError as error:
            self.note(f"error: {error}")
            return REFUSED
        model = self.config.model
        try:
            llm = make_client(
                model.name,
                temperature=model.temperature,
                api_base=model.api_base,
                api_key=model.api_key,
                record=model.record,
            )
        except (LLMError, ValueError) as error:
            self.note(f"error: {error}")
            self._finish("running")
            return USAGE
        safety = self.config.safety
        interpreter = Interpreter(
            agent=agent.spec,
            python_globals=agent.python_globals,
            llm=llm,
            conversation=human,
            manager=self.manager,
            limits=Limits(
                max_llm_calls=self.config.max_llm_calls,
                allowed_imports=tuple(safety.allowed_imports),
                statement_timeout=safety.statement_timeout,
                loop_budget=safety.loop_budget,
                max_alloc=safety.max_alloc,
            ),
            program_path=str(Path(program.path)),
            on_event=lambda event: self._code_error(human, event),
        )
        try:
            result = await interpreter.run()
        except AwaitingInput as waiting:
            self.note(f"stopped: {waiting}")
            human.emit({"event": "end", "status": "waiting", "message": str(waiting)})
            self._finish("running")
            return FAILED
        except OutputClosed as closed:
            self.note(f"stopped: {closed}; run the same command again to resume")
            self._finish("running")
            return FAILED
        except ProgramFailed as failed:
            self.note(f"error: {failed}")
            human.emit({"event": "end", "status": "failed", "message": str(failed)})
            self._finish("running")
            return FAILED
        except Exception as error:  # a Python playbook at the top raised
            message = f"{type(error).__name__}: {error}"
            self.note(f"error: the program failed: {message}")
            human.emit({"event": "end", "status": "failed", "message": message})
            self._finish("failed", message)
            return FAILED
        human.emit({"event": "end", "status": "finished", "result": result})
        self._finish("finished")
        return OK
