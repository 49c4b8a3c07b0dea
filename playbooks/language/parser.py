"""Deterministic `.pb` Markdown -> `Program` parser.

No LLM is involved: the same bytes always give the same program, which is what
lets a resumed execution trust step ids and line numbers recorded before a crash.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from dataclasses import dataclass, field

from playbooks.language.model import (
    AgentSpec,
    PlaybookSpec,
    Program,
    PythonBlock,
    Step,
    format_structure,
)

__all__ = ["ProgramError", "format_structure", "load_program", "parse_text"]

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_BULLET = re.compile(r"^([-*+]|\d{1,3}[.)])(?:[ \t]+(.*))?$")
_METADATA = re.compile(r"^([a-z][a-z0-9_]*)[ \t]*:[ \t]*(\S.*)$")
_SIGNATURE = re.compile(
    r"^(?P<name>[^()]*?)\s*(?:\((?P<params>.*)\))?\s*(?:->\s*(?P<ret>.*?))?\s*$"
)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_TRUE = {"true", "yes", "1", "on"}


class ProgramError(Exception):
    """A `.pb` file that cannot be run, pointing at the line to fix."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line
        self.message = message

    def __reduce__(self):  # keep picklable despite the 3-argument constructor
        return (type(self), (self.path, self.line, self.message))


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


def _scan(lines: list[str], path: str) -> list[_Item]:
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
                raise ProgramError(path, no, "code fence is never closed")
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


def _skip_front_matter(lines: list[str], path: str) -> list[str]:
    """Blank out a leading YAML `---` block so line numbers stay true."""
    if not lines or lines[0].strip() != "---":
        return lines
    for j in range(1, len(lines)):
        if lines[j].strip() in ("---", "..."):
            return [""] * (j + 1) + lines[j + 1 :]
    raise ProgramError(path, 1, "front matter '---' is never closed")


@dataclass
class _Section:
    heading: _Heading
    items: list[_Item] = field(default_factory=list)


@dataclass
class _AgentDraft:
    heading: _Heading
    preamble: list[_Item] = field(default_factory=list)
    sections: list[_Section] = field(default_factory=list)


def _group(items: list[_Item], path: str) -> list[_AgentDraft]:
    if not any(isinstance(it, _Heading) and it.level == 1 for it in items):
        raise ProgramError(path, 1, "no agent: expected a '# AgentName' heading")
    drafts: list[_AgentDraft] = []
    in_comment = False
    for item in items:
        if isinstance(item, _Heading) and item.level == 1:
            drafts.append(_AgentDraft(item))
        elif not drafts:
            in_comment = _check_before_agent(item, in_comment, path)
        elif isinstance(item, _Heading) and item.level == 2:
            drafts[-1].sections.append(_Section(item))
        elif drafts[-1].sections:
            drafts[-1].sections[-1].items.append(item)
        else:
            drafts[-1].preamble.append(item)
    return drafts


def _check_before_agent(item: _Item, in_comment: bool, path: str) -> bool:
    """Only blank lines and HTML comments may precede the first agent."""
    if isinstance(item, _Text):
        text = item.raw.strip()
        if in_comment:
            return "-->" not in text
        if not text:
            return False
        if text.startswith("<!--"):
            return "-->" not in text[4:]
    raise ProgramError(path, item.line, "text before the first '# AgentName' heading")


def _build_agent(draft: _AgentDraft, path: str) -> AgentSpec:
    name = draft.heading.title.split(":", 1)[0].strip()
    if not name:
        raise ProgramError(path, draft.heading.line, "agent heading has no name")
    blocks: list[PythonBlock] = []
    playbooks: list[PlaybookSpec] = []
    for item in draft.preamble + [it for s in draft.sections for it in s.items]:
        if isinstance(item, _Fence) and item.is_python:
            blocks.append(PythonBlock(_join(item.body), item.line + 1))
    blocks.sort(key=lambda b: b.line)
    for section in draft.sections:
        spec = _build_markdown(section, path)
        if spec is not None:
            playbooks.append(spec)
    for block in blocks:
        playbooks.extend(_python_playbooks(block, path))
    playbooks.sort(key=lambda pb: pb.line)
    seen: dict[str, int] = {}
    for pb in playbooks:
        if pb.name in seen:
            raise ProgramError(
                path,
                pb.line,
                f"duplicate playbook name {pb.name!r} in agent {name!r} "
                f"(first defined at line {seen[pb.name]})",
            )
        seen[pb.name] = pb.line
    description = "\n".join(_raw_lines(draft.preamble)).strip()
    return AgentSpec(name, description, playbooks, blocks, draft.heading.line)


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


