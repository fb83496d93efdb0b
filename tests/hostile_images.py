"""Hostile image files, built byte by byte: the inputs of issue 10 that made the tools raise or
run without bound. Shared by the tests, the fuzz run (scripts/fuzz_images.py) and the
hardening benchmark."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

from PIL import Image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG whose header declares width x height, with almost no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + _chunk(b"IEND", b"")
    )


def png_zeros(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A fully decodable PNG of zeros, compressed in blocks of rows (never whole in memory)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    rows_per_block = max(1, (1 << 20) // len(row))
    compressor = zlib.compressobj(9)
    parts = []
    for start in range(0, height, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, height - start)))
    idat = b"".join(parts) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _tiff_ifd(entries: list[tuple[int, int, int, int]], next_offset: int) -> bytes:
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in sorted(entries):
        body += struct.pack("<HHII", tag, kind, count, value)
    return body + struct.pack("<I", next_offset)


def _grey_1x1_entries(strip: int, bits: int = 8, photometric: int = 1) -> list[tuple[int, int, int, int]]:
    short, long_ = 3, 4
    return [
        (256, short, 1, 1),
        (257, short, 1, 1),
        (258, short, 1, bits),
        (259, short, 1, 1),
        (262, short, 1, photometric),
        (273, long_, 1, strip),
        (278, short, 1, 1),
        (279, long_, 1, 1),
    ]


def tiff_pages(pages: int, *, broken_second: dict[int, tuple[int, int, int, int]] | None = None) -> bytes:
    """A TIFF of `pages` 1x1 grey pages chained IFD after IFD (100,000 pages take 10 MB); with
    `broken_second`, the second page's tags replaced by these (tag -> entry)."""
    strip = 8  # the one pixel byte, shared by every page
    ifd_size = 2 + 8 * 12 + 4
    out = bytearray(b"II*\0" + struct.pack("<I", 9) + b"\x80")
    for page in range(pages):
        start = len(out)
        entries = _grey_1x1_entries(strip)
        if page == 1 and broken_second:
            replaced = {e[0]: e for e in entries} | broken_second
            entries = list(replaced.values())[:8]
        nxt = start + ifd_size if page + 1 < pages else 0
        ifd = _tiff_ifd(entries, nxt)
        out += ifd + b"\0" * (ifd_size - len(ifd))
    return bytes(out)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def animated(fmt: str, frames: int = 3, size: tuple[int, int] = (16, 16)) -> bytes:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    images = [Image.new("RGB", size, colours[i % len(colours)]) for i in range(frames)]
    return encoded(images[0], fmt, save_all=True, append_images=images[1:], duration=100, loop=0)


def damaged_later_frame(fmt: str) -> bytes:
    """A 3-frame animation whose bytes after the middle are scrambled: the first frame is intact."""
    data = bytearray(animated(fmt, size=(32, 32)))
    for i in range(len(data) * 2 // 3, len(data) - 2, 7):
        data[i] ^= 0x5A
    return bytes(data)


def exif_block(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A little-endian TIFF/EXIF block with one IFD; each entry's data placed after the IFD."""
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    extra = b""
    for tag, kind, count, payload in entries:
        if len(payload) <= 4:
            ifd += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, count, data_at + len(extra))
            extra += payload
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + extra


def png_with_exif(exif: bytes, size: tuple[int, int] = (8, 8)) -> bytes:
    png = encoded(Image.new("RGB", size, (200, 30, 30)), "PNG")
    end = png.rindex(b"IEND") - 4
    return png[:end] + _chunk(b"eXIf", exif) + png[end:]


def huge_exif_png(rationals: int = 2_000_000) -> bytes:
    """A PNG with orientation 6 and an EXIF tag of `rationals` RATIONAL values (16 MB for 2 M)."""
    orientation = (0x0112, 3, 1, struct.pack("<H", 6))
    many = (0x011A, 5, rationals, b"\1\0\0\0\1\0\0\0" * rationals)
    return png_with_exif(exif_block([orientation, many]))


def jpeg_exif_string_for_number() -> bytes:
    """A JPEG with orientation 6 whose XResolution (a RATIONAL) holds a string."""
    exif = exif_block([(0x0112, 3, 1, struct.pack("<H", 6)), (0x011A, 2, 12, b"seventy-two\0")])
    return encoded(Image.new("RGB", (16, 8), (0, 0, 255)), "JPEG", exif=b"Exif\0\0" + exif)


def webp_damaged_exif() -> bytes:
    return encoded(Image.new("RGB", (16, 16), (0, 128, 0)), "WEBP", exif=b"II*\0\xff\xff\xff\x7f" + b"\x01" * 40)


HOSTILE: dict[str, Callable[[], bytes]] = {
    "tiff-second-page-bad-bits": lambda: tiff_pages(2, broken_second={258: (258, 3, 1, 7)}),
    "tiff-second-page-bad-photometric": lambda: tiff_pages(2, broken_second={262: (262, 3, 1, 99)}),
    "tiff-second-page-strip-as-text": lambda: tiff_pages(2, broken_second={273: (273, 2, 40, 8)}),
    "tiff-second-page-beyond-end": lambda: tiff_pages(1)[:-4] + struct.pack("<I", 1 << 30),
    "gif-damaged-later-frame": lambda: damaged_later_frame("GIF"),
    "webp-damaged-later-frame": lambda: damaged_later_frame("WEBP"),
    "webp-damaged-exif": webp_damaged_exif,
    "jpeg-exif-string-for-number-orientation-6": jpeg_exif_string_for_number,
    "tiff-100000-pages": lambda: tiff_pages(100_000),
    "png-2M-exif-rationals-orientation-6": huge_exif_png,
    "png-1x100000000": lambda: png_zeros(1, 100_000_000),
    "png-16-bit-grey-100MP": lambda: png_zeros(10_000, 10_000, bit_depth=16),
    "png-16-bit-rgba-60MP-header": lambda: png_declaring(10_000, 6_000, bit_depth=16, colour_type=6),
    "png-rgb-64MP-header": lambda: png_declaring(8_000, 8_000),
}
