"""Served attention against transformers: `--attention prefix` (the default) and `--attention causal`.

The session's tiny server runs as `paligemma serve` starts it, so with PaliGemma's own prefix-LM
mask (server/vllm_plugin.py); `causal_server` is the same model with vLLM's plain causal mask.
The GPU tests at the end repeat the comparison through vLLM's Triton backend, where a GPU is visible.
Top log-probabilities are matched by token id (`return_tokens_as_token_ids`): several tokens
of the tiny vocabulary decode to the same text.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from PIL import Image

from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions
from server.vllm_plugin import HEADER
from tests.conftest import START_TIMEOUT_S, WINDOW
from tests.images import data_uri, gradient_image
from tests.reference import Attention, Step, TransformersReference
from tests.server_pool import TinyServer

pytestmark = pytest.mark.vllm

TOLERANCE = 2e-3
STEPS = 8
# Prompts of four lengths (the tiny tokenizer spells words letter by letter): 261 to 292 tokens with the image.
PROMPTS = ("ocr", "detect cat", "caption en", "answer en what is in the image?", "segment the big red triangle ; dog")


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> TransformersReference:
    return TransformersReference(tiny_model_dir)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [gradient_image(300, 200, seed=seed) for seed in range(2)]


@pytest.fixture(scope="module")
def client(tiny_server: TinyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=tiny_server.base_url, api_key="EMPTY", max_retries=0) as c:
        yield c


def ask(client: openai.OpenAI, model: str, image: Image.Image, prompt: str, steps: int = STEPS) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_uri(image)}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        max_tokens=steps,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
        extra_body={"return_token_ids": True, "skip_special_tokens": False, "return_tokens_as_token_ids": True},
    ).choices[0]


def top_logprob_gaps(choice: Any, expected: list[Step], positions: int) -> list[float]:
    """|served - reference| for the top-5 tokens of the first `positions` answer tokens."""
    gaps = []
    for position, step in list(zip(choice.logprobs.content, expected, strict=False))[:positions]:
        for top in position.top_logprobs:
            token_id = int(top.token.removeprefix("token_id:"))
            gaps.append(abs(top.logprob - float(step.logprobs[token_id])))
    return gaps


def assert_same_answer(choice: Any, expected: list[Step]) -> None:
    assert choice.token_ids == [s.token_id for s in expected]
    assert max(top_logprob_gaps(choice, expected, positions=1)) < TOLERANCE


def prefix_cache_hits(server: TinyServer) -> float:
    metrics = httpx2.get(server.base_url.removesuffix("/v1") + "/metrics").text
    found = re.search(r"^vllm:prefix_cache_hits_total\{[^}]*\} ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert found, "vLLM's /metrics has no prefix_cache_hits_total"
    return float(found.group(1))


def test_the_served_mode_is_in_every_response_header(tiny_server: TinyServer, causal_server: TinyServer) -> None:
    for server, mode in ((tiny_server, "prefix"), (causal_server, "causal")):
        assert httpx2.get(server.base_url + "/models").headers[HEADER] == mode


def test_prefix_attention_equals_paligemma_concurrently_with_prefix_caching(
    tiny_server: TinyServer,
    client: openai.OpenAI,
    reference: TransformersReference,
    images: list[Image.Image],
    record_property: Any,
) -> None:
    """Ten prompts (four lengths, two images) at once, twice. Round two reuses round one's cached
    blocks for identical prompts; prompts on the same image must not share the image's blocks,
    whose values now depend on the prompt. Every answer equals transformers' prefix-LM PaliGemma."""
    jobs = [(image, prompt) for image in images for prompt in PROMPTS]
    expected = [reference.greedy(image, prompt, STEPS, "prefix") for image, prompt in jobs]
    hits_before = prefix_cache_hits(tiny_server)
    for round_ in range(2):
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            choices = list(pool.map(lambda job: ask(client, tiny_server.model, *job), jobs))
        gaps = [
            max(top_logprob_gaps(choice, steps, positions=1)) for choice, steps in zip(choices, expected, strict=True)
        ]
        record_property(f"largest_first_token_gap_round_{round_}", max(gaps))
        for (_, prompt), choice, steps, gap in zip(jobs, choices, expected, gaps, strict=True):
            assert choice.token_ids == [s.token_id for s in steps], (round_, prompt)
            assert gap < TOLERANCE, (round_, prompt, gap)
    assert prefix_cache_hits(tiny_server) > hits_before  # caching was on, and used
    assert "PaliGemma prefix-LM attention on for" in tiny_server.log_path.read_text()  # our backend, in the worker


@pytest.mark.parametrize("prompt", ["detect cat", "caption en", "answer en what is in the image?"])
def test_every_answer_token_equals_paligemma_under_prefix_attention(
    tiny_server: TinyServer,
    client: openai.OpenAI,
    reference: TransformersReference,
    images: list[Image.Image],
    prompt: str,
    record_property: Any,
) -> None:
    expected = reference.greedy(images[0], prompt, 12, "prefix")
    choice = ask(client, tiny_server.model, images[0], prompt, steps=12)
    assert choice.token_ids == [s.token_id for s in expected]
    gap = max(top_logprob_gaps(choice, expected, positions=12))
    record_property("largest_top5_gap", gap)
    assert gap < TOLERANCE


