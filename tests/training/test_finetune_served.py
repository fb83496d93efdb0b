"""From a COCO file to a served LoRA adapter answering `locate_objects`, and to a served full
fine-tune answering `segment_objects`, on CPU with real vLLM servers.

A few steps of `paligemma finetune --lora` on the tiny trained model (seconds), then
`paligemma serve --model tiny --lora star=OUT`, then the tools pick the adapter by model name;
one step of `paligemma finetune --full`, then `paligemma serve --model OUT`.
Whether a few steps teach stars is the benchmark's business (benchmarks/finetune_star.py):
here the claims are the path, the names and typed answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

import tools
from tests.server_pool import TinyServer
from tools.tiny_shapes_model import TINY_SHAPES_INPUT_PX, TINY_SHAPES_MODEL
from training import evaluate, scenes

pytestmark = pytest.mark.vllm


@dataclass(frozen=True)
class LoraServer:
    base_url: str
    base_model: str
    adapter: str
    scenes: Path


@pytest.fixture(scope="module")
def lora(lora_server: TinyServer, finetune_work: Path) -> LoraServer:
    """The session's LoRA server (tests/conftest.py: finetune_star_adapter, then serve with --lora)."""
    return LoraServer(lora_server.base_url, lora_server.model, "star", finetune_work / "data" / "images")


def test_the_adapter_is_served_beside_the_base_model(lora: LoraServer) -> None:
    listed = httpx2.get(lora.base_url + "/models", timeout=30).json()["data"]
    assert {m["id"] for m in listed} == {lora.base_model, lora.adapter}


def test_locate_objects_through_the_adapter(lora: LoraServer) -> None:
    image = sorted(lora.scenes.glob("*.png"))[0]
    with tools.PaliGemmaClient(base_url=lora.base_url, model=lora.adapter, timeout_s=600) as client:
        found = tools.locate_objects(image, ["star"], client=client)
    assert found.model == lora.adapter and found.prompt == "detect star"
    # which boxes and labels three steps teach is the benchmark's business (the base model itself
    # may label a star `circle`, a name not asked; the tools return what the model wrote):
    # whatever came back is typed, in pixels of the image
    for o in found.objects:
        x0, y0, x1, y1 = o.box.xyxy
        assert o.label and 0 <= x0 < x1 <= found.image_width and 0 <= y0 < y1 <= found.image_height


def test_the_environment_picks_the_adapter(lora: LoraServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PALIGEMMA_MODEL", lora.adapter)
    image = sorted(lora.scenes.glob("*.png"))[1]
    with tools.PaliGemmaClient(base_url=lora.base_url, timeout_s=600) as client:
        assert tools.locate_objects(image, "star", client=client).model == lora.adapter


def test_the_adapter_is_treated_as_its_base_model(lora: LoraServer) -> None:
    """vLLM lists the adapter with its base model as `parent`: the tools send it the 288 px they
    send the tiny model and decode its masks with the shipped tiny VQ-VAE, with no configuration
    and nothing downloaded (a name they do not know would get 896 px and PaliGemma's vae-oid)."""
    segments_as_the_tiny_model(lora.base_url, lora.adapter)


def test_a_full_fine_tune_is_listed_with_its_base_model(full_finetune_server: TinyServer) -> None:
    listed = httpx2.get(full_finetune_server.base_url + "/models", timeout=30).json()["data"]
    assert [(m["id"], m["parent"]) for m in listed] == [(full_finetune_server.model, TINY_SHAPES_MODEL)]


def test_a_full_fine_tune_is_treated_as_its_base_model(full_finetune_server: TinyServer) -> None:
    """`paligemma serve --model OUT` on a full fine-tune of the tiny model, as its model card says
    to: served under the folder's name, which says nothing of what it sees, and listed with the
    base model its card names (server/model_parent.py), so the tools treat it as the tiny model."""
    assert full_finetune_server.model == "stars-full"
    segments_as_the_tiny_model(full_finetune_server.base_url, full_finetune_server.model)


def segments_as_the_tiny_model(base_url: str, model: str) -> None:
    """`segment_objects` through `model` by name alone: 288 px sent, masks decoded offline with the
    tiny VQ-VAE and close to the drawn shape (a model one to three steps away from the tiny one)."""
    scene = next(s for s in evaluate.held_out_scenes(8) if s.objects)
    truth = scene.objects[0]
    with tools.PaliGemmaClient(base_url=base_url, model=model, timeout_s=600, download_vae=False) as client:
        found = tools.segment_objects(scene.image, truth.shape, client=client)
        assert client.send_side_px(model) == TINY_SHAPES_INPUT_PX
    assert found.model == model and found.masks_decoded, found.issues
    masks = [o.mask for o in found.objects if o.mask is not None]
    assert masks, (found.raw_text, found.issues)
    drawn = scenes.object_mask(scene, truth)
    iou = max(float((m & drawn).sum() / (m | drawn).sum()) for m in masks)
    assert iou >= 0.7, (truth, found.raw_text)
