"""What holds for the served trained tiny model whatever it has learned: it is served by name, and its
masks decode with the tiny VQ-VAE shipped with the tools, with no configuration."""

from __future__ import annotations

import numpy as np
import pytest

import tools
from tests.server_pool import TinyServer
from tools import answer_text, geometry
from tools.tiny_shapes_model import TINY_SHAPES_MODEL, TINY_SHAPES_VAE_PATH
from training.scenes import make_scene, object_mask
from training.train_tiny import shape_codes

pytestmark = pytest.mark.vllm


def test_served_under_its_own_name(trained_server: TinyServer) -> None:
    assert trained_server.model == TINY_SHAPES_MODEL


def test_segment_masks_decode_with_the_shipped_vae_and_no_configuration(
    trained_server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PALIGEMMA_VAE_PATH", raising=False)
    scene = make_scene(np.random.default_rng(11), kind="shapes", size=(500, 300))
    truth = scene.objects[0]
    bins = geometry.xyxy_to_bins(truth.box_xyxy, width=scene.width, height=scene.height)
    answer = answer_text.segment_text([(truth.shape, bins, shape_codes(TINY_SHAPES_VAE_PATH)[truth.shape])])
    with tools.PaliGemmaClient(base_url=trained_server.base_url, download_vae=False, max_retries=0) as client:
        # The answer is forced (a `choice` output): this tests the path from tokens to masks, not the model.
        result = tools.segment_objects(
            scene.image, truth.shape, client=client, extra_body={"structured_outputs": {"choice": [answer]}}
        )
    assert result.masks_decoded and result.issues == ()
    (segment,) = result.objects
    assert segment.mask is not None
    drawn = object_mask(scene, truth)
    assert (segment.mask & drawn).sum() / (segment.mask | drawn).sum() >= 0.9
