"""OpenAI tool definitions: strict-mode conformant, and exactly what the dispatcher accepts."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.agents import TOOLS, TOOLS_BY_NAME, openai_tools
from tools.agents.dispatch import _prepare
from tools.image_store import ImageStore

# OpenAI's strict mode accepts this subset of JSON Schema (structured-outputs guide, "Supported schemas").
ALLOWED_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const",
    "description", "title", "$defs", "$ref", "pattern", "format", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems",
}  # fmt: skip


def strict_violations(schema: Any, path: str = "$") -> list[str]:
    """Every place where `schema` breaks OpenAI's strict-mode rules."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return [f"{path}: not an object"]
    for keyword in schema:
        if keyword not in ALLOWED_KEYWORDS:
            problems.append(f"{path}: keyword {keyword!r} is not supported in strict mode")
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            problems.append(f"{path}: objects must set additionalProperties: false")
        if sorted(schema.get("required", [])) != sorted(schema.get("properties", {})):
            problems.append(f"{path}: every property must be required")
    for key, sub in schema.get("properties", {}).items():
        problems += strict_violations(sub, f"{path}.{key}")
    for key in ("items",):
        if key in schema:
            problems += strict_violations(schema[key], f"{path}.{key}")
    for i, sub in enumerate(schema.get("anyOf", [])):
        problems += strict_violations(sub, f"{path}.anyOf[{i}]")
    for key, sub in schema.get("$defs", {}).items():
        problems += strict_violations(sub, f"{path}.$defs.{key}")
    return problems


