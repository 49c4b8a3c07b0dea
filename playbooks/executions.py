"""`playbooks executions list | show ID | rm ID... | gc`: what is stored, told truthfully.

One function, :func:`summarize`, says what state an execution is in, so that
`list`, `show`, `--json` and the resume banners use the same words:

  queued       stored by `run --detach`, not started yet: a worker runs it
  running      a live process holds the execution's lock
  waiting      it stopped because the person's reply could not be had; resumable
  interrupted  no live process owns it and it has not ended (killed, Ctrl-C,
               a failed model call); resumable
  finished     the program returned
  failed       the program raised; it cannot be resumed
  damaged      its log cannot be read or is missing; resuming it is refused
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config
from .durability import log as logmod
from .durability import open_provider
from .durability import provider as providers
from .durability.manager import CheckpointManager, frame_view
from .durability.provider import FilesystemCheckpointProvider
from .durability.state import ExecutionState
from .exits import BadInput, ExitCode, Refused

ENDED = ("finished", "failed")
STATUSES = ("queued", "running", "waiting", "interrupted", "finished", "failed", "damaged")
ROOT_FRAME = "main"  # the interpreter's id for the entry playbook's frame
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def provider_for(config: Config) -> FilesystemCheckpointProvider:
    """The configured store; the PostgreSQL driver is imported only when it is used."""
    return open_provider(config.durability)  # type: ignore[return-value]


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` (or a sum such as ``1d12h``) in seconds."""
    text = text.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 12h, 7d, 2w)")
    return sum(float(n) * _UNIT[u] for n, u in parts)


# -- who owns an execution ------------------------------------------------------
# Every verb asks the provider, so the same code serves any store; a provider
# without one of these answers gets a plain fallback.
def lock_owner(directory: Path) -> int | None:
    """The pid of the live process holding a filesystem execution's lock, or None."""
    return providers.lock_owner(directory)


def owner_of(provider: Any, execution_id: str) -> int | None:
    """The pid of the live process that owns the execution (a lock, or a lease)."""
    owner = getattr(provider, "owner", None) or getattr(provider, "owner_pid", None)
    return owner(execution_id) if owner is not None else None


def last_write(provider: Any, execution_id: str, meta: dict) -> float | None:
    """When anything of the execution was last written."""
    when = getattr(provider, "last_write", None)
    return when(execution_id) if when is not None else meta.get("updated")


def where_stored(provider: Any) -> str:
    describe = getattr(provider, "describe", None)
    return describe() if describe is not None else type(provider).__name__


def _disk_usage(provider: Any, execution_id: str) -> int | None:
    usage = getattr(provider, "disk_usage", None)
    try:
        if usage is not None:
            return usage(execution_id)
        return provider.open_log(execution_id, create=False).disk_usage()
    except (OSError, logmod.StorageError):
        return None


def _checkpoint_records(provider: Any, execution_id: str) -> list[dict]:
    records = getattr(provider, "checkpoint_records", None)
    if records is not None:
        return records(execution_id)
    return provider.open_log(execution_id, create=False).checkpoint_records()


def _gc(provider: Any, keep_last_n: int) -> dict:
    """Retention for every execution not in use (the provider's own gc when it has one)."""
    gc = getattr(provider, "gc", None)
    if gc is not None:
        return gc(keep_last_n=keep_last_n)
    counts = {"executions": 0, "generations_removed": 0, "skipped_in_use": 0, "bytes_freed": 0}
    for execution_id in provider.list_executions():
        log = provider.open_log(execution_id, create=False)
        try:
            log.lock()
        except logmod.ExecutionLocked:
            counts["skipped_in_use"] += 1
            continue
        try:
            counts["executions"] += 1
            counts["generations_removed"] += log.retain(keep_last_n)
        finally:
            log.close()
    return counts


# -- one execution's status ---------------------------------------------------------
@dataclass
class Summary:
    """What an execution is, in the words every verb uses."""

    execution_id: str
    status: str
    message: str = ""
    program: str = ""
    created: float | None = None
    updated: float | None = None
    owner: int | None = None
    state: ExecutionState | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def told(self) -> str:
        return self.status + (f": {self.message}" if self.message else "")

    def row(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "message": self.message,
            "program": self.program,
            "created": self.created,
            "updated": self.updated,
            "owner_pid": self.owner,
            "warnings": self.warnings,
        }


