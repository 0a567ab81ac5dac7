"""A local server speaking the Gemini Developer API as google-genai uses it for video analysis.

Served on both `/v1beta` and `/v1` (google-genai 3.x defaults to v1; the analyzer asks for
v1beta):

* Files API, resumable upload: `POST /upload/{v}/files` with `X-Goog-Upload-Protocol:
  resumable` and `X-Goog-Upload-Command: start` answers with an `X-Goog-Upload-URL` header;
  `POST <that url>` with `X-Goog-Upload-Command: upload, finalize` answers
  `X-Goog-Upload-Status: final` and `{"file": File}` (state PROCESSING).
* `GET /{v}/files/{id}`: the file, with the next scripted state (the last one repeats).
* `DELETE /{v}/files/{id}`: `{}`.
* `POST /{v}/models/{model}:generateContent`: the next scripted reply.

Replies and request records reuse the chat tests' types (`tests/chat/answerers/servers.py`),
whose `generateContent` shapes these follow.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.chat.answerers.servers import Drop, JsonReply, RecordedRequest, gemini_error_body

_VERSIONS = "(v1beta|v1)"
_START = re.compile(rf"^/upload/{_VERSIONS}/files$")
_UPLOAD = re.compile(rf"^/upload/{_VERSIONS}/files\?upload_id=(\w+)")
_FILE = re.compile(rf"^/{_VERSIONS}/files/(\w+)$")
_GENERATE = re.compile(rf"^/{_VERSIONS}/models/([\w.\-]+):generateContent$")


def file_json(file_id: str, state: str, *, base_url: str, size: int = 0) -> dict[str, Any]:
    """A `File` as the API returns it (sizeBytes is a string, as in the real API)."""
    body: dict[str, Any] = {
        "name": f"files/{file_id}",
        "displayName": "video.mp4",
        "mimeType": "video/mp4",
        "sizeBytes": str(size),
        "createTime": "2026-11-29T00:00:00.000000Z",
        "updateTime": "2026-11-29T00:00:01.000000Z",
        "expirationTime": "2026-12-01T00:00:00.000000Z",
        "sha256Hash": "ZmFrZQ==",
        "uri": f"{base_url}/v1beta/files/{file_id}",
        "state": state,
        "source": "UPLOADED",
    }
    if state == "FAILED":
        body["error"] = {"code": 400, "message": "the video could not be decoded"}
    return body


def generate_reply(
    text: str,
    *,
    prompt_tokens: int = 5000,
    candidates_tokens: int = 400,
    thoughts_tokens: int = 0,
    finish_reason: str = "STOP",
) -> JsonReply:
    """A `GenerateContentResponse` whose one candidate's text is `text`."""
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + thoughts_tokens,
        "promptTokensDetails": [
            {"modality": "VIDEO", "tokenCount": prompt_tokens - 500},
            {"modality": "TEXT", "tokenCount": 500},
        ],
    }
    if thoughts_tokens:
        usage["thoughtsTokenCount"] = thoughts_tokens
    return JsonReply(
        200,
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish_reason,
                    "index": 0,
                }
            ],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-test",
        },
    )


def prompt_blocked_reply(reason: str = "SAFETY") -> JsonReply:
    """The prompt itself refused: `promptFeedback.blockReason` and no candidates."""
    return JsonReply(
        200,
        {
            "promptFeedback": {"blockReason": reason},
            "usageMetadata": {"promptTokenCount": 4800, "totalTokenCount": 4800},
            "modelVersion": "gemini-2.5-flash",
        },
    )


def gemini_error_reply(code: int, status: str, headers: dict[str, str] | None = None) -> JsonReply:
    return JsonReply(code, gemini_error_body(code, status), headers or {})