def _build_markdown(section: _Section, path: str) -> PlaybookSpec | None:
    items = section.items
    has_code = any(isinstance(it, _Fence) for it in items)
    only_code = all(
        isinstance(it, _Fence) or (isinstance(it, _Text) and not it.raw.strip()) for it in items
    )
    if has_code and only_code:
        return None  # a "## Python playbooks" container, not a playbook
    name, params, returns = _parse_signature(section.heading, path)

    parts: list[tuple[str, list[_Item]]] = [("", [])]
    for item in items:
        if isinstance(item, _Heading) and item.level == 3:
            parts.append((item.title.strip().lower(), []))
        else:
            parts[-1][1].append(item)

    metadata: dict[str, str] = {}
    description_lines: list[str] = []
    for item in parts[0][1]:
        match = _METADATA.match(item.raw) if isinstance(item, _Text) else None
        if match:
            metadata[match.group(1)] = match.group(2).strip()
        else:
            description_lines.extend(_raw_lines([item]))

    triggers: list[str] = []
    steps: list[Step] = []
    notes: list[str] = []
    for title, part in parts[1:]:
        if title in ("triggers", "trigger"):
            triggers.extend(_bullet_texts(part))
        elif title in ("steps", "step"):
            steps.extend(_parse_steps(part, path))
        elif title in ("notes", "note"):
            notes.append("\n".join(_raw_lines(part)).strip())
        else:
            notes.append(f"### {title}\n" + "\n".join(_raw_lines(part)).strip())

    public = any(metadata.get(key, "").lower() in _TRUE for key in ("public", "export"))
    source = "\n".join([section.heading.raw] + _raw_lines(items)).rstrip() + "\n"
    return PlaybookSpec(
        name=name,
        kind="markdown",
        params=params,
        returns=returns,
        description="\n".join(description_lines).strip(),
        triggers=triggers,
        steps=steps,
        notes="\n\n".join(n for n in notes if n),
        line=section.heading.line,
        public=public,
        source=source,
    )


def _parse_signature(heading: _Heading, path: str) -> tuple[str, list[str], str | None]:
    match = _SIGNATURE.match(heading.title)
    if match is None:
        name, params, returns = heading.title.strip(), [], None
    else:
        name = match.group("name").strip()
        params = [p for p in (_param_name(s) for s in _split_params(match.group("params"))) if p]
        returns = (match.group("ret") or "").strip() or None
    if not name:
        raise ProgramError(path, heading.line, "playbook heading has no name")
    return name, params, returns


def _split_params(text: str | None) -> list[str]:
    """Split on top-level commas so defaults like `$xs=[1, 2]` stay whole."""
    if not text:
        return []
    out, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return out


def _param_name(text: str) -> str:
    text = text.strip().lstrip("*").lstrip("$").strip()
    match = _IDENT.match(text)
    return match.group(0) if match else re.split(r"[:=]", text, maxsplit=1)[0].strip()


def _bullet_texts(items: list[_Item]) -> list[str]:
    """Bullets at any depth; a non-bullet line continues the bullet above it."""
    out: list[str] = []
    for item in items:
        if not isinstance(item, _Text) or not item.raw.strip():
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
    reach: int  # deepest indent a child may start at: one level below this bullet
    step: Step


def _indent_width(text: str) -> int:
    """A tab is one nesting level, the same as two spaces."""
    lead = text[: len(text) - len(text.lstrip(" \t"))]
    return len(lead) + lead.count("\t")


def _parse_steps(items: list[_Item], path: str) -> list[Step]:
    roots: list[Step] = []
    stack: list[_Open] = []
    last: Step | None = None
    for item in items:
        if not isinstance(item, _Text) or not item.raw.strip():
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
                raise ProgramError(
                    path,
                    item.line,
                    "step is indented more than one level below the step above it "
                    "(indent nested steps by 2 spaces per level)",
                )
            parent.step.children.append(step)
        else:
            roots.append(step)
        stack.append(_Open(indent, indent + max(3, len(bullet.group(1)) + 1), step))
        last = step
    _number(roots, "")
    return roots


def _number(steps: list[Step], prefix: str) -> None:
    for index, step in enumerate(steps, start=1):
        step.id = f"{prefix}{index:02d}"
        _number(step.children, step.id + ".")