def summarize(provider: FilesystemCheckpointProvider, execution_id: str) -> Summary:
    """Status from the log (has it ended?), the owner (is a live process on it?) and
    the meta (why did it stop? is it queued?); a log that cannot be read is "damaged"."""
    owner = owner_of(provider, execution_id)
    try:
        meta = provider.read_meta(execution_id) or {}
    except logmod.StorageError:
        meta = {}
    manager = CheckpointManager(execution_id, provider)
    state: ExecutionState | None = None
    damage = ""
    durability_log = logging.getLogger("playbooks.durability")
    quiet, durability_log.disabled = durability_log.disabled, True  # kept in .warnings
    try:
        state = manager.read_state()
    except logmod.StorageError as error:
        damage = str(error)
    finally:
        durability_log.disabled = quiet
    info = state.program if state is not None else {}
    summary = Summary(
        execution_id,
        status="interrupted",
        program=str(info.get("program") or meta.get("program") or ""),
        created=info.get("created") or meta.get("created"),
        updated=last_write(provider, execution_id, meta),
        owner=owner,
        state=state,
        warnings=list(manager.warnings),
    )
    if state is None or (not state.program and not state.frames):
        if owner is not None:
            summary.status, summary.message = "running", "starting"
        elif damage:
            summary.status, summary.message = "damaged", damage
        else:
            missing = "its log files are missing" if meta.get("program") else "it holds no records"
            summary.status, summary.message = "damaged", missing
    elif state.status in ENDED:
        summary.status, summary.message = state.status, state.message
    elif owner is not None:
        summary.status = "running"
    elif meta.get("status") == "queued" and not state.frames:
        summary.status = "queued"
    elif meta.get("status") in ("waiting", "interrupted"):
        summary.status, summary.message = meta["status"], str(meta.get("message") or "")
    return summary


