"""The task registry is the one list of tasks: every surface shows exactly its entries, and one more
entry (a task defined only here) appears on every surface with its options, under its names."""

from __future__ import annotations

import argparse
import inspect
import re
import typing
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image
from pydantic import Field

import tools
from clients.batch import Job
from clients.chat_turns import FREE_PROMPT, MENU, menu
from clients.cli import build_parser
from tests.tools.test_openai_tools import strict_violations
from tools import (
    MAX_TOKENS,
    TASKS,
    Box,
    ChatEntry,
    LocatedObject,
    LocatedObjects,
    Options,
    Reply,
    Segment,
    Task,
    ToolResult,
    prompts,
)
from tools.agents import TOOLS, agent_tools, openai_tools, tool_list
from tools.tasks import (
    ANSWER_VISUAL_QUESTION,
    CAPTION_IMAGE,
    GENERATE_QUESTION,
    LOCATE_OBJECTS,
    READ_TEXT,
    SEGMENT_OBJECTS,
    prompt_budgets,
    registry,
)


class CountOptions(Options):
    objects: list[str] = Field(description="What to count, e.g. ['cat'].", min_length=1, max_length=20)
    lang: str = Field(default="en", description="Language code of the answer.")


class CountResult(ToolResult):
    count: str = Field(description="How many there are, as the model wrote it.")


def _read_count(options: CountOptions, reply: Reply) -> CountResult:
    return CountResult(**reply.common(), count=reply.text.strip())


COUNT = Task(
    name="count_objects",
    options=CountOptions,
    result=CountResult,
    prompt=lambda o: prompts.answer(f"how many {' and '.join(prompts.split_objects(o.objects))} are there?", o.lang),
    read=_read_count,
    max_tokens={"answer": 16},
    description="Count the named objects in an image.",
    verb="count",
    summary="count objects in every image",
    chat=(ChatEntry("Count objects", "cat"),),
    answer_field="count",
)
WITH_COUNT = (*TASKS, COUNT)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def required(task: Task[Any, Any], fixed: Any = ()) -> list[str]:
    return [name for name, info in task.options.model_fields.items() if info.is_required() and name not in fixed]


def test_every_surface_lists_exactly_the_registry() -> None:
    names = [task.name for task in TASKS]
    assert [tool.name for tool in TOOLS] == names
    assert [(d["function"]["name"], d["function"]["description"]) for d in openai_tools()] == [
        (task.name, task.description) for task in TASKS
    ]
    assert [tool.name for tool in tool_list()] == names  # MCP
    commands = subcommands(build_parser())
    for task in TASKS:  # the batch verb, and the task's own name as an alias
        assert commands[task.verb] is commands[task.name]
    one_box = [e.label for t in TASKS for e in t.chat if len(required(t, e.fixed)) <= 1]  # the chat app's
    assert list(MENU) == [*one_box, FREE_PROMPT]
    assert set(MAX_TOKENS) == {prefix for task in TASKS for prefix in task.max_tokens}


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_entries_are_complete_and_agree_with_themselves(task: Task[Any, Any]) -> None:
    assert all(info.description for info in task.options.model_fields.values())
    if task.answer_field is not None:
        assert task.result.model_fields[task.answer_field].annotation is str
    for entry in task.chat:
        assert set(entry.fixed) <= set(task.options.model_fields)


def unique(values: list[str]) -> bool:
    return len(values) == len(set(values))


def test_names_verbs_and_labels_are_unique() -> None:
    assert unique([t.name for t in TASKS] + [t.verb for t in TASKS])
    assert unique([entry.label for task in TASKS for entry in task.chat] + [FREE_PROMPT])


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_every_prompt_the_task_writes_has_a_budget(task: Task[Any, Any]) -> None:
    fields = task.options.model_fields
    typed = {name: example(info.annotation) for name, info in fields.items() if info.is_required()}
    for entry in task.chat or (ChatEntry(task.name),):
        prompt, budget = task.request(task.given(**(typed | dict(entry.fixed))))
        assert prompt.split(" ", 1)[0] in task.max_tokens and budget > 0


def example(annotation: Any) -> Any:
    """A value a person could type for a required option of this type (any option's name)."""
    if typing.get_origin(annotation) is list:
        return ["cat"]
    return {int: 1, float: 1.0, bool: True}.get(annotation, "red")


