"""fetch_url against real HTTP(S) servers on loopback: what is refused, what is fetched, and within which limits."""

from __future__ import annotations

import datetime
import http.server
import io
import ipaddress
import re
import socket
import socketserver
import ssl
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from PIL import Image

import tools.fetch as fetch
from tools.errors import ImageError
from tools.fetch import fetch_url, is_public_address
from tools.image_policy import ImagePolicy

PRIVATE_OK = ImagePolicy(allow_private_networks=True, url_timeout_s=5)
SLOW_LIMIT_S = 1.0
HANDLER_LIMIT_S = 5.0  # no test server handler runs longer than this, even if a client never hangs up


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (200, 30, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()

# ---------------------------------------------------------------------------- the test server


@dataclass(frozen=True)
class Seen:
    path: str
    host: str | None
    headers: dict[str, str]


class Server(http.server.ThreadingHTTPServer):
    """Records every connection and request; server_close() waits for its handler threads."""

    daemon_threads = False

    def __init__(self, host: str, family: socket.AddressFamily, tls: ssl.SSLContext | None = None) -> None:
        self.address_family = family
        self.tls = tls
        self.requests: list[Seen] = []
        self.connections = 0
        self.tls_errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        super().__init__((host, 0), Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skips HTTPServer's reverse DNS lookup of the address
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return self.server_port

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.lock:
            self.connections += 1
        return True

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # The handshake happens in the handler thread (finish_request), never in the accept loop.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(HANDLER_LIMIT_S)
                request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                self.tls_errors.append(e)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (the point of several tests) are not errors here

    def url(self, path: str = "/image.png", host: str | None = None) -> str:
        scheme = "https" if self.tls else "http"
        name = host or (f"[{self.server_name}]" if ":" in self.server_name else self.server_name)
        return f"{scheme}://{name}:{self.port}{path}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        with self.server.lock:
            self.server.requests.append(Seen(self.path, self.headers.get("Host"), dict(self.headers.items())))
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        route, _, argument = unquote(parts.path).strip("/").partition("/")
        try:
            self._route(route, argument, query)
        except OSError:
            pass  # the client went away: expected when it refuses a body or runs out of time

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _trickle(self, head: bytes, piece: bytes) -> None:
        """Sends `head`, then `piece` every 0.1 s until the client hangs up or the server stops."""
        self.close_connection = True
        self.wfile.write(head)
        deadline = time.monotonic() + HANDLER_LIMIT_S
        while time.monotonic() < deadline and not self.server.stopping.wait(0.1):
            self.wfile.write(piece)

    def _route(self, route: str, argument: str, query: dict[str, str]) -> None:
        if route in ("image.png", "ä b.png", ""):
            self._send(200, PNG, {"Content-Type": "image/png"})
        elif route == "status":
            self._send(int(argument))
        elif route == "chain":  # /chain/3 -> /chain/2 -> /chain/1 -> /chain/0 -> the image
            remaining = int(argument)
            if remaining == 0:
                self._send(200, PNG)
            else:
                self._send(int(query.get("code", "302")), headers={"Location": f"/chain/{remaining - 1}"})
        elif route == "redirect":
            self._send(int(query.get("code", "302")), headers={"Location": query["to"]})
        elif route == "redirect-without-location":
            self._send(302)
        elif route == "sized":
            self._send(200, b"x" * int(argument))
        elif route == "chunked":  # no Content-Length: the size shows only as it arrives
            self.close_connection = True
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            total = int(argument)
            while total > 0:
                size = min(1024, total)
                self.wfile.write(f"{size:x}\r\n".encode() + b"x" * size + b"\r\n")
                total -= size
            self.wfile.write(b"0\r\n\r\n")
        elif route == "trickle-body":
            self._trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n", b"x")
        elif route == "trickle-headers":
            self._trickle(b"HTTP/1.1 200 OK\r\n", b"X-Padding: x\r\n")
        elif route == "silent":
            self.close_connection = True
            self.server.stopping.wait(HANDLER_LIMIT_S)
        else:
            self._send(404)


ServerFactory = Callable[..., Server]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Starts servers on loopback; each is stopped and its threads joined at teardown."""
    running: list[tuple[Server, threading.Thread]] = []

    def start(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Server:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            server = Server(host, family, tls)
        except OSError as e:
            pytest.skip(f"cannot listen on {host} here: {e}")
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=HANDLER_LIMIT_S)


@pytest.fixture
def server(make_server: ServerFactory) -> Server:
    return make_server()


@dataclass
class Connections:
    """Every TCP connection the process opens through socket.create_connection (httpcore's way)."""

    attempted: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    record = Connections()
    real = socket.create_connection

    def spy(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        record.attempted.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return record


class FakeDNS:
    """Answers for made-up names, seen by tools.fetch only; IP literals resolve as usual."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers  # name -> successive answers; the last one repeats
        self.asked: list[str] = []
        self._real = socket.getaddrinfo

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.asked.append(host)
        name = host.lower().rstrip(".")
        if name not in self.answers:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            return self._real(host, port, *args, **kwargs)
        answers = self.answers[name]
        addresses = answers[min(len(self.asked_for(name)) - 1, len(answers) - 1)]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]

    def asked_for(self, name: str) -> list[str]:
        return [host for host in self.asked if host.lower().rstrip(".") == name]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
        module = types.SimpleNamespace(
            getaddrinfo=self.getaddrinfo, gaierror=socket.gaierror, SOCK_STREAM=socket.SOCK_STREAM
        )
        monkeypatch.setattr(fetch, "socket", module)
        return self


def _resolves_to_loopback(host: str) -> bool:
    try:
        return any(ipaddress.ip_address(i[4][0]).is_loopback for i in socket.getaddrinfo(host, 80))
    except (OSError, UnicodeError):
        return False


def _refused(url: str, policy: ImagePolicy) -> str:
    with pytest.raises(ImageError, match=r"^refused to fetch ") as caught:
        fetch_url(url, policy)
    return str(caught.value)


# ---------------------------------------------------------------------------- refused by default


@pytest.mark.parametrize(
    ("template", "message"),
    [
        pytest.param("http://127.0.0.1:{port}/x.png", r"'127\.0\.0\.1' resolves to 127\.0\.0\.1, a loopback", id="ip"),
        pytest.param("http://127.0.0.2:{port}/", r"resolves to 127\.0\.0\.2", id="other-loopback"),
        pytest.param("http://localhost:{port}/", r"'localhost' resolves to (127\.0\.0\.1|::1)", id="localhost"),
        pytest.param("http://0.0.0.0:{port}/", r"resolves to 0\.0\.0\.0", id="unspecified"),  # Linux: loopback
        pytest.param("http://[::ffff:127.0.0.1]:{port}/", r"resolves to ::ffff:(127\.0\.0\.1|7f00:1)", id="mapped"),
        pytest.param("http://[::ffff:7f00:1]:{port}/", r"resolves to ::ffff:(127\.0\.0\.1|7f00:1)", id="mapped-hex"),
    ],
)
def test_default_policy_refuses_loopback(server: Server, connections: Connections, template: str, message: str) -> None:
    refusal = _refused(template.format(port=server.port), ImagePolicy())
    assert re.search(message, refusal), refusal
    assert "Only public addresses are fetched" in refusal
    assert connections.attempted == []
    assert server.connections == 0


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("2130706433", id="decimal"),
        pytest.param("0177.0.0.1", id="octal"),
        pytest.param("0x7f.0.0.1", id="hex"),
        pytest.param("127.1", id="short"),
    ],
)
def test_default_policy_refuses_numeric_spellings_of_loopback(
    server: Server, connections: Connections, host: str
) -> None:
    refusal = _refused(f"http://{host}:{server.port}/", ImagePolicy())
    if _resolves_to_loopback(host):  # glibc's inet_aton reads these as 127.0.0.1, without asking DNS
        assert re.search(rf"'{re.escape(host)}' resolves to 127\.0\.0\.1, a loopback", refusal), refusal
    else:
        assert "does not resolve" in refusal
    assert connections.attempted == []
    assert server.connections == 0


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("[::1]", id="ipv6-loopback"),
        pytest.param("[::]", id="ipv6-unspecified"),
        pytest.param("[0:0:0:0:0:0:0:1]", id="ipv6-loopback-long"),
    ],
)
def test_default_policy_refuses_ipv6_loopback(make_server: ServerFactory, connections: Connections, host: str) -> None:
    server6 = make_server("::1")  # skips the test when this machine has no IPv6 loopback
    refusal = _refused(f"http://{host}:{server6.port}/", ImagePolicy())
    assert re.search(r"resolves to ::1?, a loopback", refusal), refusal
    assert connections.attempted == []
    assert server6.connections == 0


@pytest.mark.parametrize(
    ("url", "address"),
    [
        pytest.param("http://169.254.169.254/latest/meta-data/", "169.254.169.254", id="cloud-metadata"),
        pytest.param("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254", id="cloud-metadata-ipv6"),
        pytest.param("http://10.0.0.1/x.png", "10.0.0.1", id="10/8"),
        pytest.param("http://10.255.255.255:8080/x.png", "10.255.255.255", id="10/8-top"),
        pytest.param("http://192.168.1.1/x.png", "192.168.1.1", id="192.168/16"),
        pytest.param("http://172.16.0.1/x.png", "172.16.0.1", id="172.16/12"),
        pytest.param("http://172.31.255.1/x.png", "172.31.255.1", id="172.16/12-top"),
        pytest.param("http://100.64.0.1/x.png", "100.64.0.1", id="cgnat"),
        pytest.param("http://224.0.0.1/x.png", "224.0.0.1", id="multicast"),
        pytest.param("http://[fe80::1]/x.png", "fe80::1", id="ipv6-link-local"),
        pytest.param("http://[fd12:3456::1]/x.png", "fd12:3456::1", id="ipv6-unique-local"),
        pytest.param("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe", id="nat64-of-metadata"),
        pytest.param("http://[2002:a9fe:a9fe::]/", "2002:a9fe:a9fe::", id="6to4-of-metadata"),
    ],
)
def test_default_policy_refuses_private_addresses_before_connecting(
    connections: Connections, url: str, address: str
) -> None:
    refusal = _refused(url, ImagePolicy())
    assert f"resolves to {address}, a loopback, private, link-local" in refusal
    assert connections.attempted == []


@pytest.mark.parametrize(
    ("template", "message"),
    [
        pytest.param("file:///etc/passwd", "only http and https URLs are fetched, not 'file'", id="file"),
        pytest.param("gopher://127.0.0.1:{port}/_GET", "not 'gopher'", id="gopher"),
        pytest.param("ftp://127.0.0.1:{port}/x.png", "not 'ftp'", id="ftp"),
        pytest.param("ws://127.0.0.1:{port}/x.png", "not 'ws'", id="websocket"),
        pytest.param("//127.0.0.1:{port}/x.png", "not 'no scheme'", id="scheme-relative"),
        pytest.param("http:///x.png", "the URL has no host", id="no-host"),
        pytest.param("http://user:secret@127.0.0.1:{port}/image.png", "URLs with credentials", id="user-password"),
        pytest.param("http://user@127.0.0.1:{port}/image.png", "URLs with credentials", id="user"),
        pytest.param("http://:secret@127.0.0.1:{port}/image.png", "URLs with credentials", id="password"),
        pytest.param("http://127.0.0.1:0/image.png", r"the port is not a number in 1\.\.65535", id="port-0"),
        pytest.param("http://127.0.0.1:99999/image.png", r"the port is not a number", id="port-too-large"),
        pytest.param("http://127.0.0.1:http/image.png", r"the port is not a number", id="port-not-number"),
        pytest.param("http://" + "a" * 64 + ".test/x.png", "is not a valid host name", id="label-too-long"),
        pytest.param("http://a..test/x.png", "is not a valid host name", id="empty-label"),
        pytest.param("http://[::1/x.png", r"it is not a valid URL \(Invalid IPv6 URL\)", id="unclosed-bracket"),
        pytest.param("http://127.0.0.1:{port}/a\0b.png", "it is not a valid URL", id="control-character"),
        pytest.param("http://127.0.0.1:{port}/\udcff.png", "it is not a valid URL", id="lone-surrogate"),
        pytest.param("http://127.0.0.1:{port}/" + "a" * 70_000, r"\.\.\.': it is not a valid URL", id="too-long"),
    ],
)
def test_refused_urls_even_on_private_networks(
    server: Server, connections: Connections, template: str, message: str
) -> None:
    refusal = _refused(template.format(port=server.port), PRIVATE_OK)
    assert message in refusal or re.search(message, refusal), refusal
    assert connections.attempted == []
    assert server.connections == 0


def test_urls_not_allowed(server: Server) -> None:
    policy = ImagePolicy(allow_urls=False, allow_private_networks=True)
    assert "URLs are not allowed here" in _refused(server.url(), policy)
    assert server.connections == 0


# ---------------------------------------------------------------------------- fetched on private networks


def test_fetches_an_image(server: Server) -> None:
    assert fetch_url(server.url("/image.png?size=small"), PRIVATE_OK) == PNG
    [seen] = server.requests
    assert seen.path == "/image.png?size=small"
    assert seen.host == f"127.0.0.1:{server.port}"
    assert seen.headers["Accept"] == "image/*"
    assert seen.headers["Accept-Encoding"] == "identity"  # no gzip: the body must be the image file itself
    assert "Authorization" not in seen.headers and "Cookie" not in seen.headers


def test_ipv6_literal_keeps_brackets_in_host_header(make_server: ServerFactory) -> None:
    server6 = make_server("::1")
    assert fetch_url(server6.url(), PRIVATE_OK) == PNG
    assert server6.requests[0].host == f"[::1]:{server6.port}"


@pytest.mark.parametrize("status", [400, 403, 404, 410, 429, 500, 502, 503, 204, 206, 304])
def test_non_200_answers_refused_with_their_status(server: Server, status: int) -> None:
    with pytest.raises(ImageError, match=rf"the server answered HTTP {status}$"):
        fetch_url(server.url(f"/status/{status}"), PRIVATE_OK)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_chain_within_the_limit_is_followed(server: Server, code: int) -> None:
    assert fetch_url(server.url(f"/chain/3?code={code}"), PRIVATE_OK) == PNG  # max_redirects is 3
    assert [seen.path.split("?")[0] for seen in server.requests] == ["/chain/3", "/chain/2", "/chain/1", "/chain/0"]


def test_more_redirects_than_allowed_refused(server: Server) -> None:
    with pytest.raises(ImageError, match="more than 3 redirects"):
        fetch_url(server.url("/chain/4"), PRIVATE_OK)
    assert len(server.requests) == 4  # the fifth hop was never requested
    no_redirects = PRIVATE_OK.model_copy(update={"max_redirects": 0})
    with pytest.raises(ImageError, match="more than 0 redirects"):
        fetch_url(server.url("/chain/1"), no_redirects)
    assert fetch_url(server.url("/chain/0"), no_redirects) == PNG


@pytest.mark.parametrize(
    ("target", "message"),
    [
        pytest.param("file:///etc/passwd", "only http and https URLs are fetched, not 'file'", id="file"),
        pytest.param("gopher://127.0.0.1:70/_x", "not 'gopher'", id="gopher"),
        pytest.param("ftp://127.0.0.1/x.png", "not 'ftp'", id="ftp"),
        pytest.param("http://user:pw@127.0.0.1:{port}/image.png", "URLs with credentials", id="credentials"),
        pytest.param("http://127.0.0.1:0/image.png", "the port is not a number", id="port-0"),
        pytest.param("http://[::1/x.png", r"it redirects to an invalid URL 'http://\[::1/x.png'", id="invalid-url"),
    ],
)
def test_redirect_targets_are_checked_like_urls(server: Server, target: str, message: str) -> None:
    url = server.url("/redirect?to=" + target.format(port=server.port))
    with pytest.raises(ImageError, match=message):
        fetch_url(url, PRIVATE_OK)
    assert len(server.requests) == 1


def test_redirect_without_location_refused(server: Server) -> None:
    with pytest.raises(ImageError, match="HTTP 302 redirect without a Location header"):
        fetch_url(server.url("/redirect-without-location"), PRIVATE_OK)


def test_redirect_into_a_host_outside_allowed_hosts_refused(server: Server, connections: Connections) -> None:
    policy = PRIVATE_OK.model_copy(update={"allowed_hosts": ("127.0.0.1",)})
    to_localhost = server.url(f"/redirect?to=http://localhost:{server.port}/image.png")
    with pytest.raises(ImageError, match=r"refused to fetch 'http://localhost:\d+/image.png': the host 'localhost' is"):
        fetch_url(to_localhost, policy)
    assert len(server.requests) == 1
    assert len(connections.attempted) == 1


def test_redirect_from_a_public_host_into_loopback_refused(
    make_server: ServerFactory, connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default policy: a 'public' first hop (127.0.0.2, declared public here) redirects to 127.0.0.1."""
    public = make_server("127.0.0.2")
    private = make_server("127.0.0.1")
    real = fetch.is_public_address
    monkeypatch.setattr(fetch, "is_public_address", lambda a: a == ipaddress.ip_address("127.0.0.2") or real(a))
    assert fetch_url(public.url(), ImagePolicy()) == PNG  # the stand-in for a public server is reachable

    with pytest.raises(ImageError, match=r"'http://127\.0\.0\.1:\d+/image\.png': '127\.0\.0\.1' resolves to 127"):
        fetch_url(public.url("/redirect?to=" + private.url()), ImagePolicy())
    assert private.connections == 0
    assert all(host == "127.0.0.2" for host, _ in connections.attempted)


def test_relative_and_absolute_redirects(server: Server) -> None:
    assert fetch_url(server.url("/redirect?to=/image.png"), PRIVATE_OK) == PNG
    assert fetch_url(server.url("/redirect?to=image.png"), PRIVATE_OK) == PNG
    assert fetch_url(server.url("/redirect?to=" + server.url()), PRIVATE_OK) == PNG


# ---------------------------------------------------------------------------- size and time


def test_body_of_exactly_max_bytes_is_fetched(server: Server) -> None:
    policy = PRIVATE_OK.model_copy(update={"max_bytes": 5000})
    assert fetch_url(server.url("/sized/5000"), policy) == b"x" * 5000
    assert fetch_url(server.url("/chunked/5000"), policy) == b"x" * 5000


def test_body_declared_larger_than_max_bytes_refused(server: Server) -> None:
    policy = PRIVATE_OK.model_copy(update={"max_bytes": 5000})
    with pytest.raises(ImageError, match="it declares 5,001 bytes; the limit is 5,000"):
        fetch_url(server.url("/sized/5001"), policy)


def test_streamed_body_larger_than_max_bytes_refused(server: Server) -> None:
    policy = PRIVATE_OK.model_copy(update={"max_bytes": 5000})
    with pytest.raises(ImageError, match="it is larger than the 5,000-byte limit"):
        fetch_url(server.url("/chunked/50000"), policy)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/silent", id="never-answers"),
        pytest.param("/trickle-body", id="body-one-byte-per-100ms"),
        pytest.param("/trickle-headers", id="headers-one-line-per-100ms"),
        pytest.param("/redirect?to=/trickle-body", id="redirect-then-trickle"),
    ],
)
def test_slow_servers_cut_off_at_the_total_timeout(server: Server, path: str) -> None:
    policy = PRIVATE_OK.model_copy(update={"url_timeout_s": SLOW_LIMIT_S})
    start = time.monotonic()
    with pytest.raises(ImageError, match="no complete answer within 1 s"):
        fetch_url(server.url(path), policy)
    elapsed = time.monotonic() - start
    assert SLOW_LIMIT_S * 0.9 <= elapsed < SLOW_LIMIT_S + 1.0


# ---------------------------------------------------------------------------- hosts, DNS


def test_connection_goes_to_the_checked_address(
    server: Server, connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 once, then something else; only the checked answer is used."""
    dns = FakeDNS({"images.test": [["127.0.0.1"], ["10.255.255.1"]]}).install(monkeypatch)
    policy = PRIVATE_OK.model_copy(update={"allowed_hosts": ("images.test",)})

    assert fetch_url(f"http://images.test:{server.port}/image.png", policy) == PNG

    assert dns.asked_for("images.test") == ["images.test"]  # resolved once
    assert connections.attempted == [("127.0.0.1", server.port)]  # by address: the name is not resolved again
    [seen] = server.requests
    assert seen.host == f"images.test:{server.port}"  # the server still sees the name


def test_every_address_must_be_public(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that answers one public and one private address is refused, whichever comes first."""
    FakeDNS({"mixed.test": [["8.8.8.8", "127.0.0.1"]]}).install(monkeypatch)
    assert "resolves to 127.0.0.1" in _refused(f"http://mixed.test:{server.port}/", ImagePolicy())
    assert server.connections == 0


def test_unresolvable_host_refused(monkeypatch: pytest.MonkeyPatch, connections: Connections) -> None:
    dns = FakeDNS({}).install(monkeypatch)
    refusal = _refused("http://no-such-host.test/x.png", PRIVATE_OK)
    assert "the host 'no-such-host.test' does not resolve (Name or service not known)" in refusal
    assert dns.asked == ["no-such-host.test"]
    assert connections.attempted == []


def test_international_names_and_paths_are_encoded(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeDNS({"xn--bcher-kva.test": [["127.0.0.1"]]}).install(monkeypatch)
    assert fetch_url(f"http://bücher.test:{server.port}/ä b.png", PRIVATE_OK) == PNG
    [seen] = server.requests
    assert seen.host == f"xn--bcher-kva.test:{server.port}"
    assert seen.path == "/%C3%A4%20b.png"


@pytest.mark.parametrize(
    ("allowed", "host", "fetched"),
    [
        pytest.param(("images.test",), "images.test", True, id="exact"),
        pytest.param(("images.test",), "IMAGES.Test", True, id="exact-any-case"),
        pytest.param(("images.test",), "images.test.", True, id="exact-trailing-dot"),
        pytest.param(("Images.Test.",), "images.test", True, id="entry-normalised"),
        pytest.param(("images.test",), "cdn.images.test", False, id="exact-not-subdomain"),
        pytest.param(("images.test",), "images.test.evil.test", False, id="exact-not-prefix"),
        pytest.param((".images.test",), "cdn.images.test", True, id="suffix-subdomain"),
        pytest.param((".images.test",), "a.b.images.test", True, id="suffix-deep"),
        pytest.param((".images.test",), "images.test", True, id="suffix-includes-the-domain"),
        pytest.param((".images.test",), "evilimages.test", False, id="suffix-on-label-boundary"),
        pytest.param((".images.test",), "images.test.evil.test", False, id="suffix-not-prefix"),
        pytest.param(("other.test", ".images.test"), "cdn.images.test", True, id="any-entry"),
        pytest.param((), "images.test", False, id="empty-allows-nothing"),
        pytest.param(("127.0.0.1",), "127.0.0.1", True, id="ip-literal"),
        pytest.param(("127.0.0.1",), "localhost", False, id="ip-does-not-allow-names"),
    ],
)
def test_allowed_hosts(
    server: Server, monkeypatch: pytest.MonkeyPatch, allowed: tuple[str, ...], host: str, fetched: bool
) -> None:
    names = ["images.test", "cdn.images.test", "a.b.images.test", "evilimages.test", "images.test.evil.test"]
    FakeDNS({name: [["127.0.0.1"]] for name in [*names, "localhost"]}).install(monkeypatch)
    policy = PRIVATE_OK.model_copy(update={"allowed_hosts": allowed})
    url = f"http://{host}:{server.port}/image.png"
    if fetched:
        assert fetch_url(url, policy) == PNG
        assert len(server.requests) == 1
    else:
        refusal = _refused(url, policy)
        assert f"the host {host.lower()!r} is not in this deployment's allowed hosts" in refusal
        assert server.connections == 0


@pytest.mark.parametrize(
    ("address", "public"),
    [
        pytest.param("127.0.0.1", False, id="loopback"),
        pytest.param("127.255.255.254", False, id="loopback-top"),
        pytest.param("::1", False, id="ipv6-loopback"),
        pytest.param("10.1.2.3", False, id="private-10"),
        pytest.param("172.16.0.1", False, id="private-172.16"),
        pytest.param("172.31.255.255", False, id="private-172.31"),
        pytest.param("192.168.0.1", False, id="private-192.168"),
        pytest.param("169.254.169.254", False, id="link-local-metadata"),
        pytest.param("fe80::1", False, id="ipv6-link-local"),
        pytest.param("fd00::1", False, id="ipv6-unique-local-fd00"),
        pytest.param("fc00::1", False, id="ipv6-unique-local-fc00"),
        pytest.param("fec0::1", False, id="ipv6-site-local"),
        pytest.param("224.0.0.1", False, id="multicast"),
        pytest.param("239.255.255.250", False, id="multicast-ssdp"),
        pytest.param("ff02::1", False, id="ipv6-multicast"),
        pytest.param("ff0e::1", False, id="ipv6-multicast-global-scope"),
        pytest.param("0.0.0.0", False, id="unspecified"),
        pytest.param("::", False, id="ipv6-unspecified"),
        pytest.param("255.255.255.255", False, id="broadcast"),
        pytest.param("240.0.0.1", False, id="reserved"),
        pytest.param("100.64.0.1", False, id="cgnat"),
        pytest.param("192.0.2.1", False, id="documentation"),
        pytest.param("198.18.0.1", False, id="benchmarking"),
        pytest.param("2001:db8::1", False, id="ipv6-documentation"),
        pytest.param("::ffff:127.0.0.1", False, id="ipv4-mapped-loopback"),
        pytest.param("::ffff:10.0.0.1", False, id="ipv4-mapped-private"),
        pytest.param("::ffff:169.254.169.254", False, id="ipv4-mapped-metadata"),
        pytest.param("::127.0.0.1", False, id="ipv4-compatible-loopback"),
        pytest.param("64:ff9b::127.0.0.1", False, id="nat64-loopback"),
        pytest.param("64:ff9b::169.254.169.254", False, id="nat64-metadata"),
        pytest.param("64:ff9b:1::a00:1", False, id="nat64-local-use"),
        pytest.param("2002:7f00:1::", False, id="6to4-loopback"),
        pytest.param("2002:a9fe:a9fe::", False, id="6to4-metadata"),
        pytest.param("2001::1", False, id="teredo"),
        pytest.param("8.8.8.8", True, id="public-v4"),
        pytest.param("1.1.1.1", True, id="public-v4-cloudflare"),
        pytest.param("2606:4700:4700::1111", True, id="public-v6"),
        pytest.param("2001:4860:4860::8888", True, id="public-v6-google"),
        pytest.param("::ffff:8.8.8.8", True, id="ipv4-mapped-public"),
        pytest.param("64:ff9b::8.8.8.8", True, id="nat64-public"),  # how IPv6-only networks reach IPv4 sites
        pytest.param("2002:808:808::", True, id="6to4-public"),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


# ---------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Certificates:
    ca_pem: bytes
    chain_file: Path
    key_file: Path


def _certificates(tmp_path: Path, name: str) -> Certificates:
    """A throwaway CA and a server certificate for `name` only (not for 127.0.0.1), signed by it."""
    from cryptography import x509  # a dev dependency: makes the test certificates
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("paligemma-tools test CA", ca_key, "paligemma-tools test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate(name, key, "paligemma-tools test CA", ca_key, ca=False)
    chain_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    chain_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificates(ca.public_bytes(serialization.Encoding.PEM), chain_file, key_file)


def _tls_server(make_server: ServerFactory, certificates: Certificates, sni: list[str | None]) -> Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.chain_file, certificates.key_file)

    def remember(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
        sni.append(name)

    context.sni_callback = remember
    return make_server("127.0.0.1", tls=context)


@pytest.mark.parametrize(
    ("certificate_for", "trusted", "error"),
    [
        pytest.param("images.test", True, None, id="verified-against-the-name-not-the-address"),
        pytest.param("other.test", True, "certificate verify failed", id="name-mismatch"),
        pytest.param("images.test", False, "certificate verify failed", id="unknown-ca"),
    ],
)
def test_https_verifies_the_hosts_certificate(
    tmp_path: Path,
    make_server: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    certificate_for: str,
    trusted: bool,
    error: str | None,
) -> None:
    certificates = _certificates(tmp_path, certificate_for)
    sni: list[str | None] = []
    server = _tls_server(make_server, certificates, sni)
    FakeDNS({"images.test": [["127.0.0.1"]]}).install(monkeypatch)
    if trusted:
        client = ssl.create_default_context(cadata=certificates.ca_pem.decode())
        monkeypatch.setattr(fetch, "_ssl_context", lambda: client)
    url = server.url(host="images.test")

    if error is None:
        assert fetch_url(url, PRIVATE_OK) == PNG
        assert server.requests[0].host == f"images.test:{server.port}"
    else:
        with pytest.raises(ImageError, match=rf"the request failed \(ConnectError: .*{error}"):
            fetch_url(url, PRIVATE_OK)
        assert server.requests == []
    assert sni == ["images.test"]  # the TLS name is the host's, though the connection went to 127.0.0.1
