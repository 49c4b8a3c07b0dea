"""What the agents' turn loop (``playbooks.agents.turns``) needs from execution:
its limits, its failure, the runtime's own playbooks, and how errors are told.

The loop itself lives with the agent runtime; these pieces stay here because
benchmarks and tools use them without any agent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..language import PlaybookSpec
from .safety import SafetyError

ROOT = "main"
#: Awaits without a timeout: the person's reply, and the built-ins (quick, local).
UNTIMED = frozenset(
    {
        "Yld",
        "Step",
        "Say",
        "Return",
        "Var",
        "Artifact",
        "EndProgram",
        "NextMessage",
        "HandleMessage",
        "CreateAgent",
    }
)
#: Built-ins with no effect outside the process: no fsync is needed before them.
PURE = frozenset({"Step", "Return", "Var", "Artifact"})


def _runtime_playbook(name: str, kind: str, description: str, **fields: Any) -> PlaybookSpec:
    """A playbook the runtime itself adds to an agent (not written in the program)."""
    base: dict[str, Any] = dict(params=[], returns=None, triggers=[], steps=[], notes="")
    base.update(line=0, public=False, source="")
    return PlaybookSpec(name=name, kind=kind, description=description, **(base | fields))


SERVE = _runtime_playbook(
    "ServeMessages",
    "python",
    "After the begin playbooks: answer each message of the person.",
    body_source=(
        "while True:\n"
        "    message = await __pb_next__()\n"
        "    if message is None:\n"
        "        break\n"
        "    await __pb_handle__(message)\n"
    ),
    body_line=1,
)
HANDLE_AGENT = _runtime_playbook(
    "HandleMessage",
    "markdown",
    "Handle one message from another agent, with every playbook's triggers in view.",
    params=["message", "sender"],
    source="""## HandleMessage($message, $sender)
A message from $sender has arrived: $message.
Handle it: if one of the playbooks' triggers matches it, call that playbook;
otherwise do what it asks. To answer, Say($sender, text). Call Return() when
the message is handled.
""",
)
HANDLE = _runtime_playbook(
    "HandleMessage",
    "markdown",
    "Handle one message from the user, with every playbook's triggers in view.",
    params=["message"],
    source="""## HandleMessage($message)
A message from the user has arrived: $message.
Handle it: if one of the playbooks' triggers matches it, call that playbook;
otherwise answer the user with Say. Call Return() when the message is handled.
If the user wants to stop, call EndProgram().
""",
)


class ProgramFailed(BaseException):
    """The program cannot go on (LLM unreachable, call budget spent): exit 1."""


@dataclass
class Limits:
    max_llm_calls: int = 50
    allowed_imports: tuple[str, ...] = ()
    statement_timeout: float = 300.0
    loop_budget: int = 10_000_000
    max_alloc: int = 100_000_000


def short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: BaseException) -> str:
    line = getattr(error, "response_line", None)
    where = f"line {line}: " if line else ""
    if isinstance(error, SafetyError):
        return str(error)
    if isinstance(error, SyntaxError):
        return f"{where}SyntaxError: {error.msg}"
    return f"{where}{type(error).__name__}: {error}"


#: Messages shown to a call's first turn from before it started.
RECENT_EVENTS = 10
_STEP_CALL = re.compile(r"""Step\(\s*["']([^"']+)["']""")


def _last_step(history: list) -> str:
    """The last step the model's code marked, when no live record of it exists (resume)."""
    for response, _ in reversed(history):
        found = _STEP_CALL.findall(response or "")
        if found:
            return found[-1]
    return ""


def signature(spec: PlaybookSpec) -> str:
    params = ", ".join(f"${p}" for p in spec.params)
    returns = f" -> {spec.returns}" if spec.returns else ""
    return f"{spec.name}({params}){returns}"
