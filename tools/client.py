"""The connection to a PaliGemma endpoint: any OpenAI-compatible server, usually `paligemma serve`.

Configuration comes from explicit arguments first, then `PALIGEMMA_BASE_URL`,
`PALIGEMMA_MODEL`, `PALIGEMMA_API_KEY`, `PALIGEMMA_VAE_PATH`, then defaults. Nothing
connects until the first request. Sync and async calls share the request building and
the error mapping; each keeps its own concurrency limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from tools import endpoint_limits
from tools.errors import (
    CheckpointError,
    EndpointError,
    EndpointRequestError,
    EndpointTimeoutError,
    EndpointUnavailableError,
)
from tools.image_policy import ImagePolicy
from tools.images import SEND_MIN_SIDE_PX, EncodedImage, model_input_px

if TYPE_CHECKING:
    import openai

    from tools.vae_decoder import VaeDecoder

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# After the model list failed for now (429, 5xx), a configured name is used as it is until the
# list is asked again this many seconds later (a tool call may ask for the model more than once).
LISTING_RETRY_S = 60.0
# The clients whose concurrency slot this call chain holds: the dispatcher and the tool functions
# take one slot around decoding and the request, and nested uses (threads included) share it.
_HELD: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("paligemma_slots", default=frozenset())


@dataclass
class _LoopClient:
    """What the async calls on one event loop share, made in that loop: AsyncOpenAI's connection
    pool, the concurrency slots and the reading of the model list in flight, if any."""

    sdk: openai.AsyncOpenAI
    slots: asyncio.Semaphore
    listing: asyncio.Task[str] | None = None


def _listing_done(loop_client: _LoopClient, task: asyncio.Task[str]) -> None:
    loop_client.listing = None
    if not task.cancelled():
        task.exception()  # retrieved here too: every caller waiting on it may have been cancelled


@dataclass(frozen=True)
class Completion:
    """The model's answer to one prompt."""

    text: str
    model: str
    truncated: bool  # stopped by the token limit, not by the model


# What reading a body that is no JSON of the expected shape raises inside the SDK: JSONDecodeError,
# UnicodeDecodeError and pydantic's ValidationError are ValueErrors; RecursionError for deep nesting.
_UNREADABLE: tuple[type[Exception], ...] = (ValueError, RecursionError)
# The SDK's model pages read `data` as a list of objects: a dict or a string there raises these.
_UNREADABLE_LIST: tuple[type[Exception], ...] = (*_UNREADABLE, TypeError, AttributeError)


def _endpoint_error(error: openai.OpenAIError, base_url: str) -> EndpointError:
    """Map an OpenAI SDK error to ours, with what to do about it."""
    import openai

    bound = endpoint_limits.cause(error)
    if bound is not None:
        return _bound_error(bound, base_url)
    if isinstance(error, openai.APITimeoutError):
        return _timeout(base_url)
    if isinstance(error, openai.APIConnectionError):
        return EndpointUnavailableError(
            f"cannot connect to the PaliGemma endpoint at {base_url} ({error.__cause__ or error}). "
            "Is the server running (`paligemma serve`)? Check PALIGEMMA_BASE_URL."
        )
    if isinstance(error, openai.APIStatusError):
        detail = _status_detail(error)
        if error.status_code == 429 or error.status_code >= 500:
            return EndpointUnavailableError(
                f"the PaliGemma endpoint at {base_url} kept failing (HTTP {error.status_code}: {detail}) "
                "after the retries. Retry later."
            )
        if error.status_code in (401, 403):
            return EndpointRequestError(
                f"the PaliGemma endpoint at {base_url} refused the API key (HTTP {error.status_code}). "
                "Set PALIGEMMA_API_KEY to the key the server was started with."
            )
        return EndpointRequestError(f"the PaliGemma endpoint refused the request (HTTP {error.status_code}): {detail}")
    return EndpointRequestError(f"the PaliGemma endpoint call failed: {error}")


def _bound_error(
    bound: endpoint_limits.ResponseTooLarge | endpoint_limits.DeadlinePassed, base_url: str
) -> EndpointError:
    if isinstance(bound, endpoint_limits.ResponseTooLarge):
        compressed = isinstance(bound, endpoint_limits.CompressedAnswer)
        what = "an answer the tools do not read" if compressed else "too much data"
        return EndpointRequestError(
            f"the endpoint at {base_url} answered with {what} ({bound}); it is not a PaliGemma answer. "
            "Check PALIGEMMA_BASE_URL."
        )
    return _timeout(base_url)


def _timeout(base_url: str) -> EndpointTimeoutError:
    return EndpointTimeoutError(
        f"the PaliGemma endpoint at {base_url} did not answer in time; it may be overloaded. "
        "Retry later or raise the client's timeout (`timeout_s`; `--timeout` of the paligemma commands)."
    )


