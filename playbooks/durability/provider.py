"""Where checkpoints live: the filesystem provider.

The provider owns the storage settings and opens one :class:`ExecutionLog`
per execution. Its ``*_checkpoint`` methods are the small, seed-compatible
saver protocol (save / load / list / delete / cleanup) built on that log.
"""

from __future__ import annotations

import os
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
    async def save_checkpoint(
        self,
        checkpoint_id: str,
        execution_state: dict[str, Any],
        namespace: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None:
        """Store a whole checkpoint given by the caller (the runtime writes deltas instead)."""
        execution_id, _ = split_checkpoint_id(checkpoint_id)
        data = {
            "checkpoint_id": checkpoint_id,
            "execution_state": execution_state,
            "namespace": namespace,
            "metadata": metadata,
        }
        log = self.open_log(execution_id)
        log.load()
        log.append(
            {
                "k": "put",
                "id": checkpoint_id,
                "data": serialization.encode(data, "$checkpoint", **self.codec()),
            },
            sync=True,
        )
        log.close()

    async def load_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        execution_id, number = split_checkpoint_id(checkpoint_id)
        log = self.open_log(execution_id, create=False)
        loaded = log.load()
        found = None
        for record in loaded.records:
            if record.get("k") == "put" and record.get("id") == checkpoint_id:
                found = serialization.decode(record["data"], **self.codec())
            elif record.get("k") == "forget" and record.get("id") == checkpoint_id:
                found = None
        if found is not None:
            return found
        from .manager import checkpoint_view  # late: manager builds on this module

        state = replay_until(loaded, number)
        if state is None:
            return None
        return checkpoint_view(state, execution_id, **self.codec())

    async def list_checkpoints(self, execution_id: str) -> list[str]:
        log = self.open_log(execution_id, create=False)
        ids: list[str] = []
        forgotten: set[str] = set()
        for record in log.checkpoint_records():
            ids.append(f"{execution_id}_ckpt_{record['n']}")
        for record in log.load().records:
            if record.get("k") == "put":
                ids.append(record["id"])
            elif record.get("k") == "forget":
                forgotten.add(record["id"])
        return [i for i in ids if i not in forgotten]

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Records are append-only: a deleted checkpoint is marked as forgotten."""
        execution_id, _ = split_checkpoint_id(checkpoint_id)
        log = self.open_log(execution_id, create=False)
        log.load()
        log.append({"k": "forget", "id": checkpoint_id}, sync=True)
        log.close()

    async def cleanup_old_checkpoints(self, execution_id: str, keep_last_n: int = 10) -> int:
        before = len(await self.list_checkpoints(execution_id))
        logmod.gc(self.base_path, keep_last_n=keep_last_n, only=execution_id)
        after = len(await self.list_checkpoints(execution_id))
        return max(0, before - after)


def replay_until(loaded: logmod.Loaded, counter: int) -> ExecutionState | None:
    """The state right after checkpoint ``counter`` (None if it is not retained)."""
    state = ExecutionState.from_snapshot(loaded.snapshot) if loaded.snapshot else ExecutionState()
    if state.counter == counter:
        return state
    for record in loaded.records:
        state.apply(record)
        if record.get("k") == "ckpt" and record["n"] == counter:
            return state
    return None
