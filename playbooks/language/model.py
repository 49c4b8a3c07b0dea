"""The parsed form of a `.pb` program.

These records are what the rest of the runtime sees of a program: the parser
builds them once, deterministically, and nothing downstream re-reads Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Trigger texts that make a playbook the program's entry point. Real programs
# write several spellings of "run me first"; all of them mean the same.
_BEGIN_TRIGGERS = frozenset(
    {
        "at the beginning",
        "when the program starts",
        "when program starts",
        "at the start",
    }
)


@dataclass
class Step:
    """One bullet of a `### Steps` list; `id` is how the LLM and the executor refer to it."""

    id: str
    text: str
    line: int
    children: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "children": [child.to_dict() for child in self.children],
        }

    def walk(self) -> list[Step]:
        """This step and all its descendants, in reading order."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


@dataclass
class PlaybookSpec:
    """A Markdown or Python playbook as written in the program."""

    name: str
    kind: str  # "markdown" | "python"
    params: list[str]
    returns: str | None
    description: str
    triggers: list[str]
    steps: list[Step]
    notes: str
    line: int
    public: bool
    source: str
    body_source: str = ""
    body_line: int = 0

    @property
    def is_begin(self) -> bool:
        for trigger in self.triggers:
            text = trigger.strip().rstrip(".").strip().lower()
            if text in _BEGIN_TRIGGERS or text.startswith("at the beginning"):
                return True
        return False

    @property
    def is_free_form(self) -> bool:
        return self.kind == "markdown" and not self.steps

    def all_steps(self) -> list[Step]:
        """Every step at every depth, in reading order."""
        out: list[Step] = []
        for step in self.steps:
            out.extend(step.walk())
        return out

    def step(self, step_id: str) -> Step | None:
        for candidate in self.all_steps():
            if candidate.id == step_id:
                return candidate
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": list(self.params),
            "triggers": list(self.triggers),
            "steps": [step.to_dict() for step in self.steps],
            "public": self.public,
        }


@dataclass
class PythonBlock:
    """A fenced python block, kept whole because module-level code (imports,
    constants, helpers) must run before the playbooks it defines."""

    source: str
    line: int


@dataclass
class AgentSpec:
    name: str
    description: str
    playbooks: list[PlaybookSpec]
    python_blocks: list[PythonBlock]
    line: int

    def playbook(self, name: str) -> PlaybookSpec | None:
        for candidate in self.playbooks:
            if candidate.name == name:
                return candidate
        return None

    @property
    def entry(self) -> PlaybookSpec | None:
        for candidate in self.playbooks:
            if candidate.is_begin:
                return candidate
        return self.playbooks[0] if self.playbooks else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "playbooks": [pb.to_dict() for pb in self.playbooks],
        }


@dataclass
class Program:
    path: str
    text: str  # decoded text with line endings normalised to "\n"
    agents: list[AgentSpec]
    source_hash: str  # sha256 of the file's bytes: a resumed run must see the same program

    def agent(self, name: str) -> AgentSpec | None:
        for candidate in self.agents:
            if candidate.name == name:
                return candidate
        return None

    def to_dict(self) -> dict[str, Any]:
        """The structure printed by `playbooks check --json`."""
        return {"agents": [agent.to_dict() for agent in self.agents]}


def format_structure(program: Program) -> str:
    """The tree `playbooks check` prints, so a person can see how the file was read."""
    out = [f"{program.path}: {len(program.agents)} agent(s)"]
    for agent in program.agents:
        out.append(f"agent {agent.name} (line {agent.line})")
        if agent.description:
            out.append(f"  {agent.description.splitlines()[0]}")
        entry = agent.entry
        for pb in agent.playbooks:
            signature = f"{pb.name}({', '.join(pb.params)})"
            if pb.returns:
                signature += f" -> {pb.returns}"
            tags = [pb.kind]
            if pb.is_free_form:
                tags.append("free-form")
            if pb.public:
                tags.append("public")
            if pb is entry:
                tags.append("entry")
            out.append(f"  playbook {signature} [{', '.join(tags)}] (line {pb.line})")
            for trigger in pb.triggers:
                out.append(f"    trigger: {trigger}")
            for step in pb.all_steps():
                depth = step.id.count(".")
                out.append(f"    {'  ' * depth}{step.id} {step.text}")
    return "\n".join(out) + "\n"