class FakeGeminiServer:
    """Threaded server on 127.0.0.1 (free port) with scriptable file states and answers."""

    def __init__(self, file_states: Sequence[str] = ("PROCESSING", "ACTIVE")) -> None:
        self.requests: list[RecordedRequest] = []
        self.generate_replies: list[JsonReply | Drop] = []
        """`Drop` closes the connection without an answer, like a lost network."""
        self.upload_replies: list[JsonReply] = []
        """Replies to the upload start before the normal one (errors such as 429)."""
        self.file_states: list[str] = list(file_states)
        """States successive GETs report; the last repeats."""
        self.uploaded: dict[str, bytes] = {}
        self.deleted: list[str] = []
        self._gets = 0
        self._next_id = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle(self) -> None:
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    super().handle()

            def _record(self, method: str) -> RecordedRequest:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length) if length else b""
                record = RecordedRequest(
                    method=method,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                # Upload chunks carry the start request's JSON content type over raw bytes.
                if self.headers.get("content-type", "").startswith("application/json") and body:
                    with contextlib.suppress(ValueError):
                        record.json = json.loads(body)
                with server._lock:
                    server.requests.append(record)
                return record

            def do_POST(self) -> None:
                record = self._record("POST")
                if _START.match(self.path):
                    self._send(server._start_upload(record))
                elif match := _UPLOAD.match(self.path):
                    self._send(server._finish_upload(match.group(2), record))
                elif _GENERATE.match(self.path):
                    with server._lock:
                        reply = server.generate_replies.pop(0) if server.generate_replies else None
                    if isinstance(reply, Drop):
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self._send(reply or gemini_error_reply(500, "INTERNAL"))
                else:
                    self._send(gemini_error_reply(404, "NOT_FOUND"))

            def do_GET(self) -> None:
                self._record("GET")
                match = _FILE.match(self.path)
                if match is None:
                    self._send(gemini_error_reply(404, "NOT_FOUND"))
                    return
                self._send(JsonReply(200, server._file_now(match.group(2))))

            def do_DELETE(self) -> None:
                self._record("DELETE")
                match = _FILE.match(self.path)
                if match is None:
                    self._send(gemini_error_reply(404, "NOT_FOUND"))
                    return
                with server._lock:
                    server.deleted.append(f"files/{match.group(2)}")
                self._send(JsonReply(200, {}))

            def _send(self, reply: JsonReply) -> None:
                payload = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- protocol ------------------------------------------------------------------------------

    def _start_upload(self, record: RecordedRequest) -> JsonReply:
        with self._lock:
            if self.upload_replies:
                return self.upload_replies.pop(0)
            self._next_id += 1
            upload_id = f"up{self._next_id}"
        if record.headers.get("x-goog-upload-protocol") != "resumable":
            return gemini_error_reply(400, "INVALID_ARGUMENT")
        version = "v1beta" if "/v1beta/" in record.path else "v1"
        return JsonReply(
            200,
            {},
            {
                "X-Goog-Upload-URL": (
                    f"{self.url}/upload/{version}/files?upload_id={upload_id}"
                    "&upload_protocol=resumable"
                ),
                "X-Goog-Upload-Status": "active",
            },
        )

    def _finish_upload(self, upload_id: str, record: RecordedRequest) -> JsonReply:
        command = record.headers.get("x-goog-upload-command", "")
        file_id = f"file{upload_id}"
        with self._lock:
            self.uploaded[file_id] = self.uploaded.get(file_id, b"") + record.body
            size = len(self.uploaded[file_id])
        if "finalize" not in command:
            return JsonReply(200, {}, {"X-Goog-Upload-Status": "active"})
        return JsonReply(
            200,
            {"file": file_json(file_id, "PROCESSING", base_url=self.url, size=size)},
            {"X-Goog-Upload-Status": "final"},
        )

    def _file_now(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            state = self.file_states[min(self._gets, len(self.file_states) - 1)]
            self._gets += 1
            size = len(self.uploaded.get(file_id, b""))
        return file_json(file_id, state, base_url=self.url, size=size)

    # --- control -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def generate_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if ":generateContent" in r.path]
