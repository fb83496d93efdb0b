"""load_image and encode_for_model: every source, EXIF orientation, modes, bad inputs, limits, roots."""

from __future__ import annotations

import base64
import http.server
import io
import os
import random
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin, features

from tools.client import PaliGemmaClient
from tools.errors import ImageError
from tools.image_policy import ImagePolicy
from tools.images import EncodedImage, LoadedImage, encode_for_model, load_image, read_bytes

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)
WHITE = (255, 255, 255)

# ---------------------------------------------------------------------------- helpers


def encoded(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def pixels(image: Image.Image) -> np.ndarray[Any, Any]:
    return np.asarray(image)


def flat(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Image.Image:
    return Image.new("RGB", size, colour)


def quadrants(width: int = 64, height: int = 32) -> Image.Image:
    """Red, green / blue, yellow quadrants: no rotation or mirror of it looks the same."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[: height // 2, : width // 2] = RED
    array[: height // 2, width // 2 :] = GREEN
    array[height // 2 :, : width // 2] = BLUE
    array[height // 2 :, width // 2 :] = YELLOW
    return Image.fromarray(array)


def png_header_only(width: int, height: int, colour_type: int = 2) -> bytes:
    """A PNG whose IHDR declares width x height, with almost no pixel data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def gif_header_only(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF with a logical screen and a first frame of the given sizes, and one byte of pixel data."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    return header + b"," + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00;"


def png_grey_zeros(width: int, height: int) -> bytes:
    """A valid, fully decodable width x height grey PNG of zeros, built row by row (never whole in memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def ico_holding(png: bytes) -> bytes:
    """An ICO whose directory says 16x16 but whose one entry is `png`, whatever its real size."""
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png


# ---------------------------------------------------------------------------- sources


def _array_cases() -> list[Any]:
    grey = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    rgb = np.array([[RED, GREEN], [BLUE, YELLOW]], dtype=np.uint8)
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], dtype=np.uint8)
    return [
        pytest.param(grey, [[(0,) * 3, (128,) * 3], [(255,) * 3, (64,) * 3]], id="uint8-HxW"),
        pytest.param(rgb, rgb.tolist(), id="uint8-HxWx3"),
        pytest.param(rgba, [[WHITE, (10, 20, 30)]], id="uint8-HxWx4-alpha-on-white"),
        pytest.param(grey[:, :, None], [[(0,) * 3, (128,) * 3], [(255,) * 3, (64,) * 3]], id="uint8-HxWx1"),
        pytest.param(np.array([[0, 257, 65535]], dtype=np.uint16), [[(0,) * 3, (1,) * 3, (255,) * 3]], id="uint16"),
        pytest.param(
            np.array([[0, 257, 65535]], dtype=">u2"), [[(0,) * 3, (1,) * 3, (255,) * 3]], id="uint16-big-endian"
        ),
        pytest.param(np.array([[True, False]]), [[(255,) * 3, (0,) * 3]], id="bool"),
        pytest.param(np.array([[0.0, 0.5, 1.0]]), [[(0,) * 3, (128,) * 3, (255,) * 3]], id="float-0-1"),
        pytest.param(
            np.array([[0.0, 127.6, 255.0, 300.0]], dtype=np.float32),
            [[(0,) * 3, (128,) * 3, (255,) * 3, (255,) * 3]],
            id="float-0-255-clipped",
        ),
        # NaN has no colour: black, and no numpy RuntimeWarning (an error under pytest).
        pytest.param(np.array([[np.nan, 1.0]]), [[(0,) * 3, (255,) * 3]], id="float-nan-black"),
        pytest.param(np.full((1, 2), np.nan), [[(0,) * 3, (0,) * 3]], id="float-all-nan"),
        pytest.param(np.asfortranarray(rgb), rgb.tolist(), id="non-contiguous"),
    ]


@pytest.mark.parametrize(("array", "expected"), _array_cases())
def test_numpy_arrays_become_rgb(array: np.ndarray[Any, Any], expected: list[Any]) -> None:
    loaded = load_image(array)
    assert loaded.image.mode == "RGB"
    assert (loaded.width, loaded.height) == (array.shape[1], array.shape[0])
    assert pixels(loaded.image).tolist() == [[list(p) for p in row] for row in expected]
    assert loaded.source == "given as a numpy array"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        pytest.param(np.zeros((4, 4), dtype=np.int64), "must be uint8, uint16, bool or float; got int64", id="int64"),
        pytest.param(np.zeros((4, 4), dtype=np.int8), "got int8", id="int8"),
        pytest.param(np.zeros((4, 4), dtype=np.complex64), "got complex64", id="complex"),
        pytest.param(np.full((2, 2), None, dtype=object), "got object", id="object"),
        pytest.param(np.zeros((4, 4, 2), dtype=np.uint8), r"\(H, W\), \(H, W, 3\) or \(H, W, 4\)", id="2-channels"),
        pytest.param(np.zeros((4, 4, 5), dtype=np.uint8), r"got shape \(4, 4, 5\)", id="5-channels"),
        pytest.param(np.zeros((2, 4, 4, 3), dtype=np.uint8), r"got shape \(2, 4, 4, 3\)", id="4-d-batch"),
        pytest.param(np.zeros(16, dtype=np.uint8), r"got shape \(16,\)", id="1-d"),
        pytest.param(np.zeros((0, 5), dtype=np.uint8), "empty", id="empty"),
    ],
)
def test_numpy_arrays_refused(array: np.ndarray[Any, Any], message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(array)


def test_pil_image_is_copied_not_shared() -> None:
    original = quadrants()
    loaded = load_image(original)
    assert np.array_equal(pixels(loaded.image), pixels(original))
    original.putpixel((0, 0), (1, 2, 3))
    assert loaded.image.getpixel((0, 0)) == RED  # the caller's later edits do not reach the loaded image
    assert loaded.source == "given as a PIL image"


SourceMaker = Callable[[Path, bytes], tuple[Any, str]]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda f, png: (png, f"given as {len(png):,} bytes"), id="bytes"),
        pytest.param(lambda f, png: (bytearray(png), f"given as {len(png):,} bytes"), id="bytearray"),
        pytest.param(lambda f, png: (f, repr(str(f))), id="path"),
        pytest.param(lambda f, png: (str(f), repr(str(f))), id="path-str"),
        # Whitespace around a path string is not part of it.
        pytest.param(lambda f, png: (f"  {f}  ", repr(f"  {f}  ")), id="path-str-padded"),
        pytest.param(lambda f, png: (data_uri(png), "given as a data URI"), id="data-uri"),
        pytest.param(
            lambda f, png: (data_uri(png, "image/png;name=photo.png"), "given as a data URI"), id="data-uri-params"
        ),
        pytest.param(
            lambda f, png: ("DATA:IMAGE/PNG;BASE64," + base64.b64encode(png).decode(), "given as a data URI"),
            id="data-uri-upper-case",  # URI schemes are case-insensitive
        ),
        pytest.param(
            lambda f, png: (data_uri(png, "application/octet-stream"), "given as a data URI"),
            id="data-uri-other-mime",  # the bytes decide, not the declared type
        ),
    ],
)
def test_byte_and_path_sources(tmp_path: Path, make: SourceMaker) -> None:
    png = encoded(quadrants())
    file = tmp_path / "photo.png"
    file.write_bytes(png)
    source, described = make(file, png)
    loaded = load_image(source)
    assert np.array_equal(pixels(loaded.image), pixels(quadrants()))
    assert loaded.source == described


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        pytest.param("data:image/png;base64", "malformed data URI", id="no-comma"),
        pytest.param(
            "data:image/png,%89PNG%0D%0A", r"malformed data URI: expected data:image/\.\.\.;base64", id="not-b64"
        ),
        pytest.param("data:image png;base64,AAAA", "malformed data URI", id="bad-mime"),
        pytest.param("data:image/png;base64,@@@@", "base64 payload is invalid", id="bad-alphabet"),
        pytest.param("data:image/png;base64,iVBORw0", "base64 payload is invalid", id="bad-padding"),
        pytest.param("data:image/png;base64,", r"empty \(0 bytes\)", id="empty-payload"),
        pytest.param(data_uri(b"hello, world"), "not an image format that can be read", id="not-an-image"),
    ],
)
def test_bad_data_uris(uri: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(uri)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(12345, "unsupported image type int", id="int"),
        pytest.param(None, "unsupported image type NoneType", id="none"),
        pytest.param(3.5, "unsupported image type float", id="float"),
        pytest.param([[0, 1]], "unsupported image type list", id="list"),
        pytest.param({"url": "x"}, "unsupported image type dict", id="dict"),
        pytest.param("file:///etc/passwd", "unsupported image source 'file:///etc/passwd'", id="file-scheme"),
        pytest.param("FILE:///etc/passwd", "unsupported image source", id="file-scheme-upper"),
        pytest.param("ftp://example.com/x.png", "unsupported image source 'ftp://", id="ftp"),
        pytest.param("gopher://example.com/x.png", "unsupported image source", id="gopher"),
        pytest.param("s3://bucket/x.png", "unsupported image source", id="s3"),
    ],
)
def test_unsupported_sources_refused(source: Any, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_read_bytes_is_none_for_in_memory_images() -> None:
    policy = ImagePolicy()
    assert read_bytes(quadrants(), policy) is None
    assert read_bytes(np.zeros((2, 2), dtype=np.uint8), policy) is None
    assert read_bytes(b"\x01\x02", policy) == b"\x01\x02"


class _OneImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    body = b""


class _OneImageHandler(http.server.BaseHTTPRequestHandler):
    server: _OneImageServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[_OneImageServer]:
    server = _OneImageServer(("127.0.0.1", 0), _OneImageHandler)
    server.body = encoded(quadrants())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_url_from_loopback_server(image_server: _OneImageServer) -> None:
    url = f"http://127.0.0.1:{image_server.server_address[1]}/photo.png"
    loaded = load_image(url, ImagePolicy(allow_private_networks=True))
    assert np.array_equal(pixels(loaded.image), pixels(quadrants()))
    assert loaded.source == repr(url)
    # The same URL under the default policy is a loopback address: refused.
    with pytest.raises(ImageError, match="loopback, private, link-local"):
        load_image(url)
    with pytest.raises(ImageError, match="URLs are not allowed here"):
        load_image(url, ImagePolicy(allow_urls=False, allow_private_networks=True))


# ---------------------------------------------------------------------------- EXIF orientation


def _as_displayed(stored: np.ndarray[Any, Any], orientation: int) -> np.ndarray[Any, Any]:
    """What a viewer shows for EXIF `orientation` (TIFF/EXIF 2.3 table), done with numpy only."""
    transforms: dict[int, Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]] = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1, :],  # mirrored top-bottom
        5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
        6: lambda a: np.rot90(a, k=-1),  # shown turned 90 degrees clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the other diagonal
        8: lambda a: np.rot90(a, k=1),  # shown turned 90 degrees anticlockwise
    }
    return np.ascontiguousarray(transforms[orientation](stored))


@pytest.mark.parametrize(
    ("orientation", "top_left"),
    [
        pytest.param(1, RED, id="1-upright"),
        pytest.param(2, GREEN, id="2-mirrored"),
        pytest.param(3, YELLOW, id="3-rotated-180"),
        pytest.param(4, BLUE, id="4-flipped"),
        pytest.param(5, RED, id="5-transposed"),
        pytest.param(6, BLUE, id="6-rotated-cw"),
        pytest.param(7, YELLOW, id="7-transversed"),
        pytest.param(8, GREEN, id="8-rotated-ccw"),
    ],
)
def test_exif_orientation_is_applied(orientation: int, top_left: tuple[int, int, int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpeg = encoded(quadrants(64, 32), "JPEG", exif=exif, quality=95, subsampling=0)
    with Image.open(io.BytesIO(jpeg)) as stored_image:
        assert stored_image.getexif()[0x0112] == orientation
        stored = pixels(stored_image.convert("RGB"))
        shown = pixels(ImageOps.exif_transpose(stored_image).convert("RGB"))

    loaded = load_image(jpeg)

    assert (loaded.width, loaded.height) == ((32, 64) if orientation >= 5 else (64, 32))
    assert np.array_equal(pixels(loaded.image), _as_displayed(stored, orientation))
    assert np.array_equal(pixels(loaded.image), shown)
    assert np.abs(pixels(loaded.image)[0, 0].astype(int) - top_left).max() < 40


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("where", ["exif", "xmp", "png-raw-profile"])
def test_the_upright_image_loaded_again_is_not_turned_again(orientation: int, where: str) -> None:
    """The chat app and any caller may hand `loaded.image` back to the tools: it must be upright
    for good (a 640x480 photo tagged 6 came back 480x640, then 640x480, to the model)."""
    if where == "exif":
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encoded(quadrants(64, 32), "JPEG", exif=exif, quality=95, subsampling=0)
    elif where == "png-raw-profile":  # ImageMagick's PNG text chunk of the EXIF, which Pillow reads too
        exif = Image.Exif()
        exif[0x0112] = orientation
        raw = exif.tobytes().hex()
        text = f"\nexif\n{len(raw) // 2:8d}\n" + "\n".join(raw[i : i + 72] for i in range(0, len(raw), 72)) + "\n"
        info = PngImagePlugin.PngInfo()
        info.add_text("Raw profile type exif", text)
        data = encoded(quadrants(64, 32), "PNG", pnginfo=info)
    else:
        xmp = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/>'
            "</rdf:RDF></x:xmpmeta>"
        )
        data = encoded(quadrants(64, 32), "PNG", pnginfo=_xmp_chunk(xmp))
    first = load_image(data)
    assert first.image.size == ((32, 64) if orientation >= 5 else (64, 32))
    again = load_image(first.image)
    assert again.image.size == first.image.size
    assert np.array_equal(pixels(again.image), pixels(first.image))


def _xmp_chunk(xmp: str) -> Any:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    return info


def test_exif_orientation_of_a_pil_image_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(io.BytesIO(encoded(quadrants(64, 32), "JPEG", exif=exif))) as opened:
        loaded = load_image(opened)
    assert loaded.image.size == (32, 64)


# ---------------------------------------------------------------------------- modes


def _palette(transparency: bool) -> bytes:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    return encoded(image, "PNG", **({"transparency": 0} if transparency else {}))


def _gif_palette_transparent() -> bytes:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    return encoded(image, "GIF", transparency=0)


def _with_mode(mode: str, values: list[Any]) -> Image.Image:
    image = Image.new(mode, (len(values), 1))
    for x, value in enumerate(values):
        image.putpixel((x, 0), value)
    return image


def _mode_cases() -> list[Any]:
    grey = np.array([[0, 64, 128, 255]], dtype=np.uint8)
    return [
        pytest.param(_palette(False), [RED, BLUE], 0, id="palette"),
        pytest.param(_palette(True), [WHITE, BLUE], 0, id="palette-transparent-entry-is-white"),
        pytest.param(_gif_palette_transparent(), [WHITE, BLUE], 0, id="gif-transparent-index-is-white"),
        pytest.param(
            encoded(_with_mode("RGBA", [(10, 20, 30, 0), (10, 20, 30, 255), (0, 0, 0, 128)])),
            [WHITE, (10, 20, 30), (127, 127, 127)],
            1,
            id="rgba-on-white",
        ),
        pytest.param(encoded(_with_mode("LA", [(0, 0), (50, 255)])), [WHITE, (50, 50, 50)], 0, id="la-on-white"),
        pytest.param(
            encoded(_with_mode("L", [0, 100]), "PNG", transparency=0), [WHITE, (100, 100, 100)], 0, id="grey-trns"
        ),
        pytest.param(encoded(_with_mode("RGB", [RED, BLUE]), "PNG", transparency=RED), [WHITE, BLUE], 0, id="rgb-trns"),
        pytest.param(
            encoded(Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16))),
            [(0,) * 3, (1,) * 3, (128,) * 3, (255,) * 3],
            0,
            id="png-16-bit-grey",
        ),
        pytest.param(
            Image.fromarray(np.array([[0, 1000, 65535, 70000, -5]], dtype=np.int32)),
            [(0,) * 3, (4,) * 3, (255,) * 3, (255,) * 3, (0,) * 3],
            0,
            id="int32-16-bit-range",
        ),
        pytest.param(
            Image.fromarray(grey).convert("I"), [(v,) * 3 for v in (0, 64, 128, 255)], 0, id="int32-8-bit-range"
        ),
        pytest.param(
            Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)),
            [(0,) * 3, (128,) * 3, (255,) * 3, (0,) * 3],
            0,
            id="float32-0-1",
        ),
        pytest.param(Image.fromarray(grey).convert("F"), [(v,) * 3 for v in (0, 64, 128, 255)], 0, id="float32-0-255"),
        pytest.param(
            encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95), [RED] * 16, 8, id="cmyk-jpeg"
        ),
        pytest.param(encoded(_with_mode("1", [0, 1])), [(0,) * 3, WHITE], 0, id="1-bit"),
        pytest.param(_with_mode("RGB", [(200, 100, 50)]).convert("YCbCr"), [(200, 100, 50)], 3, id="ycbcr"),
        pytest.param(_with_mode("RGB", [(200, 100, 50)]).convert("LAB"), [(200, 100, 50)], 60, id="lab"),
        pytest.param(_with_mode("RGB", [(200, 100, 50)]).convert("HSV"), [(200, 100, 50)], 3, id="hsv"),
        pytest.param(_with_mode("RGBA", [(200, 100, 50, 255)]).convert("RGBa"), [(200, 100, 50)], 0, id="rgba-premul"),
        pytest.param(_with_mode("LA", [(0, 0), (90, 255)]).convert("La"), [WHITE, (90, 90, 90)], 0, id="la-premul"),
        pytest.param(_with_mode("PA", [(0, 0), (0, 255)]), [WHITE, (0, 0, 0)], 0, id="pa"),
    ]


@pytest.mark.parametrize(("source", "expected", "tolerance"), _mode_cases())
def test_modes_become_8_bit_rgb(source: Image.Image | bytes, expected: list[Any], tolerance: int) -> None:
    loaded = load_image(source)
    assert loaded.image.mode == "RGB"
    got = pixels(loaded.image)
    assert got.dtype == np.uint8
    assert loaded.width == len(expected)
    row = got[0].astype(int)
    assert np.abs(row - np.array(expected)).max() <= tolerance, row.tolist()


def test_sixteen_bit_png_opens_as_sixteen_bit() -> None:
    """Guards the row above: the PNG really is 16-bit, so the scaling path runs."""
    data = encoded(Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)))
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode.startswith("I")


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "MPO"])
def test_animated_image_gives_first_frame(fmt: str) -> None:
    frames = [flat(RED, (16, 16)), flat(GREEN, (16, 16)), flat(BLUE, (16, 16))]
    options: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    with Image.open(io.BytesIO(data)) as opened:
        assert getattr(opened, "n_frames", 1) == 3
    loaded = load_image(data)
    assert loaded.image.size == (16, 16)
    assert np.abs(pixels(loaded.image).astype(int) - RED).max() <= 2


# ---------------------------------------------------------------------------- bad inputs


def _bad_input_cases() -> list[Any]:
    png = encoded(quadrants(200, 100))
    jpeg = encoded(quadrants(200, 100), "JPEG")
    return [
        pytest.param(b"", r"is empty \(0 bytes\)", id="zero-bytes"),
        pytest.param(png[: len(png) // 2], "damaged or truncated", id="truncated-png"),
        pytest.param(jpeg[: len(jpeg) // 2], "damaged or truncated", id="truncated-jpeg"),
        pytest.param(png[:20], "damaged or truncated|not an image format", id="png-signature-only"),
        pytest.param(np.random.default_rng(7).bytes(4096), "not an image format that can be read", id="random"),
        pytest.param(
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
            "not an image format.*SVG, PDF and HTML are not images",
            id="svg",
        ),
        pytest.param(
            b"<!DOCTYPE html><html><body><img src='x.png'></body></html>", "not an image format", id="html-page"
        ),
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not an image format", id="pdf"),
        # ICO is a real image format, refused on purpose: see test_ico_bomb_is_refused_without_decoding.
        pytest.param(encoded(flat(RED, (16, 16)), "ICO"), "not an image format", id="ico"),
    ]


@pytest.mark.parametrize(("data", "message"), _bad_input_cases())
def test_bad_bytes_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(data)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        pytest.param("PNG", {}, id="png"),
        pytest.param("PNG", {"save_all": True, "append_images": [quadrants(32, 24)]}, id="apng"),
        pytest.param("JPEG", {}, id="jpeg"),
        pytest.param("GIF", {"save_all": True, "append_images": [quadrants(32, 24)]}, id="gif"),
        pytest.param("BMP", {}, id="bmp"),
        pytest.param("TIFF", {}, id="tiff"),
        pytest.param("TIFF", {"compression": "tiff_lzw"}, id="tiff-lzw"),
        pytest.param("WEBP", {}, id="webp"),
        pytest.param("AVIF", {}, id="avif"),
    ],
)
def test_corrupted_files_give_image_errors_only(fmt: str, options: dict[str, Any]) -> None:
    """Seeded byte flips and cuts: each either loads as RGB or is an ImageError; nothing else escapes.

    Under pytest a warning would escape as an exception too (filterwarnings = error).
    """
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    noise = np.random.default_rng(0).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    original = encoded(Image.fromarray(noise), fmt, **options)
    rng = random.Random(f"{fmt}{sorted(options)}")
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        try:
            loaded = load_image(bytes(data), ImagePolicy(max_pixels=10_000_000))
        except ImageError:
            outcomes["refused"] += 1
        else:
            assert loaded.image.mode == "RGB"
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 0  # the corruption did reach the decoders


def test_pdf_posing_as_jpg_file(tmp_path: Path) -> None:
    file = tmp_path / "scan.jpg"
    file.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    with pytest.raises(ImageError, match=r"the image '.*scan\.jpg' is not an image format that can be read"):
        load_image(file)


# (bytes built when the test runs, policy, refusal): refused from what the header declares, before decoding.
BOMBS = [
    pytest.param(
        lambda: png_header_only(50_000, 50_000),
        {},
        r"decoded safely \(Pillow: .*\); the limit here is 100,000,000 pixels\. Send a smaller image\.",
        id="png-pillow",
    ),
    pytest.param(
        lambda: gif_header_only((50_000, 50_000), (1, 1)), {}, "declares more pixels than can be", id="gif-screen"
    ),
    pytest.param(
        lambda: gif_header_only((1, 1), (50_000, 50_000)), {}, "declares more pixels than can be", id="gif-frame"
    ),
    pytest.param(
        lambda: png_header_only(10_000, 10_000),
        {"max_pixels": 1_000_000},
        r"is 10000 x 10000 = 100,000,000 pixels; the limit is 1,000,000\. Downscale it first\.$",
        id="png-max-pixels",
    ),
    pytest.param(
        lambda: gif_header_only((10_000, 10_000), (1, 1)),
        {"max_pixels": 1_000_000},
        "the limit is 1,000,000",
        id="gif-max-pixels",
    ),
    # An ICO directory says 16x16; the PNG inside is 12000x12000 (144 MB grey), under Pillow's own limit.
    # Pillow decodes it while opening, before any pixel limit could be checked, so ICO is not read at all.
    pytest.param(
        lambda: ico_holding(png_grey_zeros(12_000, 12_000)),
        {"max_pixels": 1_000},
        "not an image format that can be read",
        id="ico-holding-a-large-png",
    ),
]


@pytest.mark.parametrize(("make", "policy", "message"), BOMBS)
def test_decompression_bombs_are_refused_from_their_headers(
    make: Callable[[], bytes], policy: dict[str, Any], message: str
) -> None:
    # An RGB decode of the smallest of these would need 300 MB. The memory and time each refusal
    # takes, in a fresh interpreter, are measured by benchmarks/budgets.py.
    with pytest.raises(ImageError) as refused:
        load_image(make(), ImagePolicy(**policy))
    assert re.search(message, str(refused.value)), str(refused.value)


def test_max_pixels_message_is_not_reported_as_damage() -> None:
    with pytest.raises(ImageError) as caught:
        load_image(png_header_only(2_000, 1_000), ImagePolicy(max_pixels=1_000_000))
    assert "2000 x 1000 = 2,000,000 pixels; the limit is 1,000,000" in str(caught.value)
    assert "damaged" not in str(caught.value)


# ---------------------------------------------------------------------------- limits


def test_max_bytes_for_bytes_files_and_data_uris(tmp_path: Path) -> None:
    png = encoded(quadrants())
    file = tmp_path / "photo.png"
    file.write_bytes(png)
    exact = ImagePolicy(max_bytes=len(png))
    under = ImagePolicy(max_bytes=len(png) - 1)
    for source in (png, bytearray(png), file, str(file), data_uri(png)):
        assert load_image(source, exact).image.size == (64, 32)
        with pytest.raises(ImageError, match=rf"{len(png):,} bytes; the limit is {len(png) - 1:,}"):
            load_image(source, under)


def test_max_bytes_refuses_a_huge_data_uri_before_decoding() -> None:
    uri = "data:image/png;base64," + "A" * 2_000_000
    with pytest.raises(ImageError, match="data URI is larger than the 1,000-byte limit"):
        load_image(uri, ImagePolicy(max_bytes=1_000))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux procfs")
def test_max_bytes_holds_when_stat_understates_the_size() -> None:
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0  # procfs reports 0; the content is ~1 KB
    with pytest.raises(ImageError, match="is larger than the 100-byte limit"):
        load_image(status, ImagePolicy(max_bytes=100))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda size: Image.new("RGB", size), id="pil"),
        pytest.param(lambda size: np.zeros((size[1], size[0], 3), dtype=np.uint8), id="numpy"),
        pytest.param(lambda size: encoded(Image.new("RGB", size)), id="png-bytes"),
    ],
)
def test_max_pixels(make: Callable[[tuple[int, int]], Any]) -> None:
    policy = ImagePolicy(max_pixels=100 * 50)
    assert load_image(make((100, 50)), policy).image.size == (100, 50)
    with pytest.raises(ImageError, match="5,050 pixels; the limit is 5,000"):
        load_image(make((101, 50)), policy)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"max_bytes": 0}, id="max-bytes-0"),
        pytest.param({"max_pixels": -1}, id="max-pixels-negative"),
        pytest.param({"url_timeout_s": 0}, id="timeout-0"),
        pytest.param({"max_redirects": -1}, id="redirects-negative"),
    ],
)
def test_policy_refuses_meaningless_limits(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="greater than"):
        ImagePolicy.model_validate(overrides)


# ---------------------------------------------------------------------------- allowed roots


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """root/inside.png, root/sub/deep.png, outside.png next to root, and symlinks inside root."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    png = encoded(quadrants())
    (root / "inside.png").write_bytes(png)
    (root / "sub" / "deep.png").write_bytes(png)
    (tmp_path / "outside.png").write_bytes(png)
    (root / "to-outside.png").symlink_to(tmp_path / "outside.png")
    (root / "to-inside.png").symlink_to(root / "sub" / "deep.png")
    (root / "to-parent").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    return {"root": root, "outside": tmp_path / "outside.png", "tmp": tmp_path}


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda d: d["outside"], id="file-outside"),
        pytest.param(lambda d: str(d["outside"]), id="file-outside-as-str"),
        pytest.param(lambda d: d["root"] / "inside.png", id="file-in-a-folder-not-allowed"),
        pytest.param(lambda d: d["tmp"] / "missing.png", id="missing"),  # a refused caller must not learn what exists
        pytest.param(lambda d: "/etc/passwd", id="etc-passwd"),
        pytest.param(lambda d: "/etc/no-such-file", id="etc-missing"),
        pytest.param(lambda d: "relative/photo.png", id="relative"),
        pytest.param(lambda d: "~/photo.png", id="home"),
    ],
)
def test_agents_policy_refuses_every_local_path(
    layout: dict[str, Path], where: Callable[[dict[str, Path]], Any]
) -> None:
    policy = ImagePolicy.for_agents()
    assert policy.allowed_roots == ()
    with pytest.raises(ImageError, match=r"refused to read .*allowed folders \(none here\)"):
        load_image(where(layout), policy)


