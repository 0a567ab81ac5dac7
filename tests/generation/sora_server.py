"""A local HTTP server speaking the wire format of OpenAI's video API (Sora).

It answers ``POST /v1/videos`` (multipart form, as the SDK sends it), ``GET
/v1/videos/{id}``, ``GET /v1/videos/{id}/content`` and ``DELETE /v1/videos/{id}`` with the
JSON bodies and error envelopes the API uses, and records every request, so tests run
the real ``openai`` SDK against it and assert what went over the wire.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class ScriptedResponse:
    """Served instead of the normal answer to the next request (any path)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> ScriptedResponse:
    return ScriptedResponse(
        status,
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        headers or {},
    )


@dataclass
class FakeVideo:
    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    created_at: int
    statuses: list[tuple[str, int]]
    """What successive retrieves report; the last entry repeats."""
    error: dict[str, str] | None = None
    content: bytes = b""

    @property
    def current(self) -> tuple[str, int]:
        return self.statuses[0]

    def advance(self) -> None:
        if len(self.statuses) > 1:
            self.statuses.pop(0)

    def to_json(self) -> dict[str, Any]:
        status, progress = self.current
        return {
            "id": self.id,
            "object": "video",
            "created_at": self.created_at,
            "completed_at": self.created_at + 60 if status == "completed" else None,
            "expires_at": None,
            "error": self.error if status == "failed" else None,
            "model": self.model,
            "progress": progress,
            "prompt": self.prompt,
            "remixed_from_video_id": None,
            "seconds": self.seconds,
            "size": self.size,
            "status": status,
        }


def _parse_form(content_type: str, body: bytes) -> dict[str, str]:
    if content_type.startswith("application/json"):
        data = json.loads(body or b"{}")
        return {key: str(value) for key, value in data.items()}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    form: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        form[name] = payload.decode()
    return form


class FakeSoraServer:
    """The video endpoints of the OpenAI API, in memory.

    New videos walk through `status_script` (one step per retrieve) and then serve
    `content`; `enqueue` overrides the next answer (errors, delays).
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.scripted: list[ScriptedResponse] = []
        self.videos: dict[str, FakeVideo] = {}
        self.status_script: list[tuple[str, int]] = [
            ("queued", 0),
            ("in_progress", 40),
            ("completed", 100),
        ]
        self.failure: dict[str, str] | None = None
        self.content = b"\x00\x00\x00\x18ftypmp42 not a real video"
        self._lock = threading.Lock()
        self._counter = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                record = RecordedRequest(
                    method=method,
                    path=url.path,
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                if method == "POST":
                    record.form = _parse_form(self.headers.get("content-type", ""), body)
                with server._lock:
                    server.requests.append(record)
                    scripted = server.scripted.pop(0) if server.scripted else None
                    answer = scripted or server._answer(record)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                if isinstance(answer.body, bytes):
                    payload, content_type = answer.body, "video/mp4"
                else:
                    payload, content_type = json.dumps(answer.body).encode(), "application/json"
                try:
                    self.send_response(answer.status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(payload)))
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def do_POST(self) -> None:
                self._handle("POST")

            def do_GET(self) -> None:
                self._handle("GET")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def enqueue(self, response: ScriptedResponse) -> None:
        with self._lock:
            self.scripted.append(response)

    def requests_to(self, method: str, path_prefix: str = "/v1/videos") -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- answers (called under the lock) --

    def _answer(self, request: RecordedRequest) -> ScriptedResponse:
        parts = request.path.strip("/").split("/")
        if parts[:2] != ["v1", "videos"]:
            return openai_error(404, f"Unknown path {request.path}")
        if request.method == "POST" and len(parts) == 2:
            return self._create(request.form)
        video = self.videos.get(parts[2]) if len(parts) >= 3 else None
        if video is None:
            return openai_error(404, "Video not found", code="video_not_found")
        if request.method == "GET" and len(parts) == 3:
            answer = ScriptedResponse(200, video.to_json())
            video.advance()
            return answer
        if request.method == "GET" and parts[3:] == ["content"]:
            if video.current[0] != "completed":
                return openai_error(400, "Video is not ready yet", code="video_not_ready")
            return ScriptedResponse(200, video.content)
        if request.method == "DELETE" and len(parts) == 3:
            if video.current[0] in ("queued", "in_progress"):
                return openai_error(400, "Video is still being generated")
            del self.videos[video.id]
            return ScriptedResponse(
                200, {"id": video.id, "object": "video.deleted", "deleted": True}
            )
        return openai_error(404, f"Unknown path {request.path}")

    def _create(self, form: dict[str, str]) -> ScriptedResponse:
        if not form.get("prompt"):
            return openai_error(400, "Missing required parameter: 'prompt'.", code="missing")
        self._counter += 1
        video = FakeVideo(
            id=f"video_{self._counter:04d}",
            model=form.get("model", "sora-2"),
            prompt=form["prompt"],
            seconds=form.get("seconds", "4"),
            size=form.get("size", "720x1280"),
            created_at=1_790_000_000,
            statuses=list(self.status_script),
            error=self.failure,
            content=self.content,
        )
        self.videos[video.id] = video
        answer = video.to_json()
        return ScriptedResponse(200, answer)
