"""The chat app in headless Chromium (Debian's package, driven by Playwright) against the tiny vLLM server.

Random weights answer nonsense, so each test forces the model's answer with a `choice`
structured output: the app's client is the test's, and the test sets its `extra_body`
before pressing Run. Drawn images are downloaded from the page and their pixels checked.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from clients.chat_app import launch
from clients.chat_turns import DRAWN_MIN_SIDE, code_span, describe_objects
from server.process import free_port
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.images import gradient_image
from tests.server_pool import TinyServer
from tests.vae_fixture import write_random_vae_npz
from tools import PaliGemmaClient, parse_detections
from tools.annotate import PALETTE

pytestmark = [pytest.mark.vllm, pytest.mark.browser]

ANSWER_TIMEOUT_MS = 60_000  # the first request compiles vLLM's structured-output grammar
WIDTH, HEIGHT = 300, 200
# A box from x 100/1023, y 200/1023 to x 900/1023, y 800/1023 of the image (PaliGemma writes y first).
LOCS = "<loc0200><loc0100><loc0800><loc0900>"
BOX_XYXY = (100 / 1023 * WIDTH, 200 / 1023 * HEIGHT, 900 / 1023 * WIDTH, 800 / 1023 * HEIGHT)
READABLE = "cat at (29, 39)\u2013(264, 156) px"
SEGS = "".join(f"<seg{c:03d}>" for c in (5, 17, 33, 64, 127, 0, 90, 12, 45, 77, 3, 101, 66, 8, 29, 120))


def forced(answer: str) -> dict[str, Any]:
    return {"structured_outputs": {"choice": [answer]}}


@contextmanager
def running_app(client: PaliGemmaClient) -> Iterator[str]:
    port = free_port()
    app = launch(client, port=port, block=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: scripts/test.sh installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def client(tiny_server: TinyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaliGemmaClient]:
    vae_path = write_random_vae_npz(tmp_path_factory.mktemp("vae") / "vae-oid.npz", seed=3)
    with PaliGemmaClient(base_url=tiny_server.base_url, vae_path=vae_path, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def app_url(client: PaliGemmaClient) -> Iterator[str]:
    with running_app(client) as url:
        yield url


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "gradient.png"
    gradient_image(WIDTH, HEIGHT).save(path)
    return path


class ChatPage:
    """The app as a person uses it: upload, pick a task, type, press Run, read the conversation."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.chat = page.locator("#chat [role=log]")

    def upload(self, path: Path) -> None:
        self.page.locator("#image input[type=file]").set_input_files(path)

    def pick(self, dropdown: str, option: str) -> None:
        self.page.locator(f"#{dropdown} input").click()
        self.page.get_by_role("option", name=option, exact=True).click()

    def run(self, task: str, text: str | None = None, *, lang: str | None = None) -> None:
        self.pick("task", task)
        if lang is not None:
            self.pick("lang", lang)
        if text is not None:
            self.page.locator("#text input").fill(text)
        self.page.locator("#run").click()

    def expect_answer(self, text: str) -> None:
        expect(self.chat).to_contain_text(text, timeout=ANSWER_TIMEOUT_MS)

    def bot_messages(self) -> Locator:
        return self.chat.locator("[data-testid=bot]")

    def raw_text(self) -> str:
        if not self.page.locator("#raw").is_visible():
            self.page.get_by_text("Raw model text").click()
        return self.page.locator("#raw textarea").input_value()

    def structured(self) -> dict[str, Any]:
        """The structured result of the last turn, as the JSON viewer shows it."""
        accordion = self.page.get_by_text("Structured result")
        if not self.page.locator("#structured").is_visible():
            accordion.click()
        data: dict[str, Any] = json.loads(self.page.locator("#structured").inner_text())
        return data

    def drawn_image(self) -> Image.Image:
        """The last image in the conversation, downloaded as the browser got it."""
        last = self.bot_messages().last.locator("img")
        expect(last).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
        source = last.get_attribute("src")
        assert source is not None
        response = self.page.request.get(source)
        assert response.ok, response.status
        return Image.open(io.BytesIO(response.body())).convert("RGB")


@pytest.fixture
def chat(browser: Browser, app_url: str) -> Iterator[ChatPage]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.locator("#run").wait_for()
    yield ChatPage(page)
    page.close()


def assert_drawn(image: Image.Image, colour: tuple[int, int, int]) -> None:
    """Box edges and the legend swatch of the first label in its palette colour, the legend band below;
    the 300 px image drawn enlarged to DRAWN_MIN_SIDE, its box with it."""
    scale = DRAWN_MIN_SIDE / WIDTH
    height = round(HEIGHT * scale)
    assert image.width == DRAWN_MIN_SIDE and image.height > height  # the legend is a band added below the image
    pixels = image.load()
    assert pixels is not None
    x0, y0, x1, y1 = (v * scale for v in BOX_XYXY)
    mid_x, mid_y = round((x0 + x1) / 2), round((y0 + y1) / 2)
    assert any(pixels[x, mid_y] == colour for x in range(int(x0) - 1, int(x0) + 3)), "left edge"
    assert any(pixels[x, mid_y] == colour for x in range(int(x1) - 3, int(x1) + 1)), "right edge"
    assert any(pixels[mid_x, y] == colour for y in range(int(y1) - 3, int(y1) + 1)), "bottom edge"
    assert pixels[12, height + 10] == colour, "legend swatch"


