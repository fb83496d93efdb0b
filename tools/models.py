"""Typed results of the tools: frozen pydantic models, JSON an LLM can read.

Coordinate contract (docs/coordinates.md): every box and outline is in pixels of the
ORIGINAL image after EXIF orientation (what a person sees), origin at the top-left
corner, x to the right, y down. Boxes are `x_min, y_min, x_max, y_max` floats; pixel
(col, row) covers the square [col, col+1] x [row, row+1]. Every result states the image's
`image_width` and `image_height`, so normalized forms (divide by them) are derived, never
stored. Masks stay out of JSON; their outlines and areas are in it.
"""

from __future__ import annotations

import typing
from functools import cached_property
from typing import Any, Literal

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer
from pydantic.json_schema import SkipJsonSchema

from tools import geometry, masks
from tools.vae_decoder import CODEBOOK_SIZE, MASK_SIZE, NUM_CODES

OUTLINE_TOLERANCE_PX = 1.0  # outlines in JSON are simplified to this; `.outline` is exact


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Box(_Frozen):
    """An axis-aligned box in pixels of the original image (origin top-left, y down)."""

    x_min: float = Field(description="Left edge, in pixels from the image's left side.")
    y_min: float = Field(description="Top edge, in pixels from the image's top.")
    x_max: float = Field(description="Right edge, in pixels from the image's left side.")
    y_max: float = Field(description="Bottom edge, in pixels from the image's top.")

    @field_serializer("x_min", "y_min", "x_max", "y_max")
    def _hundredths(self, value: float) -> float:
        return round(value, 2)  # JSON: 0.01 px is finer than any model's bins; attributes stay exact

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)

    @property
    def coco_xywh(self) -> tuple[float, float, float, float]:
        """COCO's `[x, y, width, height]` form."""
        return (self.x_min, self.y_min, self.width, self.height)

    def normalized_xyxy(self, *, image_width: int, image_height: int) -> tuple[float, float, float, float]:
        """The box as fractions of the image's width and height, in [0, 1]."""
        return (
            self.x_min / image_width,
            self.y_min / image_height,
            self.x_max / image_width,
            self.y_max / image_height,
        )

    def to_polygon(self) -> shapely.Polygon:
        return shapely.box(self.x_min, self.y_min, self.x_max, self.y_max)


class LocatedObject(_Frozen):
    """One object PaliGemma located: what every result's objects have (drawn, listed, written as COCO)."""

    label: str = Field(description="The object's name as the model wrote it.")
    box: Box = Field(description="Where it is, in pixels of the original image.")
    loc_bins: tuple[int, int, int, int] = Field(
        description="The model's four <locNNNN> values (0..1023) in its own order: y_min, x_min, y_max, x_max."
    )


class Detection(LocatedObject):
    """One object PaliGemma located."""


class Segment(LocatedObject):
    """One object PaliGemma outlined: its box, mask codes and (when decoded) its mask."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    codes: tuple[int, ...] = Field(
        description=(
            f"The {NUM_CODES} <segNNN> codes (0..{CODEBOOK_SIZE - 1}) the VQ-VAE decoder turns into a "
            f"{MASK_SIZE}x{MASK_SIZE} mask."
        ),
        min_length=NUM_CODES,
        max_length=NUM_CODES,
    )
    mask: SkipJsonSchema[np.ndarray[Any, np.dtype[np.bool_]] | None] = Field(
        default=None,
        exclude=True,
        repr=False,
        description="Boolean mask the size of the image (height, width); None when not decoded.",
    )

    @computed_field(  # type: ignore[prop-decorator]
        description="Mask area in pixels; null when the mask was not decoded."
    )
    @cached_property
    def area_px(self) -> int | None:
        return None if self.mask is None else masks.mask_area(self.mask)

    @cached_property
    def outline(self) -> shapely.Polygon | shapely.MultiPolygon | None:
        """The mask's exact pixel-edge outline (holes and several parts kept), or None."""
        return None if self.mask is None else masks.mask_outline(self.mask)

    @computed_field(  # type: ignore[prop-decorator]
        description=(
            "The mask's outline as GeoJSON-style MultiPolygon coordinates in pixels: a list of polygons, "
            "each a list of rings (outer ring first, then holes), each a list of [x, y] points. "
            f"Simplified to {OUTLINE_TOLERANCE_PX:g} px. null when the mask was not decoded."
        )
    )
    @cached_property
    def outline_xy(self) -> list[list[list[tuple[float, float]]]] | None:
        if self.outline is None:
            return None
        return geometry.polygon_rings(self.outline.simplify(OUTLINE_TOLERANCE_PX, preserve_topology=True))

    def coco_rle(self) -> dict[str, Any] | None:
        """COCO's uncompressed RLE of the mask (`{"size": [h, w], "counts": [...]}`), or None."""
        return None if self.mask is None else masks.mask_to_coco_rle(self.mask)


