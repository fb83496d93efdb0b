"""An encoded image's container, walked before Pillow parses it (docs/security.md).

Pillow's parsers spend Python time on every chunk, segment, block or tag a file holds, and
some keep each one: a PNG of millions of empty chunks, a JPEG of millions of APP segments,
a GIF comment in millions of pieces, a TIFF tag of millions of numbers, a progressive JPEG
of thousands of scans or a large run-length BMP costs seconds to minutes before a pixel is
checked. This walk reads only lengths and counts, stops at its bounds, and refuses such a
file before Pillow sees it. A file it cannot follow (truncated, not one of these formats)
is left to Pillow, whose own errors say so.
"""

from __future__ import annotations

import re
import struct

from tools.errors import ImageError
from tools.image_policy import MIB, ImagePolicy

# Chunks, segments, extension blocks or tags other than pixel data. Real files hold tens.
MAX_PARTS = 4096
# Pieces of pixel data: PNG IDAT/fdAT chunks, GIF data sub-blocks (255 bytes each when written
# by any encoder, so 2**18 of them hold 64 MiB).
MAX_DATA_PARTS = 1 << 18
# Bytes of 0xFF fill, 0xFF00 and junk between JPEG segments or GIF blocks (real files: a handful).
MAX_FILLER_BYTES = 64 * 1024
_GIF_BLOCK = re.compile(rb"[!,;]")  # what starts a GIF block: an extension, an image, the trailer
# Scans of a JPEG (progressive encoders write about 10), each a pass over the whole image:
# scans x pixels is bounded (25 scans of a 100 MP image, about 2 s here), and scans alone.
MAX_JPEG_SCAN_PIXELS = 2_500_000_000
MAX_JPEG_SCANS = 256
# Numbers held by one TIFF page's tags, strip and tile offsets aside (a 16-bit colour map has 196,608).
MAX_TIFF_NUMBERS = 1 << 18
# Strip or tile offsets of one TIFF page (one strip per row of a 65,500-row image fits).
MAX_TIFF_OFFSETS = 1 << 20
# Run-length BMP data, which Pillow decodes in Python (about 5 MB a second).
MAX_RLE_BMP_BYTES = 2 * MIB

_RESAVE = "Re-save it as PNG or JPEG and send it again."


