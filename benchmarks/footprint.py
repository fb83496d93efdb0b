"""What the tools cost a caller: import time, what they import, and bytes sent per image.

.venv/bin/python -m benchmarks.footprint
"""

from __future__ import annotations

import base64
import io
import statistics
import subprocess
import sys
import time

from benchmarks.common import photo_like, print_table
from tools.images import encode_for_model, load_image

PROBE = (
    "import sys, time; t = time.perf_counter(); import tools; t = time.perf_counter() - t; "
    "print(t, *(m in sys.modules for m in ('torch', 'vllm', 'transformers', 'openai')))"
)


def import_time(runs: int = 7) -> tuple[float, float, list[bool]]:
    """(median wall time of the whole interpreter, median in-process import time, heavy modules loaded)."""
    walls, imports = [], []
    loaded: list[bool] = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
        walls.append(time.perf_counter() - started)
        imports.append(float(out[0]))
        loaded = [flag == "True" for flag in out[1:]]
    return statistics.median(walls), statistics.median(imports), loaded


def bytes_sent(width: int, height: int) -> tuple[int, int, tuple[int, int]]:
    """(data URI of the camera JPEG as is, data URI the tools send, size sent)."""
    buffer = io.BytesIO()
    photo_like(width, height, seed=1).save(buffer, format="JPEG", quality=90)
    original = buffer.getvalue()
    as_is = len("data:image/jpeg;base64,") + len(base64.b64encode(original))
    sent = encode_for_model(load_image(original))
    return as_is, sent.bytes_sent, (sent.width, sent.height)


def main() -> None:
    wall, in_process, loaded = import_time()
    print_table(
        "`import tools` (median of 7 fresh interpreters)",
        ["measure", "value"],
        [
            ["python -c 'import tools', wall (s)", f"{wall:.3f}"],
            ["the import itself (s)", f"{in_process:.3f}"],
            *[
                [f"imports {name}", str(flag)]
                for name, flag in zip(("torch", "vllm", "transformers", "openai"), loaded, strict=True)
            ],
        ],
    )
    rows = []
    for width, height in ((4000, 3000), (1920, 1080), (640, 480)):
        as_is, sent, size = bytes_sent(width, height)
        rows.append(
            [f"{width}x{height} JPEG (q90)", f"{as_is:,}", f"{sent:,}", f"{size[0]}x{size[1]}", f"{as_is / sent:.1f}x"]
        )
    print_table(
        "Bytes per request for the image (base64 data URI)",
        ["image", "sent as is", "sent by the tools", "size sent", "smaller by"],
        rows,
    )


if __name__ == "__main__":
    main()