# --- one more entry appears everywhere -----------------------------------------------------------
def test_an_extra_entry_becomes_an_agent_tool_with_a_strict_schema() -> None:
    tool = agent_tools(WITH_COUNT)[-1]
    assert (tool.name, tool.description, tool.result) == ("count_objects", COUNT.description, CountResult)
    import openai

    definition = openai.pydantic_function_tool(tool.arguments, name=tool.name, description=tool.description)
    parameters = definition["function"]["parameters"]
    assert strict_violations(parameters) == []
    assert list(parameters["properties"]) == ["image", "objects", "lang"]
    assert "null means 'en'" in parameters["properties"]["lang"]["description"]
    assert tool.options(tool.arguments.model_validate({"image": "img_1", "objects": ["cat"]})) == CountOptions(
        objects=["cat"]
    )
    assert [t.name for t in tool_list(agent_tools(WITH_COUNT))][-1] == "count_objects"  # MCP


def test_an_extra_entry_becomes_a_batch_verb_with_its_options(tmp_path: Any) -> None:
    commands = subcommands(build_parser(WITH_COUNT))
    assert commands["count"] is commands["count_objects"]
    args = build_parser(WITH_COUNT).parse_args(["count", "a.png", "--objects", "cat ; dog", "--lang", "de"])
    assert args.task is COUNT and (args.objects, args.lang, args.paths) == ("cat ; dog", "de", ["a.png"])
    job = Job(COUNT, COUNT.given(objects=[args.objects], lang=args.lang))
    assert job.prompt == "answer de how many cat and dog are there?"


def test_an_extra_entry_appears_in_the_chat_menu() -> None:
    entry = menu(WITH_COUNT)["Count objects"]
    assert (entry.task, entry.text_label, entry.placeholder, entry.uses_lang) == (
        COUNT,
        "Objects (separate with ;)",
        "cat",
        True,
    )
    options = entry.options("fr", "cat ; dog")
    assert COUNT.request(options) == ("answer fr how many cat and dog are there?", 16)


def test_batch_records_and_agent_json_come_from_the_result_model() -> None:
    from tools.agents import to_agent_json

    result = CountResult(
        image_width=4, image_height=3, prompt="answer en how many?", model="m", raw_text="2", count="2"
    )
    assert result.to_json()["count"] == "2" and result.to_json()["raw_text"] == "2"  # a batch record's result
    assert to_agent_json(result) == {"image_width": 4, "image_height": 3, "prompt": "answer en how many?", "count": "2"}


@pytest.mark.parametrize("given", ["read_text", "nothing", None])
def test_run_task_given_no_task_says_how_to_name_one(given: Any) -> None:
    import asyncio

    import tools

    with pytest.raises(tools.InvalidInputError, match=r"run_task takes a Task of tools\.tasks\.TASKS") as raised:
        tools.run_task(given, b"", None)  # type: ignore[arg-type]
    assert ("TASKS_BY_NAME['read_text']" in str(raised.value)) is (given == "read_text")
    with pytest.raises(tools.InvalidInputError, match="run_task takes a Task"):
        asyncio.run(tools.arun_task(given, b"", None))  # type: ignore[arg-type]


# --- what a new entry may hold: checked when it is defined ---------------------------------------
def entry(**changes: Any) -> Task[Any, Any]:
    fields = {
        "name": "count_objects",
        "options": CountOptions,
        "result": CountResult,
        "prompt": COUNT.prompt,
        "read": _read_count,
        "max_tokens": {"answer": 16},
        "description": "Count.",
        "verb": "count",
        "summary": "count objects in every image",
        "chat": (ChatEntry("Count objects", "cat"),),
        "answer_field": "count",
    }
    return Task(**(fields | changes))


class ReservedOptions(Options):
    objects: list[str] = Field(description="What to count.")
    model: str = Field(default="m", description="Clashes with --model and the client's model.")


class TwoRequiredOptions(Options):
    question: str = Field(description="A question.")
    choices: list[str] = Field(description="The answers to choose from.")


class FactoryOptions(Options):
    objects: list[str] = Field(default_factory=list, description="Names, none by default.")


class NotJsonOptions(Options):
    objects: list[str] = Field(description="Names.")
    size: tuple[int, int] | frozenset[int] = Field(default=frozenset({1}), description="Not JSON.")


class HelpOptions(Options):
    objects: list[str] = Field(description="Names.")
    help: str = Field(default="", description="Clashes with --help.")


