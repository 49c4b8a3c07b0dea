"""Streaming LLM clients: litellm for real models, and the factory.

litellm is imported lazily because importing it costs seconds, which every
command that never talks to a model (check, executions list) should not pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .prompts import continuation_messages

REPLAY_PREFIX = "replay:"
PACED_REPLAY_PREFIX = "replay+paced:"
OFFLINE_HINT = "to run offline, use --model replay:FILE"


@dataclass
class LLMRequest:
    """One LLM call of an execution; `call_index` identifies it across a
    crash and resume, `partial` is what the crash left of its stream."""

    messages: list[dict]
    call_index: int
    playbook: str
    partial: str | None = None
    #: Token counts the provider reported for this call (prompt/completion),
    #: summed over retries; set when the stream ends.
    usage: dict[str, int] | None = None
    #: Why the last attempt failed, while a retry waits ("retry" events).
    retry_reason: str = ""
    retry_delay: float = 0.0
    #: The agent making the call when the program has several (replay files name it;
    #: ``call_index`` then counts that agent's calls), and its ``model:`` override.
    agent: str = ""
    model: str | None = None

    def wire_messages(self) -> list[dict]:
        """The messages actually sent: a cut stream asks for a continuation."""
        if self.partial:
            return continuation_messages(self.messages, self.partial)
        return self.messages


class LLMError(Exception):
    """An LLM call failed; the message is one line fit for a user."""


class _Attempt(Exception):
    """One attempt failed; ``retryable`` says whether another may succeed."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


@runtime_checkable
class LLMClient(Protocol):
    """Anything that streams a reply; used as `async for text in c.stream(r)`."""

    def stream(self, request: LLMRequest) -> AsyncIterator[str]: ...


#: Told "start" when a call is sent, "first" when its first text arrives,
#: "retry" before waiting to send it again (all three by the client), and "end"
#: by the runtime once it is done with the call: its text recorded, or the call
#: failed or abandoned (``request.usage`` is then set if the provider said):
#: the terminal shows a spinner meanwhile. One listener at most; it must not raise.
CallListener = Callable[[str, "LLMRequest"], None]
#: Context-local, not global: a worker runs several executions in one process,
#: and each one's events must reach its own output (tasks inherit it).
_listener: contextvars.ContextVar[CallListener | None] = contextvars.ContextVar(
    "calllistener", default=None
)


def set_call_listener(listener: CallListener | None) -> None:
    """Install (or with None remove) the one listener told about LLM calls."""
    _listener.set(listener)


def call_listener() -> CallListener | None:
    """The listener of this context (a new context that should hear calls takes it along)."""
    return _listener.get()


def notify(event: str, request: LLMRequest) -> None:
    listener = _listener.get()
    if listener is not None:
        try:
            listener(event, request)
        except Exception:  # noqa: BLE001 - a progress display never breaks a run
            pass


# The key each provider needs, checked before litellm is imported (which takes
# seconds) so that a missing key fails at once with a hint instead of an
# "HTTP 500" later. Providers not listed are left to litellm.
PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
}
_BARE_OPENAI = re.compile(r"^(gpt-|o\d|chatgpt-)")


def missing_key(model: str, env: dict[str, str] | None = None) -> str | None:
    """The environment variable a model needs and lacks, as 'A or B'; None if fine or unknown."""
    env = dict(os.environ) if env is None else env
    provider, slash, _ = model.partition("/")
    if not slash:
        provider = "openai" if _BARE_OPENAI.match(model) else ""
    names = PROVIDER_KEYS.get(provider)
    if not names or any(env.get(name) for name in names):
        return None
    return " or ".join(names)


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


def retryable(exc: BaseException) -> bool:
    """Rate limits, overload, server errors, timeouts and dropped connections
    may pass; a bad request or a wrong key will not."""
    for item in _chain(exc):
        name = type(item).__name__
        status = getattr(item, "status_code", None)
        if isinstance(status, int):
            return status in (408, 409, 429) or status >= 500
        if isinstance(item, (TimeoutError, ConnectionError)) or name in _TIMEOUT | _CUT:
            return True
        if name in ("ConnectError", "ClientConnectorError", "APIConnectionError"):
            return True
    return False