def _when(ts: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return "-"


def known(provider: FilesystemCheckpointProvider, execution_id: str) -> None:
    """Refuse (exit 2) an invalid id or one the store does not hold."""
    try:
        logmod.validate_execution_id(execution_id)
    except logmod.StorageError as error:
        raise BadInput(str(error)) from None
    if execution_id not in provider.list_executions():
        raise BadInput(f"no execution {execution_id} under {where_stored(provider)}")


def list_rows(config: Config) -> list[dict]:
    provider = provider_for(config)
    rows = [summarize(provider, e).row() for e in provider.list_executions()]
    rows.sort(key=lambda r: float(r["updated"] or 0))
    return rows


def transcript_of(state: ExecutionState) -> list[dict]:
    """Messages and the person's replies, in order, each with its id."""
    return [{"event": "say", **m} for m in state.transcript]


def agents_of(state: ExecutionState) -> dict:
    """Each agent with its running frames, inbox and status (the person's count too)."""
    from .durability.agents_view import agents_view

    view = agents_view(state)
    for entry in view.values():
        entry.pop("variables", None)
    return view


def outcome_of(state: ExecutionState, provider: FilesystemCheckpointProvider) -> dict:
    """The entry playbook's return value (or error), once it has one."""
    root = state.frames.get(ROOT_FRAME)
    if root is None or root.result is None:
        return {}
    if "err" in root.result:
        err = root.result["err"]
        return {"error": f"{err.get('type', 'Error')}: {err.get('message', '')}"}
    from .durability import serialization

    try:
        return {"result": serialization.decode(root.result.get("ok"), **provider.codec())}
    except Exception as error:  # a value this build cannot rebuild: say so, do not fail
        return {"result": None, "result_error": f"{type(error).__name__}: {error}"}


def show(config: Config, execution_id: str) -> dict:
    provider = provider_for(config)
    known(provider, execution_id)
    summary = summarize(provider, execution_id)
    info: dict[str, Any] = summary.row()
    state = summary.state
    settings = dict(state.program) if state is not None else {}
    info["settings"] = {k: settings.get(k) for k in ("model", "api_base", "config", "identity")}
    try:
        recent = _checkpoint_records(provider, execution_id)[-5:]
    except (OSError, logmod.StorageError):
        recent = []
    info.update(
        {
            "llm_calls": state.llm_calls if state else 0,
            "checkpoint": state.counter if state else 0,
            "frames": [
                {
                    k: v
                    for k, v in frame_view(f).items()
                    if k not in ("llm_response", "awaits", "variables")
                }
                for f in (state.call_stack() if state else [])
            ],
            "last_checkpoints": [
                {
                    "checkpoint": r.get("n"),
                    "frame": r.get("f"),
                    "turn": r.get("t"),
                    "statement": r.get("i"),
                    "code": r.get("stmt", ""),
                    "time": _when(r.get("ts")),
                }
                for r in recent
            ],
            "transcript": transcript_of(state) if state else [],
            "agents": agents_of(state) if state else {},
            "disk_bytes": _disk_usage(provider, execution_id),
        }
    )
    if state is not None:
        info.update(outcome_of(state, provider))
    info["inbox"] = _inbox(provider, execution_id, state.consumed if state else 0)
    return info


def _inbox(provider: Any, execution_id: str, consumed: int) -> dict:
    """The person's replies in the durable inbox, and how many are not read yet."""
    read = getattr(provider, "read_inbox", None)
    try:
        messages = read(execution_id) if read is not None else []
    except (OSError, logmod.StorageError):
        messages = []
    return {"messages": len(messages), "unread": max(0, len(messages) - consumed)}


def _print_show(info: dict) -> None:
    print(f"execution  {info['execution_id']}")
    print(f"status     {info['status']}{(': ' + info['message']) if info['message'] else ''}")
    print(f"program    {info['program'] or '?'}")
    used = {k: v for k, v in info["settings"].items() if v and k != "identity"}
    if used:
        print("settings   " + ", ".join(f"{k} {v}" for k, v in used.items()))
    print(
        f"progress   checkpoint {info['checkpoint']}, {info['llm_calls']} LLM calls, "
        f"{info['disk_bytes'] if info['disk_bytes'] is not None else '?'} bytes stored"
    )
    if info["inbox"]["messages"]:
        box = info["inbox"]
        print(f"inbox      {box['messages']} replies, {box['unread']} not read yet")
    if "result" in info:
        print(f"returned   {json.dumps(info['result'], default=str)}")
    if "error" in info:
        print(f"raised     {info['error']}")
    print("frames (outermost first):")
    for f in info["frames"] or []:
        print(
            f"  {f['frame']:<24} {f['playbook']:<16} step {f['step'] or '-':<14} "
            f"turn {f['turn']} statement {f['statement']}"
        )
    if not info["frames"]:
        print("  (none running)")
    agents = {k: v for k, v in info.get("agents", {}).items() if k != "user"}
    if agents:
        print("agents:")
    for name, agent in agents.items():
        if agent.get("kind") == "human":
            print(f"  {name:<16} agent {agent['id']}  human")
            continue
        print(f"  {name:<16} agent {agent['id']}  {agent['status']}")
        for f in agent["frames"]:
            print(f"    frame {f['frame']}  {f['playbook']}  step {f['step'] or '-'}")
        for m in agent["inbox"]:
            print(f"    inbox [{m['id']}] from agent {m['from']}: {m['text']}")
    print("last checkpoints:")
    for c in info["last_checkpoints"]:
        code = c["code"].splitlines()[0] if c["code"] else ""
        print(
            f"  #{c['checkpoint']:<5} {c['time']}  {c['frame']} turn {c['turn']} "
            f"statement {c['statement']}: {code[:60]}"
        )
    print("transcript:")
    for m in info["transcript"]:
        print(f"  [{m['id']}] {m.get('agent', m.get('from'))} -> {m['to']}: {m['text']}")
    for warning in info["warnings"]:
        print(f"warning: {warning}")


# -- removing executions -------------------------------------------------------------
def _remove(provider: FilesystemCheckpointProvider, execution_id: str) -> int:
    """Delete one execution (refused while a live process owns it); returns bytes freed."""
    size = _disk_usage(provider, execution_id) or 0
    try:
        provider.delete_execution(execution_id)
    except logmod.ExecutionLocked as error:
        raise Refused(str(error)) from None
    return size


def remove(config: Config, execution_ids: list[str]) -> int:
    """`executions rm ID...`: every id is tried; the exit code is the worst outcome."""
    provider = provider_for(config)
    code = ExitCode.OK
    freed = 0
    for execution_id in execution_ids:
        try:
            known(provider, execution_id)
            size = _remove(provider, execution_id)
        except (BadInput, Refused) as error:
            sys.stderr.write(f"error: {error}\n")
            code = max(code, error.code)
            continue
        freed += size
        print(f"removed {execution_id} ({size} bytes)")
    if len(execution_ids) > 1:
        print(f"freed {freed} bytes")
    return code


def collect(config: Config, *, finished: bool = False, older_than: float | None = None) -> int:
    """`executions gc`: remove ended / old executions if asked, then apply retention."""
    provider = provider_for(config)
    removed, freed, in_use = 0, 0, 0
    if finished or older_than is not None:
        now = time.time()
        for execution_id in provider.list_executions():
            summary = summarize(provider, execution_id)
            if finished and summary.status not in ENDED:
                continue
            if older_than is not None and (summary.updated or now) > now - older_than:
                continue
            if summary.status == "running":
                in_use += 1
                continue
            try:
                size = _remove(provider, execution_id)
            except Refused:
                in_use += 1
                continue
            removed += 1
            freed += size
            print(f"removed {execution_id}  {summary.status}  {size} bytes")
    counts = _gc(provider, config.durability.keep_last_n)
    counts["skipped_in_use"] += in_use
    counts["bytes_freed"] += freed
    counts = {"executions_removed": removed, **counts}
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return ExitCode.OK


def run(action: str, config: Config, args: argparse.Namespace) -> int:
    if action == "list":
        rows = list_rows(config)
        if args.json:
            print(json.dumps(rows))
        elif not rows:
            print(f"no executions under {where_stored(provider_for(config))}")
        for r in rows if not args.json else []:
            why = f"  ({r['message']})" if r["message"] else ""
            if r["warnings"]:
                why += f"  [{len(r['warnings'])} warning(s): see `executions show`]"
            print(
                f"{r['execution_id']:<44} {r['status']:<11} {_when(r['updated'])}  "
                f"{r['program'] or '?'}{why}"
            )
        return ExitCode.OK
    if action == "show":
        info = show(config, args.execution_id)
        if args.json:
            print(json.dumps(info, default=str))
        else:
            _print_show(info)
        return ExitCode.OK
    if action == "rm":
        return remove(config, args.execution_ids)
    if action == "gc":
        return collect(config, finished=args.finished, older_than=args.older_than)
    raise BadInput(f"unknown action {action}")
