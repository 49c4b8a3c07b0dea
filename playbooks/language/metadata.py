"""Metadata, names, begin triggers and description placeholders.

Small pure helpers shared by the parser and the prompt builder. Metadata is read
with a YAML subset (scalars, flow lists, block lists and nested mappings): what
real programs write, without a YAML dependency.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "MetadataError",
    "callable_name",
    "check_metadata",
    "is_begin_trigger",
    "metadata_key",
    "parse_block",
    "parse_scalar",
    "placeholder_calls",
    "render_description",
]

# `key: value` or `key:` at column 0; keys are lower snake case, so prose such
# as "Question: {$q}" is never taken for metadata.
_KEY_LINE = re.compile(r"^([a-z][a-z0-9_]*)[ \t]*:(?:[ \t]+(.*?))?[ \t]*$")
_MAP_LINE = re.compile(
    r"^([^\s:#'\"\[\]{},-][^:]*?|\"[^\"]*\"|'[^']*')[ \t]*:(?:[ \t]+(.*?))?[ \t]*$"
)
_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")

# Keys that only describe; they are kept and need no behaviour.
_INFORMATIONAL = frozenset({"title", "author", "version", "date", "tags", "description"})

# Keys of the reference language whose feature this runtime has not built yet:
# `check` reports them (with what happens instead) rather than dropping them.
NOT_BUILT: dict[str, str] = {
    "optional_attendees": (
        "optional_attendees is not built yet: only the attendees the host names "
        "(or required_attendees) are invited"
    ),
    "startup_mode": "startup_mode is not built yet: the agent starts as usual",
    "remote": "remote (MCP) agents are not built yet: this agent has no playbooks to call",
    "cli_entry": "cli_entry (Main's arguments from the command line) is not built yet",
    "application": "application (the reference project's choice of front end) is not used",
}

_SCOPES: dict[str, frozenset[str]] = {
    "program": _INFORMATIONAL | {"application"},
    "agent": _INFORMATIONAL | {"model", "startup_mode", "remote"},
    "human": _INFORMATIONAL | {"name", "delivery_channel", "meeting_notifications"},
    "playbook": _INFORMATIONAL
    | {
        "public",
        "export",
        "meeting",
        "required_attendees",
        "optional_attendees",
        "execution_mode",
        "model",
        "cli_entry",
    },
}
_EXECUTION_MODES = {"playbook", "react"}  # markdown playbooks run as a loop of LLM turns


class MetadataError(ValueError):
    """A metadata block that the YAML subset cannot read; `line` points at it."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def metadata_key(line: str) -> tuple[str, str] | None:
    """(`key`, value text) when `line` is a `key: value` / `key:` metadata line."""
    match = _KEY_LINE.match(line)
    return (match.group(1), match.group(2) or "") if match else None


def is_known_key(key: str, scope: str) -> bool:
    return key in _SCOPES[scope]


def check_metadata(
    metadata: Mapping[str, Any],
    scope: str,
    lines: Mapping[str, int],
    warn: Callable[[int, str], None],
    default_line: int,
) -> None:
    """Warn about every key that is unknown or whose feature is not built yet."""
    allowed = _SCOPES[scope]
    for key, value in metadata.items():
        line = lines.get(key, default_line)
        if key not in allowed:
            warn(line, f"unknown metadata key {key!r} (kept, not used)")
        elif scope == "human":
            continue
        elif key in NOT_BUILT:
            if key == "meeting" and value is False:
                continue
            warn(line, f"{key}: {NOT_BUILT[key]}")
        elif key in ("public", "export") and not isinstance(value, bool):
            warn(line, f"{key}: expected true or false, got {value!r}")
        elif key == "execution_mode":
            mode = str(value).strip().lower()
            if mode == "raw":
                warn(line, "execution_mode: raw is not built yet: it runs as an ordinary playbook")
            elif mode not in _EXECUTION_MODES:
                warn(line, f"execution_mode: unknown mode {value!r} (kept, not used)")


# ---------------------------------------------------------------- YAML subset


