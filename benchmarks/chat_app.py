"""Time from clicking Run to the drawn result in the chat app, on the tiny model, on this machine.

    .venv/bin/python -m benchmarks.chat_app [--runs 10] [--screenshot docs/images/chat-app.png]

Starts the tiny model's vLLM server (stopped at the end) and the chat app in-process,
drives the app in headless Chromium (Debian's `chromium` package) with Playwright, and
forces a detection answer (random weights answer nonsense). Each run is one more turn of
the same conversation, timed from the click on Run until the drawn image in the
conversation has loaded. The same request through the tool function alone shows what the
app adds. Prints a table; `--screenshot` also saves a picture of the app after one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import Page, sync_playwright

from benchmarks.common import median_ms, photo_like, print_table, timed, tiny_model
from clients.chat_app import launch
from server import serve
from server.process import free_port
from server.vllm_command import ServeOptions
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tools import PaliGemmaClient, locate_objects

OBJECTS = "cat ; eye ; nose"
# Boxes placed by hand on scikit-image's photo of a cat (451 x 300), PaliGemma's y-first order.
ANSWER = (
    "<loc0020><loc0000><loc1023><loc0905> cat ; <loc0290><loc0306><loc0494><loc0476> eye ; "
    "<loc0368><loc0665><loc0563><loc0783> eye ; <loc0757><loc0526><loc0904><loc0669> nose"
)
DRAWN_LOADED = """n => {
    const images = document.querySelectorAll('#chat [data-testid=bot] img');
    return images.length >= n && images[n - 1].complete && images[n - 1].naturalWidth > 0;
}"""


def photo(folder: Path) -> Path:
    """The cat photo shipped with scikit-image, or a synthetic image without it."""
    path = folder / "photo.png"
    try:
        from importlib import resources

        Image.open(str(resources.files("skimage").joinpath("data", "chelsea.png"))).convert("RGB").save(path)
    except (ImportError, OSError):
        photo_like(451, 300, seed=0).save(path)
    return path


def open_chat(page: Page, url: str, image: Path) -> None:
    page.goto(url)
    page.locator("#image input[type=file]").set_input_files(image)
    page.locator("#chat").get_by_text("New image").wait_for()
    page.locator("#task input").click()
    page.get_by_role("option", name="Detect objects", exact=True).click()
    page.locator("#text input").fill(OBJECTS)


def run_and_wait(page: Page, drawn_so_far: int) -> float:
    """Seconds from the click on Run to the next drawn image loaded in the conversation."""
    started = time.perf_counter()
    page.locator("#run").click()
    page.wait_for_function(DRAWN_LOADED, arg=drawn_so_far + 1, timeout=120_000, polling=5)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the app after one detection run")
    args = parser.parse_args()
    forced: dict[str, Any] = {"structured_outputs": {"choice": [ANSWER]}}

    with tiny_model() as checkpoint:
        image = photo(checkpoint.parent)
        width, height = Image.open(image).size
        the_plan = serve.plan(ServeOptions(model=str(checkpoint), port=free_port()), device="cpu")
        client = PaliGemmaClient(base_url=the_plan.command.base_url, extra_body=forced, max_retries=0)
        with serve.running(the_plan, echo=False, timeout_s=300), client:
            for _ in range(args.warmup):
                locate_objects(image, OBJECTS, client=client)
            tool_alone = [timed(lambda: locate_objects(image, OBJECTS, client=client))[0] for _ in range(args.runs)]

            port = free_port()
            app = launch(client, port=port, block=False, quiet=True)
            try:
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    open_chat(page, f"http://127.0.0.1:{port}/", image)
                    for i in range(args.warmup):
                        run_and_wait(page, i)
                    in_app = [run_and_wait(page, args.warmup + i) for i in range(args.runs)]
                    if args.screenshot is not None:
                        shot = browser.new_page(viewport={"width": 1400, "height": 1300})
                        open_chat(shot, f"http://127.0.0.1:{port}/", image)
                        run_and_wait(shot, 0)
                        shot.get_by_text("Raw model text").click()
                        shot.wait_for_timeout(500)  # the accordion's animation
                        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                        shot.screenshot(path=args.screenshot)
                    browser.close()
            finally:
                app.close()

    ui = median_ms(in_app) - median_ms(tool_alone)
    rows = [
        ["tool call alone (locate_objects)", *spread(tool_alone)],
        ["chat app: click Run -> drawn result shown", *spread(in_app)],
    ]
    print_table(
        f"Chat app on the tiny model: forced 4-object detection on a {width}x{height} photo, "
        f"{args.runs} runs after {args.warmup} warm-up, one conversation",
        ["path", "median (ms)", "min (ms)", "max (ms)"],
        rows,
    )
    print(f"\nThe app adds about {ui:.0f} ms per turn: browser round trip, Gradio queue, drawing, PNG, image load.")
    if args.screenshot is not None:
        print(f"Screenshot saved to {args.screenshot}")


def spread(samples: list[float]) -> list[str]:
    return [f"{statistics.median(samples) * 1000:.0f}", f"{min(samples) * 1000:.0f}", f"{max(samples) * 1000:.0f}"]


if __name__ == "__main__":
    main()