class ProgressOptions(Options):
    objects: list[str] = Field(description="Names.")
    progress: bool = Field(default=True, description="--progress/--no-progress clashes with --no-progress.")


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        pytest.param({"options": ReservedOptions}, "option names ['model'] are taken", id="reserved-option"),
        pytest.param({"options": HelpOptions}, "option names ['help'] are taken", id="option-help"),
        pytest.param({"options": ProgressOptions}, "option names ['progress'] are taken", id="option-progress"),
        pytest.param({"options": NotJsonOptions}, "option 'size''s default is not JSON", id="default-not-json"),
        pytest.param({"name": "count objects"}, "its name must be", id="name-not-an-identifier"),
        pytest.param({"verb": "count objects"}, "its verb must be", id="verb-with-a-space"),
        pytest.param({"max_tokens": {}}, "max_tokens must give", id="no-budget"),
        pytest.param({"max_tokens": {"answer": 0}}, "max_tokens must give", id="zero-budget"),
        pytest.param({"chat": (ChatEntry("Count", fixed={"detail": "long"}),)}, "fixes options", id="chat-fixes"),
        pytest.param({"answer_field": "answer"}, "no field of CountResult", id="answer-field-missing"),
    ],
)
def test_an_entry_no_surface_could_offer_is_refused_when_defined(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match="cannot be offered on every surface") as refused:
        entry(**changes)
    assert says in str(refused.value)


def test_a_task_of_two_typed_values_is_on_every_surface_and_in_the_chat_menu_where_one_is_fixed() -> None:
    def prompt(o: TwoRequiredOptions) -> str:
        return prompts.answer(f"{o.question} choices: {', '.join(o.choices)}", "en")

    task = entry(
        name="choose_answer",
        verb="choose",
        options=TwoRequiredOptions,
        prompt=prompt,
        chat=(
            ChatEntry("Choose", "what colour?"),
            ChatEntry("Yes or no", "is it red?", fixed={"choices": ["yes", "no"]}),
        ),
        answer_field=None,
    )
    assert "choose_answer" in [tool.name for tool in agent_tools((task,))]
    args = build_parser((*TASKS, task)).parse_args(["choose", "a.png", "--question", "red?", "--choices", "yes ; no"])
    assert (args.question, args.choices) == ("red?", "yes ; no")
    offered = menu((task,))
    assert "Choose" not in offered  # one text box: left out of the chat app only
    yes_no = offered["Yes or no"]
    assert yes_no.text_option == "question"
    assert task.request(yes_no.options("en", "is it red?"))[0] == "answer en is it red? choices: yes, no"


def test_an_option_with_a_default_factory_is_offered_with_its_default() -> None:
    task = entry(name="name_things", verb="name-things", options=FactoryOptions, chat=())
    tool = agent_tools((task,))[0]
    assert "null means []" in tool.arguments.model_json_schema()["properties"]["objects"]["description"]
    args = build_parser((*TASKS, task)).parse_args(["name-things", "a.png"])
    assert args.objects is None  # left out: the task's default, not a required flag


