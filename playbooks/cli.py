"""The ``playbooks`` command.

Heavy modules are imported inside each command so that ``--help`` and small
commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="playbooks",
        description="Run durable LLM agents written as Markdown and Python playbooks.",
    )
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
        help="the person's next reply (repeat for several, used in order; "
        "on a resume, give the same list as the first run)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON event per line")
    common.add_argument(
        "--config", metavar="FILE", help="configuration file (default ./playbooks.toml)"
    )
    common.add_argument("--force", action="store_true", help="resume even if the program changed")
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
        "execution of the same program is resumed unless --fresh is given.",
    )
    run.add_argument("program", metavar="PROGRAM.pb")
    run.add_argument("--fresh", action="store_true", help="start a new execution")
    run.add_argument("--execution-id", metavar="ID", help="the execution to start or resume")
    run.add_argument("--record", metavar="FILE", help="record every LLM response to FILE (JSONL)")

    resume = sub.add_parser(
        "resume",
        parents=[common],
        help="resume an execution by id",
        description="Resume the unfinished execution ID.",
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
    rm = ex_sub.add_parser("rm", help="delete an execution", description="Delete an execution.")
    rm.add_argument("execution_id", metavar="ID")
    ex_sub.add_parser(
        "gc",
        help="apply retention, trim torn tails, drop unused blobs",
        description="Garbage-collect the checkpoint directory.",
    )

    check = sub.add_parser(
        "check",
        help="parse and validate a program, print its structure",
        description="Parse PROGRAM.pb and print its agents and playbooks.",
    )
    check.add_argument("program", metavar="PROGRAM.pb")
    check.add_argument("--json", action="store_true", help="print the structure as JSON")
    return parser


def _fail(message: str, code: int = USAGE) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def _config(args: argparse.Namespace) -> Any:
    from .config import load_config

    overrides: dict[str, Any] = {}
    if getattr(args, "model", None):
        overrides["model.name"] = args.model
    if getattr(args, "record", None):
        overrides["model.record"] = args.record
    return load_config(getattr(args, "config", None), overrides=overrides)


def cmd_check(args: argparse.Namespace) -> int:
    from .language import ProgramError, format_structure, load_program

    try:
        program = load_program(args.program)
    except ProgramError as error:
        return _fail(str(error))
    if args.json:
        print(json.dumps(program.to_dict(), indent=2))
    else:
        print(format_structure(program))
    return 0


def cmd_run(
    args: argparse.Namespace, execution_id: str | None = None, program: str | None = None
) -> int:
    from .program import Runner, RunOptions

    config = _config(args)
    options = RunOptions(
        messages=args.message,
        json_mode=args.json,
        fresh=getattr(args, "fresh", False),
        execution_id=execution_id or getattr(args, "execution_id", None),
        force=args.force,
        accept_rollback=args.accept_rollback,
    )
    return asyncio.run(Runner(config, options).run(program or args.program))


def cmd_resume(args: argparse.Namespace) -> int:
    from .durability.log import StorageError, validate_execution_id
    from .program import provider_for

    config = _config(args)
    try:
        validate_execution_id(args.execution_id)
        meta = provider_for(config).read_meta(args.execution_id)
    except StorageError as error:
        return _fail(str(error))
    if not meta or not meta.get("program"):
        return _fail(f"no execution {args.execution_id} under {config.durability.path}")
    if not config.durability.enabled:
        return _fail("durability is off in the configuration: enable [durability] to resume")
    return cmd_run(args, execution_id=args.execution_id, program=meta["program"])


def cmd_executions(args: argparse.Namespace) -> int:
    from . import executions as views

    config = _config(args)
    if args.action is None:
        return _fail("executions needs an action: list, show ID, rm ID or gc")
    return views.run(args.action, config, args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE
    from .config import ConfigError

    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "resume":
            return cmd_resume(args)
        return cmd_executions(args)
    except ConfigError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume", 1)


if __name__ == "__main__":
    sys.exit(main())
