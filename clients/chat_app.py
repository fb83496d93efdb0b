"""`paligemma chat`: a web chat app (Gradio) in front of any PaliGemma endpoint, `paligemma serve` by default.

A person uploads or pastes an image, picks a task (or types a free prompt) and a language,
and reads the answer in a conversation; detections and segments come back drawn on the
image with a legend, and the structured result and the raw model text are one click away.
Each browser tab keeps its image, so follow-up turns need no new upload; a new upload
starts a new image context. Every failure (endpoint down, bad image, bad prompt) becomes
an assistant message: the page never goes blank.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from clients.chat_turns import (
    LANGUAGES,
    MENU,
    OPENING_ENTRY,
    TIMES,
    TYPED_MAX_CHARS,
    MenuEntry,
    Message,
    code_span,
    encode_for_free_prompts,
    escape_markdown,
    menu_entry,
    run_entry,
    user_text,
)
from tools import (
    EncodedImage,
    ImageError,
    LoadedImage,
    PaliGemmaClient,
    PaliGemmaError,
    ToolResult,
    error_message,
    free_prompt,
    load_image,
)
from tools.agents import to_agent_json

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)


# --- per-tab state -------------------------------------------------------------------------------
SESSION_TTL_S = 30 * 60  # a tab's image and conversation, kept this long after its last turn
MIB = 1024 * 1024


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class ChatSession:
    """What one browser tab keeps between turns: its image, its conversation, its drawn images."""

    history: list[Message] = field(default_factory=list)
    upload: str | None = None  # the uploaded file the image came from
    image: LoadedImage | None = None
    encoded: EncodedImage | None = None  # for free prompts, encoded once per image
    turns: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one turn at a time per tab
    _files: Path | None = None  # drawn images, removed with the tab's state or at exit
    _cleanup: weakref.finalize[[str], ChatSession] | None = None

    def save_png(self, image: Image.Image) -> str:
        """Write a drawn image where Gradio may serve it from (the system temp folder)."""
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="paligemma-chat-"))
            self._cleanup = weakref.finalize(self, _remove_tree, str(self._files))
        self.turns += 1
        path = self._files / f"turn-{self.turns}.png"
        image.save(path, format="PNG")
        return str(path)

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()
        self._files, self._cleanup = None, None


def _close_session(session: ChatSession | None) -> None:
    if session is not None:
        session.close()


def _read_upload(payload: Mapping[str, Any], client: PaliGemmaClient) -> LoadedImage:
    """The uploaded image, with the client's size limits (uploads are bytes: no path policy applies)."""
    policy = client.image_policy
    path = payload.get("path")
    if not path:
        raise ImageError("the upload carried no file; upload or paste the image again.")
    name = payload.get("orig_name") or Path(path).name
    try:
        with Path(path).open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > policy.max_bytes:
                raise ImageError(
                    f"the uploaded file {name!r} is {size / MIB:,.1f} MiB; the limit is {policy.max_bytes / MIB:,.0f} "
                    "MiB. Upload a smaller image (a photo saved as JPEG is a few MiB)."
                )
            data = file.read(policy.max_bytes + 1)  # load_image reports anything over the limit
    except OSError as e:
        raise ImageError(f"cannot read the uploaded file {name!r} ({e.strerror}); upload it again.") from e
    loaded = load_image(data, policy)
    return dataclasses.replace(loaded, source=repr(name))


def _is_upload(payload: object) -> bool:
    """Whether `payload` is what the page sends for an image: nothing, or a mapping with a path."""
    return payload is None or (isinstance(payload, Mapping) and isinstance(payload.get("path"), str | None))


def _inputs_have_their_types(payload: object, task: object, lang: object, text: object) -> bool:
    return _is_upload(payload) and isinstance(task, str) and all(isinstance(v, str | None) for v in (lang, text))


def _error_text(error: BaseException) -> str:
    return f"**Error:** {escape_markdown(error_message(error, 'the chat app'))}"


# --- the app ---------------------------------------------------------------------------------------
Outputs = tuple[list[Message], ChatSession, Any, str]  # conversation, session, structured result, raw text


