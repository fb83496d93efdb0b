"""The compact JSON an LLM gets back from a tool: what it needs, nothing it would pay tokens for.

Dropped from the full result: the raw model text, the model name, the location bins and
mask codes. Kept: the image size, every box (0.01 px), outlines simplified to 1 px, areas,
and what did not parse. Full masks (COCO RLE) only when asked for (`mask_coco_rle`).
"""

from __future__ import annotations

import json
from typing import Any

from tools.models import LocatedObjects, ToolResult

_DROP = {"raw_text", "model"}
_DROP_PER_OBJECT = {"loc_bins", "codes"}


def to_agent_json(result: ToolResult, *, mask_coco_rle: bool = False) -> dict[str, Any]:
    """The result as a JSON-ready dict for an LLM."""
    data = result.to_json(mask_coco_rle=mask_coco_rle)
    for key in _DROP:
        data.pop(key, None)
    if isinstance(result, LocatedObjects):  # another result's `objects` may be anything, e.g. names
        for obj in data["objects"]:
            for key in _DROP_PER_OBJECT:
                obj.pop(key, None)
    if not data.get("truncated"):
        data.pop("truncated", None)
    return data


def output_schema(result_type: type[ToolResult]) -> dict[str, Any]:
    """The JSON schema of `to_agent_json` for results of `result_type` (MCP's outputSchema)."""
    schema = result_type.model_json_schema(mode="serialization")
    _drop_properties(schema, _DROP | {"truncated"}, keep_optional={"truncated"})
    if issubclass(result_type, LocatedObjects):
        item = result_type.object_type()
        definition = schema["$defs"][item.__name__]
        _drop_properties(definition, _DROP_PER_OBJECT)
        if result_type.holds_masks():
            definition["properties"]["mask_coco_rle"] = {
                "description": "COCO uncompressed RLE of the full mask, only when masks were asked for.",
                "anyOf": [{"type": "object"}, {"type": "null"}],
            }
    if "truncated" in result_type.model_fields:
        schema["properties"]["truncated"] = {
            "type": "boolean",
            "description": "Present (true) only when the answer hit the token limit and may be cut short.",
        }
    return schema


def _drop_properties(
    schema: dict[str, Any], names: set[str], keep_optional: frozenset[str] | set[str] = frozenset()
) -> None:
    properties = schema.get("properties", {})
    for name in names:
        if name not in keep_optional:
            properties.pop(name, None)
    schema["required"] = [r for r in schema.get("required", []) if r not in names]


def dumps(data: dict[str, Any]) -> str:
    """Compact JSON text (no spaces, UTF-8 kept)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
