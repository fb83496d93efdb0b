"""An endpoint that answers anything but a chat completion: every answer becomes one of the
tools' errors (never another exception), within the response cap, and bounded in objects."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest

import tools
from tests.images import gradient_image
from tests.tools.fake_endpoint import Behaviour, fake_endpoint
from tools.agents.dispatch import run_tool_call
from tools.errors import EndpointRequestError, PaliGemmaError
from tools.parsing import MAX_OBJECTS


def _completion(**changes: Any) -> bytes:
    reply: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "cat"}}],
    }
    reply.update(changes)
    return json.dumps(reply).encode()


def _message(**changes: Any) -> bytes:
    return _completion(choices=[{"index": 0, "finish_reason": "stop", "message": changes.get("message")}])


def _client(base_url: str) -> tools.PaliGemmaClient:
    return tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0)


NOT_A_COMPLETION = [
    pytest.param(b"hello, this is a web page", id="text"),
    pytest.param(b'{"choices": [', id="broken-json"),
    pytest.param(b"[1, 2]", id="a-list"),
    pytest.param(b'"x"', id="a-string"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"x": ' + b"9" * 5000 + b"}", id="5000-digits"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000-deep"),
    pytest.param(_completion(choices={"a": 1}), id="choices-a-dict"),
    pytest.param(_completion(choices=3), id="choices-a-number"),
    pytest.param(_completion(choices=["x"]), id="a-choice-a-string"),
    pytest.param(_message(message=None), id="message-null"),
    pytest.param(_message(message="x"), id="message-a-string"),
    pytest.param(_message(message={"role": "assistant", "content": ["a"]}), id="content-a-list"),
    pytest.param(_message(message={"role": "assistant", "content": 5}), id="content-a-number"),
]


@pytest.mark.parametrize("body", NOT_A_COMPLETION)
def test_an_answer_that_is_no_completion_is_the_endpoints_error(body: bytes) -> None:
    behaviour = Behaviour(raw_body=body)
    with (
        fake_endpoint(behaviour) as base_url,
        tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0) as client,
    ):
        with pytest.raises(PaliGemmaError) as raised:
            tools.locate_objects(gradient_image(64, 48), ["cat"], client=client)
    assert isinstance(raised.value, EndpointRequestError)
    assert "did not answer with an OpenAI chat completion" in str(raised.value)


def test_the_dispatcher_reports_it_as_the_endpoints_error_not_a_bug() -> None:
    behaviour = Behaviour(raw_body=b"<html>not here</html>")
    call = {"type": "function_call", "call_id": "c", "name": "read_text", "arguments": '{"image": "img_1"}'}
    images = tools.ImageStore()
    images.add(gradient_image(64, 48))
    with (
        fake_endpoint(behaviour) as base_url,
        tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0) as client,
    ):
        output = run_tool_call(call, client=client, images=images)
    assert output.outcome.error is not None and "OpenAI chat completion" in output.outcome.error
    assert "internal error" not in output.outcome.error


def test_a_compressed_answer_is_not_decoded() -> None:
    """600 MiB of zeros fit in 600 kB of gzip: the cap counts bytes as they arrive, so a compressed
    answer (never asked for) is refused unread."""
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=1)
    behaviour = Behaviour(raw_body=bomb, raw_headers={"Content-Encoding": "gzip"})
    with (
        fake_endpoint(behaviour) as base_url,
        tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0) as client,
    ):
        with pytest.raises(EndpointRequestError, match="gzip-compressed answer"):
            tools.read_text(gradient_image(64, 48), client=client)
    assert behaviour.accept_encodings == ["identity"]


@pytest.mark.parametrize(
    "listing",
    [
        pytest.param(b'{"object": "list", "data": {"id": "x"}}', id="data-a-dict"),
        pytest.param(b'{"object": "list", "data": "x"}', id="data-a-string"),
        pytest.param(b'{"object": "list", "data": [{"id": 5}, {"object": "model"}]}', id="ids-not-names"),
        pytest.param(b"not json", id="not-json"),
    ],
)
def test_a_model_list_that_is_no_list_of_models(listing: bytes) -> None:
    behaviour = Behaviour(models_raw=listing)
    with fake_endpoint(behaviour) as base_url:
        with tools.PaliGemmaClient(base_url=base_url, max_retries=0) as client:  # the list names the model
            with pytest.raises(EndpointRequestError):
                tools.read_text(gradient_image(64, 48), client=client)
        with tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0) as client:  # configured
            assert tools.read_text(gradient_image(64, 48), client=client).text


def test_a_list_of_many_models_is_named_in_a_short_message() -> None:
    behaviour = Behaviour(models=[{"id": f"m{i}", "object": "model"} for i in range(5000)])
    with fake_endpoint(behaviour) as base_url, tools.PaliGemmaClient(base_url=base_url, max_retries=0) as client:
        with pytest.raises(EndpointRequestError, match="m9 and 4,990 more") as raised:
            tools.read_text(gradient_image(64, 48), client=client)
    assert len(str(raised.value)) < 500


def test_an_answer_of_thousands_of_objects_is_read_up_to_the_cap() -> None:
    boxes = " ; ".join(["<loc0100><loc0100><loc0500><loc0500> cat"] * 20_000)
    behaviour = Behaviour(answer=boxes)
    with (
        fake_endpoint(behaviour) as base_url,
        tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0) as client,
    ):
        started = time.process_time()
        found = tools.locate_objects(gradient_image(64, 48), ["cat"], client=client)
        spent = time.process_time() - started
    assert len(found.objects) == MAX_OBJECTS and "19,744 more part(s) of the answer not read" in found.issues[-1].reason
    assert spent < 2.0
