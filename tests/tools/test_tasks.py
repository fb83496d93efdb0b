"""The task registry is the one list of tasks: every surface shows exactly its entries, and one more
entry (a task defined only here) appears on every surface with its options, under its names."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import Field

from clients.batch import Job
from clients.chat_turns import FREE_PROMPT, MENU, menu
from clients.cli import build_parser
from tests.tools.test_openai_tools import strict_violations
from tools import MAX_TOKENS, TASKS, ChatEntry, Options, Reply, Task, ToolResult, prompts
from tools.agents import TOOLS, agent_tools, openai_tools, tool_list


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
    assert list(MENU) == [entry.label for task in TASKS for entry in task.chat] + [FREE_PROMPT]
    assert set(MAX_TOKENS) == {prefix for task in TASKS for prefix in task.max_tokens}


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_entries_are_complete_and_agree_with_themselves(task: Task[Any, Any]) -> None:
    assert all(info.description for info in task.options.model_fields.values())
    required = [name for name, info in task.options.model_fields.items() if info.is_required()]
    assert len(required) <= 1, "the chat app has one text box: at most one option without a default"
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
    values: dict[str, Any] = {"question": "what is it?", "answer": "red", "objects": ["cat"]}
    for entry in task.chat:
        fields = task.options.model_fields
        given = {k: v for k, v in values.items() if k in fields} | dict(entry.fixed)
        prompt, budget = task.request(task.given(**given))
        assert prompt.split(" ", 1)[0] in task.max_tokens and budget > 0


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
