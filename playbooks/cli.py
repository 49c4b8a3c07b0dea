"""The ``playbooks`` command.

Heavy modules are imported inside each command so that ``--help`` and small
commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .exits import ExitCode

USAGE = ExitCode.USAGE


class _Version(argparse.Action):
    """``--version``, read from the installed metadata only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any):
        kw.setdefault("help", "print the version and exit")
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("playbooks")
        except PackageNotFoundError:  # run from a source tree that is not installed
            number = "unknown"
        sys.stdout.write(f"playbooks {number}\n")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="playbooks",
        description="Run durable LLM agents written as Markdown and Python playbooks.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # options that run and resume share
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model", help="litellm model id, or replay:FILE to replay recorded responses"
    )
    common.add_argument(
        "--message",
        action="append",
        default=[],
        metavar="TEXT",
        help="the person's next reply (repeat for several, used in order; replies "
        "already received are never asked again, so after a stop the next --message "
        "is the next reply; values left unused are reported)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON event per line")
    common.add_argument(
        "--config", metavar="FILE", help="configuration file (default ./playbooks.toml)"
    )
    common.add_argument(
        "--force",
        action="store_true",
        help="resume even if the program changed (never another program's execution)",
    )
    common.add_argument(
        "--accept-rollback",
        action="store_true",
        help="resume from the last good record when the checkpoint log is damaged "
        "(effects after it may happen again)",
    )

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run a program (resumes its unfinished execution)",
        description="Run PROGRAM.pb. With durability on, an unfinished "
        "execution of the same program is resumed (with the settings it started "
        "with, unless a flag overrides them) unless --fresh is given.",
    )
    run.add_argument("program", metavar="PROGRAM.pb")
    run.add_argument("--fresh", action="store_true", help="start a new execution")
    run.add_argument("--execution-id", metavar="ID", help="the execution to start or resume")
    run.add_argument("--record", metavar="FILE", help="record every LLM response to FILE (JSONL)")
    run.add_argument(
        "--detach",
        action="store_true",
        help="only store the execution (with its program and settings) as queued, print "
        "its id and exit; `playbooks worker` runs it (needs durability)",
    )

    reply = sub.add_parser(
        "reply",
        help="give a waiting execution the person's reply",
        description="Write the person's reply into the durable inbox of EXECUTION_ID. "
        "Replies are taken in the order they were written; an execution waiting for one "
        "becomes runnable, and a worker (or `playbooks resume`) goes on with it.",
    )
    reply.add_argument("execution_id", metavar="EXECUTION_ID")
    reply.add_argument("text", metavar="TEXT")
    reply.add_argument("--to", metavar="AGENT", help="the agent the reply answers (checked)")
    reply.add_argument("--config", metavar="FILE", help="configuration file")

    worker = sub.add_parser(
        "worker",
        help="run executions from the shared store",
        description="Claim runnable executions (queued by `run --detach`, left by a process "
        "that died, or waiting for a reply that has arrived), resume each from its latest "
        "state with the program and settings stored in it, and run it. An execution that "
        "waits for a reply gives its slot back until `playbooks reply` gives it one. "
        "SIGTERM drains: no new claims; running executions may reach a wait or their end "
        "for up to --drain seconds, then they stay resumable for another worker.",
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="executions run at once"
    )
    worker.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often to look for work when nothing signals it (default 1)",
    )
    worker.add_argument(
        "--drain",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running executions may go on (default 30)",
    )
    ends = worker.add_mutually_exclusive_group()
    ends.add_argument(
        "--once", action="store_true", help="run what is runnable now, each at most once, then exit"
    )
    ends.add_argument(
        "--until-idle",
        action="store_true",
        help="exit when nothing is running and nothing is runnable",
    )
    worker.add_argument("--json", action="store_true", help="print one JSON event per line")
    worker.add_argument("--config", metavar="FILE", help="configuration file")

    resume = sub.add_parser(
        "resume",
        parents=[common],
        help="resume an execution by id",
        description="Resume the unfinished execution ID with the settings it started "
        "with (model, api_base, config file); --model, or --config naming another file, "
        "overrides them.",
    )
    resume.add_argument("execution_id", metavar="EXECUTION_ID")

    ex = sub.add_parser(
        "executions",
        help="list, inspect and remove executions",
        description="Inspect the executions stored under [durability] path.",
    )
    ex.add_argument("--config", metavar="FILE", help="configuration file")
    ex_sub = ex.add_subparsers(dest="action", metavar="ACTION")
    ls = ex_sub.add_parser("list", help="list executions", description="List executions.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    show = ex_sub.add_parser(
        "show",
        help="status, frames, cursor, checkpoints and transcript",
        description="Show one execution.",
    )
    show.add_argument("execution_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    rm = ex_sub.add_parser(
        "rm",
        help="delete executions",
        description="Delete executions and their files (refused, exit 3, while one is in use).",
    )
    rm.add_argument("execution_ids", metavar="ID", nargs="+")
    gc = ex_sub.add_parser(
        "gc",
        help="delete ended or old executions; apply retention, drop unused blobs",
        description="Garbage-collect the checkpoint directory: with --finished and/or "
        "--older-than, delete the executions that match (never one in use), then "
        "apply retention to the rest. Prints what was removed and the bytes freed.",
    )
    gc.add_argument(
        "--finished",
        action="store_true",
        help="delete executions that have ended (finished or failed)",
    )
    gc.add_argument(
        "--older-than",
        metavar="DURATION",
        type=_duration,
        help="delete executions last written longer ago than DURATION (e.g. 90s, 12h, 7d)",
    )

    check = sub.add_parser(
        "check",
        help="parse and validate a program, print its structure",
        description="Parse PROGRAM.pb and print its agents and playbooks.",
    )
    check.add_argument("program", metavar="PROGRAM.pb")
    check.add_argument("--json", action="store_true", help="print the structure as JSON")
    return parser