@pytest.mark.parametrize(
    ("task", "text", "answer", "shown", "prompt"),
    [
        pytest.param("Caption", None, "a cat on a mat", "a cat on a mat", "caption en", id="caption"),
        pytest.param("Describe", None, "a cat sleeps on a red mat", "a cat sleeps on a red mat", "describe en",
                     id="describe"),
        pytest.param("Read text", None, "OPEN 24/7", "OPEN 24/7", "ocr", id="read-text"),
        pytest.param("Ask a question", "what is it?", "a cat", "a cat", "answer en what is it?", id="ask"),
        # Markdown and tag-like text in an answer is shown as written, not rendered
        pytest.param("Ask a question", "what is written?", "*bold* <b>x</b>", "*bold* <b>x</b>",
                     "answer en what is written?", id="ask-markup-shown-literally"),
    ],
)  # fmt: skip
def test_text_tasks_show_the_answer_raw_text_and_result(
    chat: ChatPage, client: PaliGemmaClient, image_path: Path, task: str, text: str | None, answer: str, shown: str,
    prompt: str,
) -> None:  # fmt: skip
    chat.upload(image_path)
    chat.expect_answer(f"New image, {WIDTH} \u00d7 {HEIGHT} px")
    client.extra_body = forced(answer)
    chat.run(task, text)
    expect(chat.bot_messages().last).to_have_text(shown, timeout=ANSWER_TIMEOUT_MS)
    assert chat.raw_text() == answer
    structured = chat.structured()
    assert (structured["prompt"], structured["image_width"], structured["image_height"]) == (prompt, WIDTH, HEIGHT)


@pytest.mark.parametrize(
    ("task", "text", "answer"),
    [
        pytest.param("Detect objects", "cat", f"{LOCS} cat", id="detect"),
        pytest.param("Segment objects", "cat", f"{LOCS} {SEGS} cat", id="segment"),
        # a free prompt's location tokens are read out and drawn too
        pytest.param("Free prompt", "detect cat", f"{LOCS} cat", id="free-prompt-with-locations"),
    ],
)
def test_located_objects_are_listed_and_drawn_in_the_label_colour(
    chat: ChatPage, client: PaliGemmaClient, image_path: Path, task: str, text: str, answer: str
) -> None:
    chat.upload(image_path)
    client.extra_body = forced(answer)
    chat.run(task, text)
    chat.expect_answer(READABLE)
    assert_drawn(chat.drawn_image(), PALETTE[0])
    assert chat.raw_text() == answer
    (found,) = chat.structured()["objects"]
    assert found["label"] == "cat"
    assert (found["box"]["x_min"], found["box"]["y_max"]) == (round(BOX_XYXY[0], 2), round(BOX_XYXY[3], 2))
    if task == "Segment objects":
        chat.expect_answer("px\u00b2")  # the decoded mask's area
    if task == "Free prompt":
        chat.expect_answer("Raw: <loc0200>")  # the raw answer beside its readable form


