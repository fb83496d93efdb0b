"""Typed PaliGemma 2 vision tools for agents: OCR, VQA, captions, detection, segmentation.

Importing this package starts nothing: no client, no download, no torch.
"""

from tools.client import Completion, PaliGemmaClient
from tools.dispatch import Outcome, ToolCallOutput, arun_tool_call, run_tool_call
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
from tools.image_store import ImageStore
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
from tools.openai_tools import openai_tools
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
    "ImageStore",
    "InvalidInputError",
    "LoadedImage",
    "Outcome",
    "OutputParseError",
    "PaliGemmaClient",
    "PaliGemmaError",
    "ParseIssue",
    "PromptError",
    "QuestionResult",
    "Segment",
    "Segments",
    "TextResult",
    "ToolCallOutput",
    "ToolResult",
    "aanswer_visual_question",
    "acaption_image",
    "agenerate_question",
    "alocate_objects",
    "answer_visual_question",
    "aread_text",
    "arun_tool_call",
    "asegment_objects",
    "caption_image",
    "generate_question",
    "load_image",
    "locate_objects",
    "openai_tools",
    "parse_detections",
    "parse_segments",
    "read_text",
    "run_tool_call",
    "segment_objects",
]
