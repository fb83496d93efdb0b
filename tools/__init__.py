"""Typed PaliGemma 2 vision tools: OCR, VQA, captions, detection, segmentation.

Importing this package starts nothing: no client, no download, no torch. The tasks are
defined once in `tools.tasks`; the tools for LLMs (schemas, dispatcher, MCP, adapters) are in
`tools.agents`, which nothing here imports.
"""

from tools.annotate import annotate
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
    error_message,
)
from tools.functions import (
    aanswer_visual_question,
    acaption_image,
    agenerate_question,
    alocate_objects,
    answer_visual_question,
    aread_text,
    arun_task,
    asegment_objects,
    caption_image,
    generate_question,
    locate_objects,
    read_text,
    run_task,
    segment_objects,
)
from tools.image_policy import ImagePolicy
from tools.image_store import ImageStore
from tools.images import EncodedImage, ImageSource, LoadedImage, data_uri, encode_for_model, load_image
from tools.models import (
    AnswerResult,
    Box,
    CaptionResult,
    Detection,
    Detections,
    LocatedObject,
    LocatedObjects,
    ParseIssue,
    QuestionResult,
    Segment,
    Segments,
    TextResult,
    ToolResult,
)
from tools.parsing import parse_detections, parse_located, parse_segments
from tools.prompts import free_prompt, split_objects
from tools.readable import object_lines, readable_answer
from tools.tasks import MAX_TOKENS, TASKS, TASKS_BY_NAME, ChatEntry, Options, Reply, Task, prompt_budget
from tools.vae_checkpoint import default_cache_dir

__all__ = [
    "MAX_TOKENS",
    "TASKS",
    "TASKS_BY_NAME",
    "AnswerResult",
    "Box",
    "CaptionResult",
    "ChatEntry",
    "CheckpointError",
    "Completion",
    "Detection",
    "Detections",
    "EncodedImage",
    "EndpointError",
    "EndpointRequestError",
    "EndpointTimeoutError",
    "EndpointUnavailableError",
    "ImageError",
    "ImagePolicy",
    "ImageSource",
    "ImageStore",
    "InvalidInputError",
    "LoadedImage",
    "LocatedObject",
    "LocatedObjects",
    "Options",
    "OutputParseError",
    "PaliGemmaClient",
    "PaliGemmaError",
    "ParseIssue",
    "PromptError",
    "QuestionResult",
    "Reply",
    "Segment",
    "Segments",
    "Task",
    "TextResult",
    "ToolResult",
    "aanswer_visual_question",
    "acaption_image",
    "agenerate_question",
    "alocate_objects",
    "annotate",
    "answer_visual_question",
    "aread_text",
    "arun_task",
    "asegment_objects",
    "caption_image",
    "data_uri",
    "default_cache_dir",
    "encode_for_model",
    "error_message",
    "free_prompt",
    "generate_question",
    "load_image",
    "locate_objects",
    "object_lines",
    "parse_detections",
    "parse_located",
    "parse_segments",
    "prompt_budget",
    "read_text",
    "readable_answer",
    "run_task",
    "segment_objects",
    "split_objects",
]