def _status_detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, Mapping):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message)
    return error.message


class PaliGemmaClient:
    """Endpoint settings plus lazily created OpenAI SDK clients (sync and async)."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        max_concurrency: int = 8,
        max_response_bytes: int = endpoint_limits.MAX_RESPONSE_BYTES,
        image_policy: ImagePolicy | None = None,
        send_min_side_px: int | None = None,
        vae_path: str | Path | None = None,
        download_vae: bool = True,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.base_url = (base_url or os.environ.get("PALIGEMMA_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._model = model or os.environ.get("PALIGEMMA_MODEL") or None
        self.api_key = api_key or os.environ.get("PALIGEMMA_API_KEY") or "EMPTY"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.max_response_bytes = max_response_bytes
        self.image_policy = image_policy or ImagePolicy()
        # None: the square the model's name says it sees (224, 448, 896), else SEND_MIN_SIDE_PX.
        self.send_min_side_px = send_min_side_px
        self.vae_path = vae_path
        self.download_vae = download_vae
        self.extra_body = dict(extra_body or {})
        self._lock = threading.Lock()
        self._sync: openai.OpenAI | None = None
        self._sync_slots = threading.BoundedSemaphore(max_concurrency)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
        # The reading of the model list in flight for threads: those that need it at once share it.
        self._listing: concurrent.futures.Future[str] | None = None
        self._decoders: dict[str | None, VaeDecoder | CheckpointError] = {}  # per base model (`base_model`)
        # Each listed model's `parent` (LoRA adapters, fine-tuned checkpoints); None until listed (see `model`).
        self._parents: dict[str, str] | None = None
        self._listing_retry_at = 0.0  # time.monotonic() from which a list that failed for now is read again
        self._decoder_error: CheckpointError | None = None

    def __repr__(self) -> str:
        return f"PaliGemmaClient(base_url={self.base_url!r}, model={self._model!r})"

    # --- SDK clients -------------------------------------------------------------------
    def _sdk_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "timeout": self.timeout_s,
            "max_retries": self.max_retries,  # the SDK backs off on connection errors, 429 and 5xx
        }

    def _sync_client(self) -> openai.OpenAI:
        import openai  # imported on first use: it alone takes ~0.4 s

        with self._lock:
            if self._sync is None:
                http = openai.DefaultHttpxClient(
                    event_hooks=endpoint_limits.sync_hooks(), headers=endpoint_limits.REQUEST_HEADERS
                )
                self._sync = openai.OpenAI(**self._sdk_options(), http_client=http)
            return self._sync

    def _async_client(self) -> _LoopClient:
        import openai

        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._async.get(loop)
            if entry is None:
                http = openai.DefaultAsyncHttpxClient(
                    event_hooks=endpoint_limits.async_hooks(), headers=endpoint_limits.REQUEST_HEADERS
                )
                sdk = openai.AsyncOpenAI(**self._sdk_options(), http_client=http)
                entry = _LoopClient(sdk, asyncio.Semaphore(self.max_concurrency))
                self._async[loop] = entry
            return entry

    @contextmanager
    def limit(self) -> Iterator[None]:
        """Hold one of the `max_concurrency` slots (threads); nested uses in the same call chain share it."""
        held = _HELD.get()
        if id(self) in held:
            yield
            return
        with self._sync_slots:
            token = _HELD.set(held | {id(self)})
            try:
                yield
            finally:
                _HELD.reset(token)

    @asynccontextmanager
    async def alimit(self) -> AsyncIterator[None]:
        """The async `limit`: one of `max_concurrency` slots per event loop, shared by nested uses."""
        held = _HELD.get()
        if id(self) in held:
            yield
            return
        async with self._async_client().slots:
            token = _HELD.set(held | {id(self)})
            try:
                yield
            finally:
                _HELD.reset(token)

    def close(self) -> None:
        """Close the sync SDK client (async ones close with `aclose`)."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    async def aclose(self) -> None:
        self.close()
        with self._lock:
            entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.sdk.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """One endpoint call's bounds (endpoint_limits): its total deadline, retries included, and
        its response size cap; a bound reached raises our error for it."""
        bounds = endpoint_limits.start_call(self.timeout_s, self.max_response_bytes)
        try:
            yield
        except (endpoint_limits.ResponseTooLarge, endpoint_limits.DeadlinePassed) as e:
            raise _bound_error(e, self.base_url) from e
        finally:
            endpoint_limits.end_call(bounds)

    # --- model name ----------------------------------------------------------------------
    def _pick_model(self, served: list[str]) -> str:
        if len(served) == 1:
            return served[0]
        if not served:
            raise EndpointRequestError(f"the endpoint at {self.base_url} serves no model.")
        shown = ", ".join(served[:10]) + (f" and {len(served) - 10:,} more" if len(served) > 10 else "")
        raise EndpointRequestError(
            f"the endpoint at {self.base_url} serves several models ({shown}); pass model= or set PALIGEMMA_MODEL."
        )

    def _known_model(self) -> str | None:
        """The model name when the endpoint's model list need not be read: configured, or picked,
        and either saying what it sees or already looked up in the list (a name that says nothing,
        a LoRA adapter's say, is looked up once to find its base model)."""
        if self._model is None:
            return None
        unlisted = self._parents is None and model_input_px(self._model) is None
        return None if unlisted and time.monotonic() >= self._listing_retry_at else self._model

    def _take_listing(self, listed: list[Any]) -> str:
        listed = [m for m in listed if isinstance(getattr(m, "id", None), str) and m.id]  # entries without a name
        model = self._model or self._pick_model([m.id for m in listed])
        # vLLM lists a LoRA adapter with `parent`, the served name of the model it runs on;
        # `paligemma serve` lists a fine-tuned checkpoint with the model it was made from
        parents = ((m.id, getattr(m, "parent", None)) for m in listed)
        self._model, self._parents = model, {name: p for name, p in parents if isinstance(p, str) and p}
        return model

    def _listing_unreadable(self, error: Exception) -> str:
        """A model list that is no list of models: a configured name is used as it is, for good."""
        if self._model is None:
            raise EndpointRequestError(
                f"the endpoint at {self.base_url} did not answer /models with a list of models "
                f"({type(error).__name__}); check PALIGEMMA_BASE_URL, or name the model (PALIGEMMA_MODEL)."
            ) from error
        self._parents = {}
        return self._model

    def _listing_failed(self, error: openai.OpenAIError) -> str:
        """Without a configured name, or with the endpoint unreachable, the call cannot go on; a
        configured name is otherwise used as it is: for good when the endpoint does not list its
        models (4xx), for LISTING_RETRY_S when the list failed for now (429, 5xx)."""
        import openai

        if self._model is None or isinstance(error, openai.APIConnectionError):
            raise _endpoint_error(error, self.base_url) from error
        if isinstance(error, openai.APIStatusError) and (error.status_code == 429 or error.status_code >= 500):
            self._listing_retry_at = time.monotonic() + LISTING_RETRY_S
        else:
            self._parents = {}
        return self._model

    def model(self) -> str:
        """The model name: configured, or asked of the endpoint once (the same list gives a LoRA
        adapter's base model, see `base_model`). The listing is bounded as a completion is; calls
        that need it at once share one reading and its outcome."""
        known = self._known_model()
        if known is not None:
            return known
        with self._lock:
            known = self._known_model()  # again: a reading may have ended since
            if known is not None:
                return known
            flight, mine = self._listing, self._listing is None
            if flight is None:
                flight = self._listing = concurrent.futures.Future()
        if mine:
            try:
                flight.set_result(self._read_listing())
            except BaseException as e:
                flight.set_exception(e)
            finally:
                with self._lock:
                    self._listing = None
        return flight.result()

    def _read_listing(self) -> str:
        import openai

        try:
            with self._bounded():
                listed = list(self._sync_client().models.list())
        except openai.OpenAIError as e:
            return self._listing_failed(e)
        except _UNREADABLE_LIST as e:  # a list the SDK could not read
            return self._listing_unreadable(e)
        return self._take_listing(listed)

    async def amodel(self) -> str:
        known = self._known_model()
        if known is not None:
            return known
        loop_client = self._async_client()
        if loop_client.listing is None:
            loop_client.listing = asyncio.ensure_future(self._aread_listing(loop_client.sdk))
            loop_client.listing.add_done_callback(lambda task: _listing_done(loop_client, task))
        # shielded: a caller cancelled (its own deadline) leaves the reading to the others
        return await asyncio.shield(loop_client.listing)

    async def _aread_listing(self, sdk: openai.AsyncOpenAI) -> str:
        import openai

        try:
            with self._bounded():
                async with asyncio.timeout(self.timeout_s):
                    listed = [m async for m in sdk.models.list()]
        except TimeoutError as e:
            raise _timeout(self.base_url) from e
        except openai.OpenAIError as e:
            return self._listing_failed(e)
        except _UNREADABLE_LIST as e:
            return self._listing_unreadable(e)
        return self._take_listing(listed)

    def base_model(self, model: str) -> str:
        """The model whose name says what `model` sees: `model` itself when its name says
        (`...-mix-448`, `paligemma2-tiny-shapes`), else the model the endpoint lists as its `parent`
        (once `model()` has read the list: a LoRA adapter's base model, or a fine-tuned checkpoint's
        as `paligemma serve` lists it, docs/finetune.md), followed on the same way; the last one
        listed when no name says. What the tools send and which VQ-VAE decodes the masks follow it."""
        parents, seen = self._parents or {}, {model}
        while model_input_px(model) is None and (parent := parents.get(model)) is not None and parent not in seen:
            model = parent
            seen.add(model)  # a listing whose parents loop ends at the loop
        return model

    def send_side_px(self, model: str) -> int:
        """The shorter side images are downscaled to before they are sent to `model`.

        As configured, else the square the checkpoint's name says it sees (a 448 px model uses
        nothing beyond 448 px, and the smaller image costs less to encode, send and decode on
        the server) or the tiny shapes model's 288 px, else 896 px, the most any PaliGemma 2 sees.
        """
        if self.send_min_side_px is not None:
            return self.send_min_side_px
        return model_input_px(self.base_model(model)) or SEND_MIN_SIDE_PX

    # --- completions ---------------------------------------------------------------------
    def _request(
        self, model: str, image: EncodedImage, prompt: str, max_tokens: int, extra_body: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image.data_uri}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
            "max_tokens": max_tokens,
            "temperature": 0.0,  # PaliGemma is decoded greedily
            "extra_body": {**self.extra_body, **(extra_body or {})},
        }

    def _completion(self, reply: Any, model: str) -> Completion:
        """The answer of a chat completion, read without trusting its shape: what the SDK could not
        parse into one (a text page, a list, a number for the content) is the endpoint's error."""
        choices = getattr(reply, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise self._not_a_completion("no choices")
        message: Any = getattr(choices[0], "message", None)
        content = getattr(message, "content", 0)  # 0: no such attribute (a string, a number)
        if message is None or not isinstance(content, str | None):
            raise self._not_a_completion("no text message in its first choice")
        served = getattr(reply, "model", None)
        finished = getattr(choices[0], "finish_reason", None)
        return Completion(content or "", served if isinstance(served, str) and served else model, finished == "length")

    def _not_a_completion(self, what: object) -> EndpointRequestError:
        return EndpointRequestError(
            f"the endpoint at {self.base_url} did not answer with an OpenAI chat completion ({str(what)[:200]}); "
            "check PALIGEMMA_BASE_URL (it should end in /v1 of a vLLM server)."
        )

    def complete(
        self, image: EncodedImage, prompt: str, *, max_tokens: int, extra_body: Mapping[str, Any] | None = None
    ) -> Completion:
        """One greedy chat completion with one image."""
        import openai

        with self.limit(), self._bounded():
            try:
                model = self.model()
                reply = self._sync_client().chat.completions.create(
                    **self._request(model, image, prompt, max_tokens, extra_body)
                )
            except openai.OpenAIError as e:
                raise _endpoint_error(e, self.base_url) from e
            except _UNREADABLE as e:  # the SDK's JSON reading of a body that is no completion
                raise self._not_a_completion(f"{type(e).__name__}: {e}") from e
        return self._completion(reply, model)

    async def acomplete(
        self, image: EncodedImage, prompt: str, *, max_tokens: int, extra_body: Mapping[str, Any] | None = None
    ) -> Completion:
        """The async form of `complete`, at most `max_concurrency` at a time per event loop."""
        import openai

        sdk = self._async_client().sdk
        async with self.alimit():
            try:
                with self._bounded():
                    async with asyncio.timeout(self.timeout_s):  # the total, retries included
                        model = await self.amodel()
                        reply = await sdk.chat.completions.create(
                            **self._request(model, image, prompt, max_tokens, extra_body)
                        )
            except TimeoutError as e:
                raise _timeout(self.base_url) from e
            except openai.OpenAIError as e:
                raise _endpoint_error(e, self.base_url) from e
            except _UNREADABLE as e:
                raise self._not_a_completion(f"{type(e).__name__}: {e}") from e
        return self._completion(reply, model)

    # --- mask decoder --------------------------------------------------------------------
    def vae_decoder(self, model: str | None = None) -> VaeDecoder | None:
        """The VQ-VAE decoder for `model`'s masks, or None (see `vae_decoder_error`) when it is unavailable."""
        base = None if model is None else self.base_model(model)  # as far as the model list is known now
        with self._lock:
            if base not in self._decoders:
                from tools.vae_checkpoint import load_vae_decoder

                try:
                    self._decoders[base] = load_vae_decoder(self.vae_path, model=base, download=self.download_vae)
                except CheckpointError as e:
                    self._decoders[base] = e  # remembered: no download attempt on every call
            found = self._decoders[base]
            self._decoder_error = found if isinstance(found, CheckpointError) else None
            return None if isinstance(found, CheckpointError) else found

    @property
    def vae_decoder_error(self) -> CheckpointError | None:
        """Why the last `vae_decoder()` call returned None, if it did."""
        return self._decoder_error