def _duration(text: str) -> float:
    from .executions import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _fail(message: str, code: int = USAGE) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "model", None):
        overrides["model.name"] = args.model
    if getattr(args, "record", None):
        overrides["model.record"] = args.record
    return overrides


def _config(args: argparse.Namespace) -> Any:
    from .config import load_config

    return load_config(getattr(args, "config", None), overrides=_overrides(args))


def cmd_check(args: argparse.Namespace) -> int:
    """Print how the file was read; warnings (things kept but not honoured) go to stderr."""
    from .language import ProgramError, format_structure, load_program

    try:
        program = load_program(args.program)
    except ProgramError as error:
        return _fail(str(error))
    for warning in [] if args.json else program.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    try:
        if args.json:
            print(json.dumps(program.to_dict(), indent=2))
        else:
            print(format_structure(program))
        sys.stdout.flush()
    except BrokenPipeError:  # `check ... | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_run(
    args: argparse.Namespace, execution_id: str | None = None, program: str | None = None
) -> int:
    from .program import Runner, RunOptions
    from .terminal import defaults_notice, say_once

    config = _config(args)
    if getattr(args, "detach", False) and not config.durability.enabled:
        from .exits import BadInput

        raise BadInput("--detach needs durability: set [durability] enabled = true")
    say_once(defaults_notice(config))
    options = RunOptions(
        messages=args.message,
        json_mode=args.json,
        fresh=getattr(args, "fresh", False),
        execution_id=execution_id or getattr(args, "execution_id", None),
        force=args.force,
        model=args.model,
        config=args.config,
        overrides=_overrides(args),
        accept_rollback=args.accept_rollback,
        detach=getattr(args, "detach", False),
    )
    if options.detach:  # always a new execution
        options.fresh = options.execution_id is None or options.fresh
    return asyncio.run(Runner(config, options).run(program or args.program))


