"""The LLM layer: streaming clients, prompts and the record/replay model.

A leaf package: it imports nothing else from playbooks, and litellm only when
a real model is first called.
"""

from .client import LiteLLMClient, LLMClient, LLMError, LLMRequest, make_client
from .prompts import (
    CONTINUE_PROMPT,
    PLAYBOOK_MARKER,
    PlaybookInfo,
    TurnContext,
    build_messages,
    continuation_messages,
    parse_request,
)
from .replay import RecordingClient, ReplayClient

__all__ = [
    "CONTINUE_PROMPT",
    "PLAYBOOK_MARKER",
    "LLMClient",
    "LLMError",
    "LLMRequest",
    "LiteLLMClient",
    "PlaybookInfo",
    "RecordingClient",
    "ReplayClient",
    "TurnContext",
    "build_messages",
    "continuation_messages",
    "make_client",
    "parse_request",
]
