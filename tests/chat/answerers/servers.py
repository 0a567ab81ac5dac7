"""A local HTTP server that speaks the streaming wire formats of Anthropic, OpenAI and Gemini.

The answerers are tested through the providers' official SDKs pointed at this server. Each
request is answered by the next scripted reply: a JSON body (errors), or a server-sent-event
stream sent with chunked transfer encoding as the real APIs do. A stream can stop in the
middle (``Drop``: the socket closes without the final chunk, like a lost connection) or
pause (``Hold``) while the server watches for the client hanging up.

The ``*_stream`` helpers build event sequences in each provider's documented shape:

* Anthropic Messages: ``message_start``, ``content_block_start``, ``ping``,
  ``content_block_delta``…, ``content_block_stop``, ``message_delta`` (usage, stop reason),
  ``message_stop``; errors as ``event: error``.
* OpenAI chat completions: ``data: {chat.completion.chunk}`` lines, a finish chunk, a usage
  chunk with empty ``choices``, then ``data: [DONE]``.
* Gemini ``streamGenerateContent?alt=sse``: ``data: {GenerateContentResponse}`` lines with
  ``candidates[].content.parts[].text`` and a running ``usageMetadata``.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class SSE:
    """One server-sent event; ``data`` is JSON-encoded unless it is already a string."""

    data: Any
    event: str | None = None

    def encode(self) -> bytes:
        payload = self.data if isinstance(self.data, str) else json.dumps(self.data)
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {payload}\n\n".encode()


@dataclass(frozen=True)
class Drop:
    """Close the socket mid-stream, without the terminating chunk."""


@dataclass(frozen=True)
class Hold:
    """Pause the stream for up to ``seconds``, noticing if the client disconnects."""

    seconds: float


StreamStep = SSE | Drop | Hold


@dataclass(frozen=True)
class JsonReply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamReply:
    steps: Sequence[StreamStep]
    headers: dict[str, str] = field(default_factory=dict)


Reply = JsonReply | StreamReply


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None


class FakeLLMServer:
    """Threaded server on 127.0.0.1 (free port) answering POSTs with scripted replies."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.replies: list[Reply] = []
        self.client_disconnected = threading.Event()
        """Set when the client hangs up while a stream is held open."""
        self.stream_finished = threading.Event()
        """Set when the server wrote a whole scripted stream, terminating chunk included."""
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def handle(self) -> None:
                # The client may close a kept-alive connection at any time: that is its right.
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    super().handle()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                record = RecordedRequest(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                if self.headers.get("content-type", "").startswith("application/json"):
                    record.json = json.loads(body)
                with server._lock:
                    server.requests.append(record)
                    reply = server.replies.pop(0) if server.replies else None
                if reply is None:
                    reply = JsonReply(500, {"error": {"message": "no reply scripted"}})
                try:
                    if isinstance(reply, JsonReply):
                        self._send_json(reply)
                    else:
                        self._send_stream(reply)
                except (BrokenPipeError, ConnectionResetError):
                    server.client_disconnected.set()

            def _send_json(self, reply: JsonReply) -> None:
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def _send_stream(self, reply: StreamReply) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("transfer-encoding", "chunked")
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.flush()
                for step in reply.steps:
                    if isinstance(step, Drop):
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if isinstance(step, Hold):
                        if self._client_hung_up(step.seconds):
                            server.client_disconnected.set()
                            self.close_connection = True
                            return
                        continue
                    data = step.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                server.stream_finished.set()

            def _client_hung_up(self, seconds: float) -> bool:
                # The client has sent its whole request, so the socket becomes readable
                # only when it closes (recv returns b"") or resets.
                deadline = time.monotonic() + seconds
                while (remaining := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], remaining)
                    if readable:
                        try:
                            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
                            return peeked == b""
                        except ConnectionResetError:
                            return True
                return False

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def enqueue(self, reply: Reply) -> None:
        with self._lock:
            self.replies.append(reply)


# --- Anthropic Messages ------------------------------------------------------------------------


