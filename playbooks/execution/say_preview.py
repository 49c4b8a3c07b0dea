"""The text of a Say to the person, read from code that is still streaming in.

The person should see a message as the model writes it, not only once the
statement is complete. This module recognises, in the unfinished text of a
response, a top-level ``await Say("user", "...`` (or an f-string) whose
literal has begun, and decodes as much of it as is certain. It never runs
anything: the statement still runs once, when it is complete, and the display
then adds only what the preview did not show.
"""

from __future__ import annotations

import ast
import contextvars
import re
from collections.abc import Callable
from dataclasses import dataclass

_SAY = re.compile(r"""^await[ \t]+Say\([ \t]*(["'])user\1[ \t]*,[ \t]*""", re.M)
_PREFIX = re.compile(r"[rRfFuU]{0,2}")
_AFTER_CLOSE = re.compile(r"[ \t]*\)?[ \t]*")


@dataclass(frozen=True)
class SayPreview:
    """A Say to the person whose literal has begun at ``offset`` of the text.

    ``text`` is what is certain so far; ``complete`` says the literal is closed
    and nothing more of it can come (an f-string stops at its first field).
    """

    offset: int
    text: str
    complete: bool


def _inside_code(text: str, position: int) -> bool:
    """Outside a ```` ``` ```` fence is prose once a fence has been opened."""
    fences = sum(1 for line in text[:position].split("\n") if line.startswith("```"))
    return fences % 2 == 1 or fences == 0


def _decode(prefix: str, quote: str, raw: str) -> str | None:
    """Decode a literal body; trailing characters of an unfinished escape are dropped."""
    prefix = prefix.replace("f", "").replace("F", "")
    for cut in range(min(len(raw), 10) + 1):
        body = raw[: len(raw) - cut] if cut else raw
        try:
            value = ast.literal_eval(prefix + quote + body + quote)
        except (SyntaxError, ValueError):
            continue
        return value if isinstance(value, str) else None
    return None


def partial_say(text: str) -> SayPreview | None:
    """The last top-level Say to the person in ``text`` whose statement has not
    ended yet, with what its literal says so far; None if there is none."""
    start = max(text.rfind("\nawait", 0), 0)
    match = _SAY.search(text, start)
    if match is None or not _inside_code(text, match.start()):
        return None
    rest = text[match.end() :]
    prefix = _PREFIX.match(rest)
    assert prefix is not None
    letters = prefix.group(0)
    if "b" in letters.lower():
        return None
    rest = rest[len(letters) :]
    if not rest:
        return SayPreview(match.start(), "", False)
    if rest[0] not in "\"'":
        return None  # a variable or a call: nothing to show before it runs
    quote = rest[0] * 3 if rest.startswith(rest[0] * 3) else rest[0]
    if len(quote) == 1 and rest in (rest[0], rest[0] * 2):
        return SayPreview(match.start(), "", False)  # may still become a triple quote
    body = rest[len(quote) :]
    raw_string = "r" in letters.lower()
    end, i = -1, 0
    while i < len(body):
        char = body[i]
        if char == "\\" and not raw_string:
            i += 2
            continue
        if body.startswith(quote, i):
            end = i
            break
        if char == "\n" and len(quote) == 1:
            return None  # not a valid one-line literal
        i += 1
    raw = body if end < 0 else body[:end]
    if end >= 0:
        after = body[end + len(quote) :]
        if "\n" in after or _AFTER_CLOSE.fullmatch(after) is None:
            return None  # the statement has ended (or goes on in a way not shown here)
    elif len(quote) == 3:
        raw = raw.rstrip(quote[0])  # quotes that may be the start of the closing ones
    fields = False
    if "f" in letters.lower():
        j = 0
        while j < len(raw):
            if raw.startswith("{{", j) or raw.startswith("}}", j):
                j += 2
                continue
            if raw[j] == "{":
                raw, fields = raw[:j], True
                break
            j += 1
    value = _decode(letters, quote, raw)
    if value is None:
        return None
    if "f" in letters.lower():
        value = value.replace("{{", "{").replace("}}", "}")
    return SayPreview(match.start(), value, end >= 0 or fields)


#: Told (key, text) as more of a streaming Say becomes certain; ``key`` names
#: the Say (frame, turn, offset). Installed by the terminal view, never in --json.
PreviewListener = Callable[[tuple, str], None]
#: Context-local, not global: a worker runs several executions in one process,
#: and each one's events must reach its own output (tasks inherit it).
_listener: contextvars.ContextVar[PreviewListener | None] = contextvars.ContextVar(
    "previewlistener", default=None
)


def set_preview_listener(listener: PreviewListener | None) -> None:
    """Install (or with None remove) the one listener shown streaming Says."""
    _listener.set(listener)


def preview_listener() -> PreviewListener | None:
    return _listener.get()