@pytest.mark.parametrize("prompt", ["detect cat", "caption en", "answer en what is in the image?"])
def test_causal_attention_equals_transformers_run_causally(
    causal_server: TinyServer,
    reference: TransformersReference,
    images: list[Image.Image],
    prompt: str,
    record_property: Any,
) -> None:
    """`--attention causal` is vLLM's plain mask, as before the plugin: transformers with a causal mask."""
    with openai.OpenAI(base_url=causal_server.base_url, api_key="EMPTY", max_retries=0) as causal_client:
        choice = ask(causal_client, causal_server.model, images[0], prompt, steps=12)
    expected = reference.greedy(images[0], prompt, 12, "causal")
    assert choice.token_ids == [s.token_id for s in expected]
    gap = max(top_logprob_gaps(choice, expected, positions=12))
    record_property("largest_top5_gap", gap)
    assert gap < TOLERANCE
    assert "PaliGemma prefix-LM attention" not in causal_server.log_path.read_text()


@pytest.mark.parametrize(("served", "other"), [("prefix", "causal"), ("causal", "prefix")])
def test_the_two_masks_give_measurably_different_answers(
    tiny_server: TinyServer,
    causal_server: TinyServer,
    reference: TransformersReference,
    images: list[Image.Image],
    served: Attention,
    other: Attention,
    record_property: Any,
) -> None:
    """The comparisons above could not pass with the other mask: its reference is far outside the tolerance."""
    server = tiny_server if served == "prefix" else causal_server
    with openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0) as mode_client:
        choice = ask(mode_client, server.model, images[1], "detect cat", steps=1)
    same = max(top_logprob_gaps(choice, reference.greedy(images[1], "detect cat", 1, served), 1))
    different = max(top_logprob_gaps(choice, reference.greedy(images[1], "detect cat", 1, other), 1))
    record_property("gap_to_own_reference", same)
    record_property("gap_to_other_reference", different)
    assert same < TOLERANCE
    assert different > 10 * TOLERANCE


def test_a_prefix_longer_than_the_sliding_window_is_attended_whole(
    windowed_server: TinyServer, images: list[Image.Image], record_property: Any
) -> None:
    """transformers leaves the prefix unwindowed, (causal AND window) OR prefix, and so does the server,
    with prefix caching on and prompts of several lengths at once."""
    reference = TransformersReference(windowed_server.model_dir)
    assert reference.model.config.text_config.sliding_window == WINDOW
    jobs = [(images[0], prompt) for prompt in PROMPTS]
    expected = [reference.greedy(image, prompt, STEPS, "prefix") for image, prompt in jobs]
    with openai.OpenAI(base_url=windowed_server.base_url, api_key="EMPTY", max_retries=0) as windowed_client:
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            choices = list(pool.map(lambda job: ask(windowed_client, windowed_server.model, *job), jobs))
    gaps = [max(top_logprob_gaps(choice, steps, positions=1)) for choice, steps in zip(choices, expected, strict=True)]
    record_property("largest_first_token_gap", max(gaps))
    for (_, prompt), choice, steps, gap in zip(jobs, choices, expected, gaps, strict=True):
        assert choice.token_ids == [s.token_id for s in steps], prompt
        assert gap < TOLERANCE, (prompt, gap)


# --- GPU: the same comparisons through vLLM's Triton backend (server/prefix_attention.py) ---------


def _no_gpu_reason() -> str | None:
    from server import hardware

    return None if hardware.detect().device == "cuda" else "needs an NVIDIA GPU (none visible to nvidia-smi)"


@pytest.fixture(scope="module", params=["prefix", "causal"])
def gpu_server(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Attention, TinyServer]]:
    """The tiny model on a GPU in float32 (bf16 would not meet the tolerance), one mode at a time."""
    if (reason := _no_gpu_reason()) is not None:
        pytest.skip(reason)
    mode: Attention = request.param
    log_path = tmp_path_factory.mktemp("logs") / f"vllm-tiny-gpu-{mode}.log"
    options = ServeOptions(model=str(tiny_model_dir), port=free_port(), attention=mode, dtype="float32")
    the_plan = serve.plan(options, device="cuda")
    with serve.running(the_plan, echo=False, log_path=log_path, timeout_s=START_TIMEOUT_S) as server:
        yield (
            mode,
            TinyServer(
                the_plan.command.base_url, the_plan.command.served_model_name, tiny_model_dir, server.pid, log_path
            ),
        )


@pytest.mark.gpu
def test_gpu_serving_equals_transformers_concurrently_with_prefix_caching(
    gpu_server: tuple[Attention, TinyServer], reference: TransformersReference, images: list[Image.Image]
) -> None:
    """On a GPU, each mode equals transformers with the same mask, for the concurrent prompts above, twice."""
    mode, server = gpu_server
    jobs = [(image, prompt) for image in images for prompt in PROMPTS]
    expected = [reference.greedy(image, prompt, STEPS, mode) for image, prompt in jobs]
    with openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0) as gpu_client:
        assert httpx2.get(server.base_url + "/models").headers[HEADER] == mode
        for round_ in range(2):
            with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
                choices = list(pool.map(lambda job: ask(gpu_client, server.model, *job), jobs))
            for (_, prompt), choice, steps in zip(jobs, choices, expected, strict=True):
                assert choice.token_ids == [s.token_id for s in steps], (mode, round_, prompt)
                assert max(top_logprob_gaps(choice, steps, positions=1)) < TOLERANCE, (mode, round_, prompt)
