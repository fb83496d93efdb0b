"""Fixtures shared by the agent-facing tests: a client that forces one detection answer, and
an image store holding one 300x200 image as `img_1`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

import tools
from tests.images import gradient_image, png_bytes
from tests.server_pool import TinyServer
from tools.image_store import ImageStore

DETECTION_ANSWER = "<loc0100><loc0200><loc0300><loc0400> cat ; <loc0500><loc0500><loc1000><loc0900> dog"
DETECTION_BOXES = [  # DETECTION_ANSWER on the 300x200 image, as the JSON gives them
    {"x_min": 58.65, "y_min": 19.55, "x_max": 117.3, "y_max": 58.65},
    {"x_min": 146.63, "y_min": 97.75, "x_max": 263.93, "y_max": 195.5},
]
LOCATE_IMG_1 = {"image": "img_1", "objects": ["cat", "dog"]}


@pytest.fixture(scope="module")
def forced_client(tiny_server: TinyServer) -> tools.PaliGemmaClient:
    """A client whose every answer is DETECTION_ANSWER (a `choice` structured output)."""
    return tools.PaliGemmaClient(
        base_url=tiny_server.base_url,
        max_retries=0,
        extra_body={"structured_outputs": {"choice": [DETECTION_ANSWER]}},
    )


@pytest.fixture
def images() -> ImageStore:
    store = ImageStore()
    assert store.add(png_bytes(gradient_image(300, 200))) == "img_1"
    return store


T = TypeVar("T")


def run(awaitable: Awaitable[T], client: tools.PaliGemmaClient) -> T:
    """Run `awaitable` in a fresh event loop, closing that loop's endpoint connections after it."""

    async def main() -> T:
        try:
            return await awaitable
        finally:
            await client.aclose()

    return asyncio.run(main())
