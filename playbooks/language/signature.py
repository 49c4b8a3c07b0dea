"""Playbook headings: `## Title($a, $b: int, $c=1) -> type`.

A heading that cannot be read exactly is an error pointing at its line, never
a guess: `## Main(` or `## F($a $b)` would otherwise call a playbook that the
author did not write.
"""

from __future__ import annotations

import re

from playbooks.language.metadata import callable_name, split_top_level
from playbooks.language.source import Diagnostics

__all__ = ["parse_signature"]

_PARAM = re.compile(r"^\*{0,2}\$?([A-Za-z_]\w*)\s*(?::\s*[^=]+?)?\s*(?:=\s*\S.*)?$")


def parse_signature(
    heading: str, line: int, diag: Diagnostics
) -> tuple[str, str, list[str], str | None]:
    """(title, callable name, parameters, return type) of `## Title($a, $b) -> type`."""
    text = heading.strip()
    params: list[str] = []
    returns: str | None = None
    open_at = text.find("(")
    if open_at < 0:
        if ")" in text:
            raise diag.error(line, f"playbook heading {text!r} has ')' without '('")
        title, arrow, ret = text.partition("->")
        rest = arrow + ret
    else:
        close_at = _matching_paren(text, open_at)
        if close_at < 0:
            raise diag.error(line, f"playbook heading {text!r} has '(' without a closing ')'")
        title, inside, rest = text[:open_at], text[open_at + 1 : close_at], text[close_at + 1 :]
        params = _parse_params(inside, text, line, diag)
    title = title.strip()
    rest = rest.strip()
    if rest:
        if not rest.startswith("->") or not rest[2:].strip():
            raise diag.error(
                line, f"playbook heading {text!r}: unexpected {rest!r} after the parameters"
            )
        returns = rest[2:].strip()
    if not title:
        raise diag.error(line, "playbook heading has no name")
    name = callable_name(title)
    if not name.isidentifier():
        raise diag.error(line, f"playbook heading {title!r} does not give a name to call")
    return title, name, params, returns


def _matching_paren(text: str, start: int) -> int:
    depth, quote = 0, ""
    for index in range(start, len(text)):
        ch = text[index]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return index if ch == ")" else -1
    return -1


def _parse_params(inside: str, heading: str, line: int, diag: Diagnostics) -> list[str]:
    """Parameter names of `$a, $b: int, $c=1`; anything else is an error, not a guess."""
    pieces = split_top_level(inside)
    if len(pieces) == 1 and not pieces[0].strip():
        return []
    names: list[str] = []
    for piece in pieces:
        text = piece.strip()
        match = _PARAM.match(text)
        if match is None:
            shown = f"parameter {text!r}" if text else "an empty parameter"
            raise diag.error(
                line,
                f"playbook heading {heading!r}: {shown} is not a name "
                f"(write parameters as '$a, $b')",
            )
        if match.group(1) in names:
            raise diag.error(
                line, f"playbook heading {heading!r}: duplicate parameter ${match.group(1)}"
            )
        names.append(match.group(1))
    return names