REFUSED_OUTSIDE = r"refused to read .*local files must lie under the allowed folders"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        pytest.param(lambda d: d["root"] / "inside.png", None, id="inside"),
        pytest.param(lambda d: str(d["root"] / "sub" / "deep.png"), None, id="inside-deeper-as-str"),
        pytest.param(lambda d: d["root"] / "to-inside.png", None, id="symlink-to-inside"),
        pytest.param(lambda d: d["root"] / ".." / "outside.png", REFUSED_OUTSIDE, id="dot-dot"),
        pytest.param(lambda d: f"{d['root']}/sub/../../outside.png", REFUSED_OUTSIDE, id="dot-dot-as-str"),
        # The symlink lies inside; the file it names does not.
        pytest.param(lambda d: d["root"] / "to-outside.png", REFUSED_OUTSIDE, id="symlink-to-outside"),
        pytest.param(lambda d: d["root"] / "to-parent" / "outside.png", REFUSED_OUTSIDE, id="through-symlinked-dir"),
        # Missing, and outside once resolved: refused, not "no image file".
        pytest.param(lambda d: d["root"] / "to-parent" / "missing.png", REFUSED_OUTSIDE, id="missing-outside"),
        pytest.param(lambda d: d["outside"], REFUSED_OUTSIDE, id="absolute-outside"),
        pytest.param(
            lambda d: d["root"] / "missing.png",
            r"no image file at '.*missing\.png'; check the path\.$",
            id="missing-inside",
        ),
        pytest.param(lambda d: d["root"] / "sub", "is not a regular file", id="folder-inside"),
    ],
)
def test_allowed_roots(layout: dict[str, Path], where: Callable[[dict[str, Path]], Any], message: str | None) -> None:
    policy = ImagePolicy.for_agents(allowed_roots=(layout["root"],))
    if message is None:
        assert np.array_equal(pixels(load_image(where(layout), policy).image), pixels(quadrants()))
    else:
        with pytest.raises(ImageError, match=message):
            load_image(where(layout), policy)


