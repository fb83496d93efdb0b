"""Images of a conversation under short handles (`img_1`), so an LLM never copies base64.

An agent registers the images of the user's messages once; the LLM then names them by
handle in tool arguments. The store keeps the most recent `capacity` images. It reads no
local path unless its policy names folders (`ImagePolicy.for_agents(allowed_roots=...)`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from tools.errors import ImageError
from tools.image_policy import ImagePolicy
from tools.images import ImageSource, LoadedImage, load_image

HANDLE = re.compile(r"img_\d+")


def _image_parts(message: Mapping[str, Any]) -> list[str]:
    """Image URLs or data URIs in a user message, Chat Completions or Responses style."""
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, list):
        return []
    found = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "image_url":  # Chat Completions: {"image_url": {"url": ...}}
            inner = part.get("image_url")
            url = inner.get("url") if isinstance(inner, Mapping) else inner
        elif part.get("type") == "input_image":  # Responses: {"image_url": "..."}
            url = part.get("image_url")
        else:
            continue
        if isinstance(url, str) and url:
            found.append(url)
    return found


class ImageStore:
    """Loaded images by handle, with the policy that applies to adding them."""

    def __init__(self, *, policy: ImagePolicy | None = None, capacity: int = 32) -> None:
        self.policy = policy or ImagePolicy.for_agents()  # message text is untrusted: no local files
        self.capacity = capacity
        self._images: OrderedDict[str, LoadedImage] = OrderedDict()
        self._by_digest: dict[str, str] = {}
        self._next = 1
        self._lock = threading.Lock()

    def add(self, source: ImageSource) -> str:
        """Load and keep an image; return its handle (the same handle for the same source text or bytes)."""
        digest = self._digest(source)
        with self._lock:
            if digest is not None and digest in self._by_digest and self._by_digest[digest] in self._images:
                return self._by_digest[digest]
        loaded = load_image(source, self.policy)
        with self._lock:
            handle = f"img_{self._next}"
            self._next += 1
            self._images[handle] = loaded
            if digest is not None:
                self._by_digest[digest] = handle
            while len(self._images) > self.capacity:
                self._images.popitem(last=False)
        return handle

    @staticmethod
    def _digest(source: ImageSource) -> str | None:
        if isinstance(source, str):
            return hashlib.sha256(source.encode()).hexdigest()
        if isinstance(source, (bytes, bytearray)):
            return hashlib.sha256(bytes(source)).hexdigest()
        return None

    def get(self, handle: str) -> LoadedImage:
        with self._lock:
            loaded = self._images.get(handle)
            known = ", ".join(self._images) or "none"
        if loaded is None:
            raise ImageError(f"no image with handle {handle!r} in this conversation (known: {known}).")
        return loaded

    def __contains__(self, handle: object) -> bool:
        return handle in self._images

    @property
    def handles(self) -> list[str]:
        return list(self._images)

    def register_messages(self, messages: Iterable[Mapping[str, Any]]) -> list[str]:
        """Add the images of the user messages (already known ones keep their handle); return their handles."""
        return [self.add(url) for message in messages for url in _image_parts(message)]

    def describe(self) -> str:
        """One line an agent can put in its system prompt."""
        if not self._images:
            return "No images are attached."
        listed = ", ".join(f"{h} ({i.width}x{i.height} px)" for h, i in self._images.items())
        return f"Images in this conversation, by handle: {listed}. Pass the handle as the tools' image argument."
