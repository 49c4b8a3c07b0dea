"""Streaming statement splitter: decides which top-level statements are complete.

The executor runs each top-level statement of the model's code as soon as it is
provably complete, while the rest is still streaming. This module only decides
*which* statements are complete; it never executes anything.

How: complete lines are classified (fence, prose, code). Code lines are
rewritten (`$name` -> `name`) by an incremental scanner that also tells whether
a line starts outside any bracket, string or continuation. Text from the first
unconsumed line is compiled only (a) when its first logical line ends, so a
simple statement is emitted at once, and (b) when a later column-0 line starts a
new statement, which completes compound statements. The compiler answers
complete, incomplete or invalid (`PyCF_ALLOW_INCOMPLETE_INPUT`); consumed text
is never compiled again, so the total work is linear in the response length.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass

from playbooks.execution.dollar import DollarScanner, rewrite_dollars

__all__ = ["Statement", "StatementSplitter"]

PyCF_ALLOW_INCOMPLETE_INPUT = 0x4000
_HAS_INCOMPLETE_FLAG = sys.version_info >= (3, 11)
_FINAL_FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_FLAGS = _FINAL_FLAGS | (PyCF_ALLOW_INCOMPLETE_INPUT if _HAS_INCOMPLETE_FLAG else 0)

_CODE_FENCE_INFO = frozenset({"", "python", "py", "python3", "py3"})
_CONTINUATION = re.compile(r"(else|elif|except|finally)\b")
_CASE = re.compile(r"case\b")

# Python 3.10 has no incomplete-input flag: these errors at the end mean "wait".
_EOF_MESSAGES = ("unexpected EOF", "was never closed", "unterminated triple-quoted")
_COMPOUND: tuple[type, ...] = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.Try,
    ast.With,
    ast.AsyncWith,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Match,
) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())


@dataclass
class Statement:
    """One complete top-level statement, positioned in the response's own lines."""

    index: int  # 0-based position among the top-level statements of this response
    node: ast.stmt  # parsed after rewrite_dollars; linenos in response numbering
    source: str  # the statement as the model wrote it (with $names), no trailing newline
    start_line: int  # response line numbers, 1-based, inclusive (decorators included)
    end_line: int
    start_offset: int = -1  # where start_line begins in the ("\r\n" -> "\n") text
    fenced: bool = False  # the code is inside a ```python fence


