"""Durability: the record log, checkpoints and recovery. Never imports execution."""

from .manager import CheckpointManager
from .provider import FilesystemCheckpointProvider
from .recovery import RecoveryCoordinator

__all__ = ["CheckpointManager", "FilesystemCheckpointProvider", "RecoveryCoordinator"]
