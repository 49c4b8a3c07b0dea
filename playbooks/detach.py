"""`playbooks run --detach`: a new execution stored as queued, for a worker to claim.

It carries its program (every file, checked by hash) and the settings that
change what it does, so a worker on any machine runs what was started; the
``--message`` values go into its inbox as the person's first replies. Nothing
runs here.
"""

from __future__ import annotations

import time
from typing import Any

from .config import Config
from .durability import log as logmod
from .durability.manager import CheckpointManager
from .exits import BadInput, Refused
from .language import Program
from .llm import LLMError
from .llm.client import REPLAY_PREFIX
from .llm.replay import load_replay
from .portable import portable_settings, program_bundle


def enqueue(
    provider: Any,
    execution_id: str,
    record: dict,
    program: Program,
    config: Config,
    messages: list[str],
) -> None:
    """Write the execution's program record and a ``queued`` meta, then wake the workers."""
    model = config.model
    if model.name.startswith(REPLAY_PREFIX):  # a worker must find it: refuse a bad one now
        try:
            load_replay(model.name[len(REPLAY_PREFIX) :])
        except (LLMError, ValueError) as error:
            raise BadInput(str(error)) from None
    manager = CheckpointManager(execution_id, provider)
    try:
        manager.open()
        manager.record_program(**record)
        manager.write_meta(
            {
                "execution_id": execution_id,
                "status": "queued",
                "message": "",
                **{k: record[k] for k in ("program", "hash", "created")},
                "updated": time.time(),
                "detached": True,
                "inbox_read": 0,
                "source": program_bundle(program),
                "settings": portable_settings(config),
            }
        )
    except logmod.StorageError as error:
        raise Refused(str(error)) from None
    finally:
        manager.close()
    for text in messages:  # --message values: its first replies
        message = {"text": text, "from": "user", "to": None, "via": "message"}
        provider.append_inbox(execution_id, message | {"ts": time.time()})
    wake = getattr(provider, "wake", None)
    if wake is not None:
        wake()
