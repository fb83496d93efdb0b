"""Fetch an image URL without becoming a proxy into private networks (docs/security.md).

Every hop (the URL and each redirect) is checked the same way: http or https only, an
allowed host, and every address the host resolves to public. The connection then goes to
the very address that was checked (the Host header and TLS name stay the host's), so a
DNS answer that changes between check and use cannot redirect it. Size, the number of
redirects and time are bounded; time for the whole fetch, not per read, so a server that
trickles bytes cannot hold it open.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore2
import httpx2

from tools.errors import ImageError
from tools.image_policy import ImagePolicy

_SCHEMES = {"http": 80, "https": 443}
_REDIRECTS = {301, 302, 303, 307, 308}
# NAT64 (RFC 6052) and 6to4 (RFC 3056) addresses carry an IPv4 address that is where they lead.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_USER_AGENT = b"paligemma-tools (image fetch)"
_TRANSPORT_ERRORS = (
    httpcore2.NetworkError,
    httpcore2.ProtocolError,
    httpcore2.UnsupportedProtocol,
    httpcore2.ProxyError,
    httpcore2.ConnectionNotAvailable,
)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refused(url: str, why: str) -> ImageError:
    shown = url if len(url) <= 300 else url[:300] + "..."
    return ImageError(f"refused to fetch {shown!r}: {why}")


def is_public_address(address: IPAddress) -> bool:
    """False for loopback, private, link-local (cloud metadata), multicast, reserved and unspecified."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        elif address.sixtofour is not None:
            if not is_public_address(address.sixtofour):
                return False
        elif address.is_site_local:
            return False  # fec0::/10, deprecated but still routed as private by some
    return address.is_global and not (address.is_multicast or address.is_reserved)


def _host_allowed(host: str, allowed: tuple[str, ...] | None) -> bool:
    if allowed is None:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".").strip("[]")
        if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


def _ascii_host(host: str, url: str) -> str:
    """The host as it goes on the wire: IDNA (punycode) for international names."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise _refused(url, f"{host!r} is not a valid host name") from e


def _resolve(host: str, port: int, url: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise _refused(url, f"the host {host!r} does not resolve ({e.strerror})") from e
    except (UnicodeError, ValueError) as e:  # a label over 63 characters, a NUL...
        raise _refused(url, f"{host!r} is not a valid host name") from e
    addresses: list[IPAddress] = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise _refused(url, f"the host {host!r} does not resolve")
    return addresses


def _checked_address(url: str, policy: ImagePolicy) -> tuple[str, int, str, IPAddress]:
    """(scheme, port, ASCII host, address to connect to) after every check passed."""
    try:
        parts = urlsplit(url)
    except ValueError as e:  # an unclosed IPv6 bracket, ...
        raise _refused(url, f"it is not a valid URL ({e})") from e
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise _refused(url, f"only http and https URLs are fetched, not {scheme or 'no scheme'!r}")
    host = parts.hostname
    if not host:
        raise _refused(url, "the URL has no host")
    if parts.username or parts.password:
        raise _refused(url, "URLs with credentials are not fetched")
    if not _host_allowed(host, policy.allowed_hosts):
        raise _refused(url, f"the host {host!r} is not in this deployment's allowed hosts")
    try:
        port = parts.port if parts.port is not None else _SCHEMES[scheme]
    except ValueError as e:
        raise _refused(url, "the port is not a number in 1..65535") from e
    if port == 0:
        raise _refused(url, "the port is not a number in 1..65535")
    host = _ascii_host(host, url)
    addresses = _resolve(host, port, url)
    if not policy.allow_private_networks:
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            raise _refused(
                url,
                f"{host!r} resolves to {blocked[0]}, a loopback, private, link-local or otherwise non-public "
                "address. Only public addresses are fetched; pass the image itself instead.",
            )
    return scheme, port, host, addresses[0]


def fetch_url(url: str, policy: ImagePolicy) -> bytes:
    """The body of `url` (following checked redirects), at most `policy.max_bytes` long."""
    if not policy.allow_urls:
        raise _refused(url, "URLs are not allowed here; pass the image data or an allowed file instead")
    deadline = time.monotonic() + policy.url_timeout_s
    with httpcore2.ConnectionPool(
        ssl_context=_ssl_context(),
        network_backend=_DeadlineBackend(deadline),
    ) as pool:
        for _ in range(policy.max_redirects + 1):
            scheme, port, host, address = _checked_address(url, policy)
            answer = _fetch_once(pool, url, scheme, port, host, address, policy, deadline)
            if isinstance(answer, bytes):
                return answer
            try:
                url = urljoin(url, answer.location)
            except ValueError as e:
                raise _refused(url, f"it redirects to an invalid URL {answer.location!r} ({e})") from e
    raise _refused(url, f"more than {policy.max_redirects} redirects")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Certificates verified against the system's CAs; built once, on the first fetch."""
    return httpx2.create_ssl_context(verify=True, trust_env=False)


