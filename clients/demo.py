"""The main job: serve PaliGemma 2, run every typed tool on an image, print the answers, draw them, stop.

With no `--model` it serves the tiny PaliGemma 2 trained on the synthetic shapes-and-words
domain (shipped with the project, docs/tiny-model.md) and asks it about a scene of that
domain, generated here, so every answer can be checked against what was drawn: the demo
prints the truth beside each answer. With `--model PRESET` it serves real weights.
"""

from __future__ import annotations

import functools
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from clients.openai_examples import image_message
from server import serve
from server.model_source import TINY_NAME
from server.process import free_port
from server.tiny_model import is_random_tiny_model
from server.vllm_command import ServeOptions
from tools import data_uri, default_cache_dir, load_image, prompt_budget

if TYPE_CHECKING:
    from PIL import Image

    import tools
    from training.scenes import Scene, ShapeObject

DEMO_SCENE_SIZE = (960, 640)  # width, height
ANNOTATED_NAME = "demo-annotated.png"


def demo_scene() -> Scene:
    """The demo's scene: the first seed that draws a circle, a square and a triangle beside a word."""
    import numpy as np

    from training.scenes import make_scene

    for seed in range(1000):
        scene = make_scene(np.random.default_rng(seed), kind="mixed", size=DEMO_SCENE_SIZE)
        if len({o.shape for o in scene.objects}) == 3 and len({o.color for o in scene.objects}) == 3:
            return scene
    raise RuntimeError("no demo scene among the first 1000 seeds")  # the generator changed: pick a new rule


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return data_uri("image/png", buffer.getvalue())


