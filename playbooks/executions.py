"""`playbooks executions list | show ID | rm ID | gc`: what is stored, for people."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from .config import Config
from .durability import log as logmod
from .durability.manager import CheckpointManager, frame_view
from .program import provider_for


def _when(ts: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return "-"


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def list_rows(config: Config) -> list[dict]:
    provider = provider_for(config)
    rows = []
    for execution_id in provider.list_executions():
        try:
            meta = provider.read_meta(execution_id) or {}
        except logmod.StorageError as error:
            meta = {"status": f"unreadable ({error})"}
        rows.append(
            {
                "execution_id": execution_id,
                "status": meta.get("status", "?"),
                "program": meta.get("program", "?"),
                "updated": meta.get("updated"),
            }
        )
    rows.sort(key=lambda r: float(r["updated"] or 0))
    return rows


def show(config: Config, execution_id: str) -> dict:
    provider = provider_for(config)
    manager = CheckpointManager(execution_id, provider)
    state = manager.read_state()
    if state is None or (not state.frames and not state.program):
        raise logmod.StorageError(f"no execution {execution_id} under {config.durability.path}")
    log = provider.open_log(execution_id, create=False)
    recent = log.checkpoint_records()[-5:]
    return {
        "execution_id": execution_id,
        "status": state.status,
        "message": state.message,
        "program": state.program,
        "llm_calls": state.llm_calls,
        "checkpoint": state.counter,
        "frames": [
            {
                k: v
                for k, v in frame_view(f).items()
                if k not in ("llm_response", "awaits", "variables")
            }
            for f in state.call_stack()
        ],
        "last_checkpoints": [
            {
                "checkpoint": r["n"],
                "frame": r["f"],
                "turn": r["t"],
                "statement": r["i"],
                "code": r.get("stmt", ""),
                "time": _when(r.get("ts")),
            }
            for r in recent
        ],
        "transcript": state.transcript,
        "disk_bytes": log.disk_usage(),
        "warnings": manager.warnings,
    }


def _print_show(info: dict) -> None:
    print(f"execution  {info['execution_id']}")
    print(f"status     {info['status']}{(': ' + info['message']) if info['message'] else ''}")
    print(f"program    {info['program'].get('program', '?')}")
    print(
        f"progress   checkpoint {info['checkpoint']}, {info['llm_calls']} LLM calls, "
        f"{info['disk_bytes']} bytes on disk"
    )
    print("frames (outermost first):")
    for f in info["frames"] or []:
        print(
            f"  {f['frame']:<24} {f['playbook']:<16} step {f['step'] or '-':<14} "
            f"turn {f['turn']} statement {f['statement']}"
        )
    if not info["frames"]:
        print("  (none running)")
    print("last checkpoints:")
    for c in info["last_checkpoints"]:
        code = c["code"].splitlines()[0] if c["code"] else ""
        print(
            f"  #{c['checkpoint']:<5} {c['time']}  {c['frame']} turn {c['turn']} "
            f"statement {c['statement']}: {code[:60]}"
        )
    print("transcript:")
    for m in info["transcript"]:
        print(f"  [{m['id']}] {m['agent']} -> {m['to']}: {m['text']}")


def run(action: str, config: Config, args: argparse.Namespace) -> int:
    try:
        if action == "list":
            rows = list_rows(config)
            if args.json:
                print(json.dumps(rows))
            elif not rows:
                print(f"no executions under {config.durability.path}")
            for r in rows if not args.json else []:
                print(
                    f"{r['execution_id']:<44} {r['status']:<10} {_when(r['updated'])}  {r['program']}"
                )
            return 0
        if action == "show":
            logmod.validate_execution_id(args.execution_id)
            info = show(config, args.execution_id)
            if args.json:
                print(json.dumps(info, default=str))
            else:
                _print_show(info)
            return 0
        if action == "rm":
            logmod.validate_execution_id(args.execution_id)
            provider = provider_for(config)
            if args.execution_id not in provider.list_executions():
                return _fail(f"no execution {args.execution_id} under {config.durability.path}")
            provider.delete_execution(args.execution_id)
            print(f"removed {args.execution_id}")
            return 0
        if action == "gc":
            counts = logmod.gc(config.durability.path, keep_last_n=config.durability.keep_last_n)
            print(" ".join(f"{k}={v}" for k, v in counts.items()) or "nothing to do")
            return 0
    except logmod.StorageError as error:
        return _fail(str(error), 3 if "readable" in str(error) else 2)
    return _fail(f"unknown action {action}")