class StatementSplitter:
    """Feed the model's text in any chunks; get back each statement once it is complete.

    No call both returns statements and raises: when a call completes some
    statements and then meets invalid code, it returns them and the next call
    (`feed` or `finish`) raises the `SyntaxError`. So end a response with
    `while stmts := splitter.finish(): run(stmts)`; after a clean end `finish()`
    returns `[]`. Once raised, every later call raises the same error.
    """

    def __init__(self, filename: str = "<llm>") -> None:
        self.filename = filename
        self._raw: list[str] = []  # chunks exactly as fed
        self._prefix: tuple[str, int] | None = None  # text skipped on resume, and its length
        self._carry = ""  # a chunk-final "\r" that may be half of "\r\n"
        self._partial: list[str] = []  # normalised pieces of the unfinished last line
        self._lineno = 0  # response lines classified so far
        self._offset = 0  # characters of the lines classified so far ("\n" line ends)
        self._line_start = 0  # where the line being classified starts
        self._region_offset = 0  # where the unconsumed region (line _start) starts
        self._mode = "start"  # start | bare | fence | outside | other
        self._scanner = DollarScanner()
        self._code_lines: list[str] = []
        # The unconsumed region: response lines from _start on, as compiled.
        self._start = 1
        self._rew: list[str] = []  # rewritten lines ("\n" for non-code lines)
        self._orig: list[str] = []  # original lines without "\n" ("" for non-code)
        self._dollars: list[list[int]] = []  # per line: where a `$` was removed
        self._first_checked = False  # the region's first logical line was compiled
        self._count = 0
        self._error: SyntaxError | None = None
        self._finished = False

    @property
    def text(self) -> str:
        """The full raw response received so far, exactly as fed (no CRLF normalisation)."""
        if self._prefix is not None:
            self._raw.insert(0, self._prefix[0][: self._prefix[1]])
            self._prefix = None
        return "".join(self._raw)

    @property
    def code(self) -> str:
        """The code lines seen so far (fences and prose removed), "\\n"-joined.

        Only complete lines count until `finish()`; `$name` is kept as written.
        """
        return "\n".join(self._code_lines)

    @property
    def count(self) -> int:
        """How many statements have been returned so far."""
        return self._count

    def feed(self, text: str) -> list[Statement]:
        """Take the next chunk; return the statements it makes provably complete."""
        self._check()
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._raw.append(text)
        data = self._carry + text
        self._carry = ""
        if data.endswith("\r"):
            self._carry, data = "\r", data[:-1]
        data = data.replace("\r\n", "\n")
        nl = data.rfind("\n")
        if nl < 0:
            self._partial.append(data)
            return []
        block = "".join(self._partial) + data[: nl + 1]
        self._partial = [data[nl + 1 :]] if nl + 1 < len(data) else []
        return self._run(block.split("\n")[:-1], final=False)

    def skip(self, text: str, offset: int, lines: int, *, fenced: bool) -> None:
        """Resume after ``text[:offset]`` (its first ``lines`` whole lines) without reading it.

        The code before a resumed statement already ran: it is kept as text
        (``text`` stays the whole response) but never classified or compiled
        again, so a resume costs the same after ten statements or ten thousand.
        """
        if self._raw or self._lineno:
            raise RuntimeError("skip() must come before anything is fed")

        self._prefix = (text, offset)  # not copied: a large response costs nothing here
        self._lineno = lines
        self._offset = self._region_offset = offset
        self._start = lines + 1
        self._mode = "fence" if fenced else "bare"

    def finish(self) -> list[Statement]:
        """End of stream: return every remaining statement (see the class note on errors)."""
        self._check()
        if self._finished:
            return []
        self._finished = True
        last = "".join(self._partial) + ("\n" if self._carry else "")
        self._partial, self._carry = [], ""
        lines = last.split("\n")
        if lines[-1] == "":
            lines.pop()
        return self._run(lines, final=True)

    # -- line handling -------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self, lines: list[str], final: bool) -> list[Statement]:
        out: list[Statement] = []
        try:
            for body in lines:
                out += self._line(body)
            if final:
                out += self._flush()
        except SyntaxError:
            if not out:
                raise
        return out

    def _line(self, body: str) -> list[Statement]:
        """Classify one complete line (without its "\\n") and act on it."""
        self._lineno += 1
        self._line_start = self._offset
        self._offset += len(body) + 1
        stripped = body.strip()
        fence = stripped.startswith("```") and self._scanner.at_top_level
        info = stripped[3:].strip().split(" ")[0].lower() if fence else ""
        mode = self._mode
        if mode == "start":
            if fence:
                self._mode = "fence" if info in _CODE_FENCE_INFO else "other"
            elif stripped and not self._is_prose(body):
                self._mode = "bare"
                return self._code(body)
        elif mode in ("bare", "fence"):
            if not fence:
                return self._code(body)
            if not (info and info in _CODE_FENCE_INFO):  # "```python" inside code: ignore
                self._mode = "outside"
        elif mode == "outside":
            if fence:
                self._mode = "fence" if info in _CODE_FENCE_INFO else "other"
        elif fence:  # "other": a non-Python block ends at any fence line
            self._mode = "outside"
        self._skip_line()
        return []

    def _is_prose(self, body: str) -> bool:
        """Before any code, a line that cannot begin Python code is prose."""
        try:
            compile(rewrite_dollars(body + "\n"), self.filename, "exec", _FLAGS)
        except SyntaxError as e:
            return not _is_incomplete(e, body + "\n")
        return False

    def _skip_line(self) -> None:
        if self._rew:
            self._rew.append("\n")
            self._orig.append("")
            self._dollars.append([])
        else:
            self._start = self._lineno + 1
            self._region_offset = self._offset

    def _code(self, body: str) -> list[Statement]:
        self._code_lines.append(body)
        out: list[Statement] = []
        cut_off = False
        if self._scanner.at_top_level:
            if not self._rew and (not body.strip() or body.lstrip().startswith("#")):
                self._start = self._lineno + 1  # nothing pending: drop blank/comment
                self._region_offset = self._offset
                return out
            if self._rew and _starts_statement(body):
                tree = self._parse(final=False)
                if tree is not None:
                    out = self._take(tree)
                else:  # only a decorator may still be open when a new statement starts
                    cut_off = not self._awaits_definition()
        if not self._rew:
            self._start = self._lineno
            self._region_offset = self._line_start
        rewritten, dollars = self._scanner.rewrite(body + "\n")
        self._rew.append(rewritten)
        self._orig.append(body)
        self._dollars.append(dollars)
        if cut_off:
            self._parse(final=True)  # raises, e.g. "expected an indented block"
        if not self._first_checked and self._scanner.at_top_level:
            self._first_checked = True
            tree = self._parse(final=False)
            if tree is not None and not any(isinstance(n, _COMPOUND) for n in tree.body):
                out += self._take(tree)
        return out

    def _awaits_definition(self) -> bool:
        """Is the region's last code line a decorator (the one valid open end here)?"""
        for line in reversed(self._orig):
            text = line.lstrip()
            if text and not text.startswith("#"):
                return text.startswith("@")
        return False

    def _flush(self) -> list[Statement]:
        if not self._rew:
            return []
        tree = self._parse(final=True)
        return self._take(tree) if tree is not None else []

    # -- compiling and emitting -----------------------------------------------

    def _parse(self, final: bool) -> ast.Module | None:
        """Compile the unconsumed region: a tree, None if incomplete, or raise."""
        src = "".join(self._rew)
        try:
            return compile(src, self.filename, "exec", _FINAL_FLAGS if final else _FLAGS)
        except SyntaxError as e:
            if not final and _is_incomplete(e, src):
                return None
            self._error = self._relocate(e)
            raise self._error from None

    def _relocate(self, e: SyntaxError) -> SyntaxError:
        """The same error, with line numbers in the response's numbering."""
        shift = self._start - 1
        lineno = e.lineno + shift if e.lineno is not None else None
        end = e.end_lineno + shift if e.end_lineno is not None else None
        cls = type(e) if type(e) in (SyntaxError, IndentationError, TabError) else SyntaxError
        return cls(e.msg, (self.filename, lineno, e.offset, e.text, end, e.end_offset))

    def _take(self, tree: ast.Module) -> list[Statement]:
        """Turn a compiled region into Statements and mark it consumed."""
        shift = self._start - 1
        out: list[Statement] = []
        for node in tree.body:
            ast.increment_lineno(node, shift)
            out.append(self._statement(node))
        self._rew, self._orig, self._dollars = [], [], []
        self._first_checked = False
        return out

    def _statement(self, node: ast.stmt) -> Statement:
        decorators = getattr(node, "decorator_list", None)
        if decorators:  # top-level decorators always start at column 0
            first, first_col = decorators[0].lineno, 0
        else:
            first = node.lineno
            first_col = self._orig_col(first, node.col_offset)
        last = node.end_lineno if node.end_lineno is not None else node.lineno
        end_byte = node.end_col_offset if node.end_col_offset is not None else 0
        last_col = self._orig_col(last, end_byte)
        lines = self._orig[first - self._start : last - self._start + 1]
        if len(lines) == 1:
            source = lines[0][first_col:last_col]
        else:
            source = "\n".join([lines[0][first_col:], *lines[1:-1], lines[-1][:last_col]])
        self._count += 1
        offset = self._region_offset + sum(
            len(line) + 1 for line in self._orig[: first - self._start]
        )
        return Statement(self._count - 1, node, source, first, last, offset, self._mode == "fence")

    def _orig_col(self, lineno: int, byte_col: int) -> int:
        """Map a UTF-8 column of the rewritten line to a character column of the original."""
        i = lineno - self._start
        rewritten = self._rew[i]
        col = byte_col if rewritten.isascii() else len(rewritten.encode()[:byte_col].decode())
        # Each `$` removed before `col` shifts it one right. One whose name starts
        # exactly at `col` is not counted: a start then lands on the `$` itself,
        # and an (exclusive) end correctly stops before it.
        return col + sum(1 for p in self._dollars[i] if p < col)


def _starts_statement(body: str) -> bool:
    """A column-0 line that can only begin a new statement (not else/except/...)."""
    if not body or body[0] in " \t\f#":
        return False
    if _CONTINUATION.match(body):
        return False
    # `case` is a soft keyword: only a line like `case ...:` continues a match.
    return not (_CASE.match(body) and body.split("#")[0].rstrip().endswith(":"))


def _is_incomplete(e: SyntaxError, src: str) -> bool:
    """Did the compiler stop because the text ended too early (not because it is wrong)?"""
    if _HAS_INCOMPLETE_FLAG:
        return e.msg == "incomplete input" or type(e).__name__ == "_IncompleteInputError"
    if any(m in e.msg for m in _EOF_MESSAGES):
        return True
    lines = src.rstrip("\n").split("\n")
    code = [n for n, line in enumerate(lines, 1) if line.strip() and line.strip()[0] != "#"]
    last = code[-1] if code else len(lines)
    if e.lineno is None or e.lineno < last:
        return False
    if "expected an indented block" in e.msg:
        return True
    return lines[last - 1].lstrip().startswith("@")  # a decorator awaiting its def
