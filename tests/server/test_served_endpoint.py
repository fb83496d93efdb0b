"""End to end against a real vLLM server on the tiny model: prompts, tokens, errors (fidelity: test_attention.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from tests.images import data_uri, gradient_image
from tests.reference import TransformersReference
from tests.server_pool import TinyServer

pytestmark = pytest.mark.vllm

LOC_OR_SEG = re.compile(r"<loc\d{4}>|<seg\d{3}>")


@pytest.fixture(scope="module")
def client(tiny_server: TinyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=tiny_server.base_url, api_key="EMPTY", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tiny_server: TinyServer) -> TransformersReference:
    return TransformersReference(tiny_server.model_dir)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return gradient_image(300, 200)


def user(image: Image.Image | None, text: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": data_uri(image)}})
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def prompt_ids(client: openai.OpenAI, model: str, messages: list[dict[str, Any]]) -> list[int]:
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=1,
        extra_body={"return_token_ids": True},  # type: ignore[arg-type]
    )
    ids = (reply.model_extra or {})["prompt_token_ids"]
    assert isinstance(ids, list)
    return [int(i) for i in ids]


@pytest.mark.parametrize(
    "history",
    [
        pytest.param([], id="single-user-message"),
        pytest.param(
            [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}],
            id="with-system-message",
        ),
        pytest.param(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "caption en"},
                {"role": "assistant", "content": "a colourful gradient"},
            ],
            id="with-system-and-earlier-turn",
        ),
    ],
)
def test_prompt_ids_equal_paligemma_processor(
    client: openai.OpenAI,
    tiny_server: TinyServer,
    reference: TransformersReference,
    image: Image.Image,
    history: list[dict[str, Any]],
) -> None:
    served = prompt_ids(client, tiny_server.model, [*history, user(image, "detect cat")])
    assert served == reference.prompt_ids(image, "detect cat")


def test_image_in_earlier_turn_reaches_the_model(
    client: openai.OpenAI, tiny_server: TinyServer, reference: TransformersReference, image: Image.Image
) -> None:
    """A chat app's follow-up question about the image of an earlier turn needs no re-upload."""
    messages = [user(image, "caption en"), {"role": "assistant", "content": "x"}, user(None, "detect cat")]
    assert prompt_ids(client, tiny_server.model, messages) == reference.prompt_ids(image, "detect cat")


def test_newlines_and_several_text_parts_become_one_line(
    client: openai.OpenAI, tiny_server: TinyServer, reference: TransformersReference, image: Image.Image
) -> None:
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": " detect\n"},
            {"type": "image_url", "image_url": {"url": data_uri(image)}},
            {"type": "text", "text": "cat ; dog\n"},
        ],
    }
    assert prompt_ids(client, tiny_server.model, [message]) == reference.prompt_ids(image, "detect cat ; dog")


REFUSED = {
    "no-image": (lambda image: [{"role": "user", "content": "detect cat"}], "needs one image"),
    "two-images": (lambda image: [user(image, "detect cat"), user(image, "detect dog")], "At most 1 image"),
    "empty-text": (lambda image: [user(image, "  \n ")], "prompt is empty"),
    "last-message-not-user": (
        lambda image: [user(image, "caption en"), {"role": "assistant", "content": "a"}],
        "must be the user's",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_template_refuses_what_paligemma_cannot_answer(
    client: openai.OpenAI, tiny_server: TinyServer, image: Image.Image, case: str
) -> None:
    build, expected = REFUSED[case]
    with pytest.raises(openai.BadRequestError, match=expected):
        client.chat.completions.create(model=tiny_server.model, messages=build(image), max_tokens=4)


def forced_tokens(reference: TransformersReference) -> dict[str, int]:
    vocab: dict[str, int] = reference.processor.tokenizer.get_vocab()
    return {t: vocab[t] for t in ("<loc0000>", "<loc0512>", "<loc1023>", "<seg000>", "<seg127>")}


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
def test_forced_loc_and_seg_tokens_arrive_intact(
    client: openai.OpenAI,
    tiny_server: TinyServer,
    reference: TransformersReference,
    image: Image.Image,
    stream: bool,
) -> None:
    allowed = forced_tokens(reference)
    kwargs: dict[str, Any] = {
        "model": tiny_server.model,
        "messages": [user(image, "segment cat")],
        "max_tokens": 12,
        "temperature": 0,
        "extra_body": {"allowed_token_ids": list(allowed.values()), "ignore_eos": True},
    }
    if stream:
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(stream=True, **kwargs)
            if chunk.choices
        )
    else:
        text = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    tokens = LOC_OR_SEG.findall(text)
    assert len(tokens) == 12
    assert "".join(tokens) == text  # nothing else: no stray text, nothing dropped or escaped
    assert set(tokens) <= set(allowed)


def test_logit_bias_forces_a_location_token(
    client: openai.OpenAI, tiny_server: TinyServer, reference: TransformersReference, image: Image.Image
) -> None:
    token_id = forced_tokens(reference)["<loc0512>"]
    reply = client.chat.completions.create(
        model=tiny_server.model,
        messages=[user(image, "detect cat")],  # type: ignore[list-item]
        max_tokens=4,
        temperature=0,
        logit_bias={str(token_id): 100},
        extra_body={"ignore_eos": True},
    )
    assert reply.choices[0].message.content == "<loc0512>" * 4


def test_bad_image_is_a_clear_400(client: openai.OpenAI, tiny_server: TinyServer) -> None:
    message = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}},
            {"type": "text", "text": "caption en"},
        ],
    }
    with pytest.raises(openai.BadRequestError, match="image"):
        client.chat.completions.create(model=tiny_server.model, messages=[message], max_tokens=4)  # type: ignore[list-item]


def test_wrong_model_name_is_a_clear_404(client: openai.OpenAI, tiny_server: TinyServer, image: Image.Image) -> None:
    with pytest.raises(openai.NotFoundError, match=tiny_server.model):
        client.chat.completions.create(model="no-such-model", messages=[user(image, "ocr")], max_tokens=4)  # type: ignore[list-item]
