"""Deterministic `.pb` Markdown -> `Program` parser.

No LLM is involved: the same bytes always give the same program, which is what
lets a resumed execution trust step ids and line numbers recorded before a crash.
Whatever the parser keeps but the runtime cannot honour yet becomes a warning
(`Program.warnings`), so nothing written in a file is dropped silently.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from playbooks.language.metadata import (
    MetadataError,
    callable_name,
    check_metadata,
    is_known_key,
    metadata_key,
    parse_block,
    parse_scalar,
    placeholder_calls,
)
from playbooks.language.model import (
    AgentSpec,
    PlaybookSpec,
    Program,
    PythonBlock,
    Step,
    format_structure,
)
from playbooks.language.python_playbooks import python_playbooks
from playbooks.language.signature import parse_signature
from playbooks.language.source import Diagnostics, ProgramError, Source, normalise, read_source

__all__ = ["ProgramError", "format_structure", "load_program", "parse_text"]

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_BULLET = re.compile(r"^([-*+]|\d{1,3}[.)])(?:[ \t]+(.*))?$")
_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")  # thematic break: `---`
_SECTIONS = {
    "triggers": "triggers",
    "trigger": "triggers",
    "steps": "steps",
    "step": "steps",
    "notes": "notes",
    "note": "notes",
}


@dataclass
class _Heading:
    level: int
    title: str
    line: int
    raw: str


@dataclass
class _Text:
    line: int
    raw: str


@dataclass
class _Fence:
    line: int  # line of the opening fence
    lang: str
    body: list[str]
    raw: list[str]

    @property
    def is_python(self) -> bool:
        return self.lang in ("python", "py", "python3")


_Item = _Heading | _Text | _Fence


def _scan(lines: list[str], diag: Diagnostics) -> list[_Item]:
    """Split lines into headings, text and fenced blocks; headings inside fences stay text."""
    items: list[_Item] = []
    i = 0
    while i < len(lines):
        line, no = lines[i], i + 1
        fence = _FENCE_OPEN.match(line)
        if fence:
            indent, marker, lang = len(fence.group(1)), fence.group(2), fence.group(3).lower()
            j = i + 1
            while j < len(lines):
                close = _FENCE_CLOSE.match(lines[j])
                if close and close.group(1)[0] == marker[0] and len(close.group(1)) >= len(marker):
                    break
                j += 1
            if j == len(lines):
                raise diag.error(no, "code fence is never closed")
            body = [_strip_indent(text, indent) for text in lines[i + 1 : j]]
            items.append(_Fence(no, lang, body, lines[i : j + 1]))
            i = j + 1
            continue
        heading = _HEADING.match(line)
        if heading:
            items.append(
                _Heading(len(heading.group(1)), (heading.group(2) or "").strip(), no, line)
            )
        else:
            items.append(_Text(no, line))
        i += 1
    return items


def _strip_indent(text: str, width: int) -> str:
    removable = len(text) - len(text.lstrip(" "))
    return text[min(width, removable) :]


@dataclass
class _Section:
    heading: _Heading
    items: list[_Item] = field(default_factory=list)


@dataclass
class _AgentDraft:
    heading: _Heading
    preamble: list[_Item] = field(default_factory=list)
    sections: list[_Section] = field(default_factory=list)


def _group(items: list[_Item], diag: Diagnostics) -> list[_AgentDraft]:
    if not any(isinstance(it, _Heading) and it.level == 1 for it in items):
        raise diag.error(1, "no agent: expected a '# AgentName' heading")
    drafts: list[_AgentDraft] = []
    for item in items:
        if isinstance(item, _Heading) and item.level == 1:
            drafts.append(_AgentDraft(item))
        elif not drafts:
            if isinstance(item, _Text) and (not item.raw.strip() or _BREAK.match(item.raw)):
                continue
            raise diag.error(item.line, "text before the first '# AgentName' heading")
        elif isinstance(item, _Heading) and item.level == 2:
            section = _section_name(item.title)
            sections = drafts[-1].sections
            if section and sections and not _has_section(sections[-1], section):
                # `## Steps` right under `## Main`: a section written one level too high
                diag.warn(
                    item.line,
                    f"'## {item.title}' read as '### {item.title}' of the playbook above "
                    f"(sections take three #)",
                )
                sections[-1].items.append(_Heading(3, item.title, item.line, item.raw))
            else:
                sections.append(_Section(item))
        elif drafts[-1].sections:
            drafts[-1].sections[-1].items.append(item)
        else:
            drafts[-1].preamble.append(item)
    return drafts


def _section_name(title: str) -> str | None:
    return _SECTIONS.get(title.strip().rstrip(":").strip().lower())


def _has_section(section: _Section, name: str) -> bool:
    return any(
        isinstance(it, _Heading) and it.level == 3 and _section_name(it.title) == name
        for it in section.items
    )


def _take_metadata(
    items: list[_Item], scope: str, diag: Diagnostics
) -> tuple[dict[str, Any], dict[str, int], list[_Item]]:
    """Split metadata out of the text right under a heading.

    Any `key: value` line (or `key:` with an indented YAML block) before the
    first line of prose is metadata, and so is a `metadata:` block or a known
    key anywhere before the first section. Everything else is description.
    """
    metadata: dict[str, Any] = {}
    lines: dict[str, int] = {}
    rest: list[_Item] = []
    leading = True
    i = 0
    while i < len(items):
        item = items[i]
        if not isinstance(item, _Text) or not item.raw.strip():
            leading = leading and isinstance(item, _Text)
            rest.append(item)
            i += 1
            continue
        found = metadata_key(item.raw)
        if not found or not (
            leading
            or found[0] == "metadata"
            or is_known_key(found[0], scope)
            or (not found[1] and _indented_text(items, i + 1))
        ):
            leading = False
            rest.append(item)
            i += 1
            continue
        key, value = found
        j = i + 1
        block: list[tuple[int, str]] = []
        while not value and j < len(items):
            nxt = items[j]
            if not isinstance(nxt, _Text) or not nxt.raw.strip() or nxt.raw[0] not in " \t":
                break
            block.append((nxt.line, nxt.raw))
            j += 1
        try:
            parsed = parse_scalar(value) if value else parse_block(block)
        except MetadataError as error:
            diag.warn(error.line, f"metadata {key!r}: {error} (kept as text)")
            parsed = "\n".join(text.strip() for _, text in block)
        if key == "metadata":
            if isinstance(parsed, dict):
                for name, entry in parsed.items():
                    metadata[str(name)] = entry
                    lines[str(name)] = item.line
            elif parsed is not None:
                diag.warn(item.line, "metadata: expected an indented block of 'key: value' lines")
        else:
            metadata[key] = parsed
            lines[key] = item.line
        i = j
    return metadata, lines, rest


def _indented_text(items: list[_Item], index: int) -> bool:
    """Whether items[index] is an indented non-blank line (a YAML block under `key:`)."""
    if index >= len(items):
        return False
    item = items[index]
    return isinstance(item, _Text) and bool(item.raw.strip()) and item.raw[0] in " \t"


def _agent_names(heading: _Heading, diag: Diagnostics) -> tuple[str, str, str]:
    """(callable name, title, kind) of `# Name`, `# Name:AI` or `# Name:Human`."""
    title, kind = heading.title, "ai"
    head, sep, suffix = title.rpartition(":")
    if sep and suffix.strip().lower() in ("ai", "human"):
        title, kind = head.strip(), suffix.strip().lower()
    name = callable_name(title)
    if not name:
        raise diag.error(heading.line, "agent heading has no name")
    if not name.isidentifier():
        raise diag.error(heading.line, f"agent heading {title!r} does not give a name to call")
    return name, title, kind


def _build_agent(draft: _AgentDraft, diag: Diagnostics) -> AgentSpec:
    name, title, kind = _agent_names(draft.heading, diag)
    metadata, key_lines, preamble = _take_metadata(draft.preamble, kind_scope(kind), diag)
    check_metadata(metadata, kind_scope(kind), key_lines, diag.warn, draft.heading.line)
    blocks: list[PythonBlock] = []
    playbooks: list[PlaybookSpec] = []
    for item in preamble + [it for s in draft.sections for it in s.items]:
        if isinstance(item, _Fence) and item.is_python:
            blocks.append(PythonBlock(_join(item.body), item.line + 1))
    blocks.sort(key=lambda b: b.line)
    for section in draft.sections:
        spec = _build_markdown(section, diag)
        if spec is not None:
            playbooks.append(spec)
    for block in blocks:
        playbooks.extend(python_playbooks(block, diag))
    playbooks.sort(key=lambda pb: pb.line)
    seen: dict[str, int] = {}
    for pb in playbooks:
        if pb.name in seen:
            first = diag.where(seen[pb.name])[1]
            raise diag.error(
                pb.line,
                f"duplicate playbook name {pb.name!r} in agent {title!r} "
                f"(first defined at line {first})",
            )
        seen[pb.name] = pb.line
    description = _description(preamble, metadata)
    _warn_placeholder_calls(description, draft.heading.line, diag)
    return AgentSpec(
        name, description, playbooks, blocks, draft.heading.line, title, kind, metadata
    )


def kind_scope(kind: str) -> str:
    return "human" if kind == "human" else "agent"


def _description(items: list[_Item], metadata: dict[str, Any]) -> str:
    lines = _raw_lines(items)
    while lines and (not lines[-1].strip() or _BREAK.match(lines[-1])):
        lines.pop()  # a `---` between agents separates them; it describes nothing
    text = "\n".join(lines).strip()
    if not text and isinstance(metadata.get("description"), str):
        return metadata["description"].strip()
    return text


def _warn_placeholder_calls(text: str, line: int, diag: Diagnostics) -> None:
    for call in placeholder_calls(text):
        diag.warn(
            line,
            f"placeholder {call} calls code, which is not built yet: the model sees it as written",
        )


def _raw_lines(items: list[_Item]) -> list[str]:
    """Text of items as written, leaving out python blocks (they are code, not prose)."""
    out: list[str] = []
    for item in items:
        if isinstance(item, _Fence):
            if not item.is_python:
                out.extend(item.raw)
        else:
            out.append(item.raw)
    return out


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def _build_markdown(section: _Section, diag: Diagnostics) -> PlaybookSpec | None:
    items = section.items
    has_code = any(isinstance(it, _Fence) for it in items)
    only_code = all(
        isinstance(it, _Fence) or (isinstance(it, _Text) and not it.raw.strip()) for it in items
    )
    if has_code and only_code:
        return None  # a "## Python playbooks" container, not a playbook
    title, name, params, returns = parse_signature(
        section.heading.title, section.heading.line, diag
    )

    parts: list[tuple[str, list[_Item]]] = [("", [])]
    for item in items:
        if isinstance(item, _Heading) and item.level == 3:
            kind = _section_name(item.title)
            if kind is None:
                raise diag.error(
                    item.line,
                    f"unknown section '### {item.title}' in playbook {title!r} "
                    f"(expected ### Triggers, ### Steps or ### Notes)",
                )
            parts.append((kind, []))
        else:
            parts[-1][1].append(item)

    metadata, key_lines, preamble = _take_metadata(parts[0][1], "playbook", diag)
    check_metadata(metadata, "playbook", key_lines, diag.warn, section.heading.line)
    triggers: list[str] = []
    steps: list[Step] = []
    notes: list[str] = []
    for kind, part in parts[1:]:
        if kind == "triggers":
            triggers.extend(_bullet_texts(part))
        elif kind == "steps":
            steps.extend(_parse_steps(part, diag))
        else:
            notes.append("\n".join(_raw_lines(part)).strip())

    description = _description(preamble, metadata)
    _warn_placeholder_calls(description, section.heading.line, diag)
    public = any(metadata.get(key) is True for key in ("public", "export"))
    source = "\n".join([section.heading.raw] + _raw_lines(items)).rstrip() + "\n"
    return PlaybookSpec(
        name=name,
        kind="markdown",
        params=params,
        returns=returns,
        description=description,
        triggers=triggers,
        steps=steps,
        notes="\n\n".join(n for n in notes if n),
        line=section.heading.line,
        public=public,
        source=source,
        title=title,
        metadata=metadata,
    )


def _bullet_texts(items: list[_Item]) -> list[str]:
    """Bullets at any depth; a non-bullet line continues the bullet above it."""
    out: list[str] = []
    for item in items:
        if not isinstance(item, _Text) or not item.raw.strip() or _BREAK.match(item.raw):
            continue
        bullet = _BULLET.match(item.raw.strip())
        if bullet:
            if (bullet.group(2) or "").strip():
                out.append(bullet.group(2).strip())
        elif out:
            out[-1] += " " + item.raw.strip()
        else:
            out.append(item.raw.strip())
    return out


@dataclass
class _Open:
    indent: int
    reach: int  # deepest indent a child may start at
    step: Step


def _indent_width(text: str) -> int:
    """Columns of leading whitespace; a tab advances to the next multiple of 4."""
    width = 0
    for ch in text:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4 - width % 4
        else:
            break
    return width


def _parse_steps(items: list[_Item], diag: Diagnostics) -> list[Step]:
    """Nested bullets -> steps. Any deeper indent (2 spaces, 4 spaces, a tab) is
    one level down, as in Markdown: a child starts after its parent's marker and
    at most 3 columns past the parent's text."""
    roots: list[Step] = []
    stack: list[_Open] = []
    last: Step | None = None
    for item in items:
        if not isinstance(item, _Text) or not item.raw.strip() or _BREAK.match(item.raw):
            continue
        stripped = item.raw.strip()
        bullet = _BULLET.match(stripped)
        if not bullet:
            if last is not None:
                last.text = f"{last.text} {stripped}".strip()
            continue
        indent = _indent_width(item.raw)
        step = Step(id="", text=(bullet.group(2) or "").strip(), line=item.line, children=[])
        while stack and stack[-1].indent >= indent:
            stack.pop()
        if stack:
            parent = stack[-1]
            if indent > parent.reach:
                raise diag.error(
                    item.line,
                    "step is indented more than one level below the step above it "
                    "(indent nested steps by 2 or 4 spaces, or a tab, per level)",
                )
            parent.step.children.append(step)
        else:
            roots.append(step)
        stack.append(_Open(indent, indent + len(bullet.group(1)) + 4, step))
        last = step
    _number(roots, "")
    return roots


