"""Every tool through a real vLLM server on the tiny model.

Random weights answer nonsense, so where a test needs a known answer it forces the
model's output with a `choice` structured output (the client passes `extra_body` through)
and asserts the exact boxes, codes and masks that come back.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tools
from tests.images import gradient_image
from tests.server_pool import TinyServer
from tests.vae_fixture import write_random_vae_npz
from tools import masks
from tools.vae_decoder import VaeDecoder

pytestmark = pytest.mark.vllm

SEGS = "".join(f"<seg{c:03d}>" for c in (5, 17, 33, 64, 127, 0, 90, 12, 45, 77, 3, 101, 66, 8, 29, 120))
CODES = (5, 17, 33, 64, 127, 0, 90, 12, 45, 77, 3, 101, 66, 8, 29, 120)


def forced(answer: str) -> dict[str, Any]:
    return {"structured_outputs": {"choice": [answer]}}


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_vae_npz(tmp_path_factory.mktemp("vae") / "vae-oid.npz", seed=3)


@pytest.fixture(scope="module")
def client(tiny_server: TinyServer, vae_path: Path) -> Iterator[tools.PaliGemmaClient]:
    # No model name: the client asks the endpoint which model it serves.
    with tools.PaliGemmaClient(base_url=tiny_server.base_url, vae_path=vae_path, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def rotated_jpeg() -> bytes:
    """A 300x200 JPEG whose EXIF says 'rotate 90 degrees clockwise': people see it 200 wide, 300 high."""
    stored = gradient_image(300, 200, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_locate_objects_on_an_exif_rotated_image(
    client: tools.PaliGemmaClient, tiny_server: TinyServer, rotated_jpeg: bytes
) -> None:
    answer = "<loc0100><loc0200><loc0300><loc0400> cat ; <loc0512><loc0000><loc1023><loc1023> old dog"
    result = tools.locate_objects(rotated_jpeg, "cat ; old dog", client=client, extra_body=forced(answer))
    assert (result.image_width, result.image_height) == (200, 300)  # upright, as a person sees it
    assert result.prompt == "detect cat ; old dog"
    assert result.model == tiny_server.model
    assert result.raw_text == answer and result.issues == ()
    cat, dog = result.objects
    assert cat.label == "cat" and cat.loc_bins == (100, 200, 300, 400)
    # x from the 2nd and 4th bins over the width 200, y from the 1st and 3rd over the height 300
    assert cat.box.xyxy == pytest.approx((200 / 1023 * 200, 100 / 1023 * 300, 400 / 1023 * 200, 300 / 1023 * 300))
    assert dog.label == "old dog"
    assert dog.box.xyxy == pytest.approx((0.0, 512 / 1023 * 300, 200.0, 300.0))


def test_segment_objects_decodes_masks_in_image_pixels(
    client: tools.PaliGemmaClient, vae_path: Path, rotated_jpeg: bytes
) -> None:
    answer = f"<loc0100><loc0200><loc0800><loc0900> {SEGS} cat"
    result = tools.segment_objects(rotated_jpeg, ["cat"], client=client, extra_body=forced(answer))
    assert result.masks_decoded and result.issues == ()
    (cat,) = result.objects
    assert cat.codes == CODES
    assert cat.mask is not None and cat.mask.shape == (300, 200)
    expected = masks.paste_mask(
        VaeDecoder.from_npz(vae_path).decode(np.array([CODES]))[0], cat.box.xyxy, width=200, height=300
    )
    assert np.array_equal(cat.mask, expected)
    assert cat.area_px == int(expected.sum()) > 0
    x0, y0, x1, y1 = (int(v) for v in cat.box.xyxy)
    assert not cat.mask[:y0].any() and not cat.mask[y1:].any()
    assert not cat.mask[:, :x0].any() and not cat.mask[:, x1:].any()
    assert cat.outline is not None and cat.outline.is_valid and cat.outline.area == cat.area_px
    rle = cat.coco_rle()
    assert rle is not None and np.array_equal(masks.coco_rle_to_mask(rle), cat.mask)
    payload = result.model_dump(mode="json")
    assert "mask" not in payload["objects"][0] and payload["objects"][0]["outline_xy"]


def test_segment_without_the_checkpoint_keeps_boxes_and_codes_and_says_how(
    tiny_server: TinyServer, tmp_path: Path
) -> None:
    missing = tools.PaliGemmaClient(
        base_url=tiny_server.base_url, vae_path=tmp_path / "absent.npz", download_vae=False, max_retries=0
    )
    answer = f"<loc0100><loc0200><loc0800><loc0900>{SEGS} cat"
    with missing:
        result = tools.segment_objects(gradient_image(), "cat", client=missing, extra_body=forced(answer))
    assert not result.masks_decoded
    (cat,) = result.objects
    assert cat.codes == CODES and cat.mask is None and cat.area_px is None
    (note,) = result.issues
    assert "masks not decoded" in note.reason and "vae-oid.npz" in note.reason and "PALIGEMMA_VAE_PATH" in note.reason


@pytest.mark.parametrize(
    ("call", "prompt", "field", "answer"),
    [
        pytest.param(
            lambda c, e: tools.read_text(gradient_image(), client=c, extra_body=e),
            "ocr",
            "text",
            "EXIT 12",
            id="read_text",
        ),
        pytest.param(
            lambda c, e: tools.answer_visual_question(gradient_image(), "what colour is it?", client=c, extra_body=e),
            "answer en what colour is it?",
            "answer",
            "blue",
            id="answer_visual_question",
        ),
        pytest.param(
            lambda c, e: tools.caption_image(gradient_image(), lang="de", client=c, extra_body=e),
            "caption de",
            "caption",
            "ein Farbverlauf",
            id="caption_image-short",
        ),
        pytest.param(
            lambda c, e: tools.caption_image(gradient_image(), detail="long", client=c, extra_body=e),
            "describe en",
            "caption",
            "A smooth gradient from dark to light.",
            id="caption_image-long",
        ),
        pytest.param(
            lambda c, e: tools.generate_question(gradient_image(), "two", client=c, extra_body=e),
            "question en two",
            "question",
            "how many squares are there?",
            id="generate_question",
        ),
    ],
)
def test_text_tools(client: tools.PaliGemmaClient, call: Any, prompt: str, field: str, answer: str) -> None:
    result = call(client, forced(answer))
    assert result.prompt == prompt
    assert getattr(result, field) == answer
    assert (result.image_width, result.image_height) == (300, 200)


def test_async_forms_run_concurrently_and_agree_with_sync(client: tools.PaliGemmaClient) -> None:
    answer = "<loc0100><loc0200><loc0300><loc0400> cat"

    async def many() -> list[tools.Detections]:
        try:
            calls = [
                tools.alocate_objects(gradient_image(seed=s), "cat", client=client, extra_body=forced(answer))
                for s in range(6)
            ]
            return await asyncio.gather(*calls)
        finally:
            await client.aclose()  # this event loop's connections close with it

    results = asyncio.run(many())
    sync = tools.locate_objects(gradient_image(seed=0), "cat", client=client, extra_body=forced(answer))
    assert all(r.objects == sync.objects for r in results)


def test_unforced_answer_of_the_random_model_is_parsed_or_reported(client: tools.PaliGemmaClient) -> None:
    """Whatever the random model says, the result is typed: boxes that parsed plus issues, never an exception."""
    result = tools.segment_objects(gradient_image(), "cat ; dog", client=client)
    assert result.raw_text
    assert len(result.objects) + len(result.issues) >= 1
    for segment in result.objects:
        assert 0 <= segment.box.x_min < segment.box.x_max <= result.image_width


def test_a_large_image_is_downscaled_before_sending_but_boxes_map_to_its_size(client: tools.PaliGemmaClient) -> None:
    big = gradient_image(4000, 3000, seed=2)
    answer = "<loc0000><loc0000><loc1023><loc0512> sky"
    result = tools.locate_objects(big, "sky", client=client, extra_body=forced(answer))
    (sky,) = result.objects
    assert sky.box.xyxy == pytest.approx((0.0, 0.0, 512 / 1023 * 4000, 3000.0))
    loaded = tools.load_image(big)
    from tools.images import encode_for_model

    sent = encode_for_model(loaded)
    assert (sent.width, sent.height) == (1195, 896)


def test_endpoint_down_is_a_clear_error(unused_port_url: str) -> None:
    down = tools.PaliGemmaClient(base_url=unused_port_url, model="m", max_retries=0, timeout_s=5)
    with pytest.raises(tools.EndpointUnavailableError, match="Is the server running"):
        tools.read_text(gradient_image(), client=down)


def test_wrong_model_name_is_a_clear_error(tiny_server: TinyServer) -> None:
    wrong = tools.PaliGemmaClient(base_url=tiny_server.base_url, model="paligemma-nope", max_retries=0)
    with wrong, pytest.raises(tools.EndpointRequestError, match=r"HTTP 404.*paligemma-nope"):
        tools.caption_image(gradient_image(), client=wrong)


@pytest.fixture
def unused_port_url() -> str:
    from server.process import free_port

    return f"http://127.0.0.1:{free_port()}/v1"