class _Handlers:
    def __init__(self, client: PaliGemmaClient) -> None:
        self.client = client

    async def _switch_image(self, session: ChatSession, payload: Mapping[str, Any] | None) -> None:
        """Make the uploaded image the session's, announcing it (or why it is unusable) in the conversation."""
        path = None if payload is None else payload.get("path")
        if path == session.upload:
            return
        session.upload, session.image, session.encoded = path, None, None
        if payload is None:
            return
        name = code_span(str(payload.get("orig_name") or "image"))
        session.history.append({"role": "user", "content": f"Uploaded {name}"})
        try:
            session.image = await asyncio.to_thread(_read_upload, payload, self.client)
        except PaliGemmaError as e:
            session.history.append({"role": "assistant", "content": f"Cannot use {name}. {_error_text(e)}"})
            return
        size = f"{session.image.width} {TIMES} {session.image.height} px"
        session.history.append({"role": "assistant", "content": f"New image, {size}. Pick a task and press Run."})

    async def on_image(
        self, payload: Mapping[str, Any] | None, session: ChatSession
    ) -> tuple[list[Message], ChatSession]:
        if not _is_upload(payload):  # only a client of the raw API sends others
            message = "**Error:** the upload's fields have the wrong types; upload the image from the page."
            return [*session.history, {"role": "assistant", "content": message}], session
        async with session.lock:
            await self._switch_image(session, payload)
        return list(session.history), session

    async def on_clear(self, session: ChatSession) -> ChatSession:
        async with session.lock:
            session.history.clear()  # the image stays: the next turn may ask about it again
        return session

    async def on_run(
        self, payload: Mapping[str, Any] | None, task: str, lang: str | None, text: str | None, session: ChatSession
    ) -> AsyncIterator[Outputs]:
        if not _inputs_have_their_types(payload, task, lang, text):  # only a client of the raw API sends others
            message = "**Error:** the request's fields have the wrong types; use the page, or send text."
            yield [*session.history, {"role": "assistant", "content": message}], session, None, ""
            return
        async with session.lock:
            await self._switch_image(session, payload)
            chosen, lang, text = menu_entry(task), (lang or "en").strip(), text or ""
            if chosen is not None:
                session.history.append({"role": "user", "content": user_text(chosen, lang, text)})
                if session.image is not None:
                    yield [*session.history, {"role": "assistant", "content": "Running…"}], session, None, ""
            content, result = await self._reply(session, chosen, task, lang, text)
            session.history.append({"role": "assistant", "content": content})
            if result is None:
                yield list(session.history), session, None, ""
            else:
                yield list(session.history), session, to_agent_json(result), result.raw_text

    async def _reply(
        self, session: ChatSession, chosen: MenuEntry | None, task: str, lang: str, text: str
    ) -> tuple[Any, ToolResult | None]:
        """The assistant's message content and the result it shows, or what went wrong (and None)."""
        if chosen is None:
            return f"**Error:** unknown task {code_span(task)}.", None
        if session.image is None:
            if session.upload is not None:
                return "The uploaded image could not be read (see above). Upload or paste another one.", None
            return "Upload or paste an image first (the image box on the left), then press Run.", None
        try:
            if chosen.task is None and session.encoded is None:  # free prompts: the image is encoded once
                free_prompt(text)  # a bad prompt is refused before the endpoint is asked anything
                session.encoded = await encode_for_free_prompts(self.client, session.image)
            answer = await run_entry(self.client, session.image, chosen, lang=lang, text=text, encoded=session.encoded)
        except Exception as e:  # a failure is an answer in the conversation, never a dead page
            if not isinstance(e, PaliGemmaError):
                logger.exception("chat turn %r failed unexpectedly", chosen.label)
            return _error_text(e), None
        if answer.drawn is None:
            return answer.markdown, answer.result
        png = await asyncio.to_thread(session.save_png, answer.drawn)
        return [answer.markdown, {"path": png, "alt_text": f"{chosen.label} result drawn on the image"}], answer.result


