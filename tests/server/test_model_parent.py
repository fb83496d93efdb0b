"""A fine-tuned checkpoint's base model: read from its card, passed to vLLM, listed as `parent`.

The middleware's work on a real vLLM server is tested in tests/training/test_finetune_served.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from server import serve
from server.hardware import Hardware
from server.model_parent import PARENT_ENV, PARENT_MIDDLEWARE, ListedParent, with_parent
from server.model_source import TINY_NAME, TINY_TRAINED_DIR, card_base_model, resolve
from server.vllm_command import CPU_KV_CACHE_GIB, CPU_KV_CACHE_GIB_TINY, ServeOptions, build_command

CPU = Hardware("cpu", (), (0, 1), 24.0)
LISTING = {
    "object": "list",
    "data": [
        {"id": "my-finetune", "object": "model", "root": "/m/my-finetune", "parent": None},
        {"id": "star", "object": "model", "root": "/a/star", "parent": "my-finetune"},
    ],
}


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        pytest.param('---\nbase_model: "paligemma2-tiny-shapes"\n---\n# x', "paligemma2-tiny-shapes", id="ours"),
        pytest.param(
            "---\nlicense: gemma\nbase_model:\n- google/paligemma2-3b-mix-448\n---\n",
            "google/paligemma2-3b-mix-448",
            id="hub-list-of-one",
        ),
        pytest.param("---\nbase_model:\n- a/b\n- c/d\n---\n", None, id="merge-of-two-names-nothing"),
        pytest.param("---\nlicense: gemma\n---\n", None, id="no-base-model"),
        pytest.param("# Tiny PaliGemma 2\n\nbase_model: a/b\n", None, id="no-metadata-block"),
        pytest.param("---\nbase_model: [unclosed\n---\n", None, id="broken-yaml-nothing"),
        pytest.param("---\n- a\n- b\n---\n", None, id="metadata-not-a-mapping"),
        pytest.param("---\nbase_model: 7\n---\n", None, id="not-a-name"),
        pytest.param("---\nbase_model: '  '\n---\n", None, id="blank"),
        pytest.param("---\nbase_model: " + "[" * 5000 + "\n---\n", None, id="nested-too-deep"),
    ],
)
def test_the_card_names_the_base_model(tmp_path: Path, card: str, expected: str | None) -> None:
    (tmp_path / "README.md").write_text(card)
    assert card_base_model(tmp_path) == expected


def test_a_folder_without_a_card_or_with_unreadable_bytes_names_nothing(tmp_path: Path) -> None:
    assert card_base_model(tmp_path) is None
    (tmp_path / "README.md").write_bytes(b"---\nbase_model: \xff\xfe\n---\n")
    assert card_base_model(tmp_path) is None


def fine_tuned_copy(folder: Path, base_model: str) -> Path:
    """The shipped tiny checkpoint's files under another name, with a fine-tune's card."""
    shutil.copytree(TINY_TRAINED_DIR, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "README.md").write_text(f'---\nbase_model: "{base_model}"\n---\n\n# Fine-tuned PaliGemma: x (full)\n')
    return folder


def test_serve_lists_a_fine_tuned_checkpoint_with_its_base_model(tmp_path: Path) -> None:
    folder = fine_tuned_copy(tmp_path / "my-finetune", TINY_TRAINED_DIR.name)
    source = resolve(str(folder))
    assert source.parent == TINY_TRAINED_DIR.name and source.is_tiny  # a fine-tune of the tiny model is tiny
    command = build_command(ServeOptions(model=str(folder)), source, CPU)
    assert command.parent == TINY_TRAINED_DIR.name and command.env[PARENT_ENV] == TINY_TRAINED_DIR.name
    assert command.argv[command.argv.index(PARENT_MIDDLEWARE) - 1] == "--middleware"
    assert command.env["VLLM_CPU_KVCACHE_SPACE"] == str(CPU_KV_CACHE_GIB_TINY)
    banner = serve.usage_banner(command, "cpu")
    assert f"Fine-tuned from {TINY_TRAINED_DIR.name!r}" in banner


def test_a_real_checkpoints_fine_tune_is_not_tiny(tmp_path: Path) -> None:
    source = resolve(str(fine_tuned_copy(tmp_path / "mine", "google/paligemma2-3b-mix-448")))
    assert source.parent == "google/paligemma2-3b-mix-448" and not source.is_tiny
    command = build_command(ServeOptions(model=source.location), source, CPU)
    assert command.env[PARENT_ENV] == "google/paligemma2-3b-mix-448"
    assert command.env["VLLM_CPU_KVCACHE_SPACE"] == str(CPU_KV_CACHE_GIB)


@pytest.mark.parametrize("model", [TINY_NAME, "3b-mix-448"])
def test_a_model_with_no_base_gets_no_middleware(model: str) -> None:
    source = resolve(model)
    command = build_command(ServeOptions(model=model), source, CPU)
    assert source.parent is None and command.parent is None
    assert PARENT_MIDDLEWARE not in command.argv and PARENT_ENV not in command.env
    assert "Fine-tuned from" not in serve.usage_banner(command, "cpu")


def test_served_under_its_base_models_name_it_is_no_parent_of_itself(tmp_path: Path) -> None:
    folder = fine_tuned_copy(tmp_path / "x", "paligemma2-tiny-shapes")
    options = ServeOptions(model=str(folder), served_model_name="paligemma2-tiny-shapes")
    command = build_command(options, resolve(str(folder)), CPU)
    assert command.parent is None and PARENT_MIDDLEWARE not in command.argv


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            json.dumps(LISTING).encode(),
            [("my-finetune", "paligemma2-tiny-shapes"), ("star", "my-finetune")],
            id="base-gets-it-adapter-keeps-vllms",
        ),
        pytest.param(
            b'{"data": [{"id": "m"}, {"id": "paligemma2-tiny-shapes"}]}',
            [("m", "paligemma2-tiny-shapes"), ("paligemma2-tiny-shapes", None)],
            id="absent-parent-and-the-base-itself",
        ),
    ],
)
def test_the_listing_gets_the_parent(body: bytes, expected: list[tuple[str, str | None]]) -> None:
    listed = json.loads(with_parent(body, "paligemma2-tiny-shapes"))["data"]
    assert [(m["id"], m.get("parent")) for m in listed] == expected


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"data": 3}', b'{"error": "x"}', b""])
def test_a_body_that_is_no_listing_is_left_as_it_was(body: bytes) -> None:
    assert with_parent(body, "p") == body


def run_middleware(
    scope: dict[str, Any], chunks: list[bytes], status: int = 200, parent: str = "base", extra_after: int | None = None
) -> list[dict[str, Any]]:
    """The messages the middleware sends for an app that answers `chunks` (and, with `extra_after`,
    a message of another type after that many chunks)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"999")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            if i == extra_after:
                await send({"type": "http.response.debug", "info": {}})
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PARENT_ENV, parent)
        middleware = ListedParent(app)
    anyio.run(middleware, scope, receive, send)
    return sent