def parse_scalar(text: str) -> Any:
    """A YAML flow value: quoted or plain string, number, bool, null, `[...]` or `{...}`."""
    value = text.strip()
    if not value:
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        return inner.replace('\\"', '"').replace("\\\\", "\\") if value[0] == '"' else inner
    if value.startswith("[") and value.endswith("]"):
        return [parse_scalar(part) for part in split_top_level(value[1:-1]) if part.strip()]
    if value.startswith("{") and value.endswith("}"):
        out: dict[str, Any] = {}
        for part in split_top_level(value[1:-1]):
            if part.strip():
                key, _, rest = part.partition(":")
                out[str(parse_scalar(key))] = parse_scalar(rest)
        return out
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("null", "~"):
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes."""
    out: list[str] = []
    depth, quote, current = 0, "", []
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


def parse_block(rows: list[tuple[int, str]]) -> Any:
    """An indented YAML block (the lines under `key:`): a list or a mapping."""
    table = [(n, len(t) - len(t.lstrip(" \t")), t.strip()) for n, t in rows if t.strip()]
    if not table:
        return None
    return _block(table)


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _block(rows: list[tuple[int, int, str]]) -> Any:
    base = rows[0][1]
    if _is_item(rows[0][2]):
        items: list[Any] = []
        i = 0
        while i < len(rows):
            number, indent, text = rows[i]
            if indent != base or not _is_item(text):
                raise MetadataError(number, f"expected a '- item' line, got {text!r}")
            j = i + 1
            while j < len(rows) and rows[j][1] > base:
                j += 1
            head = text[1:].strip()
            if j > i + 1:
                if head:
                    raise MetadataError(rows[i + 1][0], "nested list items are not supported")
                items.append(_block(rows[i + 1 : j]))
            else:
                items.append(_inline_entry(head))
            i = j
        return items
    mapping: dict[str, Any] = {}
    i = 0
    while i < len(rows):
        number, indent, text = rows[i]
        match = _MAP_LINE.match(text)
        if indent != base or match is None:
            raise MetadataError(number, f"expected 'key: value', got {text!r}")
        key, rest = str(parse_scalar(match.group(1))), match.group(2) or ""
        j = i + 1
        while j < len(rows) and (
            rows[j][1] > base or (not rest and rows[j][1] == base and _is_item(rows[j][2]))
        ):
            j += 1
        if rest and j > i + 1:
            raise MetadataError(rows[i + 1][0], f"{key!r} has both a value and a nested block")
        mapping[key] = (
            parse_scalar(rest) if rest else (_block(rows[i + 1 : j]) if j > i + 1 else None)
        )
        i = j
    return mapping


def _inline_entry(text: str) -> Any:
    match = _MAP_LINE.match(text)
    if match and not text.startswith(("[", "{", '"', "'")):
        return {str(parse_scalar(match.group(1))): parse_scalar(match.group(2) or "")}
    return parse_scalar(text)


# ---------------------------------------------------------------- names


def callable_name(title: str) -> str:
    """The name the model calls: `Redesign menu` -> `RedesignMenu`; identifiers stay as written."""
    text = title.strip()
    if text.isidentifier():
        return text
    words = [word for word in re.split(r"\W+", text) if word]
    return "".join(word[:1].upper() + word[1:] for word in words)


# ---------------------------------------------------------------- begin triggers

_TRIGGER_CODE = re.compile(r"^T\d+:([A-Z]{2,4})\b[\s:.-]*")
_BEGIN = re.compile(
    r"^(?:"
    r"at (?:the )?(?:very )?(?:beginning|begining|start)"
    r"(?: of (?:the )?(?:program|conversation|session|execution|run))?"
    r"|when (?:the )?(?:program|programs|system|agent|application|app|conversation|session)"
    r" (?:starts|begins|start|begin|is started|starts up)(?: running)?"
    r"|on (?:program )?(?:start|startup|begin)"
    r")$"
)


def is_begin_trigger(text: str) -> bool:
    """Every spelling of "run me first" seen in real programs, `T1:BGN` included."""
    value = text.strip()
    code = _TRIGGER_CODE.match(value)
    if code:
        if code.group(1) == "BGN":
            return True
        value = value[code.end() :]
    value = re.sub(r"\s+", " ", value.strip().rstrip(".!").strip().lower())
    return value.startswith("at the beginning") or bool(_BEGIN.match(value))


# ---------------------------------------------------------------- placeholders

_PLACEHOLDER = re.compile(r"(?<!\{)\{\$?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\}(?!\})")
_CALL = re.compile(r"\{[^{}\n]*\([^{}\n]*\)[^{}\n]*\}")


def render_description(text: str, state: Mapping[str, Any]) -> str:
    """Fill `{$name}` / `{name}` (and `{$a.b}`) from `state`; unknown ones stay as written."""

    def fill(match: re.Match[str]) -> str:
        head, *rest = match.group(1).split(".")
        if head in state:
            value = state[head]
        elif f"${head}" in state:
            value = state[f"${head}"]
        else:
            return match.group(0)
        for part in rest:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif not part.startswith("_") and hasattr(value, part):
                value = getattr(value, part)
            else:
                return match.group(0)
        return str(value)

    return _PLACEHOLDER.sub(fill, text)


def placeholder_calls(text: str) -> list[str]:
    """`{Func(...)}` placeholders: code to run when the prompt is built (not built yet)."""
    return _CALL.findall(text)