def _task_controls(task: str) -> tuple[Any, Any]:
    import gradio as gr

    chosen = menu_entry(task)
    if chosen is None:
        return gr.Dropdown(), gr.Textbox()
    label = chosen.text_label
    text = gr.Textbox(visible=label is not None, label=label or "", placeholder=chosen.placeholder)
    return gr.Dropdown(visible=chosen.uses_lang), text


def build_app(
    client: PaliGemmaClient | None = None,
    *,
    title: str = "PaliGemma 2 chat",
    concurrency_limit: int | None = 16,
) -> gr.Blocks:
    """The chat app as Gradio Blocks, answering with `client` (default: from the environment); not started."""
    import gradio as gr

    client = client or PaliGemmaClient()
    handlers = _Handlers(client)
    app = gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 6 * 3600))
    with app:
        # gr.State deep-copies this per browser tab: each tab gets a fresh, empty session.
        # A tab keeps its decoded image (3 bytes a pixel) until SESSION_TTL_S after its last turn.
        session = gr.State(ChatSession(), time_to_live=SESSION_TTL_S, delete_callback=_close_session)
        gr.Markdown(f"## {escape_markdown(title)}\nEndpoint: {code_span(client.base_url)}")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                image = gr.Image(
                    label="Image (upload or paste)",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    height=360,
                    elem_id="image",
                )
                task = gr.Dropdown(list(MENU), value=OPENING_ENTRY, label="Task", elem_id="task")
                lang = gr.Dropdown(
                    list(LANGUAGES), value="en", label="Language", allow_custom_value=True, elem_id="lang"
                )
                text = gr.Textbox(label="Text", visible=False, max_lines=1, max_length=TYPED_MAX_CHARS, elem_id="text")
                run = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column(scale=3, min_width=400):
                chat = gr.Chatbot(
                    label="Conversation",
                    elem_id="chat",
                    height="70vh",
                    min_height=480,
                    latex_delimiters=[],
                    allow_tags=False,
                    feedback_options=None,
                    buttons=["copy", "copy_all"],
                    placeholder="Upload or paste an image, pick a task, press Run.",
                )
                with gr.Accordion("Structured result", open=False):
                    structured = gr.JSON(show_label=False, open=True, elem_id="structured")
                with gr.Accordion("Raw model text", open=False):
                    raw = gr.Textbox(show_label=False, interactive=False, lines=2, elem_id="raw", buttons=["copy"])

        # The image arrives unprocessed: our loader reports a damaged file in the conversation.
        image.change(handlers.on_image, [image, session], [chat, session], preprocess=False, api_visibility="private")
        chat.clear(handlers.on_clear, session, session, api_visibility="private")
        task.change(_task_controls, task, [lang, text], queue=False, api_visibility="private")
        run_inputs = [image, task, lang, text, session]
        run_outputs = [chat, session, structured, raw]
        for trigger in (run.click, text.submit):
            trigger(
                handlers.on_run,
                run_inputs,
                run_outputs,
                preprocess=False,
                concurrency_limit=concurrency_limit,
                concurrency_id="run",
                trigger_mode="multiple",  # a question asked while another runs waits its turn, not dropped
                api_visibility="private",
            )
    return app


def launch(
    client: PaliGemmaClient | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    quiet: bool = False,
) -> gr.Blocks:
    """Build and start the app on http://host:port; with `block=False` return at once (stop it with `.close()`)."""
    import gradio as gr

    client = client or PaliGemmaClient()
    app = build_app(client)

    @contextlib.asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        try:
            yield
        finally:  # the SDK's connections belong to the server's event loop, which ends here
            await client.aclose()

    # System fonts: the page must not wait for a font host it may not reach.
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=quiet,
        theme=theme,
        footer_links=["settings"],
        run_history=False,  # uploads stay on the server, not in the browser's storage
        max_file_size=client.image_policy.max_bytes,  # refused by Gradio before it is written to disk
        app_kwargs={"lifespan": lifespan},
    )
    return app