def anthropic_error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def anthropic_error(status: int, type_: str, message: str = "request failed") -> JsonReply:
    return JsonReply(status, anthropic_error_body(type_, message), {"request-id": "req_test"})


def anthropic_stream_head(model: str, input_tokens: int) -> list[StreamStep]:
    """``message_start`` through the opening of the first text block."""
    return [
        SSE(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_test",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
            event="message_start",
        ),
        SSE(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            event="content_block_start",
        ),
        SSE({"type": "ping"}, event="ping"),
    ]


def anthropic_deltas(parts: Sequence[str]) -> list[StreamStep]:
    return [
        SSE(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
            event="content_block_delta",
        )
        for p in parts
    ]


def anthropic_stream_tail(output_tokens: int, stop_reason: str = "end_turn") -> list[StreamStep]:
    return [
        SSE({"type": "content_block_stop", "index": 0}, event="content_block_stop"),
        SSE(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            event="message_delta",
        ),
        SSE({"type": "message_stop"}, event="message_stop"),
    ]


def anthropic_stream(
    model: str,
    parts: Sequence[str],
    *,
    input_tokens: int,
    output_tokens: int,
    stop_reason: str = "end_turn",
) -> StreamReply:
    return StreamReply(
        [
            *anthropic_stream_head(model, input_tokens),
            *anthropic_deltas(parts),
            *anthropic_stream_tail(output_tokens, stop_reason),
        ],
        {"request-id": "req_test"},
    )


# --- OpenAI chat completions -------------------------------------------------------------------


def openai_error_body(message: str, *, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def openai_error(status: int, type_: str, code: str | None = None) -> JsonReply:
    return JsonReply(status, openai_error_body("request failed", type_=type_, code=code))


def _openai_chunk(
    model: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_790_000_000,
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": None,
    }


def openai_deltas(model: str, parts: Sequence[str], *, first: bool = True) -> list[StreamStep]:
    steps: list[StreamStep] = []
    if first:
        steps.append(
            SSE(_openai_chunk(model, {"role": "assistant", "content": "", "refusal": None}))
        )
    steps.extend(SSE(_openai_chunk(model, {"content": p})) for p in parts)
    return steps


def openai_stream(
    model: str,
    parts: Sequence[str],
    *,
    prompt_tokens: int,
    completion_tokens: int,
    finish_reason: str = "stop",
) -> StreamReply:
    usage_chunk = _openai_chunk(model, {})
    usage_chunk["choices"] = []
    usage_chunk["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return StreamReply(
        [
            *openai_deltas(model, parts),
            SSE(_openai_chunk(model, {}, finish_reason)),
            SSE(usage_chunk),
            SSE("[DONE]"),
        ]
    )


# --- Gemini streamGenerateContent --------------------------------------------------------------


def gemini_error_body(code: int, status: str, message: str = "request failed") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def gemini_error(code: int, status: str) -> JsonReply:
    return JsonReply(code, gemini_error_body(code, status))


def gemini_chunk(
    text: str,
    *,
    prompt_tokens: int,
    candidates_tokens: int,
    finish_reason: str | None = None,
) -> SSE:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    return SSE(
        {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": candidates_tokens,
                "totalTokenCount": prompt_tokens + candidates_tokens,
            },
            "modelVersion": "gemini-2.0-flash",
            "responseId": "resp-test",
        }
    )


def gemini_stream(
    parts: Sequence[str],
    *,
    prompt_tokens: int,
    candidates_tokens: Sequence[int],
    finish_reason: str = "STOP",
) -> StreamReply:
    """One chunk per part; ``candidates_tokens[i]`` is the running output count after part i."""
    assert len(parts) == len(candidates_tokens)
    steps: list[StreamStep] = [
        gemini_chunk(
            part,
            prompt_tokens=prompt_tokens,
            candidates_tokens=count,
            finish_reason=finish_reason if i == len(parts) - 1 else None,
        )
        for i, (part, count) in enumerate(zip(parts, candidates_tokens, strict=True))
    ]
    return StreamReply(steps)
