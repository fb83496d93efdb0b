"""The PaliGemma 2 tasks, each defined once: every surface derives from this registry.

A task is what one tool does. Its entry holds its name (the Python function's, the agent
tool's and the MCP tool's), its options (a pydantic model: each option's one name, type,
default and description, from which the agent schemas, the CLI flags and the chat app's
controls are derived), the prompt it sends, the token budget of each prompt prefix it writes,
how the answer becomes its result, what an LLM is told, its `paligemma` batch verb and its
entries in the chat app's task menu.

Adding a task is one `Task` in TASKS plus its result model in tools/models.py; `run_task`
runs it, and a typed wrapper in tools/functions.py is a convenience for Python callers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tools import parsing, prompts
from tools.client import Completion, PaliGemmaClient
from tools.images import LoadedImage
from tools.models import (
    AnswerResult,
    CaptionResult,
    Detections,
    QuestionResult,
    Segments,
    TextResult,
    ToolResult,
)


class Options(BaseModel):
    """What a caller chooses besides the image, in JSON types.

    Validated (strictly: "true" is no boolean) where options arrive as JSON; Python callers'
    values go through `Task.given`, and the prompt builder checks every value either way.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


OptionsT = TypeVar("OptionsT", bound=Options)
ResultT = TypeVar("ResultT", bound=ToolResult)


def _lang() -> Any:
    return Field(default="en", description="Language code of the answer, e.g. 'en', 'de', 'fr', 'zh'.")


class ReadTextOptions(Options):
    """read_text has no options: PaliGemma's `ocr` prompt takes no language and reads any script."""


class AnswerOptions(Options):
    question: str = Field(description="One short question about the image, in plain words, one line.")
    lang: str = _lang()


class CaptionOptions(Options):
    detail: Literal["short", "long"] = Field(
        default="short", description="'short' for a one-line caption, 'long' for a description."
    )
    lang: str = _lang()


class QuestionOptions(Options):
    answer: str = Field(description="The answer the generated question should have.")
    lang: str = _lang()


class LocateOptions(Options):
    objects: list[str] = Field(
        description="Names of the kinds of things to find, e.g. ['cat', 'traffic light']; 1 to 20 short names.",
        min_length=1,
        max_length=prompts.MAX_OBJECTS,
    )


class SegmentOptions(Options):
    objects: list[str] = Field(
        description="Names of the kinds of things to outline, e.g. ['cat']; 1 to 20 short names.",
        min_length=1,
        max_length=prompts.MAX_OBJECTS,
    )
    decode_masks: bool = Field(
        default=True,
        description="Decode each mask into an outline and an area; false skips that work (boxes and mask codes only).",
    )


@dataclass(frozen=True)
class Reply:
    """The model's answer to one task prompt about one image, to be read into the task's result."""

    prompt: str
    completion: Completion
    image: LoadedImage
    client: PaliGemmaClient

    @property
    def text(self) -> str:
        return self.completion.text

    def common(self) -> dict[str, Any]:
        """The fields every result has (those of ToolResult)."""
        return {
            "image_width": self.image.width,
            "image_height": self.image.height,
            "prompt": self.prompt,
            "model": self.completion.model,
            "raw_text": self.completion.text,
            "truncated": self.completion.truncated,
        }


@dataclass(frozen=True)
class ChatEntry:
    """One entry of the chat app's task menu."""

    label: str
    placeholder: str = ""  # an example of the text a person types for the task's text option
    fixed: Mapping[str, Any] = field(default_factory=dict)  # options this entry sets, e.g. detail='long'


@dataclass(frozen=True)
class Task(Generic[OptionsT, ResultT]):
    """One PaliGemma task, and everything each surface needs to offer it."""

    name: str  # the Python function, the agent tool and the MCP tool
    options: type[OptionsT]
    result: type[ResultT]
    prompt: Callable[[OptionsT], str]  # raises PromptError for values that would break the prompt
    read: Callable[[OptionsT, Reply], ResultT]  # the typed result of a reply
    max_tokens: Mapping[str, int]  # per prompt prefix the task writes
    description: str  # what an LLM is told: what the tool does, and when to use it
    verb: str  # `paligemma VERB PATHS...`, the batch command
    summary: str  # the batch command's help, "... every image"
    chat: tuple[ChatEntry, ...]  # its entries in the chat app's task menu
    answer_field: str | None = None  # the result field with the answer in words; None: located objects

    def __post_init__(self) -> None:
        problems = _entry_problems(self)
        if problems:
            raise ValueError(f"task {self.name!r} cannot be offered on every surface: " + "; ".join(problems))

    def given(self, **values: Any) -> OptionsT:
        """Options as Python code or a command line gives them: not validated here, the prompt builder checks them."""
        return self.options.model_construct(**values)

    def request(self, options: OptionsT) -> tuple[str, int]:
        """The prompt for `options`, and its token budget."""
        prompt = self.prompt(options)
        word = prompt.split(" ", 1)[0]
        if word not in self.max_tokens:  # a registry entry's mistake, named for whoever wrote it
            raise ValueError(
                f"task {self.name!r} wrote a prompt starting {word!r}, to which its max_tokens gives no budget"
            )
        return prompt, self.max_tokens[word]


