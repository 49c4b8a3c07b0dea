"""RecoveryCoordinator: answers "can this execution be resumed, and from where?"."""

from __future__ import annotations

from typing import Any

from .manager import CheckpointManager


class RecoveryCoordinator:
    def __init__(self, manager: CheckpointManager) -> None:
        self.manager = manager
        self.checkpoint_manager = manager  # the seed's attribute name

    async def can_recover(self) -> bool:
        """True when there is durable progress and the execution has not ended."""
        state = self.manager.read_state()
        return bool(state and state.frames and state.status == "running")

    async def get_recovery_info(self) -> dict[str, Any] | None:
        latest = await self.manager.get_latest_checkpoint()
        if latest is None:
            return None
        meta = latest["metadata"]
        stack = latest["execution_state"]["call_stack"]
        top = stack[-1] if stack else {}
        return {
            "checkpoint_id": latest["checkpoint_id"],
            "statement": meta["statement"],
            "counter": meta["counter"],
            "timestamp": meta["timestamp"],
            "frame": meta["frame"],
            "playbook": top.get("playbook", ""),
            "step": top.get("step"),
            "cursor": meta["cursor"],
            "depth": len(stack),
        }

    async def recover_execution_state(self, agent: Any = None) -> dict[str, Any]:
        """Load the latest checkpoint; an agent with ``restore(checkpoint)`` is given it."""
        latest = await self.manager.get_latest_checkpoint()
        if latest is None:
            raise ValueError(f"no checkpoints to recover for execution {self.manager.execution_id}")
        restore = getattr(agent, "restore", None)
        if callable(restore):
            restore(latest)
        return latest