def test_allowed_roots_are_resolved_too(layout: dict[str, Path]) -> None:
    via_link = ImagePolicy.for_agents(allowed_roots=(layout["tmp"] / "root-link",))  # a symlink to root
    assert load_image(layout["root"] / "inside.png", via_link).image.size == (64, 32)


def test_missing_file_without_roots() -> None:
    with pytest.raises(ImageError, match=r"no image file at '/nonexistent/photo\.png'"):
        load_image("/nonexistent/photo.png")


def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="is not a regular file"):  # and does not block waiting for a writer
        load_image(fifo, ImagePolicy.for_agents(allowed_roots=(tmp_path,)))


def test_nul_in_path_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="contains a NUL character"):
        load_image("photo\0.png")


# ---------------------------------------------------------------------------- encode_for_model


def _decode_sent(sent: EncodedImage) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert sent.data_uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(sent.data_uri[len(prefix) :], validate=True)))
    assert image.format == "JPEG"
    return image


@pytest.mark.parametrize(
    ("size", "sent_size"),
    [
        pytest.param((4000, 3000), (1195, 896), id="large-landscape-downscaled"),
        pytest.param((3000, 4000), (896, 1195), id="large-portrait-downscaled"),
        pytest.param((896, 896), (896, 896), id="exactly-896"),
        pytest.param((640, 480), (640, 480), id="small-unchanged"),
        pytest.param((300, 5000), (300, 5000), id="narrow-tall-shorter-side-under-896-unchanged"),
        pytest.param((1000, 20000), (896, 17920), id="tall-shorter-side-to-896"),
        pytest.param((100, 70_000), (94, 65_500), id="longer-than-jpeg-allows"),
    ],
)
def test_encode_for_model_sizes(size: tuple[int, int], sent_size: tuple[int, int]) -> None:
    loaded = LoadedImage(Image.new("RGB", size, (30, 120, 200)), "test")
    sent = encode_for_model(loaded)
    assert (sent.width, sent.height) == sent_size
    assert sent.bytes_sent == len(sent.data_uri)
    with _decode_sent(sent) as image:
        assert image.size == sent_size
        assert np.abs(pixels(image.convert("RGB"))[0, 0].astype(int) - (30, 120, 200)).max() <= 3


