"""The budgets an image must fit before the work they bound is done (docs/security.md).

Each check reads only what the header already gave (size, mode, metadata Pillow read), so
a hostile file is refused before it costs the decoding, converting or rotating it asks for.
"""

from __future__ import annotations

from PIL import Image

from tools.errors import ImageError
from tools.image_policy import MIB, ImagePolicy


def check_pixels(image: Image.Image, policy: ImagePolicy, what: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{what} has no pixels ({width} x {height}).")
    if width * height > policy.max_pixels:
        raise ImageError(
            f"{what} is {width} x {height} = {width * height:,} pixels; the limit is {policy.max_pixels:,}. "
            "Downscale it first."
        )
    if max(width, height) > policy.max_side_px:
        raise ImageError(
            f"{what} is {width} x {height} pixels; no side may be longer than {policy.max_side_px:,}. "
            "Crop or downscale it first."
        )


def check_metadata(image: Image.Image, policy: ImagePolicy, what: str) -> None:
    size = sum(len(v) for v in image.info.values() if isinstance(v, (bytes, bytearray, str)))
    if size > policy.max_metadata_bytes:
        raise ImageError(
            f"{what} carries {size:,} bytes of metadata (EXIF, ICC, XMP, text); the limit is "
            f"{policy.max_metadata_bytes:,}. Strip the metadata (re-save without EXIF) and send it again."
        )


# Bytes per pixel Pillow keeps in memory per mode (3- and 2-band images take 4), and what
# turning the mode into 8-bit RGB allocates on top (numpy copies, the RGBA composite).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_CONVERT_BYTES = {"I;16": 6, "I;16L": 6, "I;16B": 6, "I;16N": 6, "I": 12, "F": 28}
_ALPHA_CONVERT_BYTES = 12


def work_bytes(image: Image.Image, *, turned: bool) -> int:
    """The memory decoding and converting `image` to upright RGB takes, from its header."""
    mode = image.mode
    per_pixel = _MODE_BYTES.get(mode, 4)
    if mode != "RGB":
        per_pixel += 4 + _CONVERT_BYTES.get(mode, 0)
    if "A" in mode or "a" in mode or "transparency" in image.info:
        per_pixel += _ALPHA_CONVERT_BYTES
    if turned:
        per_pixel += 4
    return image.width * image.height * per_pixel


def check_cost(image: Image.Image, policy: ImagePolicy, what: str, *, turned: bool) -> None:
    needed = work_bytes(image, turned=turned)
    if needed > policy.max_decoded_bytes:
        raise ImageError(
            f"{what} ({image.width} x {image.height}, mode {image.mode}) needs about {needed / MIB:,.0f} MiB to "
            f"decode; the limit is {policy.max_decoded_bytes / MIB:,.0f} MiB. Downscale it or save it as 8-bit RGB."
        )
