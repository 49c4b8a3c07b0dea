"""CheckpointManager: the one writer of an execution's durable records.

Callers report what happened (a frame started, response text arrived, an
await finished, a statement finished); the manager turns each fact into a
record, appends it, and applies it to the in-memory :class:`ExecutionState`
so that memory and disk never disagree.

Records reach the OS at once (a killed process loses nothing written). They
are fsynced by :meth:`barrier`, which the runtime calls before anything the
world can see happens: a call that may have effects, an LLM request, a
message, the wait for a reply. So whatever an effect could depend on is on
disk before the effect, and pure steps in between cost no fsync at all.
"""

from __future__ import annotations

import logging
import os
import time
from itertools import repeat
from typing import Any

from . import log as logmod
from . import serialization
from .agents_view import agents_view, meetings_view
from .damage import refusal
from .errors import decode_error, encode_error
from .protocol import CheckpointProvider
from .state import ExecutionState, FrameState, call_key
from .varcache import VariableCache

logger = logging.getLogger("playbooks.durability")


def _crash_plan() -> tuple[str, int, str] | None:
    """``PLAYBOOKS_CRASH_AT=KIND:N[:before]``: SIGKILL this process at the N-th
    record of KIND (await, text, ckpt, turn, end) written in this life, or just
    before its N-th effect (``effect:N``: a call that may have effects, an LLM
    request, a message, the wait for a reply). Crash tests use it to kill a real
    process at an exact point; unset, it costs nothing."""
    spec = os.environ.get("PLAYBOOKS_CRASH_AT")
    if not spec:
        return None
    kind, number, *phase = spec.split(":")
    return kind, int(number), (phase[0] if phase else ("before" if kind == "effect" else "after"))


_CRASH = _crash_plan()
_seen: dict[str, int] = {}
_LOGGED: set[tuple[str, str]] = set()  # storage warnings this process printed


def _crash_point(kind: str, phase: str) -> None:
    if _CRASH is None or _CRASH[0] != kind or _CRASH[2] != phase:
        return
    count = _seen.get(kind + phase, 0) + 1
    _seen[kind + phase] = count
    if count == _CRASH[1]:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


Key = tuple[int, int, int]
#: Values stored as they are (floats are not: NaN and infinities need a tag).
_SCALARS = frozenset({str, int, bool})


def is_runtime_name(name: str) -> bool:
    return name.startswith("__")


