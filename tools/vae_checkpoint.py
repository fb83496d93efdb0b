"""Find PaliGemma's mask decoder checkpoint, `vae-oid.npz`, downloading it once into the user cache if allowed.

Where it looks, in order: the path given, `$PALIGEMMA_VAE_PATH`, the tiny VQ-VAE shipped
with the tools when the model is the tiny trained one (`paligemma2-tiny-shapes`), the user
cache (`$XDG_CACHE_HOME` or `~/.cache`, then `paligemma-tools/vae-oid.npz`), then the download.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Final

import httpx2

from tools.errors import CheckpointError
from tools.tiny_shapes_model import TINY_SHAPES_VAE_PATH, is_tiny_shapes_model
from tools.vae_decoder import VAE_OID_SHA256, VAE_OID_SIZE, VAE_OID_URL, VaeDecoder

__all__ = [
    "ENV_VAR",
    "default_cache_dir",
    "load_vae_decoder",
    "locate_vae_checkpoint",
]

ENV_VAR: Final = "PALIGEMMA_VAE_PATH"
FILE_NAME: Final = "vae-oid.npz"
# Generous for the 8.5 MB file, small enough that a wrong URL cannot fill the disk.
MAX_DOWNLOAD_BYTES: Final = 2 * VAE_OID_SIZE
_CHUNK_BYTES: Final = 1 << 16

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """The user cache directory for paligemma-tools: `$XDG_CACHE_HOME/paligemma-tools` or `~/.cache/paligemma-tools`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "paligemma-tools"


def _how_to_get_it(cache_file: Path, url: str) -> str:
    """The instructions every CheckpointError of this module ends with."""
    return (
        f"To fix: download {url} (the public HTTPS form of gs://big_vision/paligemma/vae-oid.npz, "
        f"{VAE_OID_SIZE:,} bytes, sha256 {VAE_OID_SHA256}; also mirrored in Google's PaliGemma demo on the "
        f"Hugging Face hub), then either save it as {cache_file} or set {ENV_VAR}=/path/to/vae-oid.npz "
        "(or pass its path explicitly)."
    )


def locate_vae_checkpoint(
    path: str | Path | None = None,
    *,
    model: str | None = None,
    download: bool = True,
    url: str = VAE_OID_URL,
    sha256: str = VAE_OID_SHA256,
    cache_dir: Path | None = None,
    timeout_s: float = 60,
) -> Path:
    """Return the path of an existing checkpoint file, downloading it into the cache if needed and allowed."""
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    cache_file = cache_dir / FILE_NAME

    # A path the caller named must exist: falling through to another file would hide the mistake.
    if path is not None:
        return _existing_file(Path(path), "the path given", cache_file, url)
    env_path = os.environ.get(ENV_VAR)
    if env_path:
        return _existing_file(Path(env_path), f"${ENV_VAR}", cache_file, url)
    if is_tiny_shapes_model(model):
        return _existing_file(TINY_SHAPES_VAE_PATH, f"shipped for {model}", cache_file, url)
    if cache_file.is_file():
        return cache_file
    if not download:
        raise CheckpointError(
            f"PaliGemma's mask decoder checkpoint is not in the cache ({cache_file}), {ENV_VAR} is not set, "
            f"and downloading is turned off. {_how_to_get_it(cache_file, url)}"
        )
    _download(url, cache_file, sha256=sha256, timeout_s=timeout_s)
    return cache_file


def _existing_file(path: Path, origin: str, cache_file: Path, url: str) -> Path:
    """The path if it is a file; CheckpointError naming where it came from otherwise."""
    path = path.expanduser()
    if path.is_file():
        return path
    problem = "is a directory, not the .npz file" if path.is_dir() else "does not exist"
    raise CheckpointError(f"the VQ-VAE checkpoint {path} ({origin}) {problem}. {_how_to_get_it(cache_file, url)}")


def _download(url: str, destination: Path, *, sha256: str, timeout_s: float) -> None:
    """Stream url into destination through a temporary file, checking size and sha256; CheckpointError on failure."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Same directory as the destination, so the final rename is atomic and never crosses filesystems.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{FILE_NAME}.", suffix=".part", dir=destination.parent)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write into the cache directory {destination.parent}: {exc}. {_how_to_get_it(destination, url)}"
        ) from exc
    tmp_path = Path(tmp_name)
    logger.info("downloading the VQ-VAE mask decoder checkpoint from %s to %s", url, destination)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, httpx2.stream("GET", url, timeout=timeout_s, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise CheckpointError(
                    f"downloading {url} failed: HTTP {resp.status_code} {resp.reason_phrase}. "
                    f"{_how_to_get_it(destination, url)}"
                )
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                raise CheckpointError(
                    f"downloading {url} refused: it announces {int(declared):,} bytes, more than the "
                    f"{MAX_DOWNLOAD_BYTES:,} allowed. {_how_to_get_it(destination, url)}"
                )
            received = 0
            for chunk in resp.iter_bytes(_CHUNK_BYTES):
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise CheckpointError(
                        f"downloading {url} stopped: more than the {MAX_DOWNLOAD_BYTES:,} bytes allowed. "
                        f"{_how_to_get_it(destination, url)}"
                    )
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != sha256.lower():
            raise CheckpointError(
                f"the file downloaded from {url} fails its checksum: expected sha256 {sha256.lower()}, got {got} "
                f"({received:,} bytes); it was deleted. {_how_to_get_it(destination, url)}"
            )
        os.replace(tmp_path, destination)
    except (httpx2.HTTPError, httpx2.InvalidURL, OSError) as exc:
        raise CheckpointError(
            f"downloading {url} failed ({type(exc).__name__}: {exc}). {_how_to_get_it(destination, url)}"
        ) from exc
    finally:
        # After a successful os.replace the temporary name no longer exists; otherwise clean up.
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def load_vae_decoder(path: str | Path | None = None, *, model: str | None = None, download: bool = True) -> VaeDecoder:
    """Locate the checkpoint (see `locate_vae_checkpoint`) and return its decoder, loaded once per file version."""
    located = locate_vae_checkpoint(path, model=model, download=download).resolve()
    try:
        stat = located.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read the VQ-VAE checkpoint {located}: {exc}") from exc
    # Keyed on the file's identity too, so a file replaced or rewritten on disk is loaded again.
    return _load_decoder(located, (stat.st_ino, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _load_decoder(path: Path, version: tuple[int, int, int]) -> VaeDecoder:
    """One decoder per file version; `version` (inode, size, mtime) only serves as part of the cache key."""
    del version
    return VaeDecoder.from_npz(path)
