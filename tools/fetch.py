"""Fetch an image URL without becoming a proxy into private networks (docs/security.md).

Every hop (the URL and each redirect) is checked the same way: http or https only, an
allowed host, and every address the host resolves to public. The connection then goes to
the very address that was checked (the Host header and TLS name stay the host's), so a
DNS answer that changes between check and use cannot redirect it. Size, time and the
number of redirects are bounded.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx2

from tools.errors import ImageError
from tools.image_policy import ImagePolicy

_SCHEMES = {"http": 80, "https": 443}
_REDIRECTS = {301, 302, 303, 307, 308}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refused(url: str, why: str) -> ImageError:
    return ImageError(f"refused to fetch {url!r}: {why}")


def is_public_address(address: IPAddress) -> bool:
    """False for loopback, private, link-local (cloud metadata), multicast, reserved and unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _host_allowed(host: str, allowed: tuple[str, ...] | None) -> bool:
    if allowed is None:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower()
        if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


def _resolve(host: str, port: int, url: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise _refused(url, f"the host {host!r} does not resolve ({e.strerror})") from e
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _checked_address(url: str, policy: ImagePolicy) -> tuple[str, int, str, IPAddress]:
    """(scheme, port, host, address to connect to) after every check passed."""
    parts = urlsplit(url)
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
        port = parts.port or _SCHEMES[scheme]
    except ValueError as e:
        raise _refused(url, "the port is not a number in 1..65535") from e
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
    with httpx2.Client(trust_env=False, follow_redirects=False, verify=True) as client:
        for _ in range(policy.max_redirects + 1):
            scheme, port, host, address = _checked_address(url, policy)
            answer = _fetch_once(client, url, scheme, port, host, address, policy, deadline)
            if isinstance(answer, bytes):
                return answer
            url = urljoin(url, answer.location)
    raise _refused(url, f"more than {policy.max_redirects} redirects")


@dataclass(frozen=True)
class _Redirect:
    location: str


def _fetch_once(
    client: httpx2.Client,
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
    target = f"{scheme}://{ip_host}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
    host_header = host if port == _SCHEMES[scheme] else f"{host}:{port}"
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _refused(url, f"no answer within {policy.url_timeout_s:g} s")
    try:
        with client.stream(
            "GET",
            target,
            headers={"Host": host_header, "Accept": "image/*"},
            extensions={"sni_hostname": host},
            timeout=httpx2.Timeout(remaining),
        ) as response:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise _refused(url, f"HTTP {response.status_code} redirect without a Location header")
                return _Redirect(location)
            if response.status_code != 200:
                raise _refused(url, f"the server answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
                raise _refused(url, f"it declares {int(declared):,} bytes; the limit is {policy.max_bytes:,}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > policy.max_bytes:
                    raise _refused(url, f"it is larger than the {policy.max_bytes:,}-byte limit")
                if time.monotonic() > deadline:
                    raise _refused(url, f"it did not arrive within {policy.url_timeout_s:g} s")
    except httpx2.TimeoutException as e:
        raise _refused(url, f"no answer within {policy.url_timeout_s:g} s") from e
    except httpx2.HTTPError as e:
        raise _refused(url, f"the request failed ({type(e).__name__}: {e})") from e
    return bytes(body)
