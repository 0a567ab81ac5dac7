"""The SSRF guard: which URLs may be fetched, and that the guarded client enforces it."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from reelflow.core.netguard import (
    UrlNotAllowed,
    address_problem,
    check_url,
    guarded_client,
    open_guarded,
)
from tests.core.netguard.netguard_fakes import (
    PUBLIC_IP,
    FakeResolver,
    FakeWeb,
    redirect,
    serve_bytes,
)

# The product bar's list plus the usual ways around naive filters.
BAD_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://localhost:7233",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",  # 169.254.169.254 as IPv4-mapped hex
    "http://[::1]/",
    "http://[::]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[ff02::1]/",
    "file:///etc/passwd",
    "FILE:///etc/passwd",
    "ftp://videos.example.com/clip.mp4",
    "gopher://videos.example.com:70/",
    "javascript:alert(1)",
    "//videos.example.com/clip.mp4",
    "videos.example.com/clip.mp4",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://127.0.0.1/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://224.0.0.251/",
    "http://255.255.255.255/",
    "http://192.0.2.10/",  # documentation range
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://kubernetes.default.svc/",
    "http://printer.local/",
    "http://intranet/",
    "http://internal.example.com/",  # resolves to 10.0.0.5
    "http://metadata.example.com/",  # resolves to 169.254.169.254
    "http://split.example.com/",  # one public and one loopback answer
    "http://does-not-resolve.example.com/",
    "http://user:secret@videos.example.com/clip.mp4",
    "http://videos.example.com@169.254.169.254/",
    "http://videos.example.com:22/",
    "http://videos.example.com:0/",
    "http://videos.example.com:99999/",
    "http://videos.example.com\\@169.254.169.254/",
    "http://videos.example.com /clip.mp4",
    "http://videos.example.com/\r\nHost: 169.254.169.254",
    "",
    "   ",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_check_url_refuses_with_readable_reason(url: str) -> None:
    resolver = FakeResolver()

    with pytest.raises(UrlNotAllowed) as excinfo:
        check_url(url, resolver)

    assert excinfo.value.code == "url_not_allowed"
    assert isinstance(excinfo.value, ValueError)
    reason = str(excinfo.value)
    assert reason == excinfo.value.reason
    assert len(reason) > 10
    assert "secret" not in reason  # credentials are never echoed back


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:7233",
        "http://metadata.google.internal/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://127.1/",
        "http://10.0.0.010/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/",
        "file:///etc/passwd",
        "http://printer.local/",
        "http://intranet/",
    ],
)
def test_obviously_bad_hosts_are_refused_without_a_dns_lookup(url: str) -> None:
    resolver = FakeResolver()

    with pytest.raises(UrlNotAllowed):
        check_url(url, resolver)

    assert resolver.calls == []


@pytest.mark.parametrize(
    ("url", "host", "port", "address"),
    [
        ("http://videos.example.com/clip.mp4", "videos.example.com", 80, PUBLIC_IP),
        ("https://VIDEOS.example.com/a?b=c", "videos.example.com", 443, PUBLIC_IP),
        ("https://videos.example.com:8443/x", "videos.example.com", 8443, PUBLIC_IP),
        ("http://93.184.216.34/clip.mp4", "93.184.216.34", 80, PUBLIC_IP),
        ("https://[2606:4700::1111]/", "2606:4700::1111", 443, "2606:4700::1111"),
        ("http://[::ffff:93.184.216.34]/", "::ffff:93.184.216.34", 80, PUBLIC_IP),
        (
            "https://v6.example.com/v.webm",
            "v6.example.com",
            443,
            "2606:2800:220:1:248:1893:25c8:1946",
        ),
    ],
)
def test_check_url_accepts_public_urls(url: str, host: str, port: int, address: str) -> None:
    checked = check_url(url, FakeResolver())

    assert checked.host == host
    assert checked.port == port
    assert checked.connect_address == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "169.254.169.254", "10.1.2.3", "100.100.100.100", "::1", "fd00::1"],
)
def test_address_problem_names_the_kind_of_address(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_address_problem_accepts_public_addresses(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


# --- guarded client -------------------------------------------------------------------


def test_guarded_client_pins_checked_ip_and_keeps_host_and_sni() -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(b"ok"))

    with guarded_client(FakeResolver(), transport=web.transport()) as client:
        response = client.get("https://videos.example.com/clip.mp4?token=abc")

    assert response.status_code == 200
    assert response.url == httpx.URL("https://videos.example.com/clip.mp4?token=abc")
    [seen] = web.seen
    assert seen.connect_host == PUBLIC_IP
    assert seen.host == "videos.example.com"
    assert seen.sni == "videos.example.com"
    assert seen.path == "/clip.mp4?token=abc"


def test_guarded_client_connects_to_the_address_it_checked_not_a_later_answer() -> None:
    # A rebinding resolver: the first answer is public, later answers are loopback.
    answers = [[PUBLIC_IP], ["127.0.0.1"]]

    def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0) if answers else ["127.0.0.1"]

    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(b"ok"))

    with guarded_client(rebinding, transport=web.transport()) as client:
        client.get("http://videos.example.com/clip.mp4")
        with pytest.raises(UrlNotAllowed):
            client.get("http://videos.example.com/clip.mp4")

    assert [s.connect_host for s in web.seen] == [PUBLIC_IP]


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://localhost:7233/"])
def test_guarded_client_refuses_direct_requests(url: str) -> None:
    web = FakeWeb()

    with (
        guarded_client(FakeResolver(), transport=web.transport()) as client,
        pytest.raises(UrlNotAllowed),
    ):
        client.get(url)

    assert web.seen == []


def test_guarded_client_checks_redirect_hops_even_when_httpx_follows_them() -> None:
    web = FakeWeb()
    web.route("videos.example.com", redirect("http://169.254.169.254/latest/meta-data/"))

    with (
        guarded_client(FakeResolver(), transport=web.transport()) as client,
        pytest.raises(UrlNotAllowed),
    ):
        client.get("http://videos.example.com/clip.mp4", follow_redirects=True)

    assert web.hosts == ["videos.example.com"]


def test_guarded_client_ignores_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy would receive the request instead of our guarded, pinned transport.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(b"ok"))

    with guarded_client(FakeResolver(), transport=web.transport()) as client:
        response = client.get("https://videos.example.com/clip.mp4")

    assert response.content == b"ok"
    assert web.hosts == ["videos.example.com"]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/",
        "http://localhost/",
        "//[::ffff:127.0.0.1]/",
        "http://internal.example.com/admin",
        "file:///etc/passwd",
        "http://2130706433/",
    ],
)
def test_open_guarded_refuses_bad_redirect_targets(target: str) -> None:
    web = FakeWeb()
    web.route("videos.example.com", redirect(target))
    resolver = FakeResolver()

    with (
        guarded_client(resolver, transport=web.transport()) as client,
        pytest.raises(UrlNotAllowed),
        open_guarded(client, "http://videos.example.com/go", resolve=resolver),
    ):
        pass

    assert web.hosts == ["videos.example.com"]


def test_open_guarded_follows_public_redirects_to_the_final_response() -> None:
    web = FakeWeb()
    web.route("videos.example.com", redirect("https://cdn.example.com/files/clip.mp4", 301))
    web.route("cdn.example.com", serve_bytes(b"video-bytes"))
    resolver = FakeResolver()

    with (
        guarded_client(resolver, transport=web.transport()) as client,
        open_guarded(client, "http://videos.example.com/clip", resolve=resolver) as response,
    ):
        body = response.read()

    assert body == b"video-bytes"
    assert response.url == httpx.URL("https://cdn.example.com/files/clip.mp4")
    assert web.hosts == ["videos.example.com", "cdn.example.com"]


def test_open_guarded_stops_after_five_redirects() -> None:
    web = FakeWeb()
    web.route("videos.example.com", redirect("/again"))
    resolver = FakeResolver()

    with (
        guarded_client(resolver, transport=web.transport()) as client,
        pytest.raises(UrlNotAllowed, match="more than 5"),
        open_guarded(client, "http://videos.example.com/start", resolve=resolver),
    ):
        pass

    assert len(web.seen) == 6  # the request plus five followed redirects


def test_open_guarded_checks_hops_even_with_an_unguarded_client() -> None:
    web = FakeWeb()
    web.route("videos.example.com", redirect("http://169.254.169.254/"))
    resolver = FakeResolver()

    with (
        httpx.Client(transport=web.transport()) as plain,
        pytest.raises(UrlNotAllowed),
        open_guarded(plain, "http://videos.example.com/", resolve=resolver),
    ):
        pass

    assert web.hosts == ["videos.example.com"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "only http:// and https://"),
        ("videos.example.com:8080/clip.mp4", "must start with http:// or https://"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://localhost:7233", "internal host name"),
        ("http://2130706433/", "non-standard notation"),
        ("http://internal.example.com/", "private network"),
        ("http://user:pw@videos.example.com/", "user name or password"),
        ("http://videos.example.com:25/", "port 25 is not allowed"),
    ],
)
def test_refusal_reason_tells_the_user_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(UrlNotAllowed) as excinfo:
        check_url(url, FakeResolver())

    assert words in excinfo.value.reason
    assert not excinfo.value.retryable


def test_temporary_dns_failure_is_marked_retryable() -> None:
    def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(UrlNotAllowed, match="could not be resolved") as excinfo:
        check_url("https://videos.example.com/clip.mp4", flaky)

    assert excinfo.value.retryable