def parameters(tool: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = (tool.get("function") or tool)["parameters"]
    return schema


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_every_definition_passes_strict_mode(api: str) -> None:
    definitions = openai_tools(api)  # type: ignore[arg-type]
    assert [(d.get("function") or d)["name"] for d in definitions] == [spec.name for spec in TOOLS]
    for definition in definitions:
        body = definition.get("function") or definition
        assert body["strict"] is True
        assert body["description"] and len(body["description"]) < 1024
        assert strict_violations(body["parameters"]) == [], body["name"]
        for name, prop in body["parameters"]["properties"].items():
            assert prop.get("description"), f"{body['name']}.{name} has no description"


def test_shapes_of_the_two_apis() -> None:
    chat, responses = openai_tools("chat")[0], openai_tools("responses")[0]
    assert chat["type"] == "function" and set(chat["function"]) >= {"name", "description", "parameters", "strict"}
    assert responses["type"] == "function" and set(responses) >= {"name", "description", "parameters", "strict"}


def test_coordinate_contract_is_told_to_the_llm() -> None:
    for name in ("locate_objects", "segment_objects"):
        description = TOOLS_BY_NAME[name].description
        assert "top-left" in description and "x_min, y_min, x_max, y_max" in description and "pixels" in description


def test_image_handles_restrict_the_image_argument() -> None:
    for tool in openai_tools(image_handles=["img_1", "img_2"]):
        image = parameters(tool)["properties"]["image"]
        assert image["enum"] == ["img_1", "img_2"]
        assert strict_violations(parameters(tool)) == []


def accepted_by_dispatcher(name: str, arguments: Any) -> bool:
    """Whether the dispatcher gets past argument validation (the image itself is checked later)."""
    images = ImageStore()
    outcome = _prepare(name, json.dumps(arguments), images, images.policy, False)
    return not (isinstance(outcome, str) and outcome.startswith(("invalid arguments", "the arguments are not")))


def accepted_by_schema(name: str, arguments: Any) -> bool:
    tool = next(t for t in openai_tools() if t["function"]["name"] == name)
    try:
        jsonschema.validate(arguments, parameters(tool))
    except jsonschema.ValidationError:
        return False
    return True


CASES = [
    pytest.param("locate_objects", {"image": "img_1", "objects": ["cat"]}, id="valid"),
    pytest.param("locate_objects", {"image": "img_1", "objects": []}, id="empty-list"),
    pytest.param("locate_objects", {"image": "img_1", "objects": ["x"] * 21}, id="too-many"),
    pytest.param("locate_objects", {"image": "img_1", "objects": "cat"}, id="string-not-list"),
    pytest.param("locate_objects", {"image": "img_1", "objects": ["cat"], "extra": 1}, id="extra-key"),
    pytest.param("locate_objects", {"objects": ["cat"]}, id="missing-image"),
    pytest.param("locate_objects", {"image": None, "objects": ["cat"]}, id="null-image"),
    pytest.param("locate_objects", {"image": 3, "objects": ["cat"]}, id="number-image"),
    pytest.param("caption_image", {"image": "img_1", "detail": "long", "lang": "de"}, id="caption-valid"),
    pytest.param("caption_image", {"image": "img_1", "detail": None, "lang": None}, id="caption-nulls"),
    pytest.param("caption_image", {"image": "img_1", "detail": "LONG", "lang": None}, id="caption-bad-enum"),
    pytest.param("caption_image", {"image": "img_1", "detail": "short", "lang": 5}, id="caption-number-lang"),
    pytest.param(
        "segment_objects",
        {"image": "img_1", "objects": ["a"], "decode_masks": None, "mask_coco_rle": True},
        id="seg-valid",
    ),
    pytest.param(
        "segment_objects",
        {"image": "img_1", "objects": ["a"], "decode_masks": None, "mask_coco_rle": "true"},
        id="seg-str-bool",
    ),
    pytest.param(
        "segment_objects",
        {"image": "img_1", "objects": ["a"], "decode_masks": 0, "mask_coco_rle": None},
        id="seg-number-bool",
    ),
    pytest.param("answer_visual_question", {"image": "img_1", "question": "why?", "lang": None}, id="vqa-valid"),
    pytest.param("answer_visual_question", {"image": "img_1", "question": ["why?"], "lang": None}, id="vqa-list"),
    pytest.param("read_text", {"image": "img_1"}, id="ocr-valid"),
    pytest.param("read_text", [], id="not-an-object"),
]


@pytest.mark.parametrize(("name", "arguments"), CASES)
def test_dispatcher_accepts_exactly_what_the_schema_allows(name: str, arguments: Any) -> None:
    assert accepted_by_dispatcher(name, arguments) == accepted_by_schema(name, arguments)


def test_the_one_documented_leniency_omitted_nullable_arguments() -> None:
    """LLMs without strict mode leave optional arguments out; the dispatcher reads them as null."""
    arguments = {"image": "img_1"}
    assert not accepted_by_schema("caption_image", arguments)
    assert accepted_by_dispatcher("caption_image", arguments)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["img_1", "cat", "", "long", "en"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["image", "objects", "x"]), inner, max_size=3)
    ),
    max_leaves=6,
)
argument_objects = st.fixed_dictionaries(
    {},
    optional={
        "image": json_values,
        "objects": json_values | st.lists(st.sampled_from(["cat", "dog"]), max_size=3),
        "detail": st.sampled_from(["short", "long", "huge", None]),
        "lang": st.sampled_from(["en", None, 3]),
        "mask_coco_rle": st.sampled_from([True, False, None, "yes"]),
        "decode_masks": st.sampled_from([True, False, None, 1]),
        "question": json_values,
        "answer": json_values,
        "unexpected": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from([spec.name for spec in TOOLS]), arguments=argument_objects)
def test_dispatcher_and_schema_agree_on_generated_arguments(name: str, arguments: dict[str, Any]) -> None:
    spec = TOOLS_BY_NAME[name]
    nullable = {k for k, f in spec.arguments.model_fields.items() if not f.is_required()}
    complete = all(k in arguments for k in nullable)  # the leniency above aside
    if complete:
        assert accepted_by_dispatcher(name, arguments) == accepted_by_schema(name, arguments)