def ask_with_openai_sdk(base_url: str, model: str, image: Image.Image, prompt: str) -> str:
    """One chat completion with one image, the way any OpenAI-SDK client does it."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=os.environ.get("PALIGEMMA_API_KEY", "EMPTY"))
    reply = client.chat.completions.create(
        model=model,
        max_tokens=prompt_budget(prompt),  # what the tools ask for: no word cut off
        temperature=0,
        messages=image_message(_png_data_uri(image), prompt),
    )
    return reply.choices[0].message.content or ""


@dataclass(frozen=True)
class DemoCall:
    label: str
    run: Callable[[tools.PaliGemmaClient], tools.ToolResult]
    expected: str | None = None  # the truth, where the image is the generated scene
    check: Callable[[tools.ToolResult], bool] | None = None  # whether the answer matches it


def model_text(result: tools.ToolResult) -> str | None:
    """What the model wrote, for the tools that answer in words (None for boxes and masks): the
    field the registry names for the result's task, as the fields' names overlap (a
    QuestionResult's `answer` is the caller's, its `question` the model's)."""
    import tools

    for task in tools.TASKS:
        if type(result) is task.result and task.answer_field is not None:
            text: str = getattr(result, task.answer_field)
            return text
    return None


def _says(expected: str) -> Callable[[tools.ToolResult], bool]:
    return lambda result: (model_text(result) or "").strip() == expected


def _finds(truth: list[ShapeObject]) -> Callable[[tools.ToolResult], bool]:
    """Right when every drawn object comes back once, labelled by its shape, at IoU >= 0.5 (and nothing else)."""
    import tools
    from training.evaluate import matched_ious

    def check(result: tools.ToolResult) -> bool:
        if not isinstance(result, tools.Detections | tools.Segments) or len(result.objects) != len(truth):
            return False
        if isinstance(result, tools.Segments) and any(o.mask is None for o in result.objects):
            return False
        found = [(o.label, o.box.xyxy) for o in result.objects]
        return all(iou >= 0.5 for iou in matched_ious([(t.shape, t.box_xyxy) for t in truth], found))

    return check


def scene_calls(image: Image.Image, scene: Scene) -> list[DemoCall]:
    """Every tool once on the scene, each with the answer the scene's drawing makes right."""
    import tools
    from training import tasks

    shapes = sorted({o.shape for o in scene.objects})
    first = tasks.reading_order(scene.objects)[0]
    circles = str(sum(o.shape == "circle" for o in scene.objects))
    word = scene.word.text if scene.word else ""
    located = [o for s in shapes for o in scene.objects if o.shape == s]
    boxes = "; ".join(f"{o.shape} {list(o.box_xyxy)}" for o in located)
    caption, description = tasks.caption_text(scene), tasks.describe_text(scene)
    question = tasks.color_question(first.shape)
    calls = [
        DemoCall("caption_image(scene)", lambda c: tools.caption_image(image, client=c), caption, _says(caption)),
        DemoCall(
            "caption_image(scene, detail='long')",
            lambda c: tools.caption_image(image, detail="long", client=c),
            description,
            _says(description),
        ),
        DemoCall("read_text(scene)", lambda c: tools.read_text(image, client=c), word, _says(word)),
        DemoCall(
            "answer_visual_question(scene, 'how many circles are there?')",
            lambda c: tools.answer_visual_question(image, "how many circles are there?", client=c),
            circles,
            _says(circles),
        ),
        DemoCall(
            f"answer_visual_question(scene, '{question}')",
            lambda c: tools.answer_visual_question(image, question, client=c),
            first.color,
            _says(first.color),
        ),
        DemoCall(
            f"generate_question(scene, '{first.color}')",
            lambda c: tools.generate_question(image, first.color, client=c),
            question,
            _says(question),
        ),
        DemoCall(
            f"locate_objects(scene, {shapes})",
            lambda c: tools.locate_objects(image, shapes, client=c),
            f"boxes (x_min, y_min, x_max, y_max px): {boxes}",
            _finds(located),
        ),
    ]
    for shape in shapes:
        drawn = [o for o in scene.objects if o.shape == shape]
        calls.append(
            DemoCall(
                f"segment_objects(scene, '{shape}')",
                functools.partial(_segment, image, shape),
                "; ".join(f"{shape} {list(o.box_xyxy)}" for o in drawn),
                _finds(drawn),
            )
        )
    return calls


def _segment(image: Image.Image, shape: str, client: tools.PaliGemmaClient) -> tools.ToolResult:
    import tools

    return tools.segment_objects(image, shape, client=client)


def photo_calls(image: Image.Image) -> list[DemoCall]:
    """Every tool once on a photo of the caller's (no truth known)."""
    import tools

    return [
        DemoCall("caption_image(photo)", lambda c: tools.caption_image(image, client=c)),
        DemoCall("caption_image(photo, detail='long')", lambda c: tools.caption_image(image, detail="long", client=c)),
        DemoCall("read_text(photo)", lambda c: tools.read_text(image, client=c)),
        DemoCall(
            "answer_visual_question(photo, 'what is in the image?')",
            lambda c: tools.answer_visual_question(image, "what is in the image?", client=c),
        ),
        DemoCall(
            "locate_objects(photo, ['person', 'cat'])",
            lambda c: tools.locate_objects(image, ["person", "cat"], client=c),
        ),
        DemoCall("segment_objects(photo, 'person')", lambda c: tools.segment_objects(image, "person", client=c)),
    ]


def _summary(result: tools.ToolResult) -> str:
    """The answer in one line: text answers as text, located objects as label and pixel box."""
    import tools

    if isinstance(result, tools.LocatedObjects):
        parts = [f"{o.label} {[round(v) for v in o.box.xyxy]}" for o in result.objects]
        parts = [
            f"{p} mask {o.area_px} px" if isinstance(o, tools.Segment) and o.mask is not None else p
            for p, o in zip(parts, result.objects, strict=True)
        ]
        return "; ".join(parts) or "(nothing found)"
    text = model_text(result)
    return repr(text) if text is not None else json.dumps(result.model_dump(mode="json"))[:160]


def run_calls(base_url: str, model: str, calls: list[DemoCall]) -> list[tools.ToolResult]:
    """Each call once, its answer printed beside the truth; returns the results."""
    import tools

    results: list[tools.ToolResult] = []
    verdicts: list[bool] = []
    with tools.PaliGemmaClient(base_url=base_url, model=model) as client:
        for call in calls:
            result = call.run(client)
            results.append(result)
            print(f"\n{call.label} -> {type(result).__name__}\n  answer: {_summary(result)}")
            if call.expected is not None:
                print(f"  drawn:  {call.expected}")
            if call.check is not None:
                verdicts.append(call.check(result))
                print(f"  {'right' if verdicts[-1] else 'WRONG'}")
            for issue in getattr(result, "issues", ()):
                print(f"  note:   {issue.reason}")
    if verdicts:
        print(f"\n{sum(verdicts)} of {len(verdicts)} answers right.")
    return results


def annotated(image: Image.Image, results: list[tools.ToolResult]) -> Image.Image:
    """The image with every segmented object (or, failing that, every located one) drawn."""
    import tools
    from tools import annotate

    segments = [r for r in results if isinstance(r, tools.Segments)]
    if segments and any(s.objects for s in segments):
        merged = segments[0].model_copy(update={"objects": tuple(o for s in segments for o in s.objects)})
        return annotate(image, merged)
    detections = [r for r in results if isinstance(r, tools.Detections)]
    return annotate(image, detections[0]) if detections else image


def run_demo(
    *,
    model: str | None,
    image: Path | None,
    port: int | None,
    out: Path | None = None,
    device: Literal["auto", "cuda", "cpu"] = "auto",
) -> int:
    """Serve, ask, print, draw, stop. Returns the process exit code."""

    # eager: a handful of requests, where torch.compile's ~18 s start would never pay off
    options = ServeOptions(model=model or TINY_NAME, port=port or free_port(), eager=True)
    the_plan = serve.plan(options, device=device)
    scene = None
    if image is not None:
        # As the tools see it (EXIF orientation applied), so what is drawn matches what they answer;
        # a file that is no image stops the demo with the tools' own message (an ImageError).
        picture = load_image(image).image
    else:
        scene = demo_scene()
        picture = scene.image
    calls = scene_calls(picture, scene) if scene is not None else photo_calls(picture)
    out = out or default_cache_dir() / ANNOTATED_NAME
    log_path = default_cache_dir() / "logs" / f"demo-serve-{options.port}.log"
    print(
        f"Starting vLLM ({the_plan.hardware.device}) for {the_plan.source.location} (log: {log_path}) ...", flush=True
    )
    started = time.monotonic()
    with serve.running(the_plan, echo=False, log_path=log_path) as server:
        print(f"Healthy after {time.monotonic() - started:.1f} s at {the_plan.command.base_url} (pid {server.pid}).")
        base_url, name = the_plan.command.base_url, the_plan.command.served_model_name
        if the_plan.source.is_local and is_random_tiny_model(Path(the_plan.source.location)):
            print("NOTE: this tiny model has random weights: every answer below is random nonsense by design.")
        if scene is not None:
            print(f"\nThe image: a generated {picture.width}x{picture.height} scene of the synthetic domain.")
        answer = ask_with_openai_sdk(base_url, name, picture, "caption en")
        print(f"\nopenai SDK, prompt 'caption en':\n  {answer!r}")
        print("\nThe typed tools (answers in pixels of the image; 'drawn' is what the scene holds):")
        results = run_calls(base_url, name, calls)
    out.parent.mkdir(parents=True, exist_ok=True)
    annotated(picture, results).save(out)
    print(f"\nDrawn: {out}")
    print("\nServer stopped.")
    return 0