def _number(steps: list[Step], prefix: str) -> None:
    for index, step in enumerate(steps, start=1):
        step.id = f"{prefix}{index:02d}"
        _number(step.children, step.id + ".")


def _front_matter(source: Source) -> dict[str, Any]:
    if not source.front_matter:
        return {}
    diag = source.diagnostics
    rows = [(line, text) for line, text in source.front_matter if text.strip()]
    try:
        parsed = parse_block(rows)
    except MetadataError as error:
        diag.warn(error.line, f"front matter: {error} (ignored)")
        return {}
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        diag.warn(rows[0][0], "front matter: expected 'key: value' lines (ignored)")
        return {}
    lines = {str(key): line for line, text in rows for key in parsed if text.startswith(key)}
    check_metadata(parsed, "program", lines, diag.warn, rows[0][0])
    return parsed


# ---------------------------------------------------------------- public API


def parse_text(text: str, path: str = "<string>") -> Program:
    """Parse program text; `source_hash` is over its UTF-8 encoding (and its imports')."""
    return _parse(text, path, text.encode("utf-8"))


def load_program(path: str | os.PathLike[str]) -> Program:
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ProgramError(name, 0, "no such file") from None
    except IsADirectoryError:
        raise ProgramError(name, 0, "is a directory, not a .pb file") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProgramError(name, 1, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return _parse(text, name, data)


def _parse(text: str, path: str, data: bytes) -> Program:
    source = read_source(text, path)
    diag = source.diagnostics
    metadata = _front_matter(source)
    drafts = _group(_scan(source.lines, diag), diag)
    agents = [_build_agent(draft, diag) for draft in drafts]
    seen: dict[str, AgentSpec] = {}
    for agent in agents:
        if agent.name in seen:
            first = diag.where(seen[agent.name].line)[1]
            raise diag.error(
                agent.line, f"duplicate agent name {agent.name!r} (first defined at line {first})"
            )
        seen[agent.name] = agent
    # spec line numbers count lines of `text`: the file itself unless it imports
    expanded = "\n".join(source.lines) if source.imported else normalise(text)
    return Program(
        path=path,
        text=expanded,
        agents=agents,
        source_hash=_identity(path, data, source),
        files=list(source.files),
        warnings=diag.sorted_warnings(source.files),
        origin=list(diag.origin) if source.imported else [],
        metadata=metadata,
    )


def _identity(path: str, data: bytes, source: Source) -> str:
    """sha256 of the program's bytes; with imports, of every file it was built from."""
    digest = hashlib.sha256(data)
    base = os.path.dirname(os.path.abspath(path))
    for name, imported in zip(source.files[1:], source.imported, strict=True):
        relative = os.path.relpath(os.path.abspath(name), base)
        digest.update(b"\0" + relative.encode("utf-8") + b"\0" + imported)
    return digest.hexdigest()
