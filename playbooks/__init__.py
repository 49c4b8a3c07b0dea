"""Playbooks: a runtime for durable LLM agents.

The public names are importable from here; they load on first use so that
the command line starts fast.
"""

from __future__ import annotations

from typing import Any

_PUBLIC = {
    "StreamingPythonExecutor": "playbooks.execution.executor",
    "CheckpointManager": "playbooks.durability.manager",
    "FilesystemCheckpointProvider": "playbooks.durability.provider",
    "RecoveryCoordinator": "playbooks.durability.recovery",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'playbooks' has no attribute {name!r}")
