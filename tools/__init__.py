"""Typed PaliGemma 2 vision tools for agents: OCR, VQA, captions, detection, segmentation.

Importing this package starts nothing: no client, no download, no torch.
"""

from tools.client import Completion, PaliGemmaClient
from tools.errors import (
    CheckpointError,
    EndpointError,
    EndpointRequestError,
    EndpointTimeoutError,
    EndpointUnavailableError,
    ImageError,
    InvalidInputError,
    OutputParseError,
    PaliGemmaError,
    PromptError,
)
from tools.functions import (
    aanswer_visual_question,
    acaption_image,
    agenerate_question,
    alocate_objects,
    answer_visual_question,
    aread_text,
    asegment_objects,
    caption_image,
    generate_question,
    locate_objects,
    read_text,
    segment_objects,
)
from tools.image_policy import ImagePolicy
from tools.images import LoadedImage, load_image
from tools.models import (
    AnswerResult,
    Box,
    CaptionResult,
    Detection,
    Detections,
    ParseIssue,
    QuestionResult,
    Segment,
    Segments,
    TextResult,
    ToolResult,
)
from tools.parsing import parse_detections, parse_segments

__all__ = [
    "AnswerResult",
    "Box",
    "CaptionResult",
    "CheckpointError",
    "Completion",
    "Detection",
    "Detections",
    "EndpointError",
    "EndpointRequestError",
    "EndpointTimeoutError",
    "EndpointUnavailableError",
    "ImageError",
    "ImagePolicy",
    "InvalidInputError",
    "LoadedImage",
    "OutputParseError",
    "PaliGemmaClient",
    "PaliGemmaError",
    "ParseIssue",
    "PromptError",
    "QuestionResult",
    "Segment",
    "Segments",
    "TextResult",
    "ToolResult",
    "aanswer_visual_question",
    "acaption_image",
    "agenerate_question",
    "alocate_objects",
    "answer_visual_question",
    "aread_text",
    "asegment_objects",
    "caption_image",
    "generate_question",
    "load_image",
    "locate_objects",
    "parse_detections",
    "parse_segments",
    "read_text",
    "segment_objects",
]