# --- what every entry must be, checked when it is defined --------------------------------------
# Names the surfaces use beside a task's options, which an option may not take: the typed
# functions' and agent tools' other arguments, and the batch command's other flags.
RESERVED_OPTION_NAMES = frozenset(
    {"image", "client", "extra_body", "mask_coco_rle"}
    | {"paths", "output", "coco", "annotate_dir", "concurrency", "base_url", "model", "api_key", "timeout"}
    | {"no_progress", "progress", "help", "command", "handler", "task"}  # a boolean `progress` adds --no-progress
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a Python function's, an agent tool's and an MCP tool's
_VERB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a command line's
_PREFIX = re.compile(r"\S+")  # the first word of a prompt


def _entry_problems(task: Task[Any, Any]) -> list[str]:
    problems = []
    if not _NAME.fullmatch(task.name):
        problems.append("its name must be letters, digits and '_', not starting with a digit (a function's name)")
    if not _VERB.fullmatch(task.verb):
        problems.append("its verb must be letters, digits, '-' and '_' (a command's name, no spaces)")
    fields = task.options.model_fields
    if clashes := sorted(set(fields) & RESERVED_OPTION_NAMES):
        problems.append(f"option names {clashes} are taken by every surface's own arguments: rename them")
    for name, info in fields.items():
        if not info.is_required() and not _json_ready(info.get_default(call_default_factory=True)):
            problems.append(f"option {name!r}'s default is not JSON (agent schemas state it)")
    if not task.max_tokens or any(not _PREFIX.fullmatch(p) or n < 1 for p, n in task.max_tokens.items()):
        problems.append("max_tokens must give each prompt word the task writes a budget of at least 1 token")
    for entry in task.chat:
        if unknown := sorted(set(entry.fixed) - set(fields)):
            problems.append(f"chat entry {entry.label!r} fixes options it does not have: {unknown}")
    if task.answer_field is not None and task.answer_field not in task.result.model_fields:
        problems.append(f"answer_field {task.answer_field!r} is no field of {task.result.__name__}")
    return problems


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def registry(*tasks: Task[Any, Any]) -> tuple[Task[Any, Any], ...]:
    """`tasks` as a registry, refused when two share what names them on a surface."""
    # The command line offers each task by its verb and its name: all of them must differ.
    seen = [word for task in tasks for word in dict.fromkeys((task.verb, task.name))]
    if twice := sorted({v for v in seen if seen.count(v) > 1}):
        raise ValueError(f"two tasks share the name or verb {twice}: each surface offers a task by it")
    labels = [entry.label for task in tasks for entry in task.chat]
    if twice := sorted({label for label in labels if labels.count(label) > 1}):
        raise ValueError(f"two chat entries share the label {twice}: the chat app's menu offers them by it")
    return tasks


def prompt_budgets(tasks: Sequence[Task[Any, Any]]) -> Mapping[str, int]:
    """The token budget of every prompt word the tasks write: for a prompt typed whole (and for
    training), where no task is named, the largest of the tasks that write the word, so that no
    task's answer is cut short."""
    budgets: dict[str, int] = {}
    for task in tasks:
        for prefix, tokens in task.max_tokens.items():
            budgets[prefix] = max(tokens, budgets.get(prefix, 0))
    return MappingProxyType(budgets)


# --- reading answers -------------------------------------------------------------------------
def _read_text(options: ReadTextOptions, reply: Reply) -> TextResult:
    return TextResult(**reply.common(), text=reply.text.strip())


def _read_answer(options: AnswerOptions, reply: Reply) -> AnswerResult:
    asked = reply.prompt.split(" ", 2)[2]  # the question as checked and sent
    return AnswerResult(**reply.common(), question=asked, lang=options.lang, answer=reply.text.strip())


def _read_caption(options: CaptionOptions, reply: Reply) -> CaptionResult:
    return CaptionResult(**reply.common(), detail=options.detail, lang=options.lang, caption=reply.text.strip())


def _read_question(options: QuestionOptions, reply: Reply) -> QuestionResult:
    given = reply.prompt.split(" ", 2)[2]
    return QuestionResult(**reply.common(), answer=given, lang=options.lang, question=reply.text.strip())


def _read_detections(options: LocateOptions, reply: Reply) -> Detections:
    image = reply.image
    parsed = parsing.parse_detections(
        reply.text, width=image.width, height=image.height, objects=prompts.split_objects(options.objects)
    )
    return Detections(**reply.common(), objects=parsed.objects, issues=parsed.issues)


def _read_segments(options: SegmentOptions, reply: Reply) -> Segments:
    image, client = reply.image, reply.client
    decoder = client.vae_decoder(reply.completion.model) if options.decode_masks else None
    note = None
    if options.decode_masks and decoder is None and client.vae_decoder_error is not None:
        note = f"masks not decoded: {client.vae_decoder_error}"
    parsed = parsing.parse_segments(
        reply.text,
        width=image.width,
        height=image.height,
        decoder=decoder,
        missing_decoder_note=note,
        objects=prompts.split_objects(options.objects),
    )
    return Segments(**reply.common(), objects=parsed.objects, issues=parsed.issues, masks_decoded=parsed.masks_decoded)


# --- the registry ----------------------------------------------------------------------------
COORDINATES = (
    "Coordinates are pixels of the original image (as a person sees it, EXIF rotation applied): "
    "origin at the top-left corner, x to the right, y down; boxes are x_min, y_min, x_max, y_max. "
    "The result gives image_width and image_height."
)

READ_TEXT = Task(
    name="read_text",
    options=ReadTextOptions,
    result=TextResult,
    prompt=lambda o: prompts.ocr(),
    read=_read_text,
    max_tokens={"ocr": 256},
    description="Read the text written in an image (signs, documents, screenshots, labels) with PaliGemma OCR. "
    "Use it when the user needs the words in the image.",
    verb="ocr",
    summary="read the text in every image",
    chat=(ChatEntry("Read text"),),
    answer_field="text",
)
ANSWER_VISUAL_QUESTION = Task(
    name="answer_visual_question",
    options=AnswerOptions,
    result=AnswerResult,
    prompt=lambda o: prompts.answer(o.question, o.lang),
    read=_read_answer,
    max_tokens={"answer": 128},
    description="Answer a short factual question about an image (what, how many, which colour, yes/no). "
    "Answers are short. For where things are, use locate_objects instead.",
    verb="ask",
    summary="answer one question about every image",
    chat=(ChatEntry("Ask a question", "How many cats are there?"),),
    answer_field="answer",
)
CAPTION_IMAGE = Task(
    name="caption_image",
    options=CaptionOptions,
    result=CaptionResult,
    prompt=lambda o: prompts.caption(o.detail, o.lang),
    read=_read_caption,
    max_tokens={"caption": 128, "describe": 256},
    description="Describe an image: a one-line caption (detail 'short') or a longer description ('long'). "
    "Use it first when you do not know what the image shows.",
    verb="caption",
    summary="caption every image",
    chat=(ChatEntry("Caption", fixed={"detail": "short"}), ChatEntry("Describe", fixed={"detail": "long"})),
    answer_field="caption",
)
GENERATE_QUESTION = Task(
    name="generate_question",
    options=QuestionOptions,
    result=QuestionResult,
    prompt=lambda o: prompts.question(o.answer, o.lang),
    read=_read_question,
    max_tokens={"question": 128},
    description="Generate a question about the image whose answer is the given text (for quizzes and data).",
    verb="question",
    summary="write a question about every image whose answer is the one given",
    chat=(ChatEntry("Generate a question", "red"),),
    answer_field="question",
)
LOCATE_OBJECTS = Task(
    name="locate_objects",
    options=LocateOptions,
    result=Detections,
    prompt=lambda o: prompts.detect(prompts.split_objects(o.objects)),
    read=_read_detections,
    max_tokens={"detect": 256},
    description="Find every instance of the named kinds of objects and return a labelled box for each. "
    f"Use it for where/how many/which is left of. {COORDINATES} An empty list means none found.",
    verb="detect",
    summary="locate objects in every image (boxes)",
    chat=(ChatEntry("Detect objects", "cat ; dog"),),
)
SEGMENT_OBJECTS = Task(
    name="segment_objects",
    options=SegmentOptions,
    result=Segments,
    prompt=lambda o: prompts.segment(prompts.split_objects(o.objects)),
    read=_read_segments,
    max_tokens={"segment": 640},
    description="Outline the named objects precisely: a box, the outline polygon (GeoJSON-style rings in pixels, "
    f"simplified to 1 px) and the area in pixels of each. Slower than locate_objects. {COORDINATES}",
    verb="segment",
    summary="outline objects in every image (boxes, masks)",
    chat=(ChatEntry("Segment objects", "cat ; dog"),),
)

TASKS: tuple[Task[Any, Any], ...] = registry(
    READ_TEXT,
    ANSWER_VISUAL_QUESTION,
    CAPTION_IMAGE,
    GENERATE_QUESTION,
    LOCATE_OBJECTS,
    SEGMENT_OBJECTS,
)
TASKS_BY_NAME: Mapping[str, Task[Any, Any]] = MappingProxyType({task.name: task for task in TASKS})
MAX_TOKENS: Mapping[str, int] = prompt_budgets(TASKS)
OTHER_PROMPT_MAX_TOKENS = 256  # for a prompt whose first word no task writes


def prompt_budget(prompt: str) -> int:
    """The token budget of a prompt typed whole: its first word's (`MAX_TOKENS`), else 256."""
    return MAX_TOKENS.get(prompt.split(" ", 1)[0], OTHER_PROMPT_MAX_TOKENS)
