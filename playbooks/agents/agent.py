"""An AI agent: its parsed spec plus the Python its playbooks are written in."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..language import AgentSpec, ProgramError

#: Prefix of the modules that hold the agents' python blocks.
MODULE_PREFIX = "playbooks_pb_"


def playbook(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """``@playbook`` / ``@playbook(triggers=[...], public=True)``: marks a Python playbook."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__playbook__ = options  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def module_name(path: str, agent: str) -> str:
    """A module name that is the same in every process running this program's agent.

    Instances of classes from a python block are checkpointed by module and
    qualname, so a resumed process must give the block the same module name:
    it is derived from the program's absolute path and the agent's name.
    """
    absolute = os.path.abspath(path)
    digest = hashlib.sha256(absolute.encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(absolute))[0])
    return f"{MODULE_PREFIX}{stem}_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', agent)}"


@dataclass
class Agent:
    spec: AgentSpec
    path: str = "<program>"
    python_globals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: AgentSpec, path: str) -> Agent:
        """Run the agent's python blocks once, as a real module registered in sys.modules.

        A real module gives the classes a block defines a ``__module__`` that
        can be found again (dataclasses need it; checkpoints name it), and
        ``dont_inherit`` keeps this file's ``from __future__`` imports out of
        the user's code.
        """
        name = module_name(path, spec.name)
        module = types.ModuleType(name, spec.description or None)
        module.__file__ = os.path.abspath(path)
        module.playbook = playbook  # type: ignore[attr-defined]
        previous = sys.modules.get(name)
        sys.modules[name] = module
        for block in spec.python_blocks:
            padded = "\n" * (block.line - 1) + block.source  # tracebacks show .pb lines
            try:
                code = compile(padded, path, "exec", dont_inherit=True)
                exec(code, module.__dict__)  # noqa: S102 - the user's own code
            except Exception as error:
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
                raise ProgramError(
                    path, block.line, f"python block failed to load: {error}"
                ) from None
        return cls(spec, path, module.__dict__)

    @property
    def name(self) -> str:
        return self.spec.name
