"""A tiny threaded HTTP server for provider tests: a routing function answers each request.

Each request is recorded (method, path, headers, JSON body); `enqueue` overrides the next
answer, whatever the path, for error and rate-limit cases.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


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
                record = Recorded(
                    method=self.command,
                    path=urlsplit(self.path).path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with server._lock:
                    server.requests.append(record)
                    scripted = server.scripted.pop(0) if server.scripted else None
                answer = scripted or router(record)
                if answer.body is None:
                    payload, content_type = b"", "application/json"
                elif isinstance(answer.body, bytes):
                    payload, content_type = answer.body, "video/mp4"
                else:
                    payload, content_type = json.dumps(answer.body).encode(), "application/json"
                self.send_response(answer.status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

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

    def enqueue(self, answer: Answer) -> None:
        with self._lock:
            self.scripted.append(answer)
