"""A local HTTP server that sends a large file slowly, and notices when the client hangs up.

It stands in for a remote host during URL imports: `/clip.mp4` (direct media),
`/watch/<id>` (a page of a "video site", for yt-dlp) and `/media/<id>.mp4` (the file that
page names). Media is sent in small chunks at a steady pace, or stalls after a few chunks,
so a download is really in flight when a test cancels it; `client_gone` is set the moment
the downloader closes its connection (a write fails, or the socket reads end-of-file).

It listens on 127.0.0.1 only. The SSRF guard refuses loopback, so tests relax the address
policy alone (`loopback_allowed`), as `tests/core/netguard/test_netguard_wire.py` does.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import reelflow.core.netguard as netguard


@dataclass
class Trickle:
    """What to send and how; what happened."""

    size_bytes: int = 20 * 1024 * 1024
    chunk_bytes: int = 4096
    every_s: float = 0.02
    stall_after_bytes: int | None = None
    """Stop sending (but keep the connection open) after this many bytes."""
    payload: bytes | None = None
    """Send exactly these bytes at once instead of a slow stream."""
    etag: str | None = None
    """Name the payload with this ETag and honour `Range` + `If-Range` for it."""
    drop_after_bytes: int | None = None
    """Cut the connection after sending this many bytes of the payload (once)."""
    ranges: list[str | None] = field(default_factory=list)
    """The `Range` header of each media request (None when there was none)."""
    port: int = 0
    first_bytes: threading.Event = field(default_factory=threading.Event)
    client_gone: threading.Event = field(default_factory=threading.Event)
    sent_everything: threading.Event = field(default_factory=threading.Event)
    bytes_sent: int = 0
    requests: list[str] = field(default_factory=list)
    gone_at: float | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _peer_closed(sock: socket.socket, wait_s: float) -> bool:
    readable, _, _ = select.select([sock], [], [], wait_s)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@contextmanager
def trickle_server(trickle: Trickle) -> Iterator[Trickle]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            trickle.requests.append(self.path)
            if self.path.startswith("/watch/"):
                body = b"<html><body>a video page</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            data = trickle.payload
            trickle.ranges.append(self.headers.get("Range"))
            if data is not None:
                self._send_payload(data)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(trickle.size_bytes))
            self.send_header("Connection", "close")
            self.end_headers()
            self._trickle()

        def _send_payload(self, data: bytes) -> None:
            start = 0
            wanted = self.headers.get("Range", "")
            same_file = self.headers.get("If-Range") == trickle.etag
            if trickle.etag and wanted.startswith("bytes=") and wanted.endswith("-") and same_file:
                start = int(wanted[len("bytes=") : -1])
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if trickle.etag:
                self.send_header("ETag", trickle.etag)
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Connection", "close")
            self.end_headers()
            body = data[start:]
            if trickle.drop_after_bytes is not None:
                cut, trickle.drop_after_bytes = trickle.drop_after_bytes, None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                trickle.bytes_sent += cut
                # An abrupt end: the client sees fewer bytes than Content-Length promised.
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)
            trickle.bytes_sent += len(body)
            trickle.sent_everything.set()

        def _trickle(self) -> None:
            chunk = b"\0" * trickle.chunk_bytes
            try:
                while trickle.bytes_sent < trickle.size_bytes:
                    stalled = (
                        trickle.stall_after_bytes is not None
                        and trickle.bytes_sent >= trickle.stall_after_bytes
                    )
                    if not stalled:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        trickle.bytes_sent += len(chunk)
                        trickle.first_bytes.set()
                    if _peer_closed(self.connection, trickle.every_s):
                        raise ConnectionResetError
                trickle.sent_everything.set()
            except (BrokenPipeError, ConnectionResetError):
                trickle.gone_at = time.monotonic()
                trickle.client_gone.set()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    trickle.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield trickle
    finally:
        # Unblock a handler still trickling (the test failed): it must not outlive us.
        trickle.size_bytes = 0
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the SSRF guard pass 127.0.0.1 (and only it); everything else is as in production."""
    real = netguard.address_problem

    def allow_loopback(address: netguard.IPAddress) -> str | None:
        return None if address == ipaddress.ip_address("127.0.0.1") else real(address)

    monkeypatch.setattr(netguard, "address_problem", allow_loopback)
