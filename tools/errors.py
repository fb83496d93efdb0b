"""The errors the tools raise. Each message says what was wrong and what to do about it.

PaliGemmaError
├── InvalidInputError          the caller's input cannot be used
│   ├── ImageError             unreadable, too large, unsafe source, not an image
│   └── PromptError            object names, questions or languages that would break the prompt
├── EndpointError              the PaliGemma endpoint did not give an answer
│   ├── EndpointUnavailableError   cannot connect, or it answered 5xx/429 after retries
│   ├── EndpointTimeoutError       no answer in time
│   └── EndpointRequestError       it refused the request (4xx: wrong model name, bad image...)
├── OutputParseError           the model's answer cannot be read at all
└── CheckpointError            the VQ-VAE mask decoder checkpoint is missing or damaged

`error_message` is what a person or an LLM is told about any error, ours or a bug.
"""

from __future__ import annotations


class PaliGemmaError(Exception):
    """Base of every error the tools raise on purpose."""


class InvalidInputError(PaliGemmaError, ValueError):
    """The caller's input cannot be used as given."""


class ImageError(InvalidInputError):
    """The image cannot be loaded, is too large, or comes from a source that is not allowed."""


class PromptError(InvalidInputError):
    """An object name, question or language would break PaliGemma's prompt format."""


class EndpointError(PaliGemmaError):
    """The PaliGemma endpoint did not give a usable answer."""


class EndpointUnavailableError(EndpointError):
    """The endpoint cannot be reached, or kept failing (5xx, 429) after the retries."""


class EndpointTimeoutError(EndpointError):
    """The endpoint did not answer within the timeout."""


class EndpointRequestError(EndpointError):
    """The endpoint refused the request (4xx): the message says why."""


class OutputParseError(PaliGemmaError):
    """The model's answer cannot be read at all (partial answers are reported, not raised)."""


class CheckpointError(PaliGemmaError):
    """The VQ-VAE checkpoint for mask decoding is missing, unreadable, or fails its checksum."""


def error_message(error: BaseException, where: str) -> str:
    """Our errors' own message; anything else named as a bug in `where` (its traceback belongs in the log)."""
    if isinstance(error, PaliGemmaError):
        return str(error)
    return f"internal error in {where[:100]}: {type(error).__name__}: {str(error)[:500]}"
