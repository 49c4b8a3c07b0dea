"""The command line as a person meets it: README agrees with --help, defaults
are told, closed stdin and closed pipes are handled, colour and the status
line appear only on a terminal, and the paced example can be killed by hand.

Most tests run `python -m playbooks.cli` as a real child process, with real
pipes and pseudo-terminals, since that is where these behaviours live.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from killing import child_env

from playbooks.cli import _parser, main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CLI = [sys.executable, "-m", "playbooks.cli"]
ESC = "\x1b["


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("PLAYBOOKS_") or key == "NO_COLOR":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def durable_config(tmp_path: Path) -> Path:
    path = tmp_path / "playbooks.toml"
    path.write_text(f'[durability]\nenabled = true\npath = "{tmp_path / "ckpt"}"\nfsync = false\n')
    return path


def env(**extra: str) -> dict[str, str]:
    base = child_env()
    base.pop("NO_COLOR", None)
    base["TERM"] = "xterm-256color"
    base.update(extra)
    return base


def replay(name: str, paced: bool = False) -> str:
    return f"replay{'+paced' if paced else ''}:{EXAMPLES / name}.replay.jsonl"


def _drain(fd: int, chunks: list[bytes]) -> bool:
    try:
        data = os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other side is closed
        return False
    chunks.append(data)
    return bool(data)


def run_tty(args: list[str], *, tty_out: bool, tty_err: bool, **env_extra: str):
    """Run the CLI with stdout and/or stderr on a pseudo-terminal: (code, out, err)."""
    fds: dict[str, tuple[int, int]] = {}
    streams = {}
    for name, wanted in (("out", tty_out), ("err", tty_err)):
        if wanted:
            fds[name] = pty.openpty()
            streams[name] = fds[name][1]
        else:
            streams[name] = subprocess.PIPE
    child = subprocess.Popen(
        CLI + args,
        stdin=subprocess.DEVNULL,
        stdout=streams["out"],
        stderr=streams["err"],
        env=env(**env_extra),
    )
    readers: dict[int, list[bytes]] = {}
    names: dict[int, str] = {}
    for name in ("out", "err"):
        if name in fds:
            os.close(fds[name][1])
            fd = fds[name][0]
        else:
            fd = (child.stdout if name == "out" else child.stderr).fileno()
        readers[fd], names[fd] = [], name
    open_fds = set(readers)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 30)
        assert ready, "the child printed nothing for 30 s"
        for fd in ready:
            if not _drain(fd, readers[fd]):
                open_fds.discard(fd)
    code = child.wait(timeout=30)
    for name in fds:
        os.close(fds[name][0])
    text = {names[fd]: b"".join(c).decode().replace("\r\n", "\n") for fd, c in readers.items()}
    return code, text["out"], text["err"]


# -- item 15: --version, and README agrees with the parser ------------------------
def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = subprocess.run(CLI + ["--version"], capture_output=True, text=True, env=env())
    assert result.returncode == 0
    assert result.stdout == f"playbooks {version('playbooks')}\n"


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", str(EXAMPLES / "hello.pb"), "--model", replay("hello")]],
    ids=["help", "piped-run"],
)
def test_help_and_a_piped_run_import_neither_litellm_nor_rich(args, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom playbooks.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write(repr(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('litellm', 'rich'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=tmp_path
    )
    assert result.returncode == 0 and result.stdout
    assert result.stderr.endswith("[]"), result.stderr


def readme_commands() -> dict[tuple[str, ...], set[str]]:
    """The README's "Command line" block: {(verb[, action]): {flags}}."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1]
    block = section.split("```", 2)[1]
    commands: dict[tuple[str, ...], set[str]] = {}
    current: tuple[str, ...] | None = None
    for line in block.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "playbooks":
            words = words[1:]
            if words and words[0].startswith("--"):  # a flag of `playbooks` itself
                current = ()
                commands.setdefault(current, set())
            else:
                verb = words[0]
                if verb == "executions":
                    # executions [FLAGS] ACTION [FLAGS] | ACTION ... | ...
                    commands[(verb,)] = set()
                    for part in " ".join(words[1:]).split("|"):
                        tokens = part.split()
                        at = next(i for i, t in enumerate(tokens) if re.fullmatch(r"[a-z]+", t))
                        before, after = " ".join(tokens[:at]), " ".join(tokens[at + 1 :])
                        commands[(verb,)] |= set(re.findall(r"--[a-z][a-z-]*", before))
                        commands[(verb, tokens[at])] = set(re.findall(r"--[a-z][a-z-]*", after))
                    current = None
                    continue
                current = (verb,)
                commands.setdefault(current, set())
                words = words[1:]
        if current is not None:
            commands[current] |= set(re.findall(r"--[a-z][a-z-]*", " ".join(words)))
    return commands


