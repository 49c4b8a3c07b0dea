"""Streaming LLM clients: litellm for real models, and the factory.

litellm is imported lazily because importing it costs seconds, which every
command that never talks to a model (check, executions list) should not pay.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .prompts import continuation_messages

REPLAY_PREFIX = "replay:"


@dataclass
class LLMRequest:
    """One LLM call of an execution; `call_index` identifies it across a
    crash and resume, `partial` is what the crash left of its stream."""

    messages: list[dict]
    call_index: int
    playbook: str
    partial: str | None = None

    def wire_messages(self) -> list[dict]:
        """The messages actually sent: a cut stream asks for a continuation."""
        if self.partial:
            return continuation_messages(self.messages, self.partial)
        return self.messages


class LLMError(Exception):
    """An LLM call failed; the message is one line fit for a user."""


@runtime_checkable
class LLMClient(Protocol):
    """Anything that streams a reply; used as `async for text in c.stream(r)`."""

    def stream(self, request: LLMRequest) -> AsyncIterator[str]: ...


_LITELLM: Any = None


def _litellm() -> Any:
    global _LITELLM
    if _LITELLM is None:
        # The cost map would otherwise be fetched from the internet on import.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True  # no "Give Feedback" banners on errors
        _LITELLM = litellm
    return _LITELLM


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


_PREFIX = re.compile(r"^(?:litellm\.)?\w*(?:Error|Exception)(?::| -)\s*")
_CUT = {"ReadError", "RemoteProtocolError", "ClientPayloadError", "ServerDisconnectedError"}
_TIMEOUT = {"Timeout", "APITimeoutError", "ReadTimeout", "ConnectTimeout"}


def _first_line(text: str) -> str:
    """Drop the stacked 'litellm.X: X: OpenAIException - ' prefixes."""
    text = text.strip()
    while (match := _PREFIX.match(text)) is not None and match.end() > 0:
        text = text[match.end() :]
    text = text.split(" Original exception", 1)[0]
    line = text.splitlines()[0].strip() if text.strip() else ""
    return line if len(line) <= 200 else line[:197] + "..."


def describe_error(exc: BaseException, api_base: str | None = None) -> str:
    """Reduce a litellm/openai/httpx/aiohttp exception to a short reason."""
    where = f" at {api_base}" if api_base else ""
    chain = _chain(exc)
    for item in chain:
        name = type(item).__name__
        if (
            isinstance(item, ConnectionRefusedError)
            or name in ("ConnectError", "ClientConnectorError")
            or "connection refused" in str(item).lower()
        ):
            return f"connection refused{where}"
        if isinstance(item, TimeoutError) or name in _TIMEOUT:
            return f"timed out{where}"
        if name in _CUT:
            return f"the response stream was cut off{where} ({_first_line(str(item))})"
    message = _first_line(str(exc)) or type(exc).__name__
    if "Connection" in type(exc).__name__:
        return f"connection failed{where}: {message}"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return f"HTTP {status}: {message}"
    return f"{type(exc).__name__}: {message}"


class LiteLLMClient:
    """Streams from any model litellm knows."""

    def __init__(
        self,
        model: str,
        *,
        temperature: float = 0.2,
        api_base: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.api_base = api_base
        if api_key is None and api_base and model.startswith("openai/"):
            # A local OpenAI-compatible server needs no key, but the client insists.
            api_key = os.environ.get("OPENAI_API_KEY") or "sk-local"
        self.api_key = api_key

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        litellm = _litellm()
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.wire_messages(),
            "stream": True,
            "temperature": self.temperature,
        }
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        response: Any = None
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                choices = getattr(chunk, "choices", None)
                if not choices:
                    continue
                text = getattr(choices[0].delta, "content", None)
                if text:
                    yield text
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise LLMError(
                f"LLM call #{request.call_index} ({request.playbook}) to {self.model} "
                f"failed: {describe_error(exc, self.api_base)}"
            ) from None
        finally:
            close = getattr(response, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass


def make_client(
    model: str,
    *,
    temperature: float = 0.2,
    api_base: str | None = None,
    api_key: str | None = None,
    record: str | None = None,
) -> LLMClient:
    """Pick the client for a model id: `replay:PATH` replays a file."""
    from .replay import RecordingClient, ReplayClient

    client: LLMClient
    if model.startswith(REPLAY_PREFIX):
        client = ReplayClient(model[len(REPLAY_PREFIX) :])
    else:
        client = LiteLLMClient(model, temperature=temperature, api_base=api_base, api_key=api_key)
    if record:
        client = RecordingClient(client, record)
    return client
