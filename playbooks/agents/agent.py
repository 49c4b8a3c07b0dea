"""An AI agent: its parsed spec plus the Python its playbooks are written in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..language import AgentSpec, ProgramError


def playbook(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@playbook`` / ``@playbook(triggers=[...], public=True)``: marks a Python playbook."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__playbook__ = options  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


@dataclass
class Agent:
    spec: AgentSpec
    path: str = "<program>"
    python_globals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: AgentSpec, path: str) -> Agent:
        """Run the agent's python blocks once: they define its Python playbooks and helpers."""
        namespace: dict[str, Any] = {
            "__name__": f"playbooks_agent_{spec.name}",
            "playbook": playbook,
        }
        for block in spec.python_blocks:
            padded = "\n" * (block.line - 1) + block.source  # tracebacks show .pb lines
            try:
                exec(compile(padded, path, "exec"), namespace)  # noqa: S102 - the user's own code
            except Exception as error:
                raise ProgramError(
                    path, block.line, f"python block failed to load: {error}"
                ) from None
        return cls(spec, path, namespace)

    @property
    def name(self) -> str:
        return self.spec.name