def _python_playbooks(block: PythonBlock, path: str) -> list[PlaybookSpec]:
    try:
        tree = ast.parse(block.source)
    except SyntaxError as exc:
        line = block.line + (exc.lineno or 1) - 1
        raise ProgramError(path, line, f"Python syntax error: {exc.msg}") from None
    lines = block.source.split("\n")
    out: list[PlaybookSpec] = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        decorators = [d for d in node.decorator_list if _is_playbook_decorator(d)]
        if not decorators:
            continue
        if isinstance(node, ast.FunctionDef):
            raise ProgramError(
                path,
                block.line + node.lineno - 1,
                f"@playbook function {node.name!r} must be 'async def'",
            )
        out.append(_python_spec(node, decorators, lines, block.line, path))
    return out


def _is_playbook_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id == "playbook"
    return isinstance(target, ast.Attribute) and target.attr == "playbook"


def _python_spec(
    node: ast.AsyncFunctionDef,
    decorators: list[ast.expr],
    lines: list[str],
    offset: int,
    path: str,
) -> PlaybookSpec:
    triggers: list[str] = []
    public = False
    for deco in decorators:
        if not isinstance(deco, ast.Call):
            continue
        for kw in deco.keywords:
            pb_line = offset + kw.value.lineno - 1
            if kw.arg == "triggers":
                value = _literal(kw.value)
                if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise ProgramError(path, pb_line, "triggers must be a list of strings")
                triggers.extend(value)
            elif kw.arg in ("public", "export"):
                public = public or bool(_literal(kw.value))
    args = node.args
    params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body, body_line = _body_source(node, lines)
    return PlaybookSpec(
        name=node.name,
        kind="python",
        params=params,
        returns=ast.unparse(node.returns) if node.returns is not None else None,
        description=ast.get_docstring(node) or "",
        triggers=triggers,
        steps=[],
        notes="",
        line=offset + node.lineno - 1,
        public=public,
        source="\n".join(lines[first - 1 : node.end_lineno]) + "\n",
        body_source=body,
        body_line=offset + body_line - 1,
    )


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _body_source(node: ast.AsyncFunctionDef, lines: list[str]) -> tuple[str, int]:
    """The body without its docstring, moved to column 0 so it can run statement by statement."""
    stmts = list(node.body)
    if ast.get_docstring(node) is not None:
        stmts = stmts[1:]
    if not stmts:
        return "", node.body[0].lineno
    start, end = stmts[0].lineno, stmts[-1].end_lineno or stmts[-1].lineno
    col = stmts[0].col_offset  # utf-8 bytes, like every ast column
    first_bytes = lines[start - 1].encode("utf-8")
    inside_strings = _string_continuation_lines(stmts)
    if first_bytes[:col].strip():  # one-liner: `async def f(): return 1`
        out = [first_bytes[col:].decode("utf-8")] + lines[start:end]
        return _join(out), start
    out = []
    for number in range(start, end + 1):
        text = lines[number - 1]
        if number in inside_strings:
            out.append(text)
        elif text[:col].strip() == "":
            out.append(text[col:])
        else:
            out.append(text.lstrip())
    return _join(out), start


def _string_continuation_lines(stmts: list[ast.stmt]) -> set[int]:
    """Lines that begin inside a multi-line string: dedenting them would change the string."""
    found: set[int] = set()
    for stmt in stmts:
        for sub in ast.walk(stmt):
            is_text = isinstance(sub, ast.JoinedStr) or (
                isinstance(sub, ast.Constant) and isinstance(sub.value, (str, bytes))
            )
            if is_text and sub.end_lineno and sub.end_lineno > sub.lineno:
                found.update(range(sub.lineno + 1, sub.end_lineno + 1))
    return found


# ---------------------------------------------------------------- public API


def parse_text(text: str, path: str = "<string>") -> Program:
    """Parse program text; `source_hash` is over its UTF-8 encoding."""
    return _parse(text, path, hashlib.sha256(text.encode("utf-8")).hexdigest())


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
    return _parse(text, name, hashlib.sha256(data).hexdigest())


def _parse(text: str, path: str, digest: str) -> Program:
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = _skip_front_matter(text.split("\n"), path)
    drafts = _group(_scan(lines, path), path)
    agents = [_build_agent(draft, path) for draft in drafts]
    return Program(path=path, text=text, agents=agents, source_hash=digest)
