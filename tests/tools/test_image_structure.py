"""The container walk before Pillow (tools/image_structure.py): files at its bounds load, one
part more is refused, and the files cameras and editors write pass untouched."""

from __future__ import annotations

import struct

import pytest
from PIL import Image

from tests.hostile_images import (
    animated,
    bmp_rle8,
    encoded,
    gif_comment,
    gif_with_extensions,
    jpeg_scans_repeated,
    jpeg_with_app_segments,
    jpeg_with_filler,
    png_with_chunks,
    tiff_pages,
    tiff_with_tag,
)
from tools.errors import ImageError
from tools.image_policy import ImagePolicy
from tools.image_structure import MAX_PARTS, MAX_TIFF_NUMBERS, check_structure
from tools.images import load_image

POLICY = ImagePolicy()
GCE = b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control extension: 8 bytes


def _exif_jpeg() -> bytes:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = image.getexif()
    exif[0x0112] = 6
    exif[0x010F] = "camera"
    return encoded(image, "JPEG", exif=exif.tobytes(), icc_profile=b"\0" * 3000, comment=b"made here")


def _rle8_bmp(side: int) -> bytes:
    """A side x side run-length BMP: each row one run and an end of line."""
    data = (bytes([side, 5]) + b"\0\0") * side + b"\0\1"
    palette = b"".join(struct.pack("<BBBB", i, i, i, 0) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    start = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", start + len(data), 0, 0, start) + info + palette + data


@pytest.mark.parametrize(
    ("data", "size"),
    [
        pytest.param(png_with_chunks(MAX_PARTS - 2), (4, 4), id="png-at-the-chunk-bound"),  # + IHDR, IEND
        pytest.param(jpeg_with_app_segments(MAX_PARTS - 10), (8, 8), id="jpeg-at-the-segment-bound"),
        pytest.param(jpeg_scans_repeated(256, 25), (256, 256), id="jpeg-250-scans"),
        pytest.param(jpeg_with_filler(b"\xff", 60_000), (8, 8), id="jpeg-60-kB-of-ff-fill"),
        pytest.param(jpeg_with_filler(b"J", 60_000), (8, 8), id="jpeg-60-kB-of-junk"),
        pytest.param(gif_with_extensions(b"J" * 60_000), (4, 4), id="gif-60-kB-of-junk"),
        pytest.param(gif_with_extensions(GCE * (MAX_PARTS - 1)), (4, 4), id="gif-at-the-extension-bound"),
        pytest.param(gif_with_extensions(gif_comment(1 << 19)), (4, 4), id="gif-half-megabyte-comment"),
        pytest.param(
            tiff_with_tag(282, 5, MAX_TIFF_NUMBERS - 20, b"\x48\0\0\0\1\0\0\0" * (MAX_TIFF_NUMBERS - 20)),
            (1, 1),
            id="tiff-at-the-number-bound",
        ),
        pytest.param(tiff_pages(3), (1, 1), id="tiff-three-pages"),
        pytest.param(_exif_jpeg(), (48, 64), id="jpeg-exif-icc-comment-orientation-6"),
        pytest.param(encoded(Image.new("RGB", (640, 480)), "JPEG", progressive=True), (640, 480), id="progressive"),
        pytest.param(animated("GIF", frames=5), (16, 16), id="animated-gif"),
        pytest.param(animated("PNG", frames=5), (16, 16), id="animated-png"),
        pytest.param(_rle8_bmp(32), (32, 32), id="bmp-rle8-small"),
    ],
)
def test_files_within_the_bounds_load(data: bytes, size: tuple[int, int]) -> None:
    assert load_image(data).image.size == size


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(png_with_chunks(MAX_PARTS - 1), "more than 4,096 PNG chunks", id="png-one-chunk-more"),
        pytest.param(jpeg_with_app_segments(MAX_PARTS), "more than 4,096 JPEG segments", id="jpeg-segments"),
        pytest.param(gif_with_extensions(GCE * (MAX_PARTS + 1)), "GIF extension blocks", id="gif-extensions"),
        pytest.param(
            tiff_with_tag(282, 5, MAX_TIFF_NUMBERS + 1, b"\x48\0\0\0\1\0\0\0" * (MAX_TIFF_NUMBERS + 1)),
            "numbers in a TIFF page",
            id="tiff-one-number-more",
        ),
        pytest.param(bmp_rle8(3 << 20), "run-length BMP", id="bmp-rle8"),
    ],
)
def test_one_part_more_is_refused_before_pillow(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        check_structure(data, POLICY, "the image")


def test_jpeg_metadata_segments_count_against_the_metadata_budget() -> None:
    data = _exif_jpeg()
    check_structure(data, POLICY, "the image")
    with pytest.raises(ImageError, match="more than 1,000 bytes of metadata segments"):
        check_structure(data, POLICY.model_copy(update={"max_metadata_bytes": 1000}), "the image")


def test_a_big_tiff_header_is_walked_too() -> None:
    # BigTIFF: 8-byte counts and offsets; one page whose tag holds too many numbers.
    entries = struct.pack("<Q", 1) + struct.pack("<HHQQ", 282, 5, MAX_TIFF_NUMBERS + 1, 0) + struct.pack("<Q", 0)
    data = b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + entries
    with pytest.raises(ImageError, match="numbers in a TIFF page"):
        check_structure(data, POLICY, "the image")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png_with_chunks(10)[:40], id="png-cut-in-a-chunk"),
        pytest.param(b"\xff\xd8\xff", id="jpeg-cut-in-a-marker"),
        pytest.param(b"GIF89a\x01\x00", id="gif-cut-in-its-header"),
        pytest.param(b"II*\0\xff\xff\xff\x7f", id="tiff-first-page-beyond-the-end"),
        pytest.param(b"BM\0\0", id="bmp-cut-in-its-header"),
    ],
)
def test_a_truncated_container_is_left_to_pillow(data: bytes) -> None:
    check_structure(data, POLICY, "the image")  # no complaint of its own
    with pytest.raises(ImageError, match=r"damaged or truncated|not an image format"):
        load_image(data)