def parser_commands() -> dict[tuple[str, ...], set[str]]:
    import argparse

    def flags(parser: argparse.ArgumentParser) -> set[str]:
        found = set()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            found |= {o for o in action.option_strings if o.startswith("--")}
        return found

    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    root = _parser()
    commands = {(): flags(root)}
    for verb, sub in subparsers(root).items():
        commands[(verb,)] = flags(sub)
        for action, subsub in subparsers(sub).items():
            commands[(verb, action)] = flags(subsub)
    return commands


def test_readme_command_line_block_matches_the_parser() -> None:
    documented, defined = readme_commands(), parser_commands()
    assert set(documented) == set(defined)
    for command in sorted(defined):
        assert documented[command] == defined[command], " ".join(command) or "playbooks"


# -- item 14: defaults are told, failures give a way forward ------------------------
def test_defaults_are_said_once_without_a_config_file(tmp_path: Path, capsys) -> None:
    args = ["run", str(EXAMPLES / "hello.pb"), "--model", replay("hello")]
    assert main(args) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "playbooks.toml" in line]
    assert len(notes) == 1, err
    assert f"model {replay('hello')}" in notes[0] and "durability is off" in notes[0]
    assert "enabled = true" in notes[0]
    durable_config(tmp_path)
    assert main(args) == 0
    assert "playbooks.toml" not in capsys.readouterr().err


