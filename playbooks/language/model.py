"""The parsed form of a `.pb` program.

These records are what the rest of the runtime sees of a program: the parser
builds them once, deterministically, and nothing downstream re-reads Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from playbooks.language.metadata import is_begin_trigger


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
    """A Markdown or Python playbook as written in the program.

    `name` is the callable name (`## Redesign menu` -> `RedesignMenu`): what the
    model sees and calls, and the prefix of step ids. `title` is the heading as
    written.
    """

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
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    sync: bool = False  # a plain `def` python playbook: call it, do not await it

    @property
    def begin(self) -> bool:
        """Runs when the program starts (any begin spelling, `T1:BGN` included)."""
        return any(is_begin_trigger(trigger) for trigger in self.triggers)

    @property
    def is_begin(self) -> bool:
        return self.begin

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
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "params": list(self.params),
            "triggers": list(self.triggers),
            "steps": [step.to_dict() for step in self.steps],
            "public": self.public,
            "begin": self.begin,
        }
        if self.title and self.title != self.name:
            out["title"] = self.title
        if self.sync:
            out["sync"] = True
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass
class PythonBlock:
    """A fenced python block, kept whole because module-level code (imports,
    constants, helpers) must run before the playbooks it defines."""

    source: str
    line: int


@dataclass
class AgentSpec:
    """An agent: `name` is its callable (CamelCase) name, `title` its heading as written."""

    name: str
    description: str
    playbooks: list[PlaybookSpec]
    python_blocks: list[PythonBlock]
    line: int
    title: str = ""
    kind: str = "ai"  # "ai" | "human" (`# Name:Human`)
    metadata: dict[str, Any] = field(default_factory=dict)

    def playbook(self, name: str) -> PlaybookSpec | None:
        """By callable name, or by the heading as written."""
        for candidate in self.playbooks:
            if candidate.name == name:
                return candidate
        for candidate in self.playbooks:
            if candidate.title and candidate.title == name:
                return candidate
        return None

    @property
    def begin_playbooks(self) -> list[PlaybookSpec]:
        """Every playbook with a begin trigger, in file order."""
        return [candidate for candidate in self.playbooks if candidate.begin]

    @property
    def entry(self) -> PlaybookSpec | None:
        """The first begin playbook (or the first playbook): what a one-entry runner starts."""
        begin = self.begin_playbooks
        if begin:
            return begin[0]
        return self.playbooks[0] if self.playbooks else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "playbooks": [pb.to_dict() for pb in self.playbooks],
        }
        if self.title and self.title != self.name:
            out["title"] = self.title
        if self.kind != "ai":
            out["kind"] = self.kind
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass
class Program:
    """A parsed program. Line numbers in its specs count lines of `text`: the
    file with its `!import`s inlined (the file itself when it imports nothing)."""

    path: str
    text: str  # decoded text with line endings normalised to "\n", imports inlined
    agents: list[AgentSpec]
    # sha256 of the file's bytes (and of every imported file's): a resumed run
    # must see the same program
    source_hash: str
    files: list[str] = field(default_factory=list)  # the program file, then each import
    warnings: list[str] = field(default_factory=list)  # "file:line: message"
    metadata: dict[str, Any] = field(default_factory=dict)  # YAML front matter
    # (file, line) of each line of `text` when it has imports inlined; empty otherwise
    origin: list[tuple[str, int]] = field(default_factory=list, repr=False)

    def where(self, line: int) -> tuple[str, int]:
        """The file and line a line number of `text` (a spec's `line`) came from."""
        if 1 <= line <= len(self.origin):
            return self.origin[line - 1]
        return self.path, line

    def agent(self, name: str) -> AgentSpec | None:
        for candidate in self.agents:
            if candidate.name == name or candidate.title == name:
                return candidate
        return None

    def to_dict(self) -> dict[str, Any]:
        """The structure printed by `playbooks check --json`."""
        out: dict[str, Any] = {"agents": [agent.to_dict() for agent in self.agents]}
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        out["warnings"] = list(self.warnings)
        return out


def format_structure(program: Program) -> str:
    """The tree `playbooks check` prints, so a person can see how the file was read."""

    def at(line: int) -> str:
        path, number = program.where(line)
        return f"line {number}" if path == program.path else f"{path}:{number}"

    out = [f"{program.path}: {len(program.agents)} agent(s)"]
    for agent in program.agents:
        shown = agent.name if agent.title in ("", agent.name) else f"{agent.name} ({agent.title})"
        kind = " [human]" if agent.kind == "human" else ""
        out.append(f"agent {shown}{kind} ({at(agent.line)})")
        for key, value in agent.metadata.items():
            out.append(f"  {key}: {value}")
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
            if pb.sync:
                tags.append("sync")
            if pb.begin:
                tags.append("begin")
            if pb is entry:
                tags.append("entry")
            title = f' "{pb.title}"' if pb.title and pb.title != pb.name else ""
            out.append(f"  playbook {signature}{title} [{', '.join(tags)}] ({at(pb.line)})")
            for key, value in pb.metadata.items():
                out.append(f"    {key}: {value}")
            for trigger in pb.triggers:
                out.append(f"    trigger: {trigger}")
            for step in pb.all_steps():
                depth = step.id.count(".")
                out.append(f"    {'  ' * depth}{step.id} {step.text}")
    return "\n".join(out) + "\n"