class CheckpointManager:
    """Durable journal and checkpoints of one execution."""

    def __init__(self, execution_id: str, provider: CheckpointProvider) -> None:
        self.execution_id = logmod.validate_execution_id(execution_id)
        self.provider = provider
        self.state: ExecutionState | None = None
        self.warnings: list[str] = []
        self._log: logmod.ExecutionLog | None = None
        self._warned: set[str] = set()
        self._unsynced = False
        self._var_caches: dict[str, VariableCache] = {}
        #: The checkpoint of a statement that changed no variable, kept back to
        #: ride on the frame's next await record (see ``record_checkpoint``).
        #: As (frame, turn, the fields the carrier does not already have).
        self._pending: tuple[str, int, dict] | None = None

    # -- lifecycle ---------------------------------------------------------
    @property
    def checkpoint_counter(self) -> int:
        return self.open().counter

    def open(self, *, lock: bool = True, accept_rollback: bool = False) -> ExecutionState:
        """Load (or create) the execution and take ownership of it.

        Damage that makes recovery stop before the end of what was written is
        refused with :class:`~.log.DamagedLog` (file, offset, the effects that
        may repeat) unless ``accept_rollback``: then recovery goes on from the
        last good record, and those effects may happen again."""
        if self.state is not None and self._log is not None:
            return self.state
        log = self.provider.open_log(self.execution_id)
        try:
            if lock:
                log.lock()  # ExecutionLocked while a live process owns it, this one too
            loaded = log.load()
            if loaded.damage is not None and not accept_rollback:
                raise logmod.DamagedLog(refusal(self.execution_id, loaded.damage), loaded.damage)
        except BaseException:
            log.close()
            raise
        state = self._state_from(loaded)
        if loaded.needs_snapshot or loaded.rebuilt:
            log.write_snapshot(state.to_snapshot())
        self._log, self.state = log, state
        return state

    def _state_from(self, loaded: logmod.Loaded, *, quiet: bool = False) -> ExecutionState:
        state = (
            ExecutionState.from_snapshot(loaded.snapshot) if loaded.snapshot else ExecutionState()
        )
        for record in loaded.records:
            state.apply(record)
        state.execution_id = self.execution_id
        for warning in loaded.warnings:
            self._warn(warning, quiet=quiet)
        return state

    def read_state(self) -> ExecutionState | None:
        """The durable state, without taking ownership (for inspection).

        Warnings about damage are collected in ``warnings``, not printed: the
        process that opens the execution reports them, once. An execution whose
        log files are gone altogether raises DamagedLog naming its folder."""
        if self.state is not None:
            self.flush()
            return self.state
        if self.execution_id not in self.provider.list_executions():
            return None
        log = self.provider.open_log(self.execution_id, create=False)
        try:
            loaded = log.load()
        finally:
            log.close()
        damage = loaded.damage
        if damage is not None and damage.file == log.dir:
            raise logmod.DamagedLog(refusal(self.execution_id, damage), damage)
        return self._state_from(loaded, quiet=True)

    def flush(self) -> None:
        """Write the checkpoint kept back for the next record now (a response ended)."""
        if self._pending is not None:
            (frame_id, turn, carried), self._pending = self._pending, None
            record = {"k": "ckpt", "f": frame_id, "t": turn, **carried}
            self._append(record, crash=False, kept=True)  # its crash points passed already

    def barrier(self) -> None:
        """Make every record so far durable: called before any effect.

        A checkpoint kept back is not needed for that: it only moves the cursor
        past a statement that changed nothing, which a resume may run again.
        A fenced (leased) log checks its fencing token every time."""
        if self._log is not None and (self._unsynced or getattr(self._log, "fenced", False)):
            self._log.sync()
        self._unsynced = False

    def before_effect(self) -> None:
        """An effect is about to happen: everything it may depend on goes to disk."""
        self.barrier()
        if _CRASH is not None:
            _crash_point("effect", "before")

    def close(self) -> None:
        log = self._log
        if log is not None:
            try:
                self.flush()
                self.barrier()
            except logmod.StorageError:
                if not getattr(log, "lost", False):  # a lost lease was told already
                    raise
            finally:
                log.close()
        self._log = None

    def _warn(self, message: str, *, quiet: bool = False) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)
        key = (self.execution_id, message)
        if not quiet and key not in _LOGGED:  # once per process, however many readers
            _LOGGED.add(key)
            logger.warning(message)

    def _append(
        self,
        record: dict,
        *,
        sync: bool = False,
        settle: bool = False,
        crash: bool = True,
        kept: bool = False,
    ) -> None:
        state = self.open()
        assert self._log is not None
        pending = self._pending
        if pending is not None:
            if record["k"] == "await" and record["f"] == pending[0] and record["t"] == pending[1]:
                self._pending = None  # it rides on this record (``ck``)
                record["ck"] = pending[2]
            else:
                self.flush()  # records stay in the order the facts happened
        if _CRASH is not None and crash:
            _crash_point(record["k"], "before")
        self._log.append(record, sync=sync)
        if settle:
            self._log.settle()
        self._unsynced = not sync
        if kept or "ck" in record:
            self._apply_kept(state, record)
        else:
            state.apply(record)
        if _CRASH is not None and crash:
            _crash_point(record["k"], "after")

    def _apply_kept(self, state: ExecutionState, record: dict) -> None:
        """Apply a kept-back checkpoint (alone or carried by an await record): it
        changes no variable, so the frame's variable cache stays valid."""
        frame = state.frames.get(record["f"])
        cache = self._var_caches.get(record["f"])
        in_step = cache is not None and cache.matches(frame)
        state.apply(record)
        if in_step:
            assert cache is not None
            cache.synced(state.frames[record["f"]])

    def _encode(self, value: Any, path: str) -> Any:
        encoded, warnings = serialization.encode_variables({path: value}, **self.provider.codec())
        for warning in warnings:
            self._warn(warning)
        return encoded[path]

    def decode(self, data: Any) -> Any:
        return serialization.decode(data, **self.provider.codec())

    # -- facts the runtime reports -----------------------------------------
    def frame(self, frame_id: str) -> FrameState | None:
        state = self.open()
        self.flush()
        return state.frames.get(frame_id)

    def record_program(self, **info: Any) -> None:
        self._append({"k": "exec", **info})

    def record_frame(
        self, frame_id: str, *, parent: str | None, playbook: str, kind: str, args: dict
    ) -> None:
        encoded = {name: self._encode(v, f"${name}") for name, v in args.items()}
        self._append(
            {
                "k": "frame",
                "f": frame_id,
                "parent": parent,
                "playbook": playbook,
                "kind": kind,
                "args": encoded,
            }
        )

    def record_turn(self, frame_id: str, turn: int, *, llm: bool) -> None:
        self._append({"k": "turn", "f": frame_id, "t": turn, "llm": llm})

    def record_text(self, frame_id: str, turn: int, text: str, *, done: bool = False) -> None:
        record: dict[str, Any] = {"k": "text", "f": frame_id, "t": turn, "s": text}
        if done:
            record["done"] = True
        self._append(record, settle=done)  # a finished call is never asked again

    def lookup(self, frame_id: str, key: Key) -> dict | None:
        """The raw record of an await's outcome (``ok`` or ``err``, ``c``, ``d``), or None."""
        frame = self.open().frames.get(frame_id)
        if frame is None:
            return None
        return frame.journal.get(call_key(*key))

    def decode_error(self, data: dict, resolve: Any = None) -> BaseException:
        return decode_error(data, resolve=resolve, **self.provider.codec())

    def record_await(
        self,
        frame_id: str,
        key: Key,
        value: Any,
        error: BaseException | None,
        events: dict,
        callee: str | None = None,
        digest: str | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "k": "await",
            "f": frame_id,
            "t": key[0],
            "i": key[1],
            "q": key[2],
        }
        if callee is not None:
            record["c"] = callee
        if digest:
            record["d"] = digest
        if error is not None:
            record["err"] = encode_error(error, **self.provider.codec())
        elif value is None or type(value) in _SCALARS:
            record["ok"] = value  # what the encoder would return, without building one
        else:
            record["ok"] = self._encode(value, f"result of {frame_id}/{call_key(*key)}")
        delivered = False
        if events:
            record["ev"] = events
            delivered = "say" in events  # shown to a person: never shown twice
        self._append(record, settle=delivered)

    def record_checkpoint(
        self,
        frame_id: str,
        *,
        turn: int,
        cursor: int,
        statement: str,
        variables: dict[str, Any],
        position: tuple[int, ...] | None = None,
        definitions: list[str] | None = None,
        touched: frozenset[str] | set[str] | None = None,
        lazy: bool = False,
    ) -> str:
        """A top-level statement finished: store what changed in its variables.

        ``touched`` names what the statements since this frame's last
        checkpoint may have touched (``touched_names`` of each, merged); only
        those, their aliases and rebound names are encoded again, so the cost
        follows the change. None (the default) encodes every variable.

        With ``lazy``, a checkpoint that changes no variable and defines
        nothing is kept back and written inside the frame's next await record
        (or on its own before any other record, or at ``flush``). It only
        moves the cursor past a statement whose awaits are journaled; a kill
        before it is written resumes that statement, which replays them.
        """
        state = self.open()
        if self._pending is not None:
            self.flush()
        frame = state.frames.get(frame_id)
        cache = self._var_caches.get(frame_id)
        if (
            lazy
            and not definitions
            and cache is not None
            and cache.unchanged(variables, touched, frame)
        ):
            assert frame is not None  # matched by the cache
            self._keep_back(frame, turn, cursor, statement, position, state.counter + 1, cache)
            return self._checkpoint_done(state.counter + 1)
        old = frame.vars if frame is not None else {}
        plain = variables  # read only here: runtime names are left out, if there are any
        if any(map(str.startswith, variables, repeat("__"))):
            plain = {k: v for k, v in variables.items() if not k.startswith("__")}
        if cache is None:
            cache = self._var_caches[frame_id] = VariableCache()
        encoded, warnings = cache.encode(plain, touched, frame, self.provider.codec())
        for warning in warnings:
            self._warn(warning)
        deltas = {}
        for name, value in encoded.items():
            if name in old:
                delta = serialization.diff(old[name], value)
                if delta is not None:
                    deltas[name] = delta
            else:
                deltas[name] = {"op": "set", "v": value}
        gone = [n for n in old if n not in plain] if len(old) > len(plain) or deltas else []
        number = state.counter + 1
        assert self._log is not None
        if lazy and not deltas and not gone and not definitions and frame is not None:
            self._keep_back(frame, turn, cursor, statement, position, number, cache)
            return self._checkpoint_done(number)
        record: dict[str, Any] = {"k": "ckpt", "f": frame_id, "t": turn, "i": cursor}
        record["n"] = number
        record["stmt"] = statement
        if deltas:  # an empty change is left out (readers default to none)
            record["vars"] = deltas
        if gone:
            record["del"] = gone
        record["ts"] = time.time()
        if position is not None:
            record["pos"] = list(position)
        if definitions:
            record["defs"] = definitions
        self._append(record)
        cache.synced(state.frames[frame_id])
        return self._checkpoint_done(number)

    def _keep_back(
        self,
        frame: FrameState,
        turn: int,
        cursor: int,
        statement: str,
        position: tuple[int, ...] | None,
        number: int,
        cache: VariableCache,
    ) -> None:
        """A checkpoint that changed nothing: kept back to ride on the next await
        record, in the fields that record does not have (``record_checkpoint``)."""
        carried: dict[str, Any] = {"i": cursor, "n": number, "stmt": statement}
        carried["ts"] = time.time()
        if position is not None:
            carried["pos"] = list(position)
        if _CRASH is not None:
            _crash_point("ckpt", "before")
        self._pending = (frame.id, turn, carried)
        cache.synced(frame)
        if _CRASH is not None:
            _crash_point("ckpt", "after")

    def _checkpoint_done(self, number: int) -> str:
        """After checkpoint ``number``: a snapshot if one is due; its id."""
        assert self._log is not None
        if self._log.should_snapshot():
            self._log.write_snapshot(self.open().to_snapshot(), checkpoints=number)
        return f"{self.execution_id}_ckpt_{number}"

    def record_observation(self, frame_id: str, turn: int, text: str) -> None:
        self._append({"k": "obs", "f": frame_id, "t": turn, "s": text})

    def record_end(
        self, frame_id: str, value: Any = None, error: BaseException | None = None
    ) -> None:
        record: dict[str, Any] = {"k": "end", "f": frame_id}
        if error is not None:
            record["err"] = encode_error(error, **self.provider.codec())
        else:
            record["ok"] = self._encode(value, f"return value of {frame_id}")
        self._append(record)

    def record_status(self, status: str, message: str = "") -> None:
        self._append({"k": "status", "status": status, "message": message}, sync=True)

    def write_meta(self, meta: dict) -> None:
        self.open()
        assert self._log is not None
        self._log.write_meta(meta)

    # -- the seed-compatible checkpoint API ----------------------------------
    async def save_checkpoint(
        self,
        statement_code: str,
        namespace: dict[str, Any],
        execution_state: dict[str, Any] | None = None,
        call_stack: list | None = None,
        llm_response: str | None = None,
        executed_code: str | None = None,
        *,
        frame: str = "main",
        turn: int | None = None,
        cursor: int | None = None,
    ) -> str:
        """Checkpoint after a statement; returns ``EXECUTION_ckpt_N``."""
        state = self.open()
        self.flush()
        current = state.frames.get(frame)
        turn = turn if turn is not None else (current.turn if current else 0)
        if llm_response is not None and (current is None or current.text(turn) != llm_response):
            known = current.text(turn) if current else ""
            if llm_response.startswith(known):
                self.record_text(frame, turn, llm_response[len(known) :])
            else:
                self.record_turn(frame, turn, llm=False)
                self.record_text(frame, turn, llm_response)
            current = state.frames[frame]
        if cursor is None:
            cursor = (current.cursor if current else 0) + 1
        return self.record_checkpoint(
            frame, turn=turn, cursor=cursor, statement=statement_code, variables=namespace
        )

    async def get_latest_checkpoint(self) -> dict[str, Any] | None:
        state = self.read_state()
        if state is None or not state.frames:
            return None
        return checkpoint_view(state, self.execution_id, **self.provider.codec())

    async def load_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        return await self.provider.load_checkpoint(checkpoint_id)

    async def list_checkpoints(self) -> list[str]:
        return await self.provider.list_checkpoints(self.execution_id)

    async def cleanup_old_checkpoints(self, keep_last_n: int = 10) -> int:
        return await self.provider.cleanup_old_checkpoints(self.execution_id, keep_last_n)


