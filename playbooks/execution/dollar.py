"""The `$name` rewrite: playbook variables written as `$name` become plain `name`.

Models write `$x = ...` and `f"{$x}"`; Python needs `x`. The rewrite must not
touch `$` inside string literals, comments or the literal parts of f-strings,
and must keep every newline where it was so that line numbers in errors and in
the AST still point at the model's own text. A hand-written scanner (one pass,
one character at a time) does this in linear time and also tells the splitter
whether a line ends inside a bracket, a string or a backslash continuation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["DollarScanner", "rewrite_dollars"]

_IDENT = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"\d\w*")
_STRING_PREFIXES = frozenset({"r", "u", "b", "br", "rb", "f", "fr", "rf"})
_STR_PLAIN = re.compile(r"[^\\\n'\"{}]*")
_OPEN = "([{"
_CLOSE = ")]}"


@dataclass
class _Code:
    """Python code: the top level, or one f-string replacement field `{...}`."""

    depth: int = 0
    field_of: _Str | None = None  # the f-string this field belongs to, if any


@dataclass
class _Str:
    quote: str  # ', ", ''' or """
    raw: bool = False
    fmt: bool = False

    @property
    def triple(self) -> bool:
        return len(self.quote) == 3


@dataclass
class _Spec:
    """The format spec after `:` in an f-string field: literal text with nested fields."""

    field_of: _Str


@dataclass
class DollarScanner:
    """Incremental `$name` rewriter; feed it consecutive pieces of one source text.

    The state carries across calls, so the splitter feeds one line at a time and
    asks `at_top_level` to learn whether the next line starts a fresh logical line.
    """

    _stack: list[_Code | _Str | _Spec] = field(default_factory=lambda: [_Code()])
    _continued: bool = False

    @property
    def at_top_level(self) -> bool:
        """True when the text so far ends outside any bracket, string or continuation."""
        root = self._stack[0]
        assert isinstance(root, _Code)
        return len(self._stack) == 1 and root.depth == 0 and not self._continued

    def rewrite(self, text: str) -> tuple[str, list[int]]:
        """Rewrite `text`; also return where (in the result) each removed `$` stood."""
        out: list[str] = []
        removed: list[int] = []
        shift = 0  # number of `$` dropped so far in this call
        start = 0  # start of the pending slice of `text` to copy to `out`
        i = 0
        n = len(text)
        self._continued = False
        while i < n:
            top = self._stack[-1]
            if isinstance(top, _Code):
                c = text[i]
                if c == "$":
                    m = _IDENT.match(text, i + 1)
                    if m is None:
                        i += 1
                        continue
                    out.append(text[start:i])
                    removed.append(i - shift)
                    shift += 1
                    start = i + 1
                    i = m.end()
                    self._continued = False
                elif c == "#":
                    nl = text.find("\n", i)
                    i = n if nl < 0 else nl
                else:
                    i = self._code_char(text, i, top)
            elif isinstance(top, _Str):
                i = self._string_char(text, i, top)
            else:
                i = self._spec_char(text, i, top)
        out.append(text[start:])
        return "".join(out), removed

    def _code_char(self, text: str, i: int, top: _Code) -> int:
        c = text[i]
        if c == "\\" and text.startswith("\n", i + 1):
            self._continued = True
            return i + 2
        self._continued = False
        if c in "'\"":
            return self._open_string(text, i, "")
        if c in "0123456789":
            return _NUMBER.match(text, i).end()  # type: ignore[union-attr]
        if c == "_" or c.isalpha():
            m = _IDENT.match(text, i)
            if m is None:
                return i + 1
            word = m.group()
            if word.lower() in _STRING_PREFIXES and text.startswith(("'", '"'), m.end()):
                return self._open_string(text, m.end(), word.lower())
            return m.end()
        if c in _OPEN:
            top.depth += 1
        elif c in _CLOSE:
            if top.field_of is not None and top.depth == 0 and c == "}":
                self._stack.pop()  # end of the replacement field
            elif top.depth > 0:
                top.depth -= 1
        elif c == ":" and top.field_of is not None and top.depth == 0:
            self._stack.append(_Spec(top.field_of))
        return i + 1

    def _open_string(self, text: str, i: int, prefix: str) -> int:
        q = text[i]
        quote = q * 3 if text.startswith(q * 3, i) else q
        self._stack.append(_Str(quote, raw="r" in prefix, fmt="f" in prefix))
        return i + len(quote)

    def _string_char(self, text: str, i: int, s: _Str) -> int:
        c = text[i]
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if s.fmt and nxt in ("{", "}"):
                return i + 1  # the brace keeps its meaning; the backslash is literal
            if s.fmt and not s.raw and nxt == "N" and text.startswith("{", i + 2):
                close = text.find("}", i + 3)  # \N{NAME} is an escape, not a field
                return close + 1 if close >= 0 else len(text)
            return i + 2
        if text.startswith(s.quote, i):
            self._stack.pop()
            return i + len(s.quote)
        if c == "\n" and not s.triple:
            self._stack.pop()  # unterminated: leave it to the compiler to report
            return i + 1
        if s.fmt and c == "{":
            if text.startswith("{", i + 1):
                return i + 2
            self._stack.append(_Code(field_of=s))
            return i + 1
        if s.fmt and c == "}" and text.startswith("}", i + 1):
            return i + 2
        m = _STR_PLAIN.match(text, i + 1)  # skip ordinary characters in one step
        return m.end() if m else i + 1

    def _spec_char(self, text: str, i: int, spec: _Spec) -> int:
        c = text[i]
        if c == "{":
            self._stack.append(_Code(field_of=spec.field_of))
        elif c == "}":
            self._stack.pop()  # the spec
            self._stack.pop()  # its field
        return i + 1


def rewrite_dollars(source: str) -> str:
    """Return `source` with every `$name` in code position replaced by `name`."""
    return DollarScanner().rewrite(source)[0]