def cmd_resume(args: argparse.Namespace) -> int:
    from .durability.log import StorageError, validate_execution_id
    from .executions import provider_for, summarize, where_stored
    from .exits import BadInput, Refused

    config = _config(args)
    try:
        validate_execution_id(args.execution_id)
    except StorageError as error:
        raise BadInput(str(error)) from None
    if not config.durability.enabled:
        raise BadInput("durability is off in the configuration: enable [durability] to resume")
    provider = provider_for(config)
    if args.execution_id not in provider.list_executions():
        raise BadInput(f"no execution {args.execution_id} under {where_stored(provider)}")
    summary = summarize(provider, args.execution_id)
    if not summary.program:
        raise Refused(f"execution {args.execution_id} cannot be resumed: {summary.told}")
    return cmd_run(args, execution_id=args.execution_id, program=summary.program)


def cmd_reply(args: argparse.Namespace) -> int:
    """Append the person's reply to the execution's durable inbox."""
    import time

    from .executions import known, provider_for, summarize
    from .exits import BadInput

    provider = provider_for(_config(args))
    known(provider, args.execution_id)
    summary = summarize(provider, args.execution_id)
    if summary.status in ("finished", "failed"):
        raise BadInput(
            f"execution {args.execution_id} has already {summary.status}: nothing waits for a reply"
        )
    if args.to is not None:
        _check_agent(provider, args.execution_id, args.to)
    message = {"text": args.text, "from": "user", "to": args.to, "via": "reply", "ts": time.time()}
    provider.append_inbox(args.execution_id, message)
    count = len(provider.read_inbox(args.execution_id))
    print(f"reply {count} for {args.execution_id} stored ({summary.status})")
    return 0


def _check_agent(provider: Any, execution_id: str, name: str) -> None:
    """``--to`` must name an agent of the execution's program (when it carries it)."""
    from .exits import BadInput, CommandError
    from .language import ProgramError
    from .portable import stored_program

    meta = provider.read_meta(execution_id) or {}
    if not meta.get("source"):
        return
    try:
        program = stored_program(meta)
    except (ProgramError, CommandError):
        return
    if program.agent(name) is None:
        names = ", ".join(a.name for a in program.agents)
        raise BadInput(f"execution {execution_id} has no agent {name!r} (its agents: {names})")


def cmd_worker(args: argparse.Namespace) -> int:
    from .exits import BadInput
    from .worker import WorkerOptions, run_worker

    config = _config(args)
    if not config.durability.enabled:
        raise BadInput("a worker needs durability: set [durability] enabled = true")
    if args.concurrency < 1 or args.poll <= 0 or args.drain < 0:
        raise BadInput("--concurrency must be at least 1, --poll above 0, --drain at least 0")
    options = WorkerOptions(
        concurrency=args.concurrency,
        poll=args.poll,
        once=args.once,
        until_idle=args.until_idle,
        drain=args.drain,
        json_mode=args.json,
    )
    return run_worker(config, options)


def cmd_executions(args: argparse.Namespace) -> int:
    from . import executions as views

    if args.action is None:
        return _fail("executions needs an action: list, show ID, rm ID... or gc")
    return views.run(args.action, _config(args), args)


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that the flush at
    exit cannot raise again (the advice of Python's signal documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout: nothing to flush into
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """The command; a reader that went away (``| head``) ends it quietly."""
    try:
        code = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 1


def _main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE
    from .config import ConfigError
    from .durability.log import StorageError
    from .exits import CommandError

    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "resume":
            return cmd_resume(args)
        if args.command == "reply":
            return cmd_reply(args)
        if args.command == "worker":
            return cmd_worker(args)
        return cmd_executions(args)
    except CommandError as error:
        return _fail(str(error), error.code)
    except ConfigError as error:
        return _fail(str(error))
    except StorageError as error:  # in use, or storage that cannot be read
        return _fail(str(error), ExitCode.REFUSED)
    except BrokenPipeError:  # the reader went away: not an error of ours to report
        raise
    except OSError as error:  # the storage (or another file) cannot be used
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"cannot use {where}{error.strerror or error}", ExitCode.REFUSED)
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume", ExitCode.FAILED)
    except Exception as error:  # a bug: still one line, never a traceback
        return _fail(f"unexpected {type(error).__name__}: {error}", ExitCode.FAILED)


if __name__ == "__main__":
    sys.exit(main())