@pytest.mark.parametrize(
    ("tasks", "says"),
    [
        pytest.param((COUNT, entry(verb="tally", chat=())), "share the name or verb", id="name"),
        pytest.param((COUNT, entry(name="tally", chat=())), "share the name or verb", id="verb"),
        pytest.param((COUNT, entry(name="count", verb="tally", chat=())), "share the name or verb", id="name-a-verb"),
        pytest.param((COUNT, entry(name="tally", verb="tally")), "share the label", id="chat-label"),
    ],
)
def test_a_registry_refuses_two_tasks_under_one_name(tasks: tuple[Task[Any, Any], ...], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        registry(*tasks)


def test_a_prompt_word_two_tasks_write_gets_the_larger_budget() -> None:
    """COUNT writes `answer` with 16 tokens, VQA with 128: a prompt typed whole (the chat app's free
    prompt, fine-tuning's budget) gets 128, each task still its own."""
    assert prompt_budgets(WITH_COUNT)["answer"] == MAX_TOKENS["answer"] == 128
    assert prompt_budgets((COUNT, *TASKS))["answer"] == 128  # whatever the order
    assert COUNT.request(COUNT.given(objects=["cat"]))[1] == 16


# --- a text task whose result has an `objects` field of its own ---------------------------------
class NamedCountResult(ToolResult):
    objects: tuple[str, ...] = Field(description="The names counted.")
    count: str = Field(description="How many there are, as the model wrote it.")


def test_a_result_whose_objects_are_not_located_objects_reaches_an_llm() -> None:
    from tools.agents import output_schema, to_agent_json

    result = NamedCountResult(
        image_width=4, image_height=3, prompt="count cat", model="m", raw_text="2", objects=("cat",), count="2"
    )
    data = to_agent_json(result)
    assert data["objects"] == ["cat"] and data["count"] == "2"
    jsonschema.validate(data, output_schema(NamedCountResult))


# --- a geometry task with a result model of its own --------------------------------------------
class ScoredObject(LocatedObject):
    score: float = Field(description="How sure the model is, 0..1.")


class ScoredObjects(LocatedObjects):
    objects: tuple[ScoredObject, ...] = Field(description="The objects found.")


class OutlinedThing(Segment):
    part: str = Field(default="whole", description="Which part of the thing.")


class OutlinedThings(LocatedObjects):
    objects: tuple[OutlinedThing, ...] = Field(description="The things outlined.")


def scored(width: int = 400, height: int = 300) -> ScoredObjects:
    box = Box(x_min=100, y_min=75, x_max=300, y_max=225)
    found = ScoredObject(label="cat", box=box, loc_bins=(256, 256, 767, 767), score=0.9)
    return ScoredObjects(
        image_width=width, image_height=height, prompt="find cat", model="m", raw_text="", objects=(found,)
    )


def outlined() -> OutlinedThings:
    mask = np.zeros((300, 400), dtype=bool)
    mask[100:200, 150:250] = True
    box = Box(x_min=150, y_min=100, x_max=250, y_max=200)
    thing = OutlinedThing(label="cat", box=box, loc_bins=(341, 384, 682, 640), codes=tuple(range(16)), mask=mask)
    return OutlinedThings(
        image_width=400, image_height=300, prompt="outline cat", model="m", raw_text="", objects=(thing,)
    )


def test_a_new_geometry_result_is_drawn_listed_and_sent_to_llms() -> None:
    from tools.agents import output_schema, to_agent_json

    result = scored()
    drawn = np.asarray(tools.annotate(Image.new("RGB", (400, 300), "white"), result))
    assert (drawn[150, 100:102] != 255).any(axis=-1).all()  # the box's left edge is drawn
    assert tools.object_lines(result) == ["cat at (100, 75)\u2013(300, 225) px"]
    data = to_agent_json(result)
    assert "loc_bins" not in data["objects"][0] and data["objects"][0]["score"] == 0.9
    jsonschema.validate(data, output_schema(ScoredObjects))
    assert not ScoredObjects.holds_masks()


def test_a_new_mask_result_is_blended_and_its_masks_reach_llms_on_request() -> None:
    from tools.agents import output_schema, to_agent_json

    result = outlined()
    assert result.holds_masks()
    drawn = np.asarray(tools.annotate(Image.new("RGB", (400, 300), "white"), result))
    assert (drawn[150, 200] != 255).any() and (drawn[50, 50] == 255).all()  # blended inside, not outside
    assert "mask 10,000 px²" in tools.object_lines(result)[0]
    data = to_agent_json(result, mask_coco_rle=True)
    assert data["objects"][0]["mask_coco_rle"]["size"] == [300, 400] and "codes" not in data["objects"][0]
    jsonschema.validate(data, output_schema(OutlinedThings))


def new_geometry_task(result: type[LocatedObjects], name: str, verb: str) -> Task[Any, Any]:
    return entry(name=name, verb=verb, result=result, chat=(), answer_field=None)


def test_new_geometry_tasks_get_coco_drawing_and_mask_options_on_every_surface() -> None:
    boxes = new_geometry_task(ScoredObjects, "find_scored", "find")
    outlines = new_geometry_task(OutlinedThings, "outline_things", "outline")
    commands = subcommands(build_parser((*TASKS, boxes, outlines)))
    for verb in ("find", "outline"):
        flags = {option for action in commands[verb]._actions for option in action.option_strings}
        assert {"--coco", "--annotate-dir"} <= flags
    box_tool, outline_tool = agent_tools((boxes, outlines))
    assert "mask_coco_rle" not in box_tool.arguments.model_fields
    assert "mask_coco_rle" in outline_tool.arguments.model_fields


# --- the typed functions, the models' exports ----------------------------------------------------
TYPED = [
    (tools.read_text, READ_TEXT),
    (tools.answer_visual_question, ANSWER_VISUAL_QUESTION),
    (tools.caption_image, CAPTION_IMAGE),
    (tools.generate_question, GENERATE_QUESTION),
    (tools.locate_objects, LOCATE_OBJECTS),
    (tools.segment_objects, SEGMENT_OBJECTS),
]


@pytest.mark.parametrize(("function", "task"), TYPED, ids=lambda x: getattr(x, "name", ""))
def test_typed_functions_take_every_option_with_the_registry_default(function: Any, task: Task[Any, Any]) -> None:
    for asynchronous in (False, True):
        f = getattr(tools, "a" + function.__name__) if asynchronous else function
        parameters = inspect.signature(f).parameters
        for name, info in task.options.model_fields.items():
            assert name in parameters, f"{f.__name__} does not take {name}"
            default = parameters[name].default
            assert default is inspect.Parameter.empty if info.is_required() else default == info.get_default()


def test_every_result_model_is_exported_from_tools() -> None:
    import tools.models

    public = {
        name
        for name, value in vars(tools.models).items()
        if isinstance(value, type) and issubclass(value, (ToolResult, LocatedObject)) and not name.startswith("_")
    }
    assert public <= set(tools.__all__), "clients may use only what tools exports: add it to tools/__init__.py"
    assert {task.result.__name__ for task in TASKS} <= set(tools.__all__)


class WordsOptions(Options):
    question: str = Field(description="A question.")
    max_words: int = Field(default=3, ge=1, le=20, description="Most words in the answer.")
    temperature: float = Field(default=0.0, ge=0, description="Not that it matters here.")


def test_command_line_options_have_their_types_and_limits(capsys: pytest.CaptureFixture[str]) -> None:
    task = entry(name="short_answer", verb="short", options=WordsOptions, chat=(), answer_field=None)
    parser = build_parser((*TASKS, task))
    args = parser.parse_args(["short", "a.png", "--question", "why?", "--max-words", "5", "--temperature", "0.5"])
    assert (args.max_words, args.temperature) == (5, 0.5)
    assert parser.parse_args(["short", "a.png", "--question", "why?"]).max_words == 3
    for flag, value, says in (
        ("--max-words", "50", "less than or equal to 20"),
        ("--max-words", "five", "valid integer"),
        ("--temperature", "-1", "greater than or equal to 0"),
    ):
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args(["short", "a.png", "--question", "why?", flag, value])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert f"argument {flag}: '{value}': " in error and says in error


# --- the docs' task tables list exactly the registry ---------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def table_rows(doc: str) -> dict[str, str]:
    """The rows of a doc's tables of tasks (headed `| task`, `| tool` or `| function`) by the
    name in their first cell (`name` or `name(...)`)."""
    rows: dict[str, str] = {}
    of_tasks = False
    for line in (ROOT / doc).read_text().splitlines():
        if not line.startswith("|"):
            of_tasks = False
        elif re.match(r"\| (task|tool|function) \|", line):
            of_tasks = True
        elif of_tasks and (match := re.match(r"\| `([a-z_]+)[(`]", line)):
            rows.setdefault(match[1], line)
    return rows


@pytest.mark.parametrize("doc", ["docs/tasks.md", "docs/agents.md", "docs/prompts.md"])
def test_the_docs_task_tables_list_exactly_the_registry(doc: str) -> None:
    rows = table_rows(doc)
    assert set(rows) == {task.name for task in TASKS}, f"{doc}: update its table of tasks"
    if doc == "docs/tasks.md":
        for task in TASKS:
            assert f"`{task.verb}`" in rows[task.name] and all(e.label in rows[task.name] for e in task.chat)


def test_the_readme_names_every_batch_verb() -> None:
    verbs = re.search(r"`paligemma ([a-z|-]+) PATHS\.\.\.`", (ROOT / "README.md").read_text())
    assert verbs is not None and set(verbs[1].split("|")) == {task.verb for task in TASKS}


def test_a_prompt_word_without_a_budget_is_named() -> None:
    task = entry(max_tokens={"count": 16}, chat=())  # its prompt starts with `answer`
    with pytest.raises(ValueError, match="wrote a prompt starting 'answer', to which its max_tokens gives no budget"):
        task.request(task.given(objects=["cat"]))


@pytest.mark.parametrize("verb", ["serve", "chat", "mcp", "fix-cpu-install"])
def test_a_verb_that_is_another_command_is_named(verb: str) -> None:
    with pytest.raises(ValueError, match=f"\\['{verb}'\\] is already a paligemma command; choose another verb"):
        build_parser((*TASKS, entry(name="tally", verb=verb, chat=())))