class LiteLLMClient:
    """Streams from any model litellm knows.

    Retries are ours, not litellm's (``num_retries`` is 0): a stream that fails
    after some text arrived is continued with the text so far, as after a crash,
    so nothing already handed to the executor is asked for again.
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float = 0.2,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self.api_base = api_base
        if api_key is None and api_base and model.startswith("openai/"):
            # A local OpenAI-compatible server needs no key, but the client insists.
            api_key = os.environ.get("OPENAI_API_KEY") or "sk-local"
        self.api_key = api_key

    def _fail(self, request: LLMRequest, reason: str) -> LLMError:
        return LLMError(
            f"LLM call #{request.call_index} ({request.playbook}) to {self.model} "
            f"failed: {reason}; {OFFLINE_HINT}"
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        if self.api_key is None and self.api_base is None:
            needed = missing_key(self.model)
            if needed:
                raise self._fail(request, f"no API key: set {needed}")
        notify("start", request)
        received = ""
        attempt = 0
        while True:
            wire = request
            if received:  # continue after what was already handed on
                wire = LLMRequest(
                    request.messages,
                    request.call_index,
                    request.playbook,
                    partial=(request.partial or "") + received,
                )
            try:
                async with contextlib.aclosing(self._stream(wire, request)) as texts:
                    async for text in texts:
                        received += text
                        yield text
                return
            except _Attempt as failed:
                if not failed.retryable or attempt >= self.retries:
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise self._fail(request, failed.reason + suffix) from None
                delay = min(30.0, self.backoff * 2**attempt)
                attempt += 1
                request.retry_reason, request.retry_delay = failed.reason, delay
                notify("retry", request)
                await asyncio.sleep(delay)

    async def _stream(self, wire: LLMRequest, request: LLMRequest) -> AsyncIterator[str]:
        litellm = _litellm()
        kwargs: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": wire.wire_messages(),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.temperature,
            "timeout": self.timeout,
            "num_retries": 0,
            "max_retries": 0,  # the provider SDK's own retries: ours count instead
        }
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        response: Any = None
        first = True
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    _add_usage(request, usage)
                choices = getattr(chunk, "choices", None)
                if not choices:
                    continue
                text = getattr(choices[0].delta, "content", None)
                if text:
                    if first:
                        first = False
                        notify("first", request)
                    yield text
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise _Attempt(describe_error(exc, self.api_base), retryable(exc)) from None
        finally:
            close = getattr(response, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass


def _add_usage(request: LLMRequest, usage: Any) -> None:
    counts = request.usage or {"prompt_tokens": 0, "completion_tokens": 0}
    for key in ("prompt_tokens", "completion_tokens"):
        value = getattr(usage, key, None)
        if value is None and isinstance(usage, dict):
            value = usage.get(key)
        if isinstance(value, int):
            counts[key] += value
    request.usage = counts


def make_client(
    model: str,
    *,
    temperature: float = 0.2,
    api_base: str | None = None,
    api_key: str | None = None,
    record: str | None = None,
    timeout: float = 120.0,
    retries: int = 3,
) -> LLMClient:
    """Pick the client for a model id: `replay:PATH` replays a file, and
    `replay+paced:PATH` replays it at the pace of a live model."""
    from .replay import LIVE_PACE, RecordingClient, ReplayClient

    client: LLMClient
    if model.startswith(REPLAY_PREFIX):
        client = ReplayClient(model[len(REPLAY_PREFIX) :])
    elif model.startswith(PACED_REPLAY_PREFIX):
        client = ReplayClient(model[len(PACED_REPLAY_PREFIX) :], pace=LIVE_PACE)
    else:
        client = LiteLLMClient(
            model,
            temperature=temperature,
            api_base=api_base,
            api_key=api_key,
            timeout=timeout,
            retries=retries,
        )
    if record:
        client = RecordingClient(client, record)
    return client
