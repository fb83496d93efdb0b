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


def png_with_chunks(count: int, kind: bytes = b"prIv") -> bytes:
    """A 4x4 PNG with `count` empty chunks of `kind` before its image data (12 bytes each)."""
    plain = encoded(Image.new("RGB", (4, 4), (0, 0, 255)), "PNG")
    at = plain.index(b"IDAT") - 4
    return plain[:at] + _chunk(kind, b"") * count + plain[at:]


def jpeg_with_app_segments(count: int) -> bytes:
    """An 8x8 JPEG with `count` empty APP15 segments before its frame (4 bytes each)."""
    plain = encoded(Image.new("RGB", (8, 8), (0, 0, 255)), "JPEG")
    return plain[:2] + b"\xff\xef\x00\x02" * count + plain[2:]


def jpeg_with_filler(filler: bytes, size: int) -> bytes:
    """An 8x8 JPEG with `size` bytes of `filler` (0xFF fill, junk) after its first segment."""
    plain = encoded(Image.new("RGB", (8, 8), (0, 0, 255)), "JPEG")
    end = 4 + int.from_bytes(plain[4:6], "big")
    return plain[:end] + filler * (size // len(filler)) + plain[end:]


def jpeg_scans_repeated(side: int, repeats: int) -> bytes:
    """A progressive side x side JPEG whose scans (with the tables between them) come `repeats`
    times: libjpeg decodes every one over the whole image."""
    plain = encoded(Image.new("RGB", (side, side), (120, 130, 140)), "JPEG", progressive=True, quality=90)
    first_scan = plain.index(b"\xff\xda")
    return plain[:first_scan] + plain[first_scan:-2] * repeats + plain[-2:]


def gif_with_extensions(extensions: bytes) -> bytes:
    """A 4x4 GIF with `extensions` (whole extension blocks) before its first image."""
    plain = encoded(Image.new("P", (4, 4)), "GIF")
    flags = plain[10]
    at = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    return plain[:at] + extensions + plain[at:]


def gif_comment(size: int) -> bytes:
    """One GIF comment extension of `size` bytes in 255-byte sub-blocks."""
    return b"\x21\xfe" + (b"\xff" + b"c" * 255) * (size // 255) + b"\x00"


def tiff_with_tag(tag: int, kind: int, count: int, payload: bytes) -> bytes:
    """A 1x1 grey TIFF holding one more tag (`count` values of TIFF type `kind`)."""
    pixel_at = 0
    for _ in range(2):  # the strip's offset depends on the block's length, which it does not change
        entries = [(t, k, c, struct.pack("<I", v)[: 2 if k == 3 else 4]) for t, k, c, v in _grey_1x1_entries(pixel_at)]
        block = exif_block(sorted([*entries, (tag, kind, count, payload)]))
        pixel_at = len(block)
    return block + b"\x80"


def bmp_rle8(pixel_data: int) -> bytes:
    """A 7000 x 7000 run-length BMP whose data is `pixel_data` bytes of one-pixel runs."""
    data = b"\x01\x05" * (pixel_data // 2) + b"\x00\x01"
    palette = b"".join(struct.pack("<BBBB", i, i, i, 0) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, 7000, 7000, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    start = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", start + len(data), 0, 0, start) + info + palette + data


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
    # Containers Pillow parses part by part (found by a second attack, 2026-12-05): refused from
    # a walk of lengths and counts before Pillow sees them (tools/image_structure.py).
    "png-5000-empty-chunks": lambda: png_with_chunks(5_000),
    "png-5000-text-chunks": lambda: png_with_chunks(5_000, b"tEXt"),
    "jpeg-5000-app-segments": lambda: jpeg_with_app_segments(5_000),
    "jpeg-progressive-300-scans": lambda: jpeg_scans_repeated(1_000, 30),
    "jpeg-progressive-25MP-110-scans": lambda: jpeg_scans_repeated(5_000, 11),
    "gif-5000-extensions": lambda: gif_with_extensions(b"\x21\xf9\x04\x00\x00\x00\x00\x00" * 5_000),
    "gif-2MB-comment": lambda: gif_with_extensions(gif_comment(2 << 20)),
    "gif-1MB-junk-between-blocks": lambda: gif_with_extensions(b"J" * (1 << 20)),
    "jpeg-1MB-of-ff-fill": lambda: jpeg_with_filler(b"\xff", 1 << 20),
    "jpeg-1MB-of-junk": lambda: jpeg_with_filler(b"J", 1 << 20),
    "tiff-300000-rationals": lambda: tiff_with_tag(282, 5, 300_000, b"\x48\0\0\0\1\0\0\0" * 300_000),
    "tiff-1100000-strip-offsets": lambda: tiff_with_tag(273, 4, 1_100_000, b"\x08\0\0\0" * 1_100_000),
    "bmp-rle8-3MB": lambda: bmp_rle8(3 << 20),
}
