"""The vLLM general plugin: PaliGemma's own prefix-LM attention in every process `paligemma serve` starts.

vLLM calls `register()` once in each of its processes (API server, engine core, workers)
through the `vllm.general_plugins` entry point `paligemma_prefix_lm`. The mode comes from the
environment (`PALIGEMMA_ATTENTION`, set by `paligemma serve --attention`), since vLLM passes
plugins no arguments. In `prefix` mode it:

- substitutes the attention backends (`server.prefix_attention`) by lazy class path, so this
  module imports nothing heavy where no attention layer is built;
- salts every request's prefix-cache key with its prompt token ids: the KV of a prefix token
  now depends on the whole prompt, so only identical prompts (and images) may share blocks.

`AttentionHeader`, passed to vLLM with `--middleware`, tells clients the mode in each
response's `x-paligemma-attention` header.
"""

from __future__ import annotations

import functools
import hashlib
import os
from array import array
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Literal, get_args

Attention = Literal["prefix", "causal"]
ATTENTION_MODES: tuple[Attention, ...] = get_args(Attention)
ATTENTION_ENV = "PALIGEMMA_ATTENTION"
PLUGIN_NAME = "paligemma_prefix_lm"  # the entry point's name, for VLLM_PLUGINS allowlists
HEADER = "x-paligemma-attention"
MIDDLEWARE = "server.vllm_plugin.AttentionHeader"
CPU_BACKEND = "server.prefix_attention.PrefixLMCPUAttentionBackend"
TRITON_BACKEND = "server.prefix_attention.PrefixLMTritonAttentionBackend"
_SALT_TAG = "paligemma-prefix:"

_registered: Attention | None = None  # what register() set up in this process


def attention_mode(environ: Mapping[str, str] = os.environ) -> Attention:
    """The mode `paligemma serve` asked for (causal when unset: plain vLLM)."""
    value = environ.get(ATTENTION_ENV, "causal").strip().lower()
    if value not in ATTENTION_MODES:
        raise ValueError(f"{ATTENTION_ENV}={value!r}: expected one of {', '.join(ATTENTION_MODES)}")
    return value


def prompt_salt(prompt_token_ids: Sequence[int], user_salt: str | None) -> str:
    """A cache salt that differs whenever the prompt does (a user's own salt kept in front)."""
    digest = hashlib.sha256(array("q", prompt_token_ids).tobytes()).hexdigest()
    return f"{user_salt}|{_SALT_TAG}{digest}" if user_salt else f"{_SALT_TAG}{digest}"


def _salt_requests_by_prompt() -> None:
    from vllm.v1.request import Request

    factory = Request.__dict__["from_engine_core_request"]
    original = factory.__func__
    if getattr(original, "_paligemma_salt", False):
        return

    @functools.wraps(original)
    def from_engine_core_request(cls: type[Any], request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.prompt_token_ids is not None:
            request.cache_salt = prompt_salt(request.prompt_token_ids, request.cache_salt)
        return original(cls, request, *args, **kwargs)

    from_engine_core_request._paligemma_salt = True  # type: ignore[attr-defined]
    Request.from_engine_core_request = classmethod(from_engine_core_request)  # type: ignore[method-assign,assignment]


def register() -> None:
    """The entry point: set up the mode of PALIGEMMA_ATTENTION in this vLLM process (idempotent)."""
    global _registered
    mode = attention_mode()
    if mode == "prefix":
        from vllm.logger import init_logger
        from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

        register_backend(AttentionBackendEnum.CPU_ATTN, CPU_BACKEND)
        register_backend(AttentionBackendEnum.TRITON_ATTN, TRITON_BACKEND)
        _salt_requests_by_prompt()
        if _registered != mode:
            init_logger("vllm.paligemma_prefix_lm").info(
                "PaliGemma prefix-LM attention: image and prompt two-way, answer causal (pid %d).", os.getpid()
            )
    _registered = mode


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class AttentionHeader:
    """ASGI middleware: every HTTP response says the attention this server computes.

    The value is what the plugin set up in the API server's process; `causal` if it never ran
    (not installed, or left out by VLLM_PLUGINS), whatever the environment asked.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = (_registered or "causal").encode()

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER.encode(), value)]
            await send(message)

        await self.app(scope, receive, send_with_header)
