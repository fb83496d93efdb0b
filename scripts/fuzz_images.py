"""Fuzz the image loader with mutated real files of every accepted format (multi-frame included).

Hypothesis drives the mutations (byte flips, truncations, splices, repeated blocks) of seed
files built here; every input must load or raise ImageError, within the CPU budget. Any
other exception, or a slow input, is saved to tests/tools/corpus/images/ (a regression test
replays that folder) and reported.

    nice -n 19 .venv/bin/python scripts/fuzz_images.py [--examples 5000] [--seconds 180]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile_images import HOSTILE, animated, exif_block, tiff_pages  # noqa: E402
from tools.errors import ImageError  # noqa: E402
from tools.images import load_image  # noqa: E402

CORPUS = ROOT / "tests" / "tools" / "corpus" / "images"
CPU_BUDGET_S = 2.0


def seeds() -> list[bytes]:
    photo = Image.radial_gradient("L").convert("RGB").resize((48, 32))
    exif = exif_block([(0x0112, 3, 1, (6).to_bytes(2, "little"))])

    def save(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    found = [
        save(photo, "JPEG", exif=b"Exif\0\0" + exif),
        save(photo, "PNG"),
        save(photo.convert("P"), "PNG", transparency=0),
        save(photo.convert("I;16"), "PNG"),
        save(photo, "WEBP", exif=exif),
        save(photo, "BMP"),
        save(photo, "TIFF", compression="tiff_lzw"),
        save(photo.convert("CMYK"), "TIFF"),
        animated("GIF"),
        animated("WEBP"),
        animated("PNG"),
        tiff_pages(3),
        save(photo, "TIFF", save_all=True, append_images=[photo.rotate(90)]),
    ]
    if features.check("avif"):
        found.append(save(photo, "AVIF"))
    small_hostile = [make() for name, make in HOSTILE.items() if "100000" not in name and "2M" not in name]
    return found + [h for h in small_hostile if len(h) < 1 << 20]


SEEDS = seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "repeat", "splice", "set"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        elif kind == "repeat":
            block = data[at : at + draw(st.integers(1, 64))]
            data[at:at] = block * draw(st.integers(1, 50))
        elif kind == "splice":
            other = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, max(0, len(other) - 1)))
            data[at:] = other[start:]
    return bytes(data)


FOUND: list[str] = []


def check(data: bytes) -> None:
    started = time.process_time()
    problem = None
    try:
        load_image(data)
    except ImageError:
        pass
    except Exception as e:  # the finding: anything but our error
        problem = f"{type(e).__name__}: {str(e)[:200]}"
    spent = time.process_time() - started
    if problem is None and spent > CPU_BUDGET_S:
        problem = f"{spent:.1f} s of CPU"
    if problem is not None:
        CORPUS.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(data).hexdigest()[:16] + ".bin"
        (CORPUS / name).write_bytes(data)
        FOUND.append(f"{name}: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    ran = 0

    @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated())
    def run(data: bytes) -> None:
        nonlocal ran
        if time.monotonic() > deadline:
            return
        ran += 1
        check(data)

    run()
    print(f"{ran} mutated files from {len(SEEDS)} seeds; {len(FOUND)} findings")
    for line in FOUND:
        print("  " + line)
    sys.exit(1 if FOUND else 0)


if __name__ == "__main__":
    main()
