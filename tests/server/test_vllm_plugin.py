"""The vLLM plugin's pieces: mode, cache salt, response header, and what `register()` changes in vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import pytest

from server.vllm_plugin import HEADER, AttentionHeader, attention_mode, prompt_salt


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, "causal", id="unset-is-plain-vllm"),
        pytest.param({"PALIGEMMA_ATTENTION": "prefix"}, "prefix", id="prefix"),
        pytest.param({"PALIGEMMA_ATTENTION": " Causal "}, "causal", id="case-and-spaces"),
    ],
)
def test_attention_mode(environ: dict[str, str], expected: str) -> None:
    assert attention_mode(environ) == expected


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of prefix, causal"):
        attention_mode({"PALIGEMMA_ATTENTION": "bidirectional"})


def test_the_salt_differs_exactly_when_the_prompt_does() -> None:
    image_then_prompt = [7] * 256 + [2, 40, 41, 10]
    assert prompt_salt(image_then_prompt, None) == prompt_salt(list(image_then_prompt), None)
    assert prompt_salt(image_then_prompt, None) != prompt_salt([*image_then_prompt[:-2], 42, 10], None)
    assert prompt_salt(image_then_prompt, "user-salt").startswith("user-salt|")  # a client's own salt still counts


def test_the_header_names_the_mode_set_up_in_this_process() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    anyio.run(AttentionHeader(app), {"type": "http"}, receive, send)
    assert sent[0]["headers"] == [
        (b"content-type", b"text/plain"),
        (HEADER.encode(), b"causal"),
    ]  # never registered here
    assert sent[1]["body"] == b"ok"


REGISTER_PROBE = """
import json, os, warnings
warnings.simplefilter("ignore")
os.environ["PALIGEMMA_ATTENTION"] = "prefix"
from server import vllm_plugin
vllm_plugin.register(); vllm_plugin.register()  # vLLM may call it more than once
from vllm.v1.attention.backends.registry import AttentionBackendEnum
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.engine import EngineCoreRequest
from vllm.v1.request import Request
from vllm.sampling_params import SamplingParams
init_none_hash(sha256)
hasher = get_request_block_hasher(4, sha256)
def hashes(ids, salt=None):
    core = EngineCoreRequest("r", ids, None, SamplingParams(), None, 0.0, None, salt, None)
    return [h.hex() for h in Request.from_engine_core_request(core, hasher).block_hashes]
image = [7] * 8
print(json.dumps({
    "cpu": AttentionBackendEnum.CPU_ATTN.get_path(),
    "triton": AttentionBackendEnum.TRITON_ATTN.get_path(),
    "same": hashes(image + [1, 2, 3, 4]) == hashes(image + [1, 2, 3, 4]),
    "image_blocks_shared_across_prompts": hashes(image + [1, 2, 3, 4])[:2] == hashes(image + [1, 2, 3, 5])[:2],
    "user_salt_counts": hashes(image, "a") != hashes(image, "b"),
}))
"""


@pytest.mark.timeout(900)
def test_register_substitutes_the_backends_and_salts_the_prefix_cache() -> None:
    """In a fresh process, as in each of vLLM's: blocks of the same image under different prompts differ."""
    result = subprocess.run([sys.executable, "-c", REGISTER_PROBE], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {
        "cpu": "server.prefix_attention.PrefixLMCPUAttentionBackend",
        "triton": "server.prefix_attention.PrefixLMTritonAttentionBackend",
        "same": True,
        "image_blocks_shared_across_prompts": False,
        "user_salt_counts": True,
    }