MODELS = {"type": "http", "method": "GET", "path": "/v1/models"}


def test_the_middleware_rewrites_a_listing_sent_in_pieces_and_its_length() -> None:
    body = json.dumps(LISTING).encode()
    sent = run_middleware(MODELS, [body[:10], body[10:50], body[50:]])
    assert len(sent) == 2
    headers = dict(sent[0]["headers"])
    assert json.loads(sent[1]["body"])["data"][0]["parent"] == "base"
    assert headers[b"content-length"] == str(len(sent[1]["body"])).encode()
    assert headers[b"content-type"] == b"application/json"


def test_behind_a_proxy_prefix_the_listing_is_still_found() -> None:
    scope = {**MODELS, "root_path": "/paligemma", "path": "/paligemma/v1/models"}
    sent = run_middleware(scope, [json.dumps(LISTING).encode()])
    assert json.loads(sent[-1]["body"])["data"][0]["parent"] == "base"


def test_a_message_of_another_kind_sends_what_was_held_in_order() -> None:
    body = json.dumps(LISTING).encode()
    sent = run_middleware(MODELS, [body[:10], body[10:]], extra_after=1)
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.debug",
        "http.response.body",
    ]
    assert b"".join(m["body"] for m in sent if m["type"] == "http.response.body") == body  # unchanged, whole


def test_an_exported_parent_does_not_override_the_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PARENT_ENV, "something-else")
    folder = fine_tuned_copy(tmp_path / "my-finetune", TINY_TRAINED_DIR.name)
    the_plan = serve.plan(ServeOptions(model=str(folder)), device="cpu")
    assert the_plan.command.env[PARENT_ENV] == TINY_TRAINED_DIR.name


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        pytest.param({**MODELS, "method": "POST"}, 200, id="post"),
        pytest.param({**MODELS, "path": "/v1/chat/completions"}, 200, id="other-path"),
        pytest.param(MODELS, 401, id="error-status"),
    ],
)
def test_the_middleware_leaves_everything_else_alone(scope: dict[str, Any], status: int) -> None:
    body = json.dumps(LISTING).encode()
    sent = run_middleware(scope, [body], status)
    assert json.loads(sent[-1]["body"]) == LISTING


def test_without_a_parent_the_middleware_passes_through() -> None:
    body = json.dumps(LISTING).encode()
    sent = run_middleware(MODELS, [body], parent="")
    assert json.loads(sent[-1]["body"]) == LISTING and dict(sent[0]["headers"])[b"content-length"] == b"999"
