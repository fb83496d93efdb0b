"""What agent integration costs: dispatcher and MCP overhead over a direct call, and result size.

    .venv/bin/python -m benchmarks.agent_overhead [--calls 30]

Overhead, two ways: (1) end to end, the same forced one-object answer from the tiny server
called directly (`tools.alocate_objects`), through the dispatcher (`arun_tool_call`) and
through an in-process MCP client session, median wall time per call; (2) the dispatcher's
own work alone (argument validation, image lookup, JSON for the LLM) on a 20-object
result, without the endpoint. Size: the JSON an LLM gets for 20 detections and for 5
segments with smooth masks on a 640x480 image.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

import tools
from benchmarks.common import image_data_uri, photo_like, print_table, tiny_model
from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions
from tools.agents import McpSettings, arun_tool_call, build_server, to_agent_json
from tools.agents.payload import dumps
from tools.image_store import ImageStore
from tools.models import Box, Segment, Segments

OBJECTS = [f"thing {i}" for i in range(20)]
ONE_OBJECT = "<loc0100><loc0200><loc0300><loc0400> thing 0"
ANSWER = " ; ".join(
    f"<loc{10 + 40 * i:04d}><loc{20 + 30 * i:04d}><loc{200 + 40 * i:04d}><loc{300 + 30 * i:04d}> thing {i}"
    for i in range(20)
)


async def median_ms(call: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(3):
        await call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def overheads(base_url: str, calls: int) -> dict[str, float]:
    from mcp import Client

    image = photo_like(640, 480, seed=3)
    client = tools.PaliGemmaClient(base_url=base_url, extra_body={"structured_outputs": {"choice": [ONE_OBJECT]}})
    store = ImageStore()
    handle = store.add(_png(image))
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "locate_objects", "arguments": json.dumps({"image": handle, "objects": OBJECTS})},
    }
    loaded = store.get(handle)

    async def direct() -> Any:
        return await tools.alocate_objects(loaded, OBJECTS, client=client)

    async def dispatched() -> Any:
        return await arun_tool_call(call, client=client, images=store)

    results = {"direct": await median_ms(direct, calls), "dispatcher": await median_ms(dispatched, calls)}
    server = build_server(McpSettings(annotated_images=False), client)
    uri = image_data_uri(image)  # an MCP call carries the image itself: no conversation store
    async with Client(server) as session:

        async def direct_uri() -> Any:
            return await tools.alocate_objects(uri, OBJECTS, client=client)

        async def mcp_call() -> Any:
            return await session.call_tool("locate_objects", {"image": uri, "objects": OBJECTS})

        results["direct (data URI)"] = await median_ms(direct_uri, calls)
        results["mcp"] = await median_ms(mcp_call, calls)
    await client.aclose()
    return results


def _png(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def dispatcher_work(repeats: int = 2000) -> dict[str, float]:
    """Microseconds of the dispatcher's own steps on a 20-object result (no endpoint involved)."""
    from tools.agents.dispatch import _prepare, _success

    image = photo_like(640, 480, seed=3)
    store = ImageStore()
    handle = store.add(_png(image))
    arguments = json.dumps({"image": handle, "objects": OBJECTS})
    result = tools.parse_detections(ANSWER, width=640, height=480, prompt="detect ...")
    prepared = _prepare("locate_objects", arguments, store, store.policy, False)
    assert not isinstance(prepared, str)
    _, args, loaded = prepared

    def per_call_us(fn: Callable[[], Any]) -> float:
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) / repeats * 1e6

    return {
        "validate arguments + find image": per_call_us(
            lambda: _prepare("locate_objects", arguments, store, store.policy, False)
        ),
        "JSON for the LLM (20 objects)": per_call_us(lambda: _success(args, result, loaded, False).text),
    }


def sizes() -> list[list[str]]:
    width, height = 640, 480
    detections = tools.parse_detections(ANSWER, width=width, height=height, prompt="detect " + " ; ".join(OBJECTS))
    segments = []
    y, x = np.mgrid[0:height, 0:width]
    for i in range(5):
        cx, cy, rx, ry = 80 + 110 * i, 240, 45, 120 - 10 * i
        mask = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        box = Box(x_min=cx - rx, y_min=cy - ry, x_max=cx + rx, y_max=cy + ry)
        segments.append(Segment(label=f"blob {i}", box=box, loc_bins=(0, 0, 1, 1), codes=(0,) * 16, mask=mask))
    seg = Segments(
        image_width=width,
        image_height=height,
        prompt="segment blob",
        model="m",
        raw_text="x" * 800,
        objects=tuple(segments),
        masks_decoded=True,
    )
    rows = []
    for label, result, masks in (
        ("20 detections", detections, False),
        ("5 segments (outlines)", seg, False),
        ("5 segments with full masks (COCO RLE)", seg, True),
    ):
        compact = dumps(to_agent_json(result, mask_coco_rle=masks))
        full = result.model_dump_json()
        rows.append([label, f"{len(compact):,}", f"~{len(compact) // 4:,}", f"{len(full):,}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    with tiny_model() as checkpoint:
        the_plan = serve.plan(ServeOptions(model=str(checkpoint), port=free_port()), device="cpu")
        with serve.running(the_plan, echo=False, timeout_s=300):
            measured = asyncio.run(overheads(the_plan.command.base_url, args.calls))
    work = dispatcher_work()
    print_table(
        "The dispatcher's own work per call, without the endpoint (mean of 2000)",
        ["step", "microseconds"],
        [[step, f"{us:.0f}"] for step, us in work.items()],
    )
    print_table(
        f"Median ms per locate_objects call end to end (forced one-object answer, tiny model, {args.calls} calls)",
        ["path", "ms per call", "overhead vs direct (ms)"],
        [
            ["direct alocate_objects (image by handle)", f"{measured['direct']:.1f}", "-"],
            [
                "dispatcher arun_tool_call",
                f"{measured['dispatcher']:.1f}",
                f"{measured['dispatcher'] - measured['direct']:+.1f}",
            ],
            ["direct alocate_objects (data URI)", f"{measured['direct (data URI)']:.1f}", "-"],
            [
                "MCP in-process session call_tool (data URI)",
                f"{measured['mcp']:.1f}",
                f"{measured['mcp'] - measured['direct (data URI)']:+.1f}",
            ],
        ],
    )
    print_table(
        "Tool result size for an LLM (640x480 image; outlines simplified to 1 px)",
        ["result", "compact JSON bytes", "tokens (bytes/4)", "full model JSON bytes"],
        sizes(),
    )


if __name__ == "__main__":
    main()