def test_a_missing_api_key_fails_at_once_naming_the_key_and_replay(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom playbooks.cli import main\n"
        f"code = main(['run', {str(EXAMPLES / 'hello.pb')!r}])\n"
        "print('litellm' in sys.modules)\nsys.exit(code)"
    )
    clean = {k: v for k, v in env().items() if not k.endswith("_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean, cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stdout == "False\n"  # failed before the seconds-long import of litellm
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "HTTP 500" not in error[0]
    assert "openai/gpt-4o-mini" in error[0] and "OPENAI_API_KEY" in error[0]
    assert "--model replay:FILE" in error[0]


def test_a_python_playbook_error_names_the_pb_file_and_line(tmp_path: Path, capsys) -> None:
    program = tmp_path / "divide.pb"
    program.write_text(
        "# Calc\nDivides.\n\n## Python playbooks\n\n```python\n"
        '@playbook(triggers=["At the beginning"])\nasync def Main() -> float:\n'
        "    x, y = 1, 0\n    return x / y\n```\n"
    )
    (tmp_path / "playbooks.toml").write_text("")
    assert main(["run", str(program)]) == 1
    err = capsys.readouterr().err
    assert f"{program}:10: ZeroDivisionError: division by zero" in err


# -- item 3: closed stdin ------------------------------------------------------------
def test_closed_stdin_stops_cleanly_blames_no_one_and_stays_resumable(tmp_path: Path) -> None:
    durable_config(tmp_path)
    args = ["run", str(EXAMPLES / "ask.pb"), "--model", replay("ask")]
    closed = subprocess.run(
        ["sh", "-c", 'exec "$0" "$@" <&-', *CLI, *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp_path,
    )
    assert closed.returncode == 1
    assert closed.stdout == "Host: Hi! What is your name?\n"
    lines = closed.stderr.splitlines()
    stopped = [line for line in lines if line.startswith("stopped:")]
    assert len(stopped) == 1 and "stdin is closed" in stopped[0], closed.stderr
    for wrong in ("model's code failed", "AttributeError", "Traceback"):
        assert wrong not in closed.stderr
    again = subprocess.run(
        CLI + args + ["--message", "Ada"], capture_output=True, text=True, env=env(), cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert again.stdout == "user: Ada\nHost: Nice to meet you, Ada!\n"


# -- item 17: echoed replies, colour, status line, --json untouched ---------------------
def test_a_piped_reply_is_echoed_in_plain_text(tmp_path: Path) -> None:
    result = subprocess.run(
        CLI + ["run", str(EXAMPLES / "ask.pb"), "--model", replay("ask")],
        input="Ada\n",
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Host: Hi! What is your name?\nuser: Ada\nHost: Nice to meet you, Ada!\n"
    )
    assert ESC not in result.stderr


def test_json_output_is_only_json_even_on_a_terminal(tmp_path: Path) -> None:
    args = ["run", str(EXAMPLES / "ask.pb"), "--model", replay("ask"), "--json"]
    args += ["--message", "Ada"]
    code, out, err = run_tty(args, tty_out=True, tty_err=True)
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]  # every line is one object
    assert [e["event"] for e in events] == [
        "step", "say", "wait", "reply", "step", "say", "step", "end"
    ]  # fmt: skip
    assert ESC not in out and "waiting for the model" not in err


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path: Path) -> None:
    args = ["run", str(EXAMPLES / "hello.pb"), "--model", replay("hello")]
    code, out, _ = run_tty(args, tty_out=True, tty_err=False)
    assert code == 0
    assert re.search(r"\x1b\[[0-9;]*mGreeter\x1b\[0m: Hello! Welcome to Playbooks\.", out), out
    code, out, _ = run_tty(args, tty_out=True, tty_err=False, NO_COLOR="1")
    assert code == 0 and ESC not in out
    assert out.startswith("Greeter: Hello! Welcome to Playbooks.\n")
    piped = subprocess.run(CLI + args, capture_output=True, text=True, env=env(), cwd=tmp_path)
    assert piped.returncode == 0 and ESC not in piped.stdout


def test_a_status_line_while_the_model_is_awaited_only_on_a_terminal(tmp_path: Path) -> None:
    args = ["run", str(EXAMPLES / "hello.pb"), "--model", replay("hello")]
    code, out, err = run_tty(args, tty_out=False, tty_err=True)
    assert code == 0 and "waiting for the model (Main, call #0)" in err
    assert ESC not in out  # stdout is a pipe: plain, however stderr looks
    code, out, err = run_tty(args, tty_out=False, tty_err=False)
    assert code == 0 and "waiting for the model" not in err and ESC not in err


# -- item 9: a closed pipe is not an error to show ------------------------------------
def closed_pipe_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader has already gone, as `| head` leaves it."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            CLI + args, stdout=write_end, stderr=subprocess.PIPE, text=True, env=env(), cwd=cwd
        )
    finally:
        os.close(write_end)


def test_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    durable_config(tmp_path)
    first = subprocess.run(
        CLI + ["run", str(EXAMPLES / "hello.pb"), "--model", replay("hello")],
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp_path,
    )
    execution_id = first.stderr.split("execution ", 1)[1].split()[0]
    for args in (
        ["executions", "show", execution_id],
        ["executions", "list"],
        ["run", str(EXAMPLES / "hello.pb"), "--model", replay("hello"), "--fresh"],
        ["--help"],
    ):
        result = closed_pipe_run(args, tmp_path)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert "Exception ignored" not in result.stderr, (args, result.stderr)
        assert "BrokenPipeError" not in result.stderr, (args, result.stderr)


# -- item 16: the paced example, killed by hand -----------------------------------------
def test_the_paced_story_is_killed_mid_run_and_resumes_without_repeating(tmp_path: Path) -> None:
    durable_config(tmp_path)
    program = str(EXAMPLES / "story.pb")
    child = subprocess.Popen(
        CLI + ["run", program, "--model", replay("story", paced=True)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=tmp_path,
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # arrives after ~2 s of a ~20 s run
    child.send_signal(signal.SIGKILL)  # what `kill -9` does by hand
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert first.startswith("Storyteller: Here is a story")
    rest = subprocess.run(
        CLI + ["run", program, "--model", replay("story")],
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp_path,
    )
    assert rest.returncode == 0, rest.stderr
    assert "resuming story-" in rest.stderr
    lines = rest.stdout.splitlines()
    # The kill may land between showing the message and journaling it: then,
    # and only then, it is shown once more (with the same id, as README says).
    if lines[0] == first.rstrip("\n"):
        lines = lines[1:]
    assert first.rstrip("\n") not in lines
    assert len(lines) == 10 and lines[0].startswith("Storyteller: Chapter 1.")
    assert lines[-1].endswith("The chapters were: The Storm, The Signal, The Morning.")
