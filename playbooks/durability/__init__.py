"""Durability: the record log, checkpoints and recovery. Never imports execution.

``PostgresCheckpointProvider`` is loaded on first use, so that a default run
(the filesystem provider) never imports the PostgreSQL driver.
"""

from __future__ import annotations

from typing import Any

from .manager import CheckpointManager
from .protocol import CheckpointProvider, ExecutionLog, ScaleOut, SharedProvider
from .provider import FilesystemCheckpointProvider
from .recovery import RecoveryCoordinator

__all__ = [
    "CheckpointManager",
    "CheckpointProvider",
    "ExecutionLog",
    "FilesystemCheckpointProvider",
    "LeaseLost",
    "PostgresCheckpointProvider",
    "RecoveryCoordinator",
    "ScaleOut",
    "SharedProvider",
    "open_provider",
]


def __getattr__(name: str) -> Any:
    if name in ("PostgresCheckpointProvider", "LeaseLost"):
        from . import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_provider(settings: Any) -> CheckpointProvider:
    """The provider ``[durability]`` names (a DurabilityConfig, or anything with its fields)."""
    if getattr(settings, "provider", "filesystem") == "postgres":
        dsn = getattr(settings, "dsn", None)
        if not dsn:
            from playbooks.config import ConfigError

            raise ConfigError(
                '[durability] provider = "postgres" needs a dsn: set durability.dsn '
                "or PLAYBOOKS_DURABILITY__DSN (e.g. postgresql://localhost/playbooks)"
            )
        from .postgres import PostgresCheckpointProvider

        return PostgresCheckpointProvider(
            dsn,
            keep_last_n=settings.keep_last_n,
            allow_pickle=settings.allow_pickle,
            fsync=settings.fsync,
            lease=getattr(settings, "lease_seconds", 15.0),
        )
    return FilesystemCheckpointProvider(
        settings.path,
        fsync=settings.fsync,
        keep_last_n=settings.keep_last_n,
        allow_pickle=settings.allow_pickle,
    )
