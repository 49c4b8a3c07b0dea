"""Where checkpoints live: the filesystem provider.

The provider owns the storage settings and opens one :class:`ExecutionLog`
per execution. Its ``*_checkpoint`` methods are the small, seed-compatible
saver protocol (save / load / list / delete / cleanup) built on that log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import log as logmod
from . import serialization
from .state import ExecutionState


def split_checkpoint_id(checkpoint_id: str) -> tuple[str, int]:
    execution_id, sep, number = checkpoint_id.rpartition("_ckpt_")
    if not sep or not number.isdigit():
        raise ValueError(f"not a checkpoint id: {checkpoint_id!r} (expected EXECUTION_ckpt_N)")
    return logmod.validate_execution_id(execution_id), int(number)


class FilesystemCheckpointProvider:
    """Append-only logs and snapshots under ``base_path``, one folder per execution."""

    def __init__(
        self,
        base_path: str | os.PathLike[str] = ".checkpoints",
        *,
        fsync: bool = True,
        keep_last_n: int = 10,
        allow_pickle: bool = False,
    ) -> None:
        self.base_path = Path(base_path)
        self.fsync = fsync
        self.keep_last_n = keep_last_n
        self.allow_pickle = allow_pickle
        self.pickle_key = os.environ.get("PLAYBOOKS_PICKLE_KEY", "").encode() or None
        if allow_pickle and not self.pickle_key:
            raise logmod.StorageError(
                "allow_pickle is on but PLAYBOOKS_PICKLE_KEY is not set: pickles are signed with it"
            )

    def open_log(self, execution_id: str, *, create: bool = True) -> logmod.ExecutionLog:
        return logmod.ExecutionLog(
            self.base_path,
            execution_id,
            fsync=self.fsync,
            keep_last_n=self.keep_last_n,
            create=create,
        )

    def codec(self) -> dict[str, Any]:
        return {"allow_pickle": self.allow_pickle, "pickle_key": self.pickle_key}

    def list_executions(self) -> list[str]:
        return logmod.list_executions(self.base_path)

    def delete_execution(self, execution_id: str) -> None:
        logmod.delete_execution(self.base_path, execution_id)

    def read_meta(self, execution_id: str) -> dict | None:
        return self.open_log(execution_id, create=False).read_meta()

    # -- the saver protocol ------------------------------------------------
    # One storage story: these methods read and write the execution's own log,
    # the one the runtime appends to. Writes go through the owner: the log this
    # process already holds the lock on, or the lock taken for the call (a
    # live owner in another process refuses it with ExecutionLocked).

    @contextmanager
    def _writer(self, execution_id: str, *, create: bool = False) -> Iterator[logmod.ExecutionLog]:
        owner = logmod.owner_in_process(self.base_path, execution_id)
        if owner is not None:
            yield owner
            return
        log = self.open_log(execution_id, create=create)
        try:
            log.lock()
            loaded = log.load()
            if loaded.damage is not None:
                raise logmod.DamagedLog(
                    f"execution {execution_id}: {loaded.damage.where()}; "
                    "resume it (see --accept-rollback) before changing its checkpoints",
                    loaded.damage,
                )
            if loaded.needs_snapshot:  # rebuilt from an older snapshot: make it current
                log.write_snapshot(replay_until(loaded, None).to_snapshot())
            yield log
        finally:
            log.close()

    async def save_checkpoint(
        self,
        checkpoint_id: str,
        execution_state: dict[str, Any],
        namespace: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None:
        """Store a whole checkpoint given by the caller (the runtime writes deltas
        instead); it is carried into every snapshot, so compaction keeps it."""
        execution_id, _ = split_checkpoint_id(checkpoint_id)
        data = {
            "checkpoint_id": checkpoint_id,
            "execution_state": execution_state,
            "namespace": namespace,
            "metadata": metadata,
        }
        encoded = serialization.encode(data, "$checkpoint", **self.codec())
        with self._writer(execution_id, create=True) as log:
            log.append({"k": "put", "id": checkpoint_id, "data": encoded}, sync=True)

    async def load_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        """Any id list_checkpoints gives: a saved checkpoint, or the runtime's
        state right after checkpoint N, rebuilt from the generation that holds it."""
        execution_id, number = split_checkpoint_id(checkpoint_id)
        reader = self.open_log(execution_id, create=False)
        puts = reader.load().puts
        if checkpoint_id in puts:
            data = puts[checkpoint_id]
            return None if data is None else serialization.decode(data, **self.codec())
        gen = dict(reader.checkpoints()).get(number)
        if gen is None:
            return None
        state = replay_until(reader.load_generation(gen), number)
        if state is None:
            return None
        from .manager import checkpoint_view  # late: manager builds on this module

        return checkpoint_view(state, execution_id, **self.codec())

    async def list_checkpoints(self, execution_id: str) -> list[str]:
        """Every id load_checkpoint can load, oldest runtime checkpoint first."""
        reader = self.open_log(execution_id, create=False)
        puts = reader.load().puts
        ids = [f"{execution_id}_ckpt_{n}" for n, _ in reader.checkpoints()]
        ids = [i for i in ids if i not in puts]
        return ids + [i for i, data in puts.items() if data is not None]

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Records are append-only: a deleted checkpoint is marked as forgotten."""
        execution_id, _ = split_checkpoint_id(checkpoint_id)
        with self._writer(execution_id) as log:
            log.append({"k": "forget", "id": checkpoint_id}, sync=True)

    async def cleanup_old_checkpoints(self, execution_id: str, keep_last_n: int = 10) -> int:
        """Drop the oldest generations that keep_last_n newer checkpoints make
        unneeded; works while the execution is open. Returns how many ids went."""
        before = len(await self.list_checkpoints(execution_id))
        with self._writer(execution_id) as log:
            log.retain(keep_last_n)
        after = len(await self.list_checkpoints(execution_id))
        return max(0, before - after)


def replay_until(loaded: logmod.Loaded, counter: int | None) -> ExecutionState | None:
    """The state right after checkpoint ``counter`` (None if it is not in
    ``loaded``); with counter None, the state at the end of ``loaded``."""
    state = ExecutionState.from_snapshot(loaded.snapshot) if loaded.snapshot else ExecutionState()
    if counter is not None and state.counter == counter:
        return state
    for record in loaded.records:
        state.apply(record)
        if counter is not None and record.get("k") == "ckpt" and record["n"] == counter:
            return state
    return state if counter is None else None
