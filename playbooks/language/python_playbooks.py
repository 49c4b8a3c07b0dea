"""Python playbooks: `@playbook` functions found in an agent's python blocks."""

from __future__ import annotations

import ast
import re

from playbooks.language.metadata import check_metadata
from playbooks.language.model import PlaybookSpec, PythonBlock
from playbooks.language.source import Diagnostics

__all__ = ["python_playbooks"]

_DOC_SECTION = re.compile(r"^\s*#{2,6}\s*(triggers?)\s*:?\s*$", re.IGNORECASE)
_DOC_BULLET = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+(.*\S)\s*$")
_Function = ast.FunctionDef | ast.AsyncFunctionDef


def python_playbooks(block: PythonBlock, diag: Diagnostics) -> list[PlaybookSpec]:
    try:
        tree = ast.parse(block.source)
    except SyntaxError as exc:
        number = exc.lineno or 1
        lines = block.source.split("\n")
        code = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        shown = f" in `{code}`" if code else ""
        raise diag.error(
            block.line + number - 1, f"python block is not valid Python: {exc.msg}{shown}"
        ) from None
    lines = block.source.split("\n")
    out: list[PlaybookSpec] = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        decorators = [d for d in node.decorator_list if _is_playbook_decorator(d)]
        if decorators:
            out.append(_python_spec(node, decorators, lines, block.line, diag))
    return out


def _is_playbook_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id == "playbook"
    return isinstance(target, ast.Attribute) and target.attr == "playbook"


def _python_spec(
    node: _Function,
    decorators: list[ast.expr],
    lines: list[str],
    offset: int,
    diag: Diagnostics,
) -> PlaybookSpec:
    triggers: list[str] = []
    public = False
    metadata: dict[str, object] = {}
    key_lines: dict[str, int] = {}
    for deco in decorators:
        if not isinstance(deco, ast.Call):
            continue
        for kw in deco.keywords:
            line = offset + kw.value.lineno - 1
            value = _literal(kw.value)
            if kw.arg == "triggers":
                if value is _NOT_LITERAL:
                    value = None
                elif isinstance(value, str):
                    value = [value]
                if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise diag.error(line, "triggers must be a string or a list of strings")
                triggers.extend(value)
            elif kw.arg == "metadata" and isinstance(value, dict):
                metadata.update({str(k): v for k, v in value.items()})
                key_lines.update({str(k): line for k in value})
            elif kw.arg is not None:
                metadata[kw.arg] = ast.unparse(kw.value) if value is _NOT_LITERAL else value
                key_lines[kw.arg] = line
    for key in ("public", "export"):
        public = public or metadata.get(key) is True
    line = offset + node.lineno - 1
    check_metadata(metadata, "playbook", key_lines, diag.warn, line)
    description, doc_triggers = _split_docstring(ast.get_docstring(node) or "")
    triggers.extend(doc_triggers)
    args = node.args
    params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body, body_line = _body_source(node, lines)
    return PlaybookSpec(
        name=node.name,
        kind="python",
        params=params,
        returns=ast.unparse(node.returns) if node.returns is not None else None,
        description=description,
        triggers=triggers,
        steps=[],
        notes="",
        line=line,
        public=public,
        source="\n".join(lines[first - 1 : node.end_lineno]) + "\n",
        body_source=body,
        body_line=offset + body_line - 1,
        title=node.name,
        metadata=metadata,
        sync=isinstance(node, ast.FunctionDef),
    )


def _split_docstring(doc: str) -> tuple[str, list[str]]:
    """A `### Triggers` list inside a docstring gives triggers; the rest is the description."""
    kept: list[str] = []
    triggers: list[str] = []
    in_section = False
    for text in doc.split("\n"):
        if _DOC_SECTION.match(text):
            in_section = True
            continue
        if in_section:
            bullet = _DOC_BULLET.match(text)
            if bullet:
                triggers.append(bullet.group(1))
                continue
            if not text.strip():
                continue
            in_section = False
        kept.append(text)
    return "\n".join(kept).strip(), triggers


_NOT_LITERAL = object()


def _literal(node: ast.expr) -> object:
    """The value of a literal argument, or `_NOT_LITERAL` for code (a name, a call)."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _NOT_LITERAL


def _body_source(node: _Function, lines: list[str]) -> tuple[str, int]:
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


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


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