@pytest.mark.parametrize("task", ["Detect objects", "Segment objects"])
def test_a_photo_turned_by_its_exif_is_answered_and_drawn_as_a_viewer_sees_it(
    chat: ChatPage, client: PaliGemmaClient, tmp_path: Path, task: str
) -> None:
    """Stored 200 x 300 and tagged to be turned clockwise: the app shows, sends and draws 300 x 200
    (it sent the model the photo turned twice, and drawing then failed on the sizes)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    gradient_image(WIDTH, HEIGHT).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    chat.upload(path)
    chat.expect_answer(f"New image, {WIDTH} \u00d7 {HEIGHT} px")
    client.extra_body = forced(f"{LOCS} {SEGS} cat" if task == "Segment objects" else f"{LOCS} cat")
    chat.run(task, "cat")
    chat.expect_answer(READABLE)
    assert_drawn(chat.drawn_image(), PALETTE[0])
    structured = chat.structured()
    assert (structured["image_width"], structured["image_height"]) == (WIDTH, HEIGHT)


def test_free_prompt_without_locations_shows_the_text(
    chat: ChatPage, client: PaliGemmaClient, image_path: Path
) -> None:
    chat.upload(image_path)
    client.extra_body = forced("un chat")
    chat.run("Free prompt", "caption fr")
    expect(chat.bot_messages().last).to_have_text("un chat", timeout=ANSWER_TIMEOUT_MS)
    assert chat.structured()["prompt"] == "caption fr"


def test_follow_up_turns_reuse_the_image_and_a_new_upload_starts_over(
    chat: ChatPage, client: PaliGemmaClient, image_path: Path, tmp_path: Path
) -> None:
    chat.upload(image_path)
    client.extra_body = forced("a cat")
    chat.run("Caption")
    chat.expect_answer("a cat")
    client.extra_body = forced("zwei")
    chat.run("Ask a question", "wie viele Katzen?", lang="German (de)")
    chat.expect_answer("Ask a question (de): wie viele Katzen?")
    expect(chat.bot_messages().last).to_have_text("zwei", timeout=ANSWER_TIMEOUT_MS)
    assert chat.structured()["prompt"] == "answer de wie viele Katzen?"
    client.extra_body = forced(f"{LOCS} cat")
    chat.run("Detect objects", "cat")
    chat.expect_answer(READABLE)
    expect(chat.chat).to_contain_text("New image", timeout=1000)
    assert chat.chat.inner_text().count("New image") == 1  # three turns, one upload

    portrait = tmp_path / "portrait.png"
    gradient_image(HEIGHT, WIDTH, seed=1).save(portrait)
    chat.upload(portrait)
    chat.expect_answer(f"New image, {HEIGHT} \u00d7 {WIDTH} px")
    client.extra_body = forced("a tall picture")
    chat.run("Caption")
    expect(chat.bot_messages().last).to_have_text("a tall picture", timeout=ANSWER_TIMEOUT_MS)
    assert (chat.structured()["image_width"], chat.structured()["image_height"]) == (HEIGHT, WIDTH)


def test_errors_appear_in_the_conversation_and_the_page_stays_usable(
    browser: Browser, image_path: Path, tmp_path: Path
) -> None:
    down = PaliGemmaClient(base_url="http://127.0.0.1:9/v1", max_retries=0)
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a PNG" * 20)
    with running_app(down) as url:
        page = browser.new_page()
        page.goto(url)
        chat = ChatPage(page)

        chat.run("Caption")
        chat.expect_answer("Upload or paste an image first")

        chat.upload(damaged)
        chat.expect_answer("Cannot use damaged.png")
        chat.expect_answer("not an image format that can be read")

        chat.upload(image_path)
        chat.expect_answer(f"New image, {WIDTH} \u00d7 {HEIGHT} px")
        chat.run("Caption")
        chat.expect_answer("cannot connect to the PaliGemma endpoint at http://127.0.0.1:9/v1")

        chat.run("Free prompt", "detect <image> cat")
        chat.expect_answer("control token")
        chat.run("Ask a question", "")
        chat.expect_answer("question is empty")

        # still usable: the same image, another task, another (expected) endpoint error
        chat.run("Detect objects", "cat")
        expect(chat.bot_messages().last).to_contain_text("cannot connect", timeout=ANSWER_TIMEOUT_MS)
        assert chat.chat.inner_text().count("cannot connect") == 2
        expect(page.locator("#run")).to_be_enabled()
        page.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(f"{LOCS} cat", f"Found 1 object:\n- **cat** at {READABLE.removeprefix('cat at ')}", id="one"),
        pytest.param("", "No objects found.", id="empty"),
        # what does not parse is listed, in a code span, so its tokens show as written
        pytest.param(
            f"{LOCS} cat ; <loc0100><loc0200> dog",
            f"Found 1 object:\n- **cat** at {READABLE.removeprefix('cat at ')}\n\nNotes:\n"
            "- not read: 2 location tokens where a box has 4 in ` <loc0100><loc0200> dog `",
            id="partly-malformed",
        ),
        # labels are escaped: a model-written label cannot inject Markdown or HTML
        pytest.param(f"{LOCS} *a_b* <i>", "Found 1 object:\n- **\\*a\\_b\\* \\<i\\>** at (29, 39)\u2013(264, 156) px",
                     id="markup-in-label"),
    ],
)  # fmt: skip
def test_describe_objects(answer: str, expected: str) -> None:
    result = parse_detections(answer, width=WIDTH, height=HEIGHT)
    assert describe_objects(result) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("<loc0001>", "` <loc0001> `", id="plain"),
        pytest.param("a `b` c", "`` a `b` c ``", id="backticks-inside"),
    ],
)
def test_code_span_holds_any_text(text: str, expected: str) -> None:
    assert code_span(text) == expected


def test_paligemma_chat_command_serves_the_page(tmp_path: Path) -> None:
    """The console command as a user starts it (its endpoint down: the page must still load)."""
    import subprocess
    import sys
    import time

    import httpx2

    from server.process import free_port

    port = free_port()
    command = [sys.executable, "-m", "clients.cli", "chat", "--port", str(port), "--base-url", "http://127.0.0.1:9/v1"]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            deadline, page = time.monotonic() + 90, None
            while time.monotonic() < deadline and page is None:
                try:
                    page = httpx2.get(f"http://127.0.0.1:{port}/", timeout=5)
                except httpx2.TransportError:
                    time.sleep(0.5)
            assert page is not None and page.status_code == 200
            assert "PaliGemma" in page.text
        finally:
            process.terminate()
            process.wait(timeout=30)
