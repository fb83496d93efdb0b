"""Errors of the server package: each says what is wrong and what to do.

ServeError                 `paligemma serve` cannot start or keep a server
├── MissingPackageError    vLLM (or torch/transformers) is not installed
├── ModelSourceError       the model is absent, gated, or unreachable
└── PortInUseError         something already listens on the port
"""

from __future__ import annotations


class ServeError(Exception):
    """`paligemma serve` cannot start or keep a server; the message says what to do."""


class MissingPackageError(ServeError):
    """A package needed for serving is not installed."""


class ModelSourceError(ServeError):
    """The model to serve (preset, hub id or folder) is absent, gated, or cannot be reached."""


class PortInUseError(ServeError):
    """The port is taken."""
