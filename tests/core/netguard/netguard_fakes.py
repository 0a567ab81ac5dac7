"""A fake internet for the SSRF tests: a fixed DNS table and a recording HTTP transport.

Nothing here touches the network. The transport sits *behind* the guard, so every request
it records is one that the guard let through to the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

PUBLIC_IP = "93.184.216.34"
CDN_IP = "151.101.1.69"

DNS: dict[str, list[str]] = {
    "videos.example.com": [PUBLIC_IP],
    "cdn.example.com": [CDN_IP],
    "media.example.com": [CDN_IP],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "internal.example.com": ["10.0.0.5"],
    "split.example.com": [PUBLIC_IP, "127.0.0.1"],
    "metadata.example.com": ["169.254.169.254"],
}

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeResolver:
    """Resolves names from a fixed table and records every lookup."""

    table: dict[str, list[str]] = field(default_factory=lambda: dict(DNS))
    calls: list[str] = field(default_factory=list)

    def __call__(self, host: str, port: int) -> Iterable[str]:
        self.calls.append(host)
        try:
            return list(self.table[host.rstrip(".")])
        except KeyError:
            raise OSError(f"name not known: {host}") from None


@dataclass
class Seen:
    """One request that reached the wire."""

    host: str  # the Host header: who the request was meant for
    connect_host: str  # where the connection actually went (pinned address)
    path: str
    sni: str | None


@dataclass
class FakeWeb:
    """Routes requests by ``Host`` header to per-site handlers and records them."""

    sites: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def route(self, host: str, handler: Handler) -> None:
        self.sites[host] = handler

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.headers.get("host", "").split(":")[0]
        sni = request.extensions.get("sni_hostname")
        self.seen.append(
            Seen(
                host=host,
                connect_host=request.url.host,
                path=request.url.raw_path.decode(),
                sni=sni if isinstance(sni, str) else None,
            )
        )
        handler = self.sites.get(host)
        if handler is None:
            return httpx.Response(599, text=f"the test did not expect a request to {host}")
        return handler(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def hosts(self) -> list[str]:
        return [s.host for s in self.seen]


def redirect(location: str, status: int = 302) -> Handler:
    return lambda request: httpx.Response(status, headers={"Location": location})


def serve_bytes(
    data: bytes, content_type: str = "video/mp4", extra: dict[str, str] | None = None
) -> Handler:
    headers = {"Content-Type": content_type, **(extra or {})}
    return lambda request: httpx.Response(200, headers=headers, content=data)


def serve_html(status: int = 200) -> Handler:
    return lambda request: httpx.Response(
        status,
        headers={"Content-Type": "text/html; charset=utf-8"},
        text="<html><body>a page</body></html>",
    )
