"""What travels with an execution, so that a worker on any machine can run it.

A durable run stores its program (the file and every file it imports, by path
relative to the program's folder) and the settings that change what it does
in the execution's meta. A worker writes the program out under its hash,
loads it, and refuses it unless the hash is the one the execution recorded.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from .config import Config, ModelConfig, SafetyConfig
from .exits import Refused
from .language import Program, ProgramError, load_program


def program_bundle(program: Program) -> dict:
    """The program file and every file it imports, by path relative to its folder."""
    base = os.path.dirname(os.path.abspath(program.path))
    files: dict[str, dict] = {}
    for name in program.files:
        data = Path(name).read_bytes()
        relative = os.path.relpath(os.path.abspath(name), base)
        try:
            files[relative] = {"text": data.decode("utf-8")}
        except UnicodeDecodeError:
            files[relative] = {"base64": base64.b64encode(data).decode("ascii")}
    entry = os.path.relpath(os.path.abspath(program.path), base)
    return {"entry": entry, "files": files, "hash": program.source_hash}


def portable_settings(config: Config) -> dict:
    """The settings that change what a run does (never a key or a local record file)."""
    model = config.model.model_dump(exclude={"api_key", "record"})
    prefix, colon, file = str(model["name"]).partition(":")
    if prefix in ("replay", "replay+paced") and colon and file:  # found from anywhere
        model["name"] = f"{prefix}:{os.path.abspath(file)}"
    return {
        "model": model,
        "safety": config.safety.model_dump(),
        "max_llm_calls": config.max_llm_calls,
    }


def carried_settings(config: Config, settings: dict) -> Config:
    """``config`` with the settings an execution carries (``portable_settings``); the
    API key stays this machine's."""
    update: dict[str, Any] = {}
    if "model" in settings:
        update["model"] = ModelConfig(**settings["model"], api_key=config.model.api_key)
    if "safety" in settings:
        update["safety"] = SafetyConfig(**settings["safety"])
    if "max_llm_calls" in settings:
        update["max_llm_calls"] = settings["max_llm_calls"]
    return config.model_copy(update=update)


def _cache_root() -> Path:
    root = Path(tempfile.gettempdir()) / f"playbooks-{os.getuid()}-programs"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def stored_program(meta: dict) -> Program:
    """The program an execution carries, written out under its hash and loaded;
    refused unless it is the program the execution was started with. Its path is
    the one it was started from, so its python blocks get the same module names."""
    bundle = meta.get("source") or {}
    files, entry = bundle.get("files") or {}, bundle.get("entry")
    if not files or entry not in files or not meta.get("hash"):
        raise Refused(f"execution {meta.get('execution_id')} does not carry its program")
    root = _cache_root() / str(meta["hash"])[:40]
    for relative, body in files.items():
        target = (root / relative).resolve()
        if root.resolve() not in target.parents:
            raise Refused(f"execution {meta.get('execution_id')}: bad file name {relative!r}")
        if "base64" in body:
            data = base64.b64decode(body["base64"])
        else:
            data = str(body.get("text", "")).encode("utf-8")
        if not target.is_file() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    try:
        program = load_program(root / entry)
    except ProgramError as error:
        raise Refused(f"execution {meta.get('execution_id')}: {error}") from None
    if program.source_hash != meta["hash"]:
        raise Refused(
            f"execution {meta.get('execution_id')}: its stored program does not match its hash"
        )
    program.path = str(meta.get("program") or program.path)
    return program


class ProviderInbox:
    """The Human's view of one execution's durable inbox."""

    def __init__(self, provider: Any, execution_id: str) -> None:
        self.provider, self.execution_id = provider, execution_id

    def read(self) -> list[dict]:
        return self.provider.read_inbox(self.execution_id)

    def append(self, message: dict) -> None:
        self.provider.append_inbox(self.execution_id, message)
