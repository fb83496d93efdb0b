"""The MCP server through real MCP client sessions: in-process, stdio and streamable HTTP."""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

import tools
from tests.images import data_uri, gradient_image, png_bytes
from tests.mcp_http import mcp_http_server
from tests.server_pool import TinyServer
from tools.agents import TOOLS, McpSettings, build_server

pytestmark = pytest.mark.vllm

SEGS = "".join(f"<seg{c:03d}>" for c in range(16))
ANSWERS = {
    "read_text": "OPEN 9-5",
    "answer_visual_question": "two",
    "caption_image": "a gradient",
    "generate_question": "how many?",
    "locate_objects": "<loc0100><loc0200><loc0300><loc0400> cat",
    "segment_objects": f"<loc0100><loc0200><loc0800><loc0900>{SEGS} cat",
}
ARGUMENTS: dict[str, dict[str, Any]] = {
    "read_text": {},
    "answer_visual_question": {"question": "how many squares?", "lang": None},
    "caption_image": {"detail": None, "lang": "en"},
    "generate_question": {"answer": "two", "lang": None},
    "locate_objects": {"objects": ["cat"]},
    "segment_objects": {"objects": ["cat"], "mask_coco_rle": True},
}


def forcing_client(tiny_server: TinyServer, answer: str, vae: Path | None = None) -> tools.PaliGemmaClient:
    return tools.PaliGemmaClient(
        base_url=tiny_server.base_url,
        max_retries=0,
        vae_path=vae,
        download_vae=False,
        extra_body={"structured_outputs": {"choice": [answer]}},
    )


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.vae_fixture import write_random_vae_npz

    return write_random_vae_npz(tmp_path_factory.mktemp("vae") / "vae-oid.npz")


@pytest.mark.parametrize("name", list(ANSWERS))
def test_in_process_session_calls_each_tool(tiny_server: TinyServer, vae: Path, name: str, tmp_path: Path) -> None:
    image_file = tmp_path / "photo.png"
    image_file.write_bytes(png_bytes(gradient_image(300, 200)))
    server = build_server(McpSettings(allowed_roots=(tmp_path,)), forcing_client(tiny_server, ANSWERS[name], vae))

    async def session() -> Any:
        async with Client(server) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.call_tool(name, {"image": str(image_file), **ARGUMENTS[name]})
            return listed, result

    listed, result = anyio.run(session)
    assert set(listed) == {spec.name for spec in TOOLS}
    assert not result.is_error, result.content
    structured = result.structured_content
    jsonschema.validate(structured, listed[name].output_schema)  # the content honours the declared schema
    assert json.loads(result.content[0].text) == structured  # the same JSON as text
    assert structured["image_width"] == 300 and structured["image_height"] == 200
    if name in ("locate_objects", "segment_objects"):
        assert structured["objects"][0]["label"] == "cat"
        picture = result.content[1]
        assert picture.type == "image" and picture.mime_type == "image/png"
        assert Image.open(io.BytesIO(base64.b64decode(picture.data))).width == 300
    if name == "segment_objects":
        segment = structured["objects"][0]
        assert segment["area_px"] > 0 and segment["outline_xy"] and segment["mask_coco_rle"]["size"] == [200, 300]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"image": "/etc/hostname"}, "local files must lie under", id="file-outside-roots"),
        pytest.param({"image": "http://127.0.0.1:9/x.png"}, "non-public address", id="loopback-url"),
        pytest.param({}, "image: Field required", id="missing-image"),
    ],
)
def test_errors_are_tool_results_marked_as_errors(
    tiny_server: TinyServer, arguments: dict[str, Any], message: str
) -> None:
    server = build_server(McpSettings(), forcing_client(tiny_server, "x"))

    async def call() -> Any:
        async with Client(server) as client:
            return await client.call_tool("read_text", arguments)

    result = anyio.run(call)
    assert result.is_error
    assert message in json.loads(result.content[0].text)["error"]


def test_stdio_session_against_paligemma_mcp(tiny_server: TinyServer) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "clients.cli", "mcp", "--base-url", tiny_server.base_url, "--no-annotated-images"],
    )

    async def session() -> Any:
        async with Client(params) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.call_tool(
                "locate_objects", {"image": data_uri(gradient_image(120, 90)), "objects": ["cat"]}
            )
            return listed, result

    listed, result = anyio.run(session)
    assert list(listed) == [tool.name for tool in TOOLS]
    assert not result.is_error
    # The random model's answer is unknown, but not its frame: the declared schema, the prompt, the image.
    jsonschema.validate(result.structured_content, listed["locate_objects"].output_schema)
    assert result.structured_content["prompt"] == "detect cat" and result.structured_content["image_width"] == 120
    assert [c.type for c in result.content] == ["text"]


@pytest.fixture
def http_mcp(tiny_server: TinyServer) -> Iterator[str]:
    with mcp_http_server(tiny_server.base_url) as (url, _):
        yield url


def test_streamable_http_session(http_mcp: str) -> None:
    async def session() -> Any:
        async with Client(http_mcp) as client:
            return await client.call_tool(
                "caption_image", {"image": data_uri(gradient_image()), "detail": "long", "lang": "en"}
            )

    result = anyio.run(session)
    assert not result.is_error
    assert result.structured_content["prompt"] == "describe en"
