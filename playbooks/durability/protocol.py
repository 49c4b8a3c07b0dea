"""The boundary between CheckpointManager and where checkpoints live.

`CheckpointManager` (and the CLI verbs) use a provider only through these
methods, so the filesystem provider and the PostgreSQL provider are
interchangeable; ``tests/test_provider_conformance.py`` runs the same tests
against each. They are ``typing.Protocol`` classes: a provider conforms by
having the methods, not by inheriting from anything.

Ownership: :meth:`ExecutionLog.lock` makes the caller the one writer of an
execution (a ``flock`` for files; a lease with a fencing token in
PostgreSQL) and raises :class:`~playbooks.durability.log.ExecutionLocked`
while another live owner holds it. A PostgreSQL owner that lost its lease
gets :class:`~playbooks.durability.postgres_lease.LeaseLost` from every later
write or barrier: it can no longer write nor cause an effect.

Scale-out: an execution's meta carries ``status`` (``"queued"`` for a
detached run that no process has started yet; ``"running"``, ``"waiting"``,
``"interrupted"``, ``"finished"``, ``"failed"``); a waiting execution's meta
may carry ``inbox_read``, the number of inbox messages it has consumed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .chain import Loaded

__all__ = ["CheckpointProvider", "ExecutionLog", "Saver", "ScaleOut", "SharedProvider"]


@runtime_checkable
class ExecutionLog(Protocol):
    """Storage of one execution: one owner appends, anyone may load."""

    execution_id: str

    def lock(self) -> None:
        """Become the owner (claim); ExecutionLocked while another live owner holds it."""

    def load(self) -> Loaded:
        """Newest valid snapshot and the records after it; damage is reported, not skipped."""

    def load_generation(self, gen: int) -> Loaded:
        """What recovery would have read when ``gen`` was the newest generation."""

    def append(self, record: dict, *, sync: bool = False) -> None:
        """Append one record (fenced when owned); with sync it is durable on return."""

    def sync(self) -> None:
        """The barrier before an effect: every record so far is durable (and, for a
        lease, still ours) when this returns."""

    def settle(self) -> None:
        """Every record so far outlives this process (not the machine): a finished
        LLM call's text, which a resume must not ask for again."""

    def should_snapshot(self) -> bool: ...

    def write_snapshot(self, state: dict, *, checkpoints: int = 0) -> None:
        """Start a new generation from ``state``, then apply retention."""

    def retain(self, keep_last_n: int | None = None) -> int:
        """Apply retention now; returns the number of generations removed."""

    def read_meta(self) -> dict | None: ...

    def write_meta(self, meta: dict) -> None: ...

    def close(self) -> None:
        """Make what was appended durable and give up ownership."""

    def disk_usage(self) -> int:
        """Bytes stored for this execution."""

    def checkpoints(self) -> list[tuple[int, int]]:
        """(checkpoint number, generation) of every retained, loadable checkpoint."""

    def checkpoint_records(self) -> list[dict]:
        """Retained "ckpt" records, oldest first (for `executions show`)."""


@runtime_checkable
class Saver(Protocol):
    """The small, seed-compatible saver API, built on the execution's own log."""

    async def save_checkpoint(
        self,
        checkpoint_id: str,
        execution_state: dict[str, Any],
        namespace: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None: ...

    async def load_checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None: ...

    async def list_checkpoints(self, execution_id: str) -> list[str]: ...

    async def delete_checkpoint(self, checkpoint_id: str) -> None: ...

    async def cleanup_old_checkpoints(self, execution_id: str, keep_last_n: int = 10) -> int: ...


@runtime_checkable
class ScaleOut(Protocol):
    """What workers, `run --detach` and `reply` need from a shared store."""

    def append_inbox(self, execution_id: str, message: dict) -> None:
        """Store a message for the execution durably (a person's reply) and wake workers."""

    def read_inbox(self, execution_id: str) -> list[dict]:
        """Every inbox message of the execution, oldest first."""

    def runnable(self, limit: int) -> list[str]:
        """Ids a worker may try to claim: queued; unfinished with no live owner
        (or an expired lease); waiting with an inbox message it has not read."""

    def wait_for_work(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds; returns early when work may have appeared."""


@runtime_checkable
class CheckpointProvider(Saver, Protocol):
    """A place executions live: opens their logs, lists and deletes them."""

    keep_last_n: int

    def open_log(self, execution_id: str, *, create: bool = True) -> ExecutionLog: ...

    def codec(self) -> dict[str, Any]:
        """Keyword arguments for serialization.encode/decode (pickle policy)."""

    def list_executions(self) -> list[str]: ...

    def delete_execution(self, execution_id: str) -> None:
        """Remove an execution; ExecutionLocked while a live process owns it."""

    def read_meta(self, execution_id: str) -> dict | None: ...


@runtime_checkable
class SharedProvider(CheckpointProvider, ScaleOut, Protocol):
    """A provider workers on many machines can share."""
