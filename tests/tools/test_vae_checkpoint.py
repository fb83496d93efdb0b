"""Finding and downloading vae-oid.npz, against a real HTTP server on the loopback interface."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.vae_fixture import write_random_vae_npz
from tools.errors import CheckpointError
from tools.vae_checkpoint import ENV_VAR, default_cache_dir, load_vae_decoder, locate_vae_checkpoint
from tools.vae_decoder import VAE_OID_URL, VaeDecoder

PAYLOAD = b"not really a checkpoint, but bytes with a known checksum\n" * 100
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class FileServer:
    """A loopback HTTP server: `files` maps URL paths to bodies, anything else is 404."""

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server_state = FileServer(base_url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            body = server_state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            # Under /no-length/ the body just runs until the connection closes (HTTP/1.0).
            if not self.path.startswith("/no-length/"):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server_state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No checkpoint from the real environment, no proxy for loopback, and a home directory inside tmp_path."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def test_explicit_path_wins_over_env_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write_random_vae_npz(tmp_path / "explicit.npz")
    monkeypatch.setenv(ENV_VAR, str(write_random_vae_npz(tmp_path / "env.npz")))
    cache = tmp_path / "cache"
    cache.mkdir()
    write_random_vae_npz(cache / "vae-oid.npz")
    assert locate_vae_checkpoint(explicit, download=False, cache_dir=cache) == explicit
    assert locate_vae_checkpoint(str(explicit), download=False, cache_dir=cache) == explicit


def test_env_var_wins_over_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write_random_vae_npz(tmp_path / "env.npz")
    monkeypatch.setenv(ENV_VAR, str(env_file))
    cache = tmp_path / "cache"
    cache.mkdir()
    write_random_vae_npz(cache / "vae-oid.npz")
    assert locate_vae_checkpoint(download=False, cache_dir=cache) == env_file


def test_cache_hit_needs_no_download(tmp_path: Path, file_server: FileServer) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = write_random_vae_npz(cache / "vae-oid.npz")
    assert locate_vae_checkpoint(url=f"{file_server.base_url}/vae-oid.npz", cache_dir=cache) == cached
    assert file_server.requests == []


def test_default_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_dir() == tmp_path / "xdg-cache" / "paligemma-tools"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "paligemma-tools"
    # The default cache is what is used when no cache_dir is passed.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    cached = tmp_path / "xdg-cache" / "paligemma-tools" / "vae-oid.npz"
    cached.parent.mkdir(parents=True)
    write_random_vae_npz(cached)
    assert locate_vae_checkpoint(download=False) == cached


@pytest.mark.parametrize(
    ("use_env", "origin"),
    [
        pytest.param(False, "the path given", id="explicit-path"),
        pytest.param(True, ENV_VAR, id="env-var"),
    ],
)
def test_named_path_that_does_not_exist_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_server: FileServer, use_env: bool, origin: str
) -> None:
    # A usable cached file must not hide the wrong name, and nothing may be downloaded.
    cache = tmp_path / "cache"
    cache.mkdir()
    write_random_vae_npz(cache / "vae-oid.npz")
    missing = tmp_path / "typo" / "vae-oid.npz"
    if use_env:
        monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(CheckpointError, match="does not exist") as info:
        locate_vae_checkpoint(None if use_env else missing, cache_dir=cache, url=f"{file_server.base_url}/vae-oid.npz")
    assert str(missing) in str(info.value) and origin in str(info.value)
    assert file_server.requests == []


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory"):
        locate_vae_checkpoint(tmp_path, cache_dir=tmp_path / "cache")


def test_no_download_says_how_to_get_the_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError) as info:
        locate_vae_checkpoint(download=False, cache_dir=cache)
    message = str(info.value)
    assert VAE_OID_URL in message
    assert ENV_VAR in message
    assert str(cache / "vae-oid.npz") in message
    assert not cache.exists()


def test_real_download_is_verified_and_cached(tmp_path: Path, file_server: FileServer) -> None:
    file_server.files["/files/vae-oid.npz"] = PAYLOAD
    cache = tmp_path / "cache" / "nested"
    url = f"{file_server.base_url}/files/vae-oid.npz"

    got = locate_vae_checkpoint(url=url, sha256=PAYLOAD_SHA256, cache_dir=cache)

    assert got == cache / "vae-oid.npz"
    assert got.read_bytes() == PAYLOAD
    assert _files_under(tmp_path) == {Path("cache/nested/vae-oid.npz")}  # no temporary file left behind
    # The second call is a cache hit.
    assert locate_vae_checkpoint(url=url, sha256=PAYLOAD_SHA256, cache_dir=cache) == got
    assert file_server.requests == ["/files/vae-oid.npz"]


def test_checksum_mismatch_raises_and_leaves_nothing(tmp_path: Path, file_server: FileServer) -> None:
    file_server.files["/vae-oid.npz"] = PAYLOAD
    wrong = "0" * 64
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="checksum") as info:
        locate_vae_checkpoint(url=f"{file_server.base_url}/vae-oid.npz", sha256=wrong, cache_dir=cache)
    assert wrong in str(info.value) and PAYLOAD_SHA256 in str(info.value)
    assert _files_under(tmp_path) == set()


def test_http_404_raises(tmp_path: Path, file_server: FileServer) -> None:
    url = f"{file_server.base_url}/nothing-here.npz"
    with pytest.raises(CheckpointError, match="HTTP 404") as info:
        locate_vae_checkpoint(url=url, sha256=PAYLOAD_SHA256, cache_dir=tmp_path / "cache")
    assert ENV_VAR in str(info.value)
    assert _files_under(tmp_path) == set()


def test_unreachable_server_raises(tmp_path: Path, file_server: FileServer) -> None:
    # Port 9 (discard) on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(CheckpointError, match="ConnectError") as info:
        locate_vae_checkpoint(url="http://127.0.0.1:9/vae-oid.npz", cache_dir=tmp_path / "cache", timeout_s=5)
    assert ENV_VAR in str(info.value) and "vae-oid.npz" in str(info.value)
    assert _files_under(tmp_path) == set()


@pytest.mark.parametrize(
    ("url_path", "message"),
    [
        pytest.param("/vae-oid.npz", "announces", id="content-length-too-big"),
        pytest.param("/no-length/vae-oid.npz", "stopped", id="stream-too-long"),
    ],
)
def test_oversized_download_is_refused(
    tmp_path: Path, file_server: FileServer, monkeypatch: pytest.MonkeyPatch, url_path: str, message: str
) -> None:
    monkeypatch.setattr("tools.vae_checkpoint.MAX_DOWNLOAD_BYTES", len(PAYLOAD) - 1)
    file_server.files[url_path] = PAYLOAD
    with pytest.raises(CheckpointError, match=message):
        locate_vae_checkpoint(
            url=f"{file_server.base_url}{url_path}", sha256=PAYLOAD_SHA256, cache_dir=tmp_path / "cache"
        )
    assert _files_under(tmp_path) == set()


def test_download_without_content_length(tmp_path: Path, file_server: FileServer) -> None:
    file_server.files["/no-length/vae-oid.npz"] = PAYLOAD
    got = locate_vae_checkpoint(
        url=f"{file_server.base_url}/no-length/vae-oid.npz", sha256=PAYLOAD_SHA256, cache_dir=tmp_path / "cache"
    )
    assert got.read_bytes() == PAYLOAD


def test_load_vae_decoder_reuses_the_loaded_file(tmp_path: Path) -> None:
    path = write_random_vae_npz(tmp_path / "vae.npz", seed=1)
    first = load_vae_decoder(path, download=False)
    assert isinstance(first, VaeDecoder)
    assert load_vae_decoder(path, download=False) is first
    # Replacing the file on disk gives a fresh decoder.
    write_random_vae_npz(tmp_path / "other.npz", seed=2).replace(path)
    second = load_vae_decoder(path, download=False)
    assert second is not first
    codes = np.arange(16)[None]
    assert not np.allclose(first.decode(codes), second.decode(codes))


def test_load_vae_decoder_reports_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "vae-oid.npz"
    path.write_text("<html>Access denied</html>")
    with pytest.raises(CheckpointError, match=r"not an \.npz"):
        load_vae_decoder(path, download=False)