@dataclass(frozen=True)
class _Redirect:
    location: str


def _header(response: httpcore2.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _fetch_once(
    pool: httpcore2.ConnectionPool,
    url: str,
    scheme: str,
    port: int,
    host: str,
    address: IPAddress,
    policy: ImagePolicy,
    deadline: float,
) -> bytes | _Redirect:
    """GET `url` from `address`: its body, or where it redirects."""
    parts = urlsplit(url)
    ip_host = f"[{address}]" if address.version == 6 else str(address)
    try:
        # httpx2 percent-encodes what the caller left raw (spaces, non-ASCII) in the path and query.
        target = httpx2.URL(
            f"{scheme}://{ip_host}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        )
    except (httpx2.InvalidURL, UnicodeError) as e:  # control characters, lone surrogates, too long
        raise _refused(url, f"it is not a valid URL ({e})") from e
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets in Host
    host_header = name if port == _SCHEMES[scheme] else f"{name}:{port}"
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _refused(url, f"no answer within {policy.url_timeout_s:g} s")
    try:
        with pool.stream(
            "GET",
            httpcore2.URL(scheme=target.raw_scheme, host=target.raw_host, port=target.port, target=target.raw_path),
            headers=[
                (b"Host", host_header.encode("ascii")),
                (b"Accept", b"image/*"),
                (b"Accept-Encoding", b"identity"),  # the body is the image file itself, never gzipped
                (b"User-Agent", _USER_AGENT),
            ],
            extensions={
                "sni_hostname": host,
                "timeout": dict.fromkeys(("connect", "read", "write", "pool"), remaining),
            },
        ) as response:
            if response.status in _REDIRECTS:
                location = _header(response, b"location")
                if not location:
                    raise _refused(url, f"HTTP {response.status} redirect without a Location header")
                return _Redirect(location)
            if response.status != 200:
                raise _refused(url, f"the server answered HTTP {response.status}")
            declared = _header(response, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
                raise _refused(url, f"it declares {int(declared):,} bytes; the limit is {policy.max_bytes:,}")
            body = bytearray()
            for chunk in response.iter_stream():
                body += chunk
                if len(body) > policy.max_bytes:
                    raise _refused(url, f"it is larger than the {policy.max_bytes:,}-byte limit")
    except httpcore2.TimeoutException as e:
        raise _refused(url, f"no complete answer within {policy.url_timeout_s:g} s") from e
    except _TRANSPORT_ERRORS as e:
        raise _refused(url, f"the request failed ({type(e).__name__}: {e})") from e
    return bytes(body)


class _DeadlineBackend(httpcore2.NetworkBackend):
    """Plain sockets whose every operation ends by one deadline, for the whole fetch."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._sockets = httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        limit = _time_left(self._deadline, timeout, httpcore2.ConnectTimeout)
        stream = self._sockets.connect_tcp(host, port, limit, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        raise httpcore2.UnsupportedProtocol("image URLs are fetched over TCP only")


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(self._deadline, timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(self._deadline, timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        limit = _time_left(self._deadline, timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, limit), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _time_left(deadline: float, timeout: float | None, error: type[httpcore2.TimeoutException]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the time allowed for the fetch ran out")
    return left if timeout is None else min(timeout, left)