class ParseIssue(_Frozen):
    """A part of the model's answer that did not parse, and why."""

    text: str = Field(description="The piece of the raw answer concerned.")
    reason: str = Field(description="Why it was not turned into a result.")


class ToolResult(_Frozen):
    """What every tool returns besides its answer."""

    image_width: int = Field(description="Width in pixels of the original image, after EXIF orientation.")
    image_height: int = Field(description="Height in pixels of the original image, after EXIF orientation.")
    prompt: str = Field(description="The PaliGemma prompt that was sent.")
    model: str = Field(description="The model that answered.")
    raw_text: str = Field(description="The model's answer exactly as received.")
    truncated: bool = Field(
        default=False, description="True when the answer hit the token limit, so its end may be missing."
    )

    def to_json(self, *, mask_coco_rle: bool = False) -> dict[str, Any]:
        """The result as JSON-ready data; with `mask_coco_rle`, each decoded mask too (`mask_coco_rle` per object)."""
        return self.model_dump(mode="json")


class TextResult(ToolResult):
    """Text read from the image (prompt `ocr`: PaliGemma reads any script and takes no language)."""

    text: str = Field(description="The text in the image, as PaliGemma read it.")


class AnswerResult(ToolResult):
    """An answer to a question about the image (prompt `answer {lang} {question}`)."""

    question: str = Field(description="The question asked.")
    lang: str = Field(description="The language code of question and answer.")
    answer: str = Field(description="PaliGemma's answer.")


class CaptionResult(ToolResult):
    """A caption (`caption {lang}`) or a longer description (`describe {lang}`)."""

    detail: Literal["short", "long"] = Field(description="short: one-line caption; long: a description.")
    lang: str = Field(description="The language code of the caption.")
    caption: str = Field(description="The caption or description.")


class QuestionResult(ToolResult):
    """A question whose answer is given (prompt `question {lang} {answer}`)."""

    answer: str = Field(description="The answer the question should have.")
    lang: str = Field(description="The language code.")
    question: str = Field(description="The question PaliGemma generated.")


class LocatedObjects(ToolResult):
    """A result that is objects in the image: every surface draws it, lists it and writes it as COCO.

    A task whose result subclasses this (its `objects` of a LocatedObject subclass, a Segment
    subclass when they carry masks) gets all of that without another edit.
    """

    objects: tuple[LocatedObject, ...] = Field(description="The objects found, in the model's order.")
    issues: tuple[ParseIssue, ...] = Field(
        default=(), description="Parts of the answer that did not parse (empty when all did)."
    )

    @classmethod
    def object_type(cls) -> type[LocatedObject]:
        """The type of this result's objects (from its `objects` annotation: `tuple[T, ...]`)."""
        annotation = cls.model_fields["objects"].annotation
        (item, _ellipsis) = typing.get_args(annotation)
        if not (isinstance(item, type) and issubclass(item, LocatedObject)):
            raise TypeError(f"{cls.__name__}.objects must be tuple[<a LocatedObject subclass>, ...], got {annotation}")
        return item

    @classmethod
    def holds_masks(cls) -> bool:
        """Whether the objects carry masks (Segment and its subclasses)."""
        return issubclass(cls.object_type(), Segment)

    def to_json(self, *, mask_coco_rle: bool = False) -> dict[str, Any]:
        data = super().to_json()
        if mask_coco_rle and self.holds_masks():
            for obj, located in zip(data["objects"], self.objects, strict=True):
                assert isinstance(located, Segment)
                obj["mask_coco_rle"] = located.coco_rle()
        return data


class Detections(LocatedObjects):
    """Objects located in the image (prompt `detect a ; b`)."""

    objects: tuple[Detection, ...] = Field(description="The objects found, in the model's order.")


class Segments(LocatedObjects):
    """Objects outlined in the image (prompt `segment a ; b`)."""

    objects: tuple[Segment, ...] = Field(description="The objects outlined, in the model's order.")
    issues: tuple[ParseIssue, ...] = Field(
        default=(), description="Parts of the answer that did not parse, or why masks are missing."
    )
    masks_decoded: bool = Field(
        description="True when the masks were decoded; False when not asked for or no VQ-VAE checkpoint was found."
    )
