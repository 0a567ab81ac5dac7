"""A tiny threaded HTTP server for provider tests: a routing function answers each request.

Use it as a context manager (or `start` / `stop`).

Each request is recorded (method, path, query, headers, body: JSON-decoded when it is
JSON, raw bytes otherwise); `enqueue` overrides the next answer, whatever the path, for
error, rate-limit and timeout cases. The router runs under the server's lock, so it may
keep state.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    query: dict[str, list[str]] = field(default_factory=dict)

    @property
    def form(self) -> dict[str, str]:
        """The fields of a multipart form (as the openai SDK sends it) or a JSON object."""
        if isinstance(self.body, dict):
            return {key: str(value) for key, value in self.body.items()}
        if not isinstance(self.body, bytes):
            return {}
        content_type = self.headers.get("content-type", "")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + self.body
        )
        form: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            assert isinstance(name, str) and isinstance(payload, bytes)
            form[name] = payload.decode()
        return form


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait this long before answering (timeout tests)."""


Router = Callable[[Recorded], Answer]


class FakeHTTPServer:
    """Serves on 127.0.0.1, on a free port, from a daemon thread."""

    def __init__(self, router: Router) -> None:
        self.requests: list[Recorded] = []
        self.scripted: list[Answer] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                url = urlsplit(self.path)
                record = Recorded(
                    method=self.command,
                    path=url.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    query=parse_qs(url.query),
                )
                with server._lock:
                    server.requests.append(record)
                    scripted = server.scripted.pop(0) if server.scripted else None
                    answer = scripted or router(record)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                if answer.body is None:
                    payload, content_type = b"", "application/json"
                elif isinstance(answer.body, bytes):
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

            do_GET = do_POST = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeHTTPServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def enqueue(self, answer: Answer) -> None:
        with self._lock:
            self.scripted.append(answer)