def frame_view(frame: FrameState) -> dict[str, Any]:
    return {
        "frame": frame.id,
        "parent": frame.parent,
        "playbook": frame.playbook,
        "kind": frame.kind,
        "step": frame.step,
        "turn": frame.turn,
        "statement": frame.cursor,
        "checkpoint": frame.checkpoint,
        "llm_response": frame.text(frame.turn),
        "llm_response_complete": frame.turn_done(frame.turn),
        "awaits": dict(frame.journal),
        "variables": {f"${k}": v for k, v in frame.vars.items()},
    }


def checkpoint_view(state: ExecutionState, execution_id: str, **codec: Any) -> dict[str, Any]:
    """The checkpoint dict of DESIGN §5, for the innermost running frame."""
    stack = state.call_stack()
    frame = stack[-1] if stack else state.frames.get(state.last_frame or "main")
    if frame is None:
        frame = next(iter(state.frames.values()))
    namespace = {k: serialization.decode(v, **codec) for k, v in frame.vars.items()}
    cursor = {
        "frame": frame.id,
        "turn": frame.turn,
        "statement": frame.cursor,
        "position": frame.pos,
        "awaits": dict(frame.journal),
        "definitions": list(frame.defs),
    }
    return {
        "checkpoint_id": f"{execution_id}_ckpt_{state.counter}",
        "namespace": namespace,
        "execution_state": {
            "variables": {f"${k}": v for k, v in namespace.items()},
            "call_stack": [frame_view(f) for f in stack],
            "agents": agents_view(state),
            "meetings": meetings_view(state),
            "llm_calls": state.llm_calls,
            "status": state.status,
            "program": state.program,
        },
        "metadata": {
            "statement": frame.statement,
            "counter": state.counter,
            "execution_id": execution_id,
            "timestamp": state.timestamp,
            "llm_response": frame.text(frame.turn),
            "llm_response_complete": frame.turn_done(frame.turn),
            "executed_code": frame.executed_code(),
            "cursor": cursor,
            "frame": frame.id,
        },
    }
