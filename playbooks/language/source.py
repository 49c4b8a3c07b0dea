"""From a file's bytes to the lines the parser reads.

Everything that is not program structure is settled here, before any heading is
looked at: the shebang, YAML front matter, HTML comments and `!import`. Each
line the parser sees keeps its origin (file and line), so errors and warnings
point at the file a person has to edit, imported or not.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Diagnostics", "ProgramError", "Source", "normalise", "read_source"]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")
_IMPORT = re.compile(r"^([ \t]*)!import[ \t]+(\S.*?)[ \t]*$")
_MAX_IMPORT_DEPTH = 16


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
class Diagnostics:
    """Where each parsed line came from, and the warnings collected on the way.

    Line numbers inside the parser count lines of the expanded text (the
    program with its imports inlined); these map them back to real files.
    """

    path: str
    origin: list[tuple[str, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _keys: list[tuple[str, int]] = field(default_factory=list)

    def where(self, line: int) -> tuple[str, int]:
        if 1 <= line <= len(self.origin):
            return self.origin[line - 1]
        return self.path, line

    def error(self, line: int, message: str) -> ProgramError:
        path, number = self.where(line)
        return ProgramError(path, number, message)

    def warn(self, line: int, message: str) -> None:
        path, number = self.where(line)
        text = f"{path}:{number}: {message}"
        if text not in self.warnings:
            self.warnings.append(text)
            self._keys.append((path, number))

    def sorted_warnings(self, files: list[str]) -> list[str]:
        """In reading order: by file (the program first), then line."""
        rank = {name: index for index, name in enumerate(files)}
        order = sorted(
            range(len(self.warnings)),
            key=lambda i: (rank.get(self._keys[i][0], len(rank)), self._keys[i][1], i),
        )
        return [self.warnings[i] for i in order]


@dataclass
class Source:
    """The expanded program text, one entry per line, with its origins."""

    lines: list[str]
    diagnostics: Diagnostics
    files: list[str]  # the program file first, then every imported file once
    front_matter: list[tuple[int, str]]  # (line, text) inside the leading `---` block
    imported: list[bytes] = field(default_factory=list)  # bytes of files[1:], as read


def read_source(text: str, path: str) -> Source:
    """Normalise, strip non-program text and inline imports, keeping line origins."""
    lines = normalise(text).split("\n")
    diagnostics = Diagnostics(path)
    if lines and lines[0].startswith("#!"):
        lines[0] = ""  # a shebang (`#!/usr/bin/env pb`) lets the file run as a script
    lines, front = _take_front_matter(lines, path)
    lines = _blank_comments(lines, path)
    root = Path(path).resolve().parent if path != "<string>" else Path.cwd().resolve()
    source = Source([], diagnostics, [path], front)
    _expand(lines, path, root, source, [Path(path).resolve()])
    return source


def normalise(text: str) -> str:
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _take_front_matter(lines: list[str], path: str) -> tuple[list[str], list[tuple[int, str]]]:
    """Blank out a leading YAML `---` block (after a shebang, if any) so line numbers stay true."""
    start = 1 if lines and not lines[0].strip() and len(lines) > 1 else 0
    if start and lines[1].strip() != "---":
        start = 0
    if not lines or lines[start].strip() != "---":
        return lines, []
    for j in range(start + 1, len(lines)):
        if lines[j].strip() in ("---", "..."):
            front = [(k + 1, lines[k]) for k in range(start + 1, j)]
            return [""] * (j + 1) + lines[j + 1 :], front
    raise ProgramError(path, start + 1, "front matter '---' is never closed")


def _fence_after(line: str, fence: str) -> str:
    """The open fence marker after `line` ("" when outside any fence)."""
    if not fence:
        opened = _FENCE.match(line)
        return opened.group(1) if opened else ""
    closed = _FENCE_CLOSE.match(line)
    if closed and closed.group(1)[0] == fence[0] and len(closed.group(1)) >= len(fence):
        return ""
    return fence


def _blank_comments(lines: list[str], path: str) -> list[str]:
    """Remove `<!-- ... -->` outside code fences; whatever a comment holds (even
    `#` lines) is not program text. Lines are kept (emptied) so numbers stay true."""
    out: list[str] = []
    fence = ""
    in_comment = False
    opened_at = 0
    for number, line in enumerate(lines, start=1):
        if not in_comment and (fence or "<!--" not in line):
            fence = _fence_after(line, fence)
            out.append(line)
            continue
        kept, rest = [], line
        while rest:
            if in_comment:
                end = rest.find("-->")
                rest, in_comment = ("", True) if end < 0 else (rest[end + 3 :], False)
            else:
                start = rest.find("<!--")
                if start < 0:
                    kept.append(rest)
                    rest = ""
                else:
                    kept.append(rest[:start])
                    rest, in_comment, opened_at = rest[start + 4 :], True, number
        joined = "".join(kept)
        out.append(joined if joined.strip() else "")
    if in_comment:  # everything after it would vanish without a word
        raise ProgramError(path, opened_at, "HTML comment '<!--' is never closed")
    return out


def _expand(
    lines: list[str],
    path: str,
    root: Path,
    source: Source,
    chain: list[Path],
) -> None:
    """Inline `!import path` lines (outside fences), indented like the directive."""
    fence = ""
    for number, line in enumerate(lines, start=1):
        directive = None if fence else _IMPORT.match(line)
        fence = _fence_after(line, fence)
        if directive is None:
            source.lines.append(line)
            source.diagnostics.origin.append((path, number))
            continue
        indent, target = directive.group(1), directive.group(2).strip("\"'")
        resolved = (Path(path).resolve().parent / target).resolve()
        if not _inside(resolved, root):
            raise ProgramError(
                path, number, f"!import {target}: outside the program's folder ({root})"
            )
        if resolved in chain:
            raise ProgramError(path, number, f"!import {target}: imports itself (a cycle)")
        if len(chain) > _MAX_IMPORT_DEPTH:
            raise ProgramError(path, number, f"!import {target}: imports nested too deeply")
        try:
            data = resolved.read_bytes()
        except FileNotFoundError:
            raise ProgramError(path, number, f"!import {target}: no such file") from None
        except IsADirectoryError:
            raise ProgramError(path, number, f"!import {target}: is a directory") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ProgramError(path, number, f"!import {target}: not UTF-8 text") from None
        shown = os.path.relpath(resolved) if not os.path.isabs(path) else str(resolved)
        if shown not in source.files:
            source.files.append(shown)
            source.imported.append(data)
        imported = [indent + t if t.strip() else t for t in normalise(text).split("\n")]
        if imported and imported[-1] == "":
            imported.pop()
        _expand(_blank_comments(imported, shown), shown, root, source, chain + [resolved])


def _inside(candidate: Path, root: Path) -> bool:
    try:
        candidate.relative_to(root)
    except ValueError:
        return False
    return True
