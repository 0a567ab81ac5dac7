"""SSRF guard for fetching user-supplied URLs (video imports).

A tenant can ask us to import any URL, and the request then leaves from *our* network. The
guard makes sure such requests only ever reach public internet hosts:

* only ``http`` and ``https``; no credentials in the URL; only ports 80, 443 and 1024+;
* the host is resolved and **every** address must be globally routable: no private,
  loopback, link-local (so no ``169.254.169.254`` metadata service), multicast, reserved,
  unspecified or carrier-grade NAT (``100.64.0.0/10``) address, including the same
  addresses hidden inside IPv6 (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo);
* odd numeric host spellings (``2130706433``, ``0x7f.1``, ``127.1``) and internal names
  (``localhost``, ``*.internal`` such as ``metadata.google.internal``, single-label names)
  are refused without even being resolved;
* redirects are followed by hand and every hop goes through the same check;
* :func:`guarded_client` connects to the address that was checked (the IP is pinned into the
  request URL while the ``Host`` header and TLS SNI/certificate check keep the original
  name), so a DNS answer that changes between check and connect (DNS rebinding) cannot
  redirect the connection to an internal address.

Residual risks:

* Only the first checked address is used; if it is down we do not fall back to the others.
* Pinning applies to requests made through :func:`guarded_client`. Code that fetches URLs
  with other libraries (yt-dlp, see ``reelflow.ingest.url_import``) only gets the up-front check.
* ``HTTP(S)_PROXY`` variables are deliberately ignored by the guarded client; if egress must
  go through a proxy, the proxy itself has to enforce the same policy.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], Iterable[str]]
"""Maps ``(host, port)`` to IP address strings; injectable so tests never touch DNS."""

MAX_REDIRECTS = 5
MAX_URL_LENGTH = 4096
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
USER_AGENT = "reelflow-importer/1.0"

_ALLOWED_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_BLOCKED_HOSTNAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "kubernetes.default",
    }
)
_BLOCKED_SUFFIXES = (
    ".localhost",
    ".local",
    ".localdomain",
    ".internal",
    ".intranet",
    ".lan",
    ".home.arpa",
    ".arpa",
    ".svc",
    ".cluster.local",
)

# Networks that Python's ipaddress still calls global but that must never be reached.
_EXTRA_BLOCKED: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT, often internal
    ipaddress.ip_network("192.88.99.0/24"),  # deprecated 6to4 relay anycast
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64: reaches IPv4 space through a gateway
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.ip_network("2001::/32"),  # Teredo tunnels
    ipaddress.ip_network("2002::/16"),  # 6to4 (embedded IPv4 checked separately too)
)

_SCHEME = re.compile(r"^[a-z][a-z0-9+-]*$")  # no dots: "example.com:8080/x" has no scheme

# WHATWG URL rule: a host whose last label is a number is an IPv4 address, however spelled.
_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


class UrlNotAllowed(ValueError):
    """The URL may not be fetched; ``reason`` says why in words a user understands.

    ``retryable`` is True only when the answer may change by itself (a temporary DNS
    failure); every policy refusal is final.
    """

    code = "url_not_allowed"

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed :func:`check_url`, with the addresses it was checked against.

    Attributes:
        url: The URL as the HTTP client will send it (normalised by httpx).
        scheme: ``http`` or ``https``.
        host: ASCII host name (IDNA-encoded) or IP literal, used for ``Host`` and SNI.
        port: Effective TCP port.
        addresses: Every address the host resolved to; all of them are public.
    """

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def connect_address(self) -> IPAddress:
        """The address to connect to (IPv4-mapped IPv6 is unwrapped to plain IPv4)."""
        first = self.addresses[0]
        if isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
            return first.ipv4_mapped
        return first


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver (``getaddrinfo``), TCP addresses only."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def address_problem(address: IPAddress) -> str | None:
    """Explain why ``address`` must not be contacted, or return None if it is public.

    Args:
        address: An IPv4 or IPv6 address.

    Returns:
        A short phrase such as ``"a loopback address"``, or None for a public address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "an IPv6 address with a zone"
        mapped = address.ipv4_mapped
        if mapped is not None:
            # ::ffff:a.b.c.d is just a.b.c.d on a dual-stack socket.
            return address_problem(mapped)
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            problem = address_problem(embedded)
            if problem is not None:
                return f"{problem} embedded in an IPv6 address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private network address"
    if address.is_reserved:
        return "a reserved address"
    if any(address in network for network in _EXTRA_BLOCKED):
        return "a special-purpose address"
    if not address.is_global:
        return "a non-public address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    if address in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _same_host(a: str, b: str) -> bool:
    ip_a, ip_b = _parse_ip(a), _parse_ip(b)
    if ip_a is not None or ip_b is not None:
        return ip_a == ip_b
    return a.rstrip(".").lower() == b.rstrip(".").lower()


def _host_problem(host: str) -> str | None:
    """Reasons to refuse a host name before resolving it."""
    name = host.rstrip(".").lower()
    if not name:
        return "the URL has no host"
    labels = name.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        # Only the canonical dotted quad is accepted; decimal, octal, hex and shortened
        # forms are how filters get bypassed.
        return "the host is an IP address in a non-standard notation"
    if name in _BLOCKED_HOSTNAMES or name.endswith(_BLOCKED_SUFFIXES):
        return f"{name!r} is an internal host name"
    if len(labels) < 2:
        return f"{name!r} is not a public host name"
    return None


def check_url(
    url: str, resolve: Resolver = system_resolver, *, allowed_hosts: Collection[str] = ()
) -> CheckedUrl:
    """Check that ``url`` points at a public HTTP(S) host, resolving it to be sure.

    Args:
        url: The user-supplied URL.
        resolve: Resolver used for host names (IP literals are not resolved).
        allowed_hosts: Test only (``Settings.import_test_allowed_hosts``, refused in
            production): hosts, compared exactly, whose name and addresses are not checked,
            so tests can import from a server on ``127.0.0.1``. Scheme, port and credential
            rules still apply.

    Returns:
        The normalised URL and the addresses it was checked against.

    Raises:
        UrlNotAllowed: If any rule is broken; the message is safe to show to the user and
            never contains the URL's path or query (which may hold tokens).
    """
    if not isinstance(url, str) or not url.strip():
        raise UrlNotAllowed("the URL is empty")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UrlNotAllowed(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url) or "\\" in url:
        # Parsers disagree about these characters, which is how filters get bypassed.
        raise UrlNotAllowed("the URL contains whitespace, control characters or backslashes")

    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in _ALLOWED_SCHEMES:
        if _SCHEME.match(scheme):
            raise UrlNotAllowed(f"only http:// and https:// URLs can be imported, not {scheme}:")
        raise UrlNotAllowed("the URL must start with http:// or https://")

    try:
        parsed = httpx.URL(url)
        other = urlsplit(url)
        other_host = other.hostname
        other_port = other.port
    except (httpx.InvalidURL, ValueError):
        raise UrlNotAllowed("the URL is malformed") from None

    if parsed.userinfo or other.username is not None or other.password is not None:
        raise UrlNotAllowed("URLs with a user name or password are not allowed")

    host_text = parsed.host
    if not host_text:
        raise UrlNotAllowed("the URL has no host")
    # Our checker and the HTTP client must agree on the host, or one of them was fooled.
    if not _same_host(host_text, other_host or ""):
        raise UrlNotAllowed("the URL's host is ambiguous")

    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[parsed.scheme]
    if other_port is not None and other_port != port:
        raise UrlNotAllowed("the URL's port is ambiguous")
    if port not in (80, 443) and port < 1024:
        raise UrlNotAllowed(f"port {port} is not allowed (use 80, 443 or 1024 and above)")

    literal = _parse_ip(host_text)
    ascii_host = parsed.raw_host.decode("ascii")
    test_allowed = any(_same_host(ascii_host, allowed) for allowed in allowed_hosts)
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        problem = None if test_allowed else _host_problem(ascii_host)
        if problem is not None:
            raise UrlNotAllowed(f"cannot import from this URL: {problem}")
        addresses = _resolve(ascii_host, port, resolve)

    if test_allowed:
        logger.warning("host %s is on the test-only allowlist: not checked", ascii_host)
    for address in () if test_allowed else addresses:
        problem = address_problem(address)
        if problem is not None:
            logger.info("refused URL on host %s: %s", ascii_host, problem)
            raise UrlNotAllowed(f"cannot import from this URL: the host is {problem}")

    return CheckedUrl(
        url=str(parsed),
        scheme=parsed.scheme,
        host=ascii_host,
        port=port,
        addresses=addresses,
    )


def _resolve(host: str, port: int, resolve: Resolver) -> tuple[IPAddress, ...]:
    try:
        raw = list(resolve(host, port))
    except socket.gaierror as exc:
        temporary = exc.errno == socket.EAI_AGAIN
        raise UrlNotAllowed(
            f"the host {host!r} could not be resolved", retryable=temporary
        ) from None
    except (OSError, UnicodeError):
        raise UrlNotAllowed(f"the host {host!r} could not be resolved") from None
    addresses: list[IPAddress] = []
    for text in raw:
        # getaddrinfo may append a zone to link-local IPv6 ("fe80::1%eth0").
        address = _parse_ip(text.split("%", 1)[0])
        if address is None:
            raise UrlNotAllowed(f"the host {host!r} resolved to something that is not an IP")
        if "%" in text:
            raise UrlNotAllowed("cannot import from this URL: the host is a link-local address")
        addresses.append(address)
    if not addresses:
        raise UrlNotAllowed(f"the host {host!r} could not be resolved")
    return tuple(addresses)


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that checks every request and connects to the checked address.

    The request URL's host is replaced by the checked IP; the ``Host`` header keeps the
    original name and, for HTTPS, the ``sni_hostname`` extension makes TLS send the original
    name and verify the certificate against it. Keep-alive is off on the default inner
    transport because its pool is keyed by IP: a connection opened (and certificate-checked)
    for one host name must not be reused for another name on the same IP.
    """

    def __init__(
        self,
        resolve: Resolver = system_resolver,
        inner: httpx.BaseTransport | None = None,
        *,
        allowed_hosts: Collection[str] = (),
    ) -> None:
        """Wrap ``inner`` (default: a fresh :class:`httpx.HTTPTransport`).

        Args:
            resolve: Resolver for host names.
            inner: Transport that performs the pinned request; tests pass a MockTransport.
            allowed_hosts: Test-only hosts let through unchecked (see :func:`check_url`).
        """
        self._resolve = resolve
        self._allowed_hosts = tuple(allowed_hosts)
        self._inner = inner or httpx.HTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0), trust_env=False
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Check ``request.url``, then send it to the pinned address."""
        checked = check_url(str(request.url), self._resolve, allowed_hosts=self._allowed_hosts)
        address = checked.connect_address
        pinned_url = request.url.copy_with(host=str(address))
        headers = request.headers.copy()
        if "host" not in headers:
            headers["Host"] = request.url.netloc.decode("ascii")
        extensions = dict(request.extensions)
        if checked.scheme == "https" and _parse_ip(checked.host) is None:
            extensions["sni_hostname"] = checked.host
        pinned = httpx.Request(
            request.method,
            pinned_url,
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )
        return self._inner.handle_request(pinned)

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()


def guarded_client(
    resolve: Resolver = system_resolver,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    allowed_hosts: Collection[str] = (),
) -> httpx.Client:
    """An httpx client whose every request is SSRF-checked and pinned to the checked IP.

    Redirects are not followed automatically; use :func:`open_guarded`, which follows up to
    :data:`MAX_REDIRECTS` hops and checks each one. (If a caller does pass
    ``follow_redirects=True``, each hop still goes through :class:`GuardedTransport`.)
    Environment proxy settings are ignored so requests cannot bypass the transport.

    Args:
        resolve: Resolver for host names.
        transport: Inner transport that performs pinned requests (tests: MockTransport).
        timeout: Request timeouts.
        allowed_hosts: Test-only hosts let through unchecked (see :func:`check_url`).

    Returns:
        A new client; close it (or use it as a context manager) when done.
    """
    return httpx.Client(
        transport=GuardedTransport(resolve, transport, allowed_hosts=allowed_hosts),
        follow_redirects=False,
        max_redirects=MAX_REDIRECTS,
        trust_env=False,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
    )


@contextmanager
def open_guarded(
    client: httpx.Client,
    url: str,
    *,
    resolve: Resolver = system_resolver,
    max_redirects: int = MAX_REDIRECTS,
    headers: dict[str, str] | None = None,
    allowed_hosts: Collection[str] = (),
) -> Iterator[httpx.Response]:
    """GET ``url`` as a stream, following redirects by hand and checking every hop.

    Each URL (the first one and every ``Location``) is checked with :func:`check_url`
    before any request is sent for it, even if ``client`` is not a guarded client.

    Args:
        client: Preferably a :func:`guarded_client`, which also pins the connection.
        url: The URL to fetch.
        resolve: Resolver for host names.
        max_redirects: Most redirect hops to follow.
        headers: Extra request headers.
        allowed_hosts: Test-only hosts let through unchecked (see :func:`check_url`).

    Yields:
        The final, non-redirect response with its body not yet read.

    Raises:
        UrlNotAllowed: If the URL or any redirect target is not allowed, or there are too
            many redirects.
        httpx.HTTPError: On network errors.
    """
    current = url
    for _hop in range(max_redirects + 1):
        check_url(current, resolve, allowed_hosts=allowed_hosts)
        request = client.build_request("GET", current, headers=headers)
        response = client.send(request, stream=True, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code in _REDIRECT_STATUSES and location:
            response.close()
            try:
                current = str(response.url.join(location))
            except httpx.InvalidURL:
                raise UrlNotAllowed("the server redirected to a malformed URL") from None
            logger.debug("following redirect to host %s", httpx.URL(current).host)
            continue
        try:
            yield response
        finally:
            response.close()
        return
    raise UrlNotAllowed(f"the URL redirects more than {max_redirects} times")
