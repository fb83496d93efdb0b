"""Where images may come from and how large they may be (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class ImagePolicy(BaseModel):
    """Limits and allowed sources for images.

    The defaults suit a program calling the tools with its own images: any local path,
    public http(s) URLs. Agent-facing entry points (the dispatcher, the MCP server) use
    `ImagePolicy.for_agents()`, which allows no local paths unless roots are given.
    """

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(default=64 * MIB, gt=0, description="Largest encoded image accepted.")
    max_pixels: int = Field(
        default=100_000_000, gt=0, description="Largest width x height accepted (decompression bombs)."
    )
    max_decoded_bytes: int = Field(
        default=256 * MIB,
        gt=0,
        description="Largest memory decoding may take, from the header: pixels x bytes per pixel of the file's "
        "mode, plus the RGB and rotated copies (bounds 16-bit and float images the pixel count does not).",
    )
    max_side_px: int = Field(
        default=65_500, gt=0, description="Longest side accepted (a 1 x 100,000,000 image costs per row)."
    )
    max_metadata_bytes: int = Field(
        default=1 * MIB, gt=0, description="Largest EXIF, ICC, XMP and text metadata read from a file, in total."
    )
    allowed_roots: tuple[Path, ...] | None = Field(
        default=None, description="Folders local paths must lie under; None allows any path, () none."
    )
    allow_urls: bool = Field(default=True, description="Whether http(s) URLs may be fetched.")
    allowed_hosts: tuple[str, ...] | None = Field(
        default=None, description="If set, the only hosts URLs may name (exact names, or '.example.com' suffixes)."
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Allow URLs that resolve to loopback, private, link-local or metadata addresses (tests only).",
    )
    url_timeout_s: float = Field(default=20.0, gt=0, description="Total time allowed for fetching one URL.")
    max_redirects: int = Field(default=3, ge=0, description="Redirects followed (each one checked again).")

    @classmethod
    def for_agents(cls, *, allowed_roots: tuple[Path, ...] = (), **overrides: object) -> ImagePolicy:
        """The policy for inputs an LLM controls: no local files unless `allowed_roots` names folders."""
        return cls.model_validate({"allowed_roots": allowed_roots, **overrides})
