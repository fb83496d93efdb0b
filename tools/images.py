"""Load an image from whatever the caller has, as a person would see it, within limits.

Accepted: PIL images, numpy arrays, bytes, file paths, http(s) URLs and data URIs; encoded
images in JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF (other formats are refused, see _FORMATS).
EXIF orientation is applied first, so every coordinate refers to the upright image.
Palette, alpha (composited on white), greyscale, 16-bit and CMYK images become 8-bit RGB;
animated images give their first frame. Before sending, an image larger than PaliGemma
can use is downscaled (docs/images.md); geometry always maps to the original size.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from tools.errors import ImageError
from tools.image_limits import check_cost, check_metadata, check_pixels
from tools.image_policy import MIB, ImagePolicy
from tools.image_structure import check_structure
from tools.tiny_shapes_model import TINY_SHAPES_INPUT_PX, is_tiny_shapes_model

# The largest side PaliGemma 2 looks at is 896 px (the pt-896 checkpoints); it squashes
# every image to a square, so an image whose shorter side is 896 px loses nothing it uses.
SEND_MIN_SIDE_PX = 896
# Checkpoint names say the square they see: google/paligemma2-3b-mix-448, 10b-pt-896, ...
_MODEL_PX = re.compile(r"(?:^|[-_/])(224|448|896)(?=$|[-_/.])")
JPEG_QUALITY = 95
# libjpeg cannot write a side longer than this.
_JPEG_MAX_SIDE_PX = 65_500
# Only these decoders see untrusted bytes. Others either decode before the pixel limit can
# be checked (an ICO holds PNGs of any size behind a 16x16 header) or run programs
# (EPS calls Ghostscript); MPO is how many cameras save JPEGs.
_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
_DATA_URI = re.compile(
    r"data:(?P<mime>[\w.+/-]*)(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,(?P<data>.*)", re.S | re.I
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class LoadedImage:
    """An upright 8-bit RGB image and where it came from."""

    image: Image.Image
    source: str  # for messages: a path, a URL, "data URI", "bytes", ...
    # The encoded file, kept when it can be sent as it is: JPEG, PNG or WebP whose decoded
    # pixels needed no change (already upright, plain RGB or greyscale, one frame).
    original: bytes | None = None
    original_mime: str | None = None

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


ImageSource = Image.Image | np.ndarray[Any, Any] | bytes | bytearray | str | Path | LoadedImage
_SENDABLE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def _sendable_original(decoded: Image.Image, orientation: int, animated: bool) -> str | None:
    """The MIME type under which the decoded file can be sent untouched, or None."""
    mime = _SENDABLE.get(decoded.format or "")
    untouched = orientation == 1 and not animated and decoded.mode in ("RGB", "L")
    # A colour key (PNG tRNS) makes pixels transparent that a server would show in the key's colour.
    return mime if mime and untouched and "transparency" not in decoded.info else None


def describe_source(source: object) -> str:
    """How error messages name the image: `the image {this}`."""
    if isinstance(source, str):
        return "given as a data URI" if source.strip()[:5].lower() == "data:" else repr(source[:200])
    if isinstance(source, Path):
        return repr(str(source))
    if isinstance(source, (bytes, bytearray)):
        return f"given as {len(source):,} bytes"
    if isinstance(source, np.ndarray):
        return "given as a numpy array"
    if isinstance(source, Image.Image):
        return "given as a PIL image"
    return f"given as a {type(source).__name__}"


MAX_PATH_CHARS = 4096  # PATH_MAX on Linux: a longer string is no path, and resolving it costs


def _refuse_path(path: Path, roots: tuple[Path, ...]) -> ImageError:
    # The same answer whether or not the file exists, so a refused caller learns nothing about the disk.
    allowed = ", ".join(map(str, roots)) or "none here"
    return ImageError(
        f"refused to read {str(path)[:200]!r}: local files must lie under the allowed folders ({allowed}). "
        "Pass the image as a URL or data URI, or ask the operator to allow its folder."
    )


def _check_root(path: Path, seen: Path, policy: ImagePolicy) -> None:
    if policy.allowed_roots is None:
        return
    given = tuple(Path(os.path.abspath(os.path.expanduser(root))) for root in policy.allowed_roots)
    roots = _resolved_roots(policy)
    if not any(seen.is_relative_to(root) for root in (*given, *roots)):
        raise _refuse_path(path, roots)


def _resolved_roots(policy: ImagePolicy) -> tuple[Path, ...]:
    return tuple(root.expanduser().resolve() for root in policy.allowed_roots or ())


def _read_path(path: Path, policy: ImagePolicy) -> bytes:
    if policy.allowed_roots == ():
        raise _refuse_path(path, ())  # no folder allowed: nothing to resolve
    if len(str(path)) > MAX_PATH_CHARS:
        raise ImageError(f"the image path is {len(str(path)):,} characters long; paths are at most {MAX_PATH_CHARS}.")
    if "\0" in str(path):
        raise ImageError(f"{str(path)[:200]!r} is not a file path: it contains a NUL character.")
    # Checked on the path as written, before anything on disk is looked at (a symlink loop, a
    # user's home), so a refused caller cannot learn which files or accounts exist.
    expanded = Path(os.path.expanduser(path))  # leaves an unknown `~user` as it is, where pathlib raises
    _check_root(path, Path(os.path.abspath(expanded)), policy)
    try:  # then where its symlinks lead, existing or not (a loop anywhere is refused alike)
        _check_root(path, expanded.resolve(strict=False), policy)
    except (RuntimeError, OSError) as e:
        raise _refuse_path(path, _resolved_roots(policy)) from e
    try:
        resolved = expanded.resolve(strict=True)  # follows symlinks: the real file is checked
    except (FileNotFoundError, RuntimeError) as e:
        raise ImageError(f"no image file at {str(path)!r}; check the path.") from e
    except OSError as e:
        raise ImageError(f"cannot open {str(path)!r}: {e.strerror}") from e
    _check_root(path, resolved, policy)  # again: the file may have changed since the first look
    if not resolved.is_file():
        raise ImageError(f"{str(path)!r} is not a regular file.")
    try:
        size = resolved.stat().st_size
        if size > policy.max_bytes:
            raise ImageError(
                f"{str(path)!r} is {size:,} bytes; the limit is {policy.max_bytes:,}. Send a smaller image."
            )
        with resolved.open("rb") as file:
            # stat() can understate (procfs, a file still being written): read no more than the limit.
            data = file.read(policy.max_bytes + 1)
    except OSError as e:
        raise ImageError(f"cannot read {str(path)!r}: {e.strerror}") from e
    if len(data) > policy.max_bytes:
        raise ImageError(f"{str(path)!r} is larger than the {policy.max_bytes:,}-byte limit. Send a smaller image.")
    return data


def _read_data_uri(uri: str, policy: ImagePolicy) -> bytes:
    if len(uri) > policy.max_bytes * 4 // 3 + 1024:
        raise ImageError(f"the data URI is larger than the {policy.max_bytes:,}-byte limit.")
    match = _DATA_URI.fullmatch(uri)
    if match is None or not match.group("b64"):
        raise ImageError("malformed data URI: expected data:image/...;base64,<data>.")
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError(f"the data URI's base64 payload is invalid ({e}).") from e
    if len(data) > policy.max_bytes:  # the length check above allows for the header, so it is not exact
        raise ImageError(f"the data URI holds {len(data):,} bytes; the limit is {policy.max_bytes:,}.")
    return data


def read_bytes(source: ImageSource, policy: ImagePolicy) -> bytes | None:
    """The encoded bytes of a byte, path, URL or data-URI source; None for in-memory images."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) > policy.max_bytes:
            raise ImageError(f"the image is {len(source):,} bytes; the limit is {policy.max_bytes:,}.")
        return bytes(source)
    if isinstance(source, Path):
        return _read_path(source, policy)
    if isinstance(source, str):
        text = source.strip()
        if text[:5].lower() == "data:":
            return _read_data_uri(text, policy)
        if text.lower().startswith(("http://", "https://")):
            from tools.fetch import fetch_url  # the HTTP stack loads only when a URL is fetched

            return fetch_url(text, policy)
        if _SCHEME.match(text):
            raise ImageError(f"unsupported image source {text[:80]!r}: use http(s) URLs, data URIs or file paths.")
        return _read_path(Path(text), policy)
    return None


