"""A scripted OpenAI-compatible server on 127.0.0.1 for tests.

litellm talks to it over real HTTP, so the whole client path (streaming, SSE
parsing, errors) is exercised without the internet or an API key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from playbooks.llm.prompts import parse_request

Responder = Callable[[dict], str]
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _StreamCut(Exception):
    """on_chunk asked to drop the connection mid-stream."""


class HTTPStatus(Exception):
    """Raised by a responder to answer with this status instead (429, 503...)."""

    def __init__(self, status: int, message: str = "scripted failure") -> None:
        super().__init__(message)
        self.status = status


class ScriptedLLMServer:
    """Answers /v1/chat/completions with whatever `responder` returns.

    `on_chunk(request_number, chunk_number)` runs before each streamed chunk
    is written; tests use it to kill a client mid-stream. If it raises, the
    connection is dropped there, which also cuts the stream. `before_end(
    request_number)` runs before the last chunk (finish reason, token counts).
    """

    def __init__(
        self,
        responder: Responder,
        *,
        chunk_size: int = 8,
        on_chunk: Callable[[int, int], None] | None = None,
        before_end: Callable[[int], None] | None = None,
    ) -> None:
        self.responder = responder
        self.chunk_size = max(1, chunk_size)
        self.on_chunk = on_chunk
        self.before_end = before_end
        self.requests: list[dict] = []
        self.url = ""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ScriptedLLMServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, body: dict) -> int:
        with self._lock:
            self.requests.append(body)
            return len(self.requests) - 1


class ScriptResponder:
    """Answers turn N of playbook P with script[P][N]; a continuation gets the
    rest of that turn after the partial text it carries."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script

    def __call__(self, request: dict) -> str:
        playbook, turn, partial = parse_request(request.get("messages", []))
        turns = self.script.get(playbook)
        if turns is None or turn >= len(turns):
            raise KeyError(f"no scripted turn #{turn} for playbook {playbook}")
        full = turns[turn]
        if partial is None:
            return full
        if not full.startswith(partial):
            raise ValueError(f"{playbook} turn #{turn}: partial text is not a prefix of the script")
        return full[len(partial) :]


def _chunk(model: str, delta: dict, finish: str | None) -> bytes:
    payload = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def _make_handler(owner: ScriptedLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            try:
                self._handle()
            except _DISCONNECTS + (_StreamCut,):
                self.close_connection = True

        def _send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as exc:
                self._send_json(400, {"error": {"message": f"bad JSON: {exc}"}})
                return
            number = owner._record(body)
            model = str(body.get("model", "test-model"))
            try:
                text = owner.responder(body)
            except HTTPStatus as exc:
                self._send_json(exc.status, {"error": {"message": str(exc), "type": "scripted"}})
                return
            except Exception as exc:  # noqa: BLE001 - reported to the client as a 500
                self._send_json(
                    500,
                    {"error": {"message": f"responder failed: {exc}", "type": "server_error"}},
                )
                return
            if not body.get("stream"):
                self._send_json(200, _completion(model, text))
                return
            # Chunked encoding, so a connection dropped mid-stream is visibly
            # incomplete to the client instead of looking like a short reply.
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            size = owner.chunk_size
            pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
            for index, piece in enumerate(pieces):
                if owner.on_chunk is not None:
                    try:
                        owner.on_chunk(number, index)
                    except Exception as exc:
                        raise _StreamCut from exc
                delta = (
                    {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
                )
                self._write_chunk(_chunk(model, delta, None))
            if owner.before_end is not None:
                owner.before_end(number)
            final = _chunk(model, {}, "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                final += _usage_chunk(model, body, text)
            self._write_chunk(final + b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def _usage_chunk(model: str, body: dict, text: str) -> bytes:
    """Token counts as a provider reports them: about one token per 4 characters."""
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    payload = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt // 4,
            "completion_tokens": len(text) // 4,
            "total_tokens": prompt // 4 + len(text) // 4,
        },
    }
    return f"data: {json.dumps(payload)}\n\n".encode()


def _completion(model: str, text: str) -> dict:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
