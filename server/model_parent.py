"""ASGI middleware: `/v1/models` lists a fine-tuned checkpoint with the model it was fine-tuned from.

vLLM lists each LoRA adapter with `parent`, the served name of the model it runs on; the tools
read it to send an adapter the image size its base model sees and to decode its masks with its
base model's VQ-VAE (tools/client.py, `base_model`). A fully fine-tuned checkpoint served from
its folder is, to vLLM, a model of its own: it lists no parent, and its folder's name says
neither. `paligemma serve` reads the base model from the folder's model card (`base_model` in its
metadata, as `paligemma finetune` and Hugging Face cards write it), adds this middleware and
passes the name in PALIGEMMA_MODEL_PARENT; the middleware fills that name in as `parent` of every
model listed without one (the served names of the checkpoint; adapters keep vLLM's).
"""

from __future__ import annotations

import json
import os

from server.vllm_plugin import App, Message, Receive, Scope, Send

PARENT_MIDDLEWARE = "server.model_parent.ListedParent"
PARENT_ENV = "PALIGEMMA_MODEL_PARENT"
MODELS_PATH = "/v1/models"


def with_parent(body: bytes, parent: str) -> bytes:
    """A `/v1/models` body with `parent` given to every model that has none (and is not `parent`);
    a body that is not such a list comes back as it was."""
    try:
        listing = json.loads(body)
    except ValueError:
        return body
    models = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(models, list):
        return body
    for model in models:
        if isinstance(model, dict) and model.get("parent") is None and model.get("id") != parent:
            model["parent"] = parent
    return json.dumps(listing, separators=(",", ":")).encode()


class ListedParent:
    def __init__(self, app: App) -> None:
        self.app = app
        self.parent = os.environ.get(PARENT_ENV, "").strip()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "")).removeprefix(str(scope.get("root_path", "")))  # as vLLM routes it
        if not self.parent or scope["type"] != "http" or scope.get("method") != "GET" or path != MODELS_PATH:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []  # the 200 response's start, until its body is complete
        chunks: list[bytes] = []

        async def send_listing(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 200:
                held.append(message)  # its Content-Length changes with the body
                return
            if not held:  # any other response goes out as it comes
                await send(message)
                return
            if message["type"] != "http.response.body":  # not a plain body: the rest goes as it is, in order
                await send(held.pop())
                if chunks:
                    await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = with_parent(b"".join(chunks), self.parent)
            start = held.pop()
            headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_listing)
