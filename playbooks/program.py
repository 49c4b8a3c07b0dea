"""Loads a program, picks or resumes its execution, runs it to the end.

Exit codes are defined in :mod:`playbooks.exits` (0 finished, 1 the program
failed or stopped before its end, 2 bad input or usage, 3 refused). What an
execution is (running, waiting, interrupted, finished, failed) is decided in
:mod:`playbooks.executions`, so the banners here use the same words.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .agents.agent import Agent
from .agents.human import Human
from .agents.people import Person
from .agents.runtime import AgentRuntime, main_agent, roster
from .config import Config, load_config
from .detach import enqueue
from .durability import log as logmod
from .durability.manager import CheckpointManager
from .durability.provider import FilesystemCheckpointProvider
from .durability.records import FORMAT_VERSION
from .execution.builtins import AwaitingInput, OutputClosed
from .execution.interpreter import Limits, ProgramFailed
from .executions import ENDED, provider_for, summarize
from .exits import BadInput, CommandError, ExitCode, Refused
from .language import Program, ProgramError, load_program
from .llm import LLMError, make_client
from .llm.replay import load_replay
from .portable import (
    ProviderInbox,
    carried_settings,
    portable_settings,
    program_bundle,
    stored_program,
)
from .terminal import describe_failure

__all__ = [
    "BadInput",
    "Refused",
    "RunOptions",
    "Runner",
    "find_unfinished",
    "program_identity",
    "provider_for",
]

OK, FAILED, USAGE, REFUSED = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.REFUSED
REPLAY = "replay:"


@dataclass
class RunOptions:
    messages: list[str] = field(default_factory=list)
    json_mode: bool = False
    fresh: bool = False
    execution_id: str | None = None
    force: bool = False
    model: str | None = None  # --model, when given: it overrides the recorded model
    config: str | None = None  # --config, when given: it overrides the recorded settings
    overrides: dict[str, Any] = field(default_factory=dict)  # flags, as load_config takes them
    accept_rollback: bool = False  # resume past damaged records (effects may repeat)
    detach: bool = False  # only store the execution as queued: a worker runs it
    stored: bool = False  # run execution_id with the program and settings stored in it
    stdin: IO[str] | None = None  # where typed replies come from (default sys.stdin)


def new_execution_id(program_path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", Path(program_path).stem)[:40] or "run"
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stem}-{stamp}-{secrets.token_hex(3)}"


def program_identity(program: Program) -> str:
    """What a resume must find unchanged: the program's bytes, every file it was
    built from, and the storage format of this runtime.

    ``program.source_hash`` is the hash of the program's bytes; where the parser
    inlines ``!import`` files it covers theirs too. Anything else a program is
    built from belongs here."""
    digest = hashlib.sha256()
    digest.update(f"records {FORMAT_VERSION}, snapshots {logmod.SNAPSHOT_FORMAT}\n".encode())
    digest.update(f"program {program.source_hash}\n".encode())
    return "sha256:" + digest.hexdigest()


def same_program(recorded: dict, program: Program) -> bool:
    """Compare with what the execution recorded (older executions stored only ``hash``)."""
    if "identity" in recorded:
        return recorded["identity"] == program_identity(program)
    return recorded.get("hash") == program.source_hash


def portable_model(name: str) -> str:
    """A replay file is named by its absolute path, so a resume finds it from anywhere."""
    if name.startswith(REPLAY) and name[len(REPLAY) :]:
        return REPLAY + os.path.abspath(name[len(REPLAY) :])
    return name


def find_unfinished(provider: FilesystemCheckpointProvider, program_path: str) -> str | None:
    """The newest execution of this program that has not ended.

    ``meta.json`` is a cache of the log's status; a kill between the two writes
    can leave it saying "running" for an execution whose log says it ended,
    so the log has the last word (and the cache is mended). A damaged one is
    returned: resuming it is refused with the reason, never silently redone."""
    candidates: list[tuple[float, str, dict]] = []
    for execution_id in provider.list_executions():
        try:
            meta = provider.read_meta(execution_id)
        except logmod.StorageError:
            continue
        if meta and meta.get("detached"):
            continue  # a worker's: `playbooks resume ID` takes it on purpose
        if meta and meta.get("program") == program_path and meta.get("status") not in ENDED:
            candidates.append((float(meta.get("created") or 0), execution_id, meta))
    for _, execution_id, meta in sorted(candidates, reverse=True):
        summary = summarize(provider, execution_id)
        if summary.status not in ENDED:
            return execution_id
        log = provider.open_log(execution_id, create=False)
        log.write_meta({**meta, "status": summary.status, "message": summary.message})
        log.close()
    return None


@dataclass
class Plan:
    """The execution a run will use, chosen before anything is written."""

    execution_id: str
    provider: FilesystemCheckpointProvider
    program_path: str  # absolute
    recorded: dict | None = None  # the exec record of an execution being resumed
    status: str = ""
    overridden: list[str] = field(default_factory=list)


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
        self.ran = False  # the program started running (a refusal comes before)
        self.outcome = ""  # how the run ended: finished, failed, waiting, interrupted
        self.claim_lost = False  # another live process owns the execution
        self._portable: dict = {}  # program and settings written into meta
        self._stored_meta: dict = {}  # the meta of the execution a worker runs
        self._provider: Any = None  # the store, opened once per run and closed after it

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def _check_agents(self, program: Program) -> None:
        if main_agent(program) is None:
            raise BadInput(f"{program.path}: no agent has a playbook to run")
        for spec in program.agents:  # a python block that fails to load is bad input now
            if spec.kind != "human":
                self._globals(spec, program)

    def _globals(self, spec: Any, program: Program) -> dict[str, Any]:
        loaded = getattr(self, "_loaded", None)
        if loaded is None:
            loaded = self._loaded = {}
        if spec.name not in loaded:
            loaded[spec.name] = Agent.load(spec, program.path).python_globals
        return loaded[spec.name]

    def _store(self) -> Any:
        """The configured store, one per run: a worker runs many executions, and a
        store left open per run would keep a database connection each."""
        if self._provider is None:
            self._provider = provider_for(self.config)
        return self._provider

    # -- which execution -------------------------------------------------------
    def _plan(self, program: Program) -> Plan:
        """Pick the execution and check it may be resumed, reading only."""
        provider = self._store()
        path = str(Path(program.path).resolve())
        execution_id = self.options.execution_id
        if execution_id is not None:
            try:
                logmod.validate_execution_id(execution_id)
            except logmod.StorageError as error:
                raise BadInput(str(error)) from None
        exists = execution_id is not None and execution_id in provider.list_executions()
        if exists and self.options.fresh:
            raise BadInput(
                f"execution {execution_id} already exists and --fresh starts a new one: "
                f"give a new --execution-id, or none (`playbooks run {program.path} --fresh`)"
            )
        if execution_id is None and not self.options.fresh:
            execution_id = find_unfinished(provider, path)
            exists = execution_id is not None
        if not exists:
            return Plan(execution_id or new_execution_id(program.path), provider, path)
        assert execution_id is not None
        summary = summarize(provider, execution_id)
        fresh = f"`playbooks run {program.path} --fresh`"
        if summary.status == "damaged" or summary.state is None:
            raise Refused(
                f"execution {execution_id} cannot be resumed: {summary.message}; remove it with "
                f"`playbooks executions rm {execution_id}` or start a new one with {fresh}"
            )
        recorded = summary.state.program
        if recorded.get("program") != path:
            owner = recorded.get("program") or "no program (it was not started by `playbooks run`)"
            raise BadInput(
                f"execution {execution_id} belongs to {owner}, not {path}: run that program, "
                "or leave out --execution-id"
            )
        if summary.status in ENDED:
            raise BadInput(
                f"execution {execution_id} has already {summary.status}, so there is nothing "
                f"to resume; start a new one with {fresh}"
            )
        if not same_program(recorded, program) and not self.options.force:
            raise Refused(
                f"{program.path} (or the runtime's storage format) changed since execution "
                f"{execution_id} started; resume it anyway with --force, or start again "
                f"with {fresh}"
            )
        return Plan(execution_id, provider, path, dict(recorded), summary.status)

    def _use_recorded_settings(self, plan: Plan) -> None:
        """A resume uses the settings its execution started with, unless a flag
        overrides them; what was overridden is kept for the banner."""
        recorded, options = plan.recorded or {}, self.options
        if options.stored:  # a worker: the settings the execution carries
            self.config = carried_settings(self.config, self._stored_meta.get("settings") or {})
            return
        started = recorded.get("config")
        other_config = options.config is not None and started != self.config.source
        if options.config is None and started and started != self.config.source:
            if os.path.isfile(started):
                loaded = load_config(started, overrides=options.overrides)
                # the execution was found under this durability path: keep it
                self.config = loaded.model_copy(update={"durability": self.config.durability})
            else:
                plan.overridden.append(
                    f"config {self.config.source or '(defaults)'} (its config {started} is gone)"
                )
        elif other_config:
            plan.overridden.append(
                f"config {self.config.source} (started with {started or 'no config file'})"
            )
        if "model" not in recorded:
            return  # recorded by an older version: nothing to restore
        model = self.config.model
        if options.model is None and not other_config:
            self.config.model = model.model_copy(
                update={"name": recorded["model"], "api_base": recorded.get("api_base")}
            )
            return
        if portable_model(model.name) != recorded["model"]:
            plan.overridden.append(f"model {model.name} (started with {recorded['model']})")
        if model.api_base != recorded.get("api_base") and not model.name.startswith(REPLAY):
            plan.overridden.append(
                f"api_base {model.api_base} (started with {recorded.get('api_base')})"
            )

    def _open(self, plan: Plan, program: Program, human: Human) -> None:
        """Take ownership, then record a new execution or announce the resume."""
        manager = CheckpointManager(plan.execution_id, plan.provider)
        try:
            state = manager.open(accept_rollback=self.options.accept_rollback)
        except logmod.StorageError as error:  # in use, or unreadable
            self.claim_lost = isinstance(error, logmod.ExecutionLocked)
            raise Refused(str(error)) from None
        self.manager = manager
        execution_id = plan.execution_id
        if plan.recorded is not None:
            if state.status in ENDED:  # it ended between the look and the lock
                raise BadInput(f"execution {execution_id} has already {state.status}")
            at = where(state)
            banner = f"resuming {execution_id} ({plan.status}) at {at} (checkpoint {state.counter})"
            if plan.overridden:
                banner += "; overridden: " + "; ".join(plan.overridden)
            self.note(banner)
            human.emit(
                {
                    "event": "resume",
                    "execution_id": execution_id,
                    "status": plan.status,
                    "checkpoint": state.counter,
                    "at": at,
                    "overridden": plan.overridden,
                }
            )
        else:
            manager.record_program(**self._program_record(plan, program))
            self._portable = {
                "source": program_bundle(program),
                "settings": portable_settings(self.config),
            }
        if hasattr(plan.provider, "append_inbox"):
            human.inbox = ProviderInbox(plan.provider, execution_id)
        self._write_meta("running")
        if plan.recorded is None:  # told once the meta is written: a rerun finds it then
            self.note(f"execution {execution_id}")
            human.emit({"event": "start", "execution_id": execution_id})
        human.consumed = state.consumed

    def _program_record(self, plan: Plan, program: Program) -> dict:
        model = self.config.model
        return {
            "program": plan.program_path,
            "hash": program.source_hash,
            "identity": program_identity(program),
            "created": time.time(),
            "model": portable_model(model.name),
            "api_base": model.api_base,
            "config": self.config.source,
            "agents": roster(program),
        }

    def _enqueue(self, plan: Plan, program: Program) -> int:
        """`run --detach`: store the execution as queued and run nothing."""
        if plan.recorded is not None:
            raise BadInput(
                f"execution {plan.execution_id} already exists: --detach starts a new one"
            )
        record = self._program_record(plan, program)
        enqueue(
            plan.provider, plan.execution_id, record, program, self.config, self.options.messages
        )
        self.out.write(plan.execution_id + "\n")
        self.out.flush()
        self.note(f"queued {plan.execution_id}: `playbooks worker` runs it")
        return OK

    def _write_meta(self, status: str, message: str = "") -> None:
        """meta.json: a cache of the log's program and status, and why a run stopped."""
        assert self.manager is not None
        state = self.manager.open()
        program = state.program
        meta = {"execution_id": self.manager.execution_id, "status": status, "message": message}
        meta.update({k: program.get(k) for k in ("program", "hash", "created")})
        if not self._portable:  # kept from the meta it had: program, settings, detached
            try:
                old = self.manager.provider.read_meta(self.manager.execution_id) or {}
            except logmod.StorageError:
                old = {}
            self._portable = {k: old[k] for k in ("source", "settings", "detached") if k in old}
        meta.update(self._portable)
        meta["inbox_read"] = state.consumed  # replies taken: inbox messages read
        self.manager.write_meta(meta | {"updated": time.time()})

    def _finish(self, status: str, message: str = "") -> None:
        """Record how the run ended: finished/failed in the log (they are final),
        waiting/interrupted in meta.json only (the execution stays resumable)."""
        if self.manager is None:
            return
        self.outcome = status
        try:
            if status in ENDED:
                self.manager.record_status(status, message)
            self._write_meta(status, message)
        finally:
            self.manager.close()
            self.manager = None

    def _client(self) -> Any:
        model = self.config.model
        try:
            if model.name.startswith(REPLAY):
                load_replay(model.name[len(REPLAY) :])  # a missing or bad file is bad input
            return make_client(
                model.name,
                temperature=model.temperature,
                api_base=model.api_base,
                api_key=model.api_key,
                record=model.record,
                timeout=model.timeout,
                retries=model.retries,
            )
        except (LLMError, ValueError) as error:
            raise BadInput(str(error)) from None

    def _code_error(self, human: Human, event: dict) -> None:
        human.emit(event)
        if not self.options.json_mode:
            self.note(
                f"{event['playbook']}: the model's code failed at {event['message']}; "
                "it is told and tries again"
            )

    def _stored_program(self) -> Program:
        execution_id = self.options.execution_id
        if execution_id is None or not self.config.durability.enabled:
            raise BadInput("running a stored program needs durability and an execution id")
        try:
            self._stored_meta = self._store().read_meta(execution_id) or {}
        except logmod.StorageError as error:
            raise BadInput(str(error)) from None
        return stored_program(self._stored_meta)

    # -- the run -----------------------------------------------------------------
    async def run(self, program_path: str) -> int:
        human = Person(
            messages=self.options.messages,
            json_mode=self.options.json_mode,
            out=self.out,
            humans=self._humans(program_path),
            stdin=self.options.stdin,
        )
        try:
            return await self._run(program_path, human)
        except CommandError as error:
            self.note(f"error: {error}")
            return error.code
        finally:
            human.detach()
            if self.manager is not None:  # refused after the lock was taken
                self.manager.close()
                self.manager = None
            close = getattr(self._provider, "close", None)
            if close is not None:
                close()
            self._provider = None
            unused = human.messages[human.taken :]
            if unused and self.ran:  # a refused run used none: its error says so already
                listed = ", ".join(repr(m) for m in unused)
                self.note(f"note: {len(unused)} --message value(s) not used: {listed}")

    @staticmethod
    def _humans(program_path: str) -> tuple[str, ...]:
        """The names (and headings) of the program's human agents, for --message NAME:TEXT."""
        try:
            program = load_program(program_path)
        except ProgramError:
            return ()  # reported by _run
        names: list[str] = []
        for spec in program.agents:
            if spec.kind == "human":
                names += [spec.name] + ([spec.title] if spec.title else [])
        return tuple(names)

    async def _run(self, program_path: str, human: Human) -> int:
        if self.options.stored:  # a worker: the program the execution carries
            program = self._stored_program()
        else:
            try:
                program = load_program(program_path)
            except ProgramError as error:
                raise BadInput(str(error)) from None
        self._check_agents(program)
        plan = None
        if self.config.durability.enabled:
            plan = self._plan(program)
            if self.options.detach:
                return self._enqueue(plan, program)
            if plan.recorded is not None:
                self._use_recorded_settings(plan)
        elif self.options.execution_id is not None:
            raise BadInput("--execution-id needs durability: set [durability] enabled = true")
        llm = self._client()
        if plan is not None:
            self._open(plan, program, human)
        safety = self.config.safety
        runtime = AgentRuntime(
            program,
            lambda spec: self._globals(spec, program),
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
            on_message=getattr(human, "message", None),
        )
        resume = f"; resume it with `playbooks resume {plan.execution_id}`" if plan else ""
        self.ran = True
        try:
            result = await runtime.run()
        except AwaitingInput as waiting:
            why = str(waiting)
            if self.options.stored and plan is not None:  # a worker: only an inbox reply helps
                why = f"waiting for the person's reply: `playbooks reply {plan.execution_id} TEXT`"
            self.note(f"stopped: {why}{resume}")
            human.emit({"event": "end", "status": "waiting", "message": why})
            self._finish("waiting", why)
            return FAILED
        except OutputClosed as closed:
            self.note(f"stopped: {closed}{resume}")
            self._finish("interrupted", str(closed))
            return FAILED
        except ProgramFailed as failed:
            self.note(f"error: {failed}{resume}")
            human.emit({"event": "end", "status": "interrupted", "message": str(failed)})
            self._finish("interrupted", str(failed))
            return FAILED
        except (KeyboardInterrupt, asyncio.CancelledError):
            self._finish("interrupted", "stopped by the user")
            raise
        except logmod.StorageError:  # e.g. the lease was lost: nothing more may be written
            raise
        except Exception as error:  # a Python playbook at the top raised
            message = describe_failure(error, program.path)  # FILE.pb:LINE: Type: message
            self.note(f"error: the program failed: {message}")
            human.emit({"event": "end", "status": "failed", "message": message})
            self._finish("failed", message)
            return FAILED
        human.emit({"event": "end", "status": "finished", "result": result})
        self._finish("finished")
        return OK