def check_structure(data: bytes, policy: ImagePolicy, what: str) -> None:
    """Refuse a file whose container would cost Pillow more than the budgets allow to parse."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            _check_png(data, what)
        elif data.startswith(b"\xff\xd8"):
            _check_jpeg(data, policy, what)
        elif data.startswith((b"GIF87a", b"GIF89a")):
            _check_gif(data, policy, what)
        elif data.startswith((b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")):
            _check_tiff(data, what)
        elif data.startswith(b"BM"):
            _check_bmp(data, what)
    except (struct.error, IndexError):
        return  # truncated where the walk looked: Pillow reports the damage in its own words


def _too_many(what: str, count: str, kind: str) -> ImageError:
    return ImageError(f"{what} holds {count} {kind}; no image needs that many. {_RESAVE}")


def _too_much_metadata(what: str, policy: ImagePolicy, kind: str) -> ImageError:
    return ImageError(
        f"{what} carries more than {policy.max_metadata_bytes:,} bytes of {kind}. Strip the metadata "
        "(re-save without EXIF, comments or extensions) and send it again."
    )


def _check_png(data: bytes, what: str) -> None:
    position, parts, data_parts = 8, 0, 0
    while position + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        if kind in (b"IDAT", b"fdAT"):
            data_parts += 1
            if data_parts > MAX_DATA_PARTS:
                raise _too_many(what, f"more than {MAX_DATA_PARTS:,}", "PNG image-data chunks")
        else:
            parts += 1
            if parts > MAX_PARTS:
                raise _too_many(what, f"more than {MAX_PARTS:,}", "PNG chunks besides its image data")
        if kind == b"IEND":
            return
        position += 12 + length


_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7 carry no length
_JPEG_FRAME = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # SOFn: DHT, JPG and DAC are not frames


def _check_jpeg(data: bytes, policy: ImagePolicy, what: str) -> None:
    position, parts, metadata, pixels, filler = 2, 0, 0, 1, 0
    while position + 4 <= len(data):
        # Pillow steps over junk, 0xFF fill and 0xFF00 a byte at a time in Python (8 MB of fill: 1.7 s).
        if data[position] != 0xFF:
            found = data.find(b"\xff", position)
            if found < 0:
                return
            filler, position = filler + found - position, found
        elif data[position + 1] in (0xFF, 0x00):
            filler, position = filler + 1, position + 1
        if filler > MAX_FILLER_BYTES:
            raise _too_many(what, f"more than {MAX_FILLER_BYTES:,}", "bytes of padding or junk between JPEG segments")
        if data[position] != 0xFF or data[position + 1] in (0xFF, 0x00):
            continue
        marker = data[position + 1]
        parts += 1
        if parts > MAX_PARTS:
            raise _too_many(what, f"more than {MAX_PARTS:,}", "JPEG segments before its image data")
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker == 0xDA:  # start of scan: the header Pillow parses ends here
            break
        if marker == 0xD9:
            return
        (length,) = struct.unpack_from(">H", data, position + 2)
        if marker in _JPEG_FRAME:
            height, width = struct.unpack_from(">HH", data, position + 5)
            pixels = max(1, height * width)
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:  # APPn and comments: metadata
            metadata += length
            if metadata > policy.max_metadata_bytes:
                raise _too_much_metadata(what, policy, "metadata segments (EXIF, ICC, XMP, comments)")
        position += 2 + length
    # 0xFF 0xDA never occurs inside entropy-coded data (a 0xFF there is followed by 0x00 or a
    # restart marker), so this counts the scans, and those of any embedded thumbnail.
    scans = data.count(b"\xff\xda", position)
    limit = min(MAX_JPEG_SCANS, max(16, MAX_JPEG_SCAN_PIXELS // pixels))
    if scans > limit:
        raise _too_many(what, f"{scans:,}", f"JPEG scans (the limit is {limit} for its {pixels:,} pixels)")


def _skip_sub_blocks(data: bytes, position: int, budget: list[int], what: str) -> int:
    """The position after a GIF run of sub-blocks; `budget[0]` counts the sub-blocks walked."""
    while True:
        size = data[position]
        position += 1
        if size == 0:
            return position
        budget[0] += 1
        if budget[0] > MAX_DATA_PARTS:
            raise _too_many(what, f"more than {MAX_DATA_PARTS:,}", "GIF data blocks in its first two frames")
        position += size


def _check_gif(data: bytes, policy: ImagePolicy, what: str) -> None:
    flags = data[10]
    position = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    parts, extension_bytes, images, junk = 0, 0, 0, 0
    sub_blocks = [0]
    # Pillow reads the first frame and, to tell whether the file is animated, up to the second.
    while position < len(data) and images < 2:
        introducer = data[position]
        if introducer == 0x3B:  # trailer
            return
        if introducer in (0x21, 0x2C):
            parts += 1
            if parts > MAX_PARTS:
                raise _too_many(what, f"more than {MAX_PARTS:,}", "GIF extension blocks")
        if introducer == 0x21:
            start = position + 2
            position = _skip_sub_blocks(data, start, sub_blocks, what)
            extension_bytes += position - start
            if extension_bytes > policy.max_metadata_bytes:
                raise _too_much_metadata(what, policy, "GIF extensions (comments, application data)")
        elif introducer == 0x2C:
            images += 1
            local = data[position + 9]
            position += 10 + (3 * (2 << (local & 7)) if local & 0x80 else 0)
            position = _skip_sub_blocks(data, position + 1, sub_blocks, what)  # after the LZW code size
        else:  # Pillow steps over a byte that starts no block, one at a time in Python
            found = _GIF_BLOCK.search(data, position)
            if found is None:
                return
            junk, position = junk + found.start() - position, found.start()
            if junk > MAX_FILLER_BYTES:
                raise _too_many(what, f"more than {MAX_FILLER_BYTES:,}", "bytes of junk between GIF blocks")


_TIFF_BYTE_TYPES = {1, 2, 6, 7}  # kept as bytes or text, not unpacked number by number
_TIFF_OFFSET_TAGS = {273, 279, 324, 325}  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts


def _check_tiff(data: bytes, what: str) -> None:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\0", b"\0+")
    count_format, entry_format, entry_bytes = ("Q", "HHQ", 20) if big else ("H", "HHI", 12)
    offset_format = "Q" if big else "I"
    (offset,) = struct.unpack_from(order + offset_format, data, 8 if big else 4)
    # Pillow reads the first page and, to tell whether the file has more, the second's tags.
    for _page in range(2):
        if offset == 0 or offset >= len(data):
            return
        (entries,) = struct.unpack_from(order + count_format, data, offset)
        if entries > MAX_PARTS:
            raise _too_many(what, f"{entries:,}", "tags in a TIFF page")
        start = offset + struct.calcsize(count_format)
        numbers = 0
        for index in range(entries):
            tag, kind, count = struct.unpack_from(order + entry_format, data, start + index * entry_bytes)
            if tag in _TIFF_OFFSET_TAGS:
                if count > MAX_TIFF_OFFSETS:
                    raise _too_many(what, f"{count:,}", "strip or tile offsets in a TIFF page")
            elif kind not in _TIFF_BYTE_TYPES:  # bytes and text cost what they weigh: the size limit bounds them
                numbers += count
                if numbers > MAX_TIFF_NUMBERS:
                    raise _too_many(what, f"more than {MAX_TIFF_NUMBERS:,}", "numbers in a TIFF page's tags")
        (offset,) = struct.unpack_from(order + offset_format, data, start + entries * entry_bytes)


def _check_bmp(data: bytes, what: str) -> None:
    (pixel_offset,) = struct.unpack_from("<I", data, 10)
    (header_bytes,) = struct.unpack_from("<I", data, 14)
    if header_bytes < 40:
        return  # the OS/2 header has no compression
    (compression,) = struct.unpack_from("<I", data, 30)
    rle_bytes = len(data) - pixel_offset
    if compression in (1, 2) and rle_bytes > MAX_RLE_BMP_BYTES:
        raise ImageError(
            f"{what} is a run-length BMP of {rle_bytes:,} bytes of pixel data; the limit for this kind of "
            f"BMP is {MAX_RLE_BMP_BYTES:,} (it decodes slowly). {_RESAVE}"
        )
