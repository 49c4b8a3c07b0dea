"""What a person sees in a terminal: colour, a status line, notices.

Colour is on only when stdout is a terminal and ``NO_COLOR`` is not set
(https://no-color.org); the status line (a spinner while the model or a
reply is awaited) only when stderr is a terminal. Otherwise the output is
plain text, byte for byte what a script expects, and ``rich`` is never
imported: piped runs, ``--json`` and ``--help`` pay nothing for it.

A leaf module: it imports nothing else from playbooks at import time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, Any

#: Styles of the names in front of a line (rich style strings).
AGENT_STYLE = "bold cyan"
USER_STYLE = "bold green"
OTHER_STYLE = "bold magenta"
NOTE_STYLE = "dim"


def is_tty(stream: Any) -> bool:
    """True for an open terminal; False for None, a closed stream, a pipe or a file."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # closed, or detached
        return False


def color_enabled(stream: Any, env: Mapping[str, str] | None = None) -> bool:
    """Colour for ``stream``: a terminal, and no (non-empty) ``NO_COLOR``."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR"):
        return False
    return is_tty(stream)


class Terminal:
    """Formats lines for stdout and keeps a status line on stderr.

    The status line is cleared before anything is written to stdout, so the
    two never mix on a screen.
    """

    def __init__(
        self,
        out: IO[str] | None,
        err: IO[str] | None,
        *,
        json_mode: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.err = err
        self.color = not json_mode and color_enabled(out, env)
        self.live = not json_mode and is_tty(err)
        self._render: Any = None
        self._console: Any = None
        self._status: Any = None

    # -- lines on stdout ------------------------------------------------------
    def line(self, who: str, text: str, *, style: str = AGENT_STYLE) -> str:
        """``who: text`` plus a newline, with ``who`` in colour when colour is on."""
        if not self.color:
            return f"{who}: {text}\n"
        return self._styled(who, style) + f": {text}\n"

    def _styled(self, text: str, style: str) -> str:
        if self._render is None:
            import io

            from rich.console import Console

            # Renders into a string: the caller writes it, so a closed pipe is
            # reported the same way with or without colour.
            self._render = Console(
                file=io.StringIO(),
                force_terminal=True,
                highlight=False,
                markup=False,
                emoji=False,
                soft_wrap=True,
                no_color=False,
            )
        from rich.text import Text

        with self._render.capture() as captured:
            self._render.print(Text(text, style=style), end="")
        return captured.get()

    # -- the status line on stderr ----------------------------------------------
    def status(self, message: str | None) -> None:
        """Show ``message`` with a spinner on stderr, or clear it with None."""
        if not self.live:
            return
        if message is None:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        from rich.live import Live
        from rich.spinner import Spinner

        spinner = Spinner("dots", text=message, style=NOTE_STYLE)
        if self._status is not None:
            self._status.update(spinner)
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.err, highlight=False, markup=False)
        # Not rich's Status: that swaps sys.stdout and sys.stderr for proxies
        # while it runs; here stdout is written directly, the line cleared first.
        self._status = Live(
            spinner,
            console=self._console,
            transient=True,
            refresh_per_second=12.5,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._status.start(refresh=True)

    def llm_event(self, event: str, request: Any) -> None:
        """Listener for playbooks.llm: a spinner from the request to its first text."""
        if event == "start":
            self.status(f"waiting for the model ({request.playbook}, call #{request.call_index})")
        else:
            self.status(None)

    def close(self) -> None:
        self.status(None)


def defaults_notice(config: Any) -> str | None:
    """One line for stderr when no configuration file was read: the model in
    use and whether durability is on, since both were chosen silently."""
    if getattr(config, "source", None):
        return None
    model = config.model.name
    if config.durability.enabled:
        durability = f"durability is on ({config.durability.path})"
    else:
        durability = (
            "durability is off (to make runs resumable after a crash, put "
            "'[durability]' and 'enabled = true' in playbooks.toml)"
        )
    return f"note: no playbooks.toml here: model {model}; {durability}"


_said: set[str] = set()


def say_once(text: str | None, stream: IO[str] | None = None) -> None:
    """Write ``text`` to stderr once per process: a default is told, not nagged about."""
    if not text or text in _said:
        return
    _said.add(text)
    stream = stream or sys.stderr
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def describe_failure(error: BaseException, path: str) -> str:
    """``FILE:LINE: Type: message`` for an error raised by the program's own
    Python, the line being the deepest one of the .pb file in the traceback."""
    text = f"{type(error).__name__}: {error}"
    target = os.path.abspath(path)
    line = None
    tb = error.__traceback__
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == target:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None:
        line = getattr(error, "response_line", None)
    return f"{path}:{line}: {text}" if line else text