def test_encode_for_model_min_side_px() -> None:
    sent = encode_for_model(LoadedImage(Image.new("RGB", (4000, 3000)), "test"), min_side_px=448)
    assert (sent.width, sent.height) == (597, 448)


@pytest.mark.parametrize(
    ("model", "side"),
    [
        pytest.param("google/paligemma2-3b-mix-448", 448, id="hub-id-448"),
        pytest.param("google/paligemma2-10b-pt-896", 896, id="hub-id-896"),
        pytest.param("3b-mix-224", 224, id="preset-224"),
        pytest.param("/models/paligemma2-3b-mix-448-finetuned", 448, id="local-folder-with-size"),
        pytest.param("tiny-paligemma2", 896, id="no-size-in-name-sends-the-largest"),
        pytest.param("paligemma2-tiny-shapes", 288, id="the-tiny-shapes-model-sees-288"),
        pytest.param("/srv/paligemma2-tiny-shapes/", 288, id="the-tiny-shapes-model-by-path"),
        pytest.param("paligemma-v2240", 896, id="digits-inside-a-word-are-no-size"),
    ],
)
def test_send_side_follows_the_models_input_size(model: str, side: int) -> None:
    client = PaliGemmaClient(base_url="http://127.0.0.1:9/v1")
    assert client.send_side_px(model) == side
    assert PaliGemmaClient(base_url="http://127.0.0.1:9/v1", send_min_side_px=600).send_side_px(model) == 600