def _decoders() -> list[str]:
    Image.init()  # registers every plugin once; `formats=` only accepts registered ones
    return [name for name in _FORMATS if name in Image.OPEN]


def _decode(data: bytes, policy: ImagePolicy, what: str) -> tuple[Image.Image, int, bool]:
    """The decoded first frame, its EXIF orientation (1..8) and whether the file holds more frames.

    Every budget is checked from the header before the work it bounds; whatever a decoder
    raises on a hostile file (Pillow's plugins raise IndexError, KeyError, struct.error...)
    becomes an ImageError.
    """
    if not data:
        raise ImageError(f"{what} is empty (0 bytes).")
    check_structure(data, policy, what)  # what Pillow's parsers would spend on the container, first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limits apply below
            warnings.simplefilter("ignore", UserWarning)  # damaged metadata Pillow reads past (TIFF tags)
            image = Image.open(io.BytesIO(data), formats=_decoders())
            check_pixels(image, policy, what)
            check_metadata(image, policy, what)
            # One look past the first frame, never a count: counting a 100,000-page TIFF is quadratic.
            animated = bool(getattr(image, "is_animated", False))
            image.seek(0)  # animated: the first frame
            check_cost(image, policy, what, turned=False)  # load_image checks again before it rotates
            image.load()
            check_metadata(image, policy, what)  # chunks after the pixels (a PNG's eXIf) are read by load()
            orientation = _orientation(image)
    except ImageError:
        raise  # a limit's own message, not "damaged"
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{what} declares more pixels than can be decoded safely (Pillow: {e}); the limit here is "
            f"{policy.max_pixels:,} pixels. Send a smaller image."
        ) from e
    except UnidentifiedImageError as e:
        raise ImageError(
            f"{what} is not an image format that can be read (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF are). "
            "SVG, PDF and HTML are not images: convert or screenshot them first."
        ) from e
    except MemoryError as e:
        raise ImageError(f"{what} needs more memory to decode than is available; send a smaller image.") from e
    except Exception as e:  # any decoder failure on untrusted bytes is a damaged file
        raise ImageError(
            f"{what} is damaged or truncated and cannot be decoded ({type(e).__name__}: {str(e)[:200]}). "
            "Re-save it as PNG or JPEG."
        ) from e
    return image, orientation, animated


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Where Pillow reads an orientation from (`getexif`: EXIF, ImageMagick's PNG text chunk of it,
# else XMP's tiff:Orientation).
_ORIENTATION_INFO = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation a viewer would apply (1..8); 1 when absent or not one of those numbers."""
    value = image.getexif().get(0x0112, 1)
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _from_array(array: np.ndarray[Any, Any], policy: ImagePolicy) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"a numpy image must be (H, W), (H, W, 3) or (H, W, 4); got shape {array.shape}.")
    if array.size == 0:
        raise ImageError(f"the numpy image is empty (shape {array.shape}).")
    if array.shape[0] * array.shape[1] > policy.max_pixels:
        raise ImageError(
            f"the numpy image has {array.shape[0] * array.shape[1]:,} pixels; the limit is {policy.max_pixels:,}."
        )
    if max(array.shape[:2]) > policy.max_side_px:
        raise ImageError(f"the numpy image is {array.shape[:2]} (H, W); no side may exceed {policy.max_side_px:,}.")
    # Floats are converted through float64 copies; a broadcast view costs its full size once copied.
    needed = array.shape[0] * array.shape[1] * ((array.size // (array.shape[0] * array.shape[1])) * 24 + 8)
    if needed > policy.max_decoded_bytes:
        raise ImageError(
            f"the numpy image {array.shape} needs about {needed / MIB:,.0f} MiB to convert; the limit is "
            f"{policy.max_decoded_bytes / MIB:,.0f} MiB. Pass a smaller or uint8 array."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.uint16):  # either byte order
        array = (array // 257).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = _floats_to_uint8(array)
    elif not np.issubdtype(array.dtype, np.uint8):
        raise ImageError(f"numpy images must be uint8, uint16, bool or float; got {array.dtype}.")
    return Image.fromarray(np.ascontiguousarray(array))


def _floats_to_uint8(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """[0, 1] floats, or [0, 255] floats when any value is above 1, as uint8 (NaN is black)."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(values * scale, 0, 255).round().astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: palette and alpha composited on white, 16-bit scaled, CMYK converted."""
    if image.mode.startswith("I;16"):
        # 16-bit by definition, however dark; integer rounding (v * 255 / 65535, half up) in 4 bytes a pixel.
        values = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    elif image.mode == "I":
        # 32-bit ints hold 16-bit data (older Pillow's 16-bit PNGs) or 8-bit data (convert("I")).
        values = np.asarray(image).astype(np.int64)
        top = 65535 if values.max(initial=0) > 255 else 255
        image = Image.fromarray(((np.clip(values, 0, top) * 255 + top // 2) // top).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(_floats_to_uint8(np.asarray(image)))
    elif image.mode == "La":
        image = image.convert("LA")  # Pillow converts premultiplied La only to LA
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")  # a transparent palette entry or tRNS colour shows the background
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(source: ImageSource, policy: ImagePolicy | None = None) -> LoadedImage:
    """The upright RGB image from any accepted source, or an ImageError saying what was wrong."""
    if isinstance(source, LoadedImage):
        return source  # already loaded (and checked) by the caller
    policy = policy or ImagePolicy()
    what = f"the image {describe_source(source)}"
    data: bytes | None = None
    animated = False
    if isinstance(source, Image.Image):
        check_pixels(source, policy, what)
        image = source
        orientation = _guarded(lambda: _orientation(source), what)
    elif isinstance(source, np.ndarray):
        image, orientation = _from_array(source, policy), 1
    else:
        data = read_bytes(source, policy)
        if data is None:
            raise ImageError(
                f"unsupported image type {type(source).__name__}: pass a PIL image, numpy array, bytes, "
                "a file path, an http(s) URL or a data URI."
            )
        image, orientation, animated = _decode(data, policy, what)
    check_cost(image, policy, what, turned=orientation != 1)

    def upright_rgb() -> Image.Image:
        if orientation == 1:
            rgb = _to_rgb(image)
            return rgb.copy() if rgb is source else rgb  # the caller's later edits must not reach it
        rgb = _to_rgb(image.transpose(_TRANSPOSE[orientation]))
        for key in _ORIENTATION_INFO:  # turned: loaded again, it must not be turned twice
            rgb.info.pop(key, None)
        return rgb

    rgb = _guarded(upright_rgb, what)
    mime = _sendable_original(image, orientation, animated) if data is not None else None
    return LoadedImage(rgb, describe_source(source), data if mime else None, mime)


T = TypeVar("T")


def _guarded(work: Callable[[], T], what: str) -> T:
    """`work()`, with whatever Pillow raises on a damaged image turned into an ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the orientation is still read
            return work()
    except ImageError:
        raise
    except MemoryError as e:
        raise ImageError(f"{what} needs more memory than is available; send a smaller image.") from e
    except Exception as e:  # metadata and pixel data of any image may be hostile
        raise ImageError(
            f"{what} cannot be converted ({type(e).__name__}: {str(e)[:200]}); re-save it as PNG or JPEG."
        ) from e


@dataclass(frozen=True)
class EncodedImage:
    """The image as sent to the model."""

    data_uri: str
    width: int
    height: int

    @property
    def bytes_sent(self) -> int:
        return len(self.data_uri)


def encode_for_model(loaded: LoadedImage, *, min_side_px: int = SEND_MIN_SIDE_PX) -> EncodedImage:
    """A data URI of the image: downscaled so its shorter side is `min_side_px` when it is larger
    (as a JPEG), otherwise, or when the downscaled JPEG would be larger, the original file
    when it can be sent untouched, else a JPEG of the image.

    Its longer side is also kept within JPEG's 65,500 px, whatever that does to the shorter one.
    """
    image = loaded.image
    scale = max(min_side_px / image.width, min_side_px / image.height)
    scale = min(scale, _JPEG_MAX_SIDE_PX / max(image.size))
    original = None
    if loaded.original is not None and loaded.original_mime is not None and max(image.size) <= _JPEG_MAX_SIDE_PX:
        original = EncodedImage(data_uri(loaded.original_mime, loaded.original), image.width, image.height)
        if scale >= 1.0:
            return original  # no re-encoding loss, often smaller
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    buffer = io.BytesIO()
    # 4:4:4 chroma keeps the edges of small text that OCR reads.
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    encoded = EncodedImage(data_uri("image/jpeg", buffer.getvalue()), image.width, image.height)
    if original is not None and original.bytes_sent <= encoded.bytes_sent:
        return original  # a modest downscale of a well-compressed file can come out larger
    return encoded


def model_input_px(model: str) -> int | None:
    """The square side in pixels a PaliGemma checkpoint sees, when its name says it (`...-mix-448`: 448)
    or it is the tiny shapes model (288, which its name does not say)."""
    if is_tiny_shapes_model(model):
        return TINY_SHAPES_INPUT_PX
    found = _MODEL_PX.findall(model)
    return int(found[-1]) if found else None


def data_uri(mime: str, data: bytes) -> str:
    """`data` as a base64 data URI of type `mime`: how images travel in requests and tool results."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
