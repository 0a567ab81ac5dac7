"""IP pinning over a real socket: TLS still uses and verifies the original host name.

A local HTTPS server stands in for a public host. Loopback is normally refused by the guard,
so these tests relax only the address policy (``address_problem``); the transport, pinning,
SNI and certificate checks under test are the real ones.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import reelflow.core.netguard as netguard
from reelflow.core.netguard import guarded_client

SITE = "videos.example.com"


def make_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SITE)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class TlsServer:
    port: int
    ca_file: Path
    snis: list[str | None] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    cert_path, key_path = make_cert(tmp_path)
    hosts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers.get("Host", ""))
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"mp4!")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    state = TlsServer(port=server.server_address[1], ca_file=cert_path, hosts=hosts)
    context.sni_callback = lambda sock, name, ctx: state.snis.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = netguard.address_problem

    def allow_loopback(address: netguard.IPAddress) -> str | None:
        return None if address == ipaddress.ip_address("127.0.0.1") else real(address)

    monkeypatch.setattr(netguard, "address_problem", allow_loopback)


def to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


@pytest.mark.usefixtures("loopback_allowed")
def test_pinned_https_request_sends_sni_and_host_of_the_name(tls_server: TlsServer) -> None:
    inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=tls_server.ca_file))

    with guarded_client(to_loopback, transport=inner) as client:
        response = client.get(f"https://{SITE}:{tls_server.port}/clip.mp4")

    assert response.content == b"mp4!"
    assert tls_server.snis == [SITE]
    assert tls_server.hosts == [f"{SITE}:{tls_server.port}"]


@pytest.mark.usefixtures("loopback_allowed")
def test_pinned_https_request_verifies_certificate_against_the_name(
    tls_server: TlsServer,
) -> None:
    inner = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=tls_server.ca_file))

    with guarded_client(to_loopback, transport=inner) as client, pytest.raises(httpx.ConnectError):
        # Same IP, different name: the certificate for videos.example.com must not pass.
        client.get(f"https://other.example.com:{tls_server.port}/clip.mp4")

    assert tls_server.hosts == []