def test_a_448_model_gets_a_photo_with_its_shorter_side_448() -> None:
    side = PaliGemmaClient(base_url="http://127.0.0.1:9/v1").send_side_px("google/paligemma2-3b-mix-448")
    sent = encode_for_model(LoadedImage(Image.new("RGB", (4000, 3000)), "test"), min_side_px=side)
    assert (sent.width, sent.height) == (597, 448)


def test_encode_for_model_drops_exif() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "CameraMaker"
    jpeg = encoded(quadrants(64, 32), "JPEG", exif=exif)
    sent = encode_for_model(load_image(jpeg))
    assert (sent.width, sent.height) == (32, 64)  # upright
    with _decode_sent(sent) as image:
        assert image.size == (32, 64)
        assert 0x0112 not in image.getexif()
        assert "exif" not in image.info
        # Upright pixels were sent: the top-left is the stored bottom-left (blue).
        assert np.abs(pixels(image.convert("RGB"))[0, 0].astype(int) - BLUE).max() < 40


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_colour_keyed_png_is_sent_as_a_viewer_sees_it(mode: str) -> None:
    """A PNG whose tRNS chunk makes one colour transparent: the server would show the key's colour,
    so the image goes on white (as load_image puts it) and is sent re-encoded, not as the file."""
    key = (20, 20, 20) if mode == "RGB" else 20
    image = Image.new(mode, (64, 64), key)
    image.paste((200, 30, 30) if mode == "RGB" else 120, (16, 16, 48, 48))
    png = encoded(image, "PNG", transparency=key)
    loaded = load_image(png)
    assert loaded.original is None
    with _decode_sent(encode_for_model(loaded)) as sent:
        rgb = pixels(sent.convert("RGB"))
        assert rgb[2, 2].min() > 240  # the keyed background, white
        assert rgb[32, 32].max() < 230  # the square, not keyed
