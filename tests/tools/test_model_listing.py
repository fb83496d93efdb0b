"""What the client learns from the endpoint's model list. vLLM lists a LoRA adapter served with
`--lora star=DIR` beside its base model, with `parent` = the base model's served name; the tools
send the adapter images the size its base model sees and decode its masks with the base model's
VQ-VAE. A name that says what it sees is never looked up; the list is read once per client; an
endpoint that does not list its models still answers; a hostile list is cut off."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import time

import pytest
from PIL import Image

import tools
from tests.images import gradient_image
from tests.tools.fake_endpoint import Behaviour, fake_endpoint
from tools.images import SEND_MIN_SIDE_PX
from tools.tiny_shapes_model import TINY_SHAPES_INPUT_PX, TINY_SHAPES_MODEL

MODELS = "/v1/models"
CHAT = "/v1/chat/completions"
WITH_ADAPTER: list[dict[str, object]] = [
    {"id": TINY_SHAPES_MODEL, "object": "model", "root": "/models/tiny", "parent": None},
    {"id": "star", "object": "model", "root": "/adapters/star", "parent": TINY_SHAPES_MODEL},
]
ASYNC = pytest.mark.parametrize("asynchronous", [pytest.param(False, id="sync"), pytest.param(True, id="async")])


def locate_twice(base_url: str, model: str | None, asynchronous: bool) -> tools.PaliGemmaClient:
    """Two `locate_objects` calls on a 2000x1200 image through a new client, returned closed."""
    client = tools.PaliGemmaClient(base_url=base_url, model=model, max_retries=0, timeout_s=5, download_vae=False)
    return locate_twice_with(client, asynchronous)


def locate_twice_with(client: tools.PaliGemmaClient, asynchronous: bool) -> tools.PaliGemmaClient:
    """Two `locate_objects` calls on a 2000x1200 image through `client`, which is returned closed."""
    image = gradient_image(2000, 1200)
    if asynchronous:

        async def main() -> None:
            async with client:
                for _ in range(2):
                    await tools.alocate_objects(image, "cat", client=client)

        asyncio.run(main())
    else:
        with client:
            for _ in range(2):
                tools.locate_objects(image, "cat", client=client)
    return client


def sent_short_sides(behaviour: Behaviour) -> list[int]:
    """The shorter side of the image in each chat request the endpoint received."""
    sides = []
    for body in behaviour.bodies:
        url = json.loads(body)["messages"][0]["content"][0]["image_url"]["url"]
        sides.append(min(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size))
    return sides


@ASYNC
def test_an_adapter_is_sent_what_its_base_model_sees_and_gets_its_decoder(asynchronous: bool) -> None:
    behaviour = Behaviour(models=WITH_ADAPTER)
    with fake_endpoint(behaviour) as base_url:
        client = locate_twice(base_url, "star", asynchronous)
    assert behaviour.requests == [MODELS, CHAT, CHAT]  # the list read once
    assert sent_short_sides(behaviour) == [TINY_SHAPES_INPUT_PX] * 2
    assert client.base_model("star") == TINY_SHAPES_MODEL
    assert client.vae_decoder("star") is not None  # the shipped tiny VQ-VAE, offline


# `paligemma serve --model OUT` lists a fully fine-tuned checkpoint with the model its card names as
# its base (server/model_parent.py); an adapter served on it has it as parent, as vLLM lists it
FINE_TUNE_CHAIN: list[dict[str, object]] = [
    {"id": "my-finetune", "object": "model", "root": "/models/my-finetune", "parent": "google/paligemma2-3b-mix-448"},
    {"id": "star", "object": "model", "root": "/adapters/star", "parent": "my-finetune"},
]


@pytest.mark.parametrize("model", ["my-finetune", "star"])
def test_a_fine_tune_and_an_adapter_on_it_follow_the_first_base_model(model: str) -> None:
    behaviour = Behaviour(models=FINE_TUNE_CHAIN)
    with fake_endpoint(behaviour) as base_url:
        client = locate_twice(base_url, model, asynchronous=False)
    assert behaviour.requests == [MODELS, CHAT, CHAT]
    assert sent_short_sides(behaviour) == [448] * 2  # not the 896 px of a name that says nothing
    assert client.base_model(model) == "google/paligemma2-3b-mix-448"


def test_a_name_that_says_its_size_wins_over_its_parents() -> None:
    listed = [{"id": "paligemma2-3b-pt-224", "object": "model", "parent": "google/paligemma2-3b-pt-448"}]
    behaviour = Behaviour(models=listed)
    with fake_endpoint(behaviour) as base_url:
        client = locate_twice(base_url, None, asynchronous=False)  # the list read to pick the model
    assert client.base_model("paligemma2-3b-pt-224") == "paligemma2-3b-pt-224"
    assert sent_short_sides(behaviour) == [224] * 2


def test_a_listing_whose_parents_loop_ends_at_the_loop() -> None:
    looped = [{"id": "a", "object": "model", "parent": "b"}, {"id": "b", "object": "model", "parent": "a"}]
    behaviour = Behaviour(models=looped)
    with fake_endpoint(behaviour) as base_url:
        client = locate_twice(base_url, "a", asynchronous=False)
    assert client.base_model("a") == "b" and sent_short_sides(behaviour) == [SEND_MIN_SIDE_PX] * 2


@ASYNC
def test_a_name_that_says_its_size_is_not_looked_up(asynchronous: bool) -> None:
    behaviour = Behaviour(models=WITH_ADAPTER)
    with fake_endpoint(behaviour) as base_url:
        locate_twice(base_url, "google/paligemma2-3b-mix-448", asynchronous)
    assert behaviour.requests == [CHAT, CHAT]
    assert sent_short_sides(behaviour) == [448] * 2


@ASYNC
def test_without_a_model_list_a_configured_name_is_used_as_it_is(asynchronous: bool) -> None:
    behaviour = Behaviour(models_status=404)
    with fake_endpoint(behaviour) as base_url:
        client = locate_twice(base_url, "my-model", asynchronous)
    assert behaviour.requests == [MODELS, CHAT, CHAT]  # not asked again
    assert sent_short_sides(behaviour) == [SEND_MIN_SIDE_PX] * 2
    assert client.base_model("my-model") == "my-model"


@ASYNC
def test_a_list_that_failed_for_now_is_asked_again_later(asynchronous: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools.client, "LISTING_RETRY_S", 1.0)
    behaviour = Behaviour(models_status=503, models=WITH_ADAPTER)
    with fake_endpoint(behaviour) as base_url:
        client = locate_twice(base_url, "star", asynchronous)
        assert behaviour.requests == [MODELS, CHAT, CHAT]  # answered, the list not asked again at once
        tiny_decoder = client.vae_decoder(TINY_SHAPES_MODEL)
        assert client.vae_decoder("star") is not tiny_decoder  # a name it does not know, not yet listed
        behaviour.models_status = 200
        time.sleep(1.1)
        locate_twice_with(client, asynchronous)
    assert behaviour.requests[3:] == [MODELS, CHAT, CHAT]  # asked again once, then known
    assert sent_short_sides(behaviour) == [SEND_MIN_SIDE_PX] * 2 + [TINY_SHAPES_INPUT_PX] * 2
    assert client.vae_decoder("star") is tiny_decoder  # now its base model's, not what was remembered before


@ASYNC
def test_a_listed_model_without_parent_is_its_own_base(asynchronous: bool) -> None:
    behaviour = Behaviour(models=[{"id": "my-model", "object": "model", "root": "/models/mine"}])
    with fake_endpoint(behaviour) as base_url:
        client = locate_twice(base_url, "my-model", asynchronous)
    assert behaviour.requests == [MODELS, CHAT, CHAT]
    assert client.base_model("my-model") == "my-model"


@ASYNC
@pytest.mark.parametrize("model", ["star", None], ids=["adapter-name", "no-name"])
def test_a_hostile_model_list_is_cut_off_before_any_completion(model: str | None, asynchronous: bool) -> None:
    many = [{"id": f"m{i:07d}", "object": "model", "parent": "x" * 64} for i in range(80_000)]  # ~8 MB
    behaviour = Behaviour(models=many)
    started = time.monotonic()
    with fake_endpoint(behaviour) as base_url, pytest.raises(tools.EndpointRequestError, match="too much data"):
        locate_twice(base_url, model, asynchronous)
    assert behaviour.requests == [MODELS] and time.monotonic() - started < 5.0


@ASYNC
def test_calls_made_at_once_share_one_reading_of_the_list(asynchronous: bool) -> None:
    behaviour = Behaviour(models=WITH_ADAPTER)
    image = gradient_image(640, 480)
    with fake_endpoint(behaviour) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="star", max_retries=0, timeout_s=10)
        if asynchronous:

            async def main() -> None:
                async with client:
                    await asyncio.gather(*(tools.alocate_objects(image, "cat", client=client) for _ in range(8)))

            asyncio.run(main())
        else:
            with client, concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: tools.locate_objects(image, "cat", client=client), range(8)))
    assert sorted(behaviour.requests) == [CHAT] * 8 + [MODELS]
    assert sent_short_sides(behaviour) == [TINY_SHAPES_INPUT_PX] * 8


@ASYNC
def test_calls_waiting_on_a_list_that_never_comes_fail_together(asynchronous: bool) -> None:
    """A caller that waited for another's reading of the list gets that reading's outcome: four
    calls at once on an endpoint that does not answer the list end after one timeout, not four."""
    behaviour = Behaviour(models=WITH_ADAPTER, models_delay_s=5.0)
    image = gradient_image(640, 480)
    errors: list[BaseException] = []
    started = time.monotonic()
    with fake_endpoint(behaviour) as base_url:
        client = tools.PaliGemmaClient(base_url=base_url, model="star", max_retries=0, timeout_s=1.0)

        def one() -> None:
            try:
                tools.locate_objects(image, "cat", client=client)
            except tools.EndpointError as e:
                errors.append(e)

        async def one_async() -> None:
            try:
                await tools.alocate_objects(image, "cat", client=client)
            except tools.EndpointError as e:
                errors.append(e)

        async def main() -> None:
            async with client:
                await asyncio.gather(*(one_async() for _ in range(4)))

        if asynchronous:
            asyncio.run(main())
        else:
            with client, concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: one(), range(4)))
        elapsed = time.monotonic() - started
    assert len(errors) == 4 and all(isinstance(e, tools.EndpointTimeoutError) for e in errors), errors
    assert behaviour.requests == [MODELS] and elapsed < 3.0, (behaviour.requests, elapsed)
