"""Hostile image files (issue 10): every one loads its first frame or is refused with an
ImageError naming the budget, before the work the budget bounds. Their CPU time and memory
are measured by benchmarks/budgets.py and benchmarks/hardening.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.hostile_images import HOSTILE
from tools.errors import ImageError
from tools.image_policy import ImagePolicy
from tools.images import load_image

CORPUS = Path(__file__).parent / "corpus" / "images"


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        # Broken later pages and frames: the first one is intact, so the image loads.
        pytest.param("tiff-second-page-bad-bits", (1, 1), id="tiff-second-page-unknown-mode"),
        pytest.param("tiff-second-page-bad-photometric", (1, 1), id="tiff-second-page-bad-photometric"),
        pytest.param("tiff-second-page-strip-as-text", (1, 1), id="tiff-second-page-strip-offsets-as-text"),
        pytest.param("tiff-second-page-beyond-end", (1, 1), id="tiff-second-page-beyond-the-end"),
        pytest.param("gif-damaged-later-frame", (32, 32), id="gif-damaged-later-frame"),
        pytest.param("webp-damaged-later-frame", (32, 32), id="webp-damaged-later-frame"),
        pytest.param("webp-damaged-exif", (16, 16), id="webp-damaged-exif"),
        # An orientation a viewer applies, whatever else the EXIF block holds.
        pytest.param("jpeg-exif-string-for-number-orientation-6", (8, 16), id="jpeg-exif-string-where-a-number-is"),
        # Pages are never counted: one look past the first.
        pytest.param("tiff-100000-pages", (1, 1), id="tiff-100000-pages"),
        pytest.param("png-2M-exif-rationals-orientation-6", "16,000,044 bytes of metadata", id="png-16-MB-exif"),
        pytest.param("png-1x100000000", "no side may be longer than 65,500", id="png-1x100000000"),
        pytest.param("png-16-bit-grey-100MP", r"mode I;16\) needs about 1,144 MiB", id="png-16-bit-100MP"),
        pytest.param("png-16-bit-rgba-60MP-header", "needs about 1,144 MiB", id="png-16-bit-rgba-60MP"),
        pytest.param("png-rgb-64MP-header", "damaged or truncated", id="png-64MP-header-only"),
        # Containers Pillow would parse part by part for seconds to minutes: refused from a walk first.
        pytest.param("png-5000-empty-chunks", "more than 4,096 PNG chunks", id="png-5000-empty-chunks"),
        pytest.param("png-5000-text-chunks", "more than 4,096 PNG chunks", id="png-5000-text-chunks"),
        pytest.param("jpeg-5000-app-segments", "more than 4,096 JPEG segments", id="jpeg-5000-app-segments"),
        pytest.param("jpeg-progressive-300-scans", "300 JPEG scans", id="jpeg-300-scans"),
        pytest.param("jpeg-progressive-25MP-110-scans", r"110 JPEG scans \(the limit is 100", id="jpeg-25MP-110-scans"),
        pytest.param("gif-5000-extensions", "more than 4,096 GIF extension blocks", id="gif-5000-extensions"),
        pytest.param("gif-2MB-comment", "bytes of GIF extensions", id="gif-2MB-comment"),
        pytest.param("gif-1MB-junk-between-blocks", "bytes of junk between GIF blocks", id="gif-junk"),
        pytest.param("jpeg-1MB-of-ff-fill", "bytes of padding or junk between JPEG", id="jpeg-ff-fill"),
        pytest.param("jpeg-1MB-of-junk", "bytes of padding or junk between JPEG", id="jpeg-junk"),
        pytest.param("tiff-300000-rationals", "more than 262,144 numbers", id="tiff-300000-rationals"),
        pytest.param("tiff-1100000-strip-offsets", "1,100,000 strip or tile offsets", id="tiff-1100000-strips"),
        pytest.param("bmp-rle8-3MB", "run-length BMP of 3,145,730 bytes", id="bmp-rle8-3MB"),
    ],
)
def test_hostile_files_load_or_are_refused(name: str, outcome: tuple[int, int] | str) -> None:
    data = HOSTILE[name]()
    if isinstance(outcome, str):
        with pytest.raises(ImageError, match=outcome):
            load_image(data)
    else:
        loaded = load_image(data)
        assert (loaded.width, loaded.height) == outcome


def test_every_hostile_case_is_tested() -> None:
    params = test_hostile_files_load_or_are_refused.pytestmark[0].args[1]  # type: ignore[attr-defined]
    assert {p.values[0] for p in params} == set(HOSTILE)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_fuzz_corpus_never_raises_anything_but_image_error(path: Path) -> None:
    """Crashers the fuzz run (scripts/fuzz_images.py) found, kept as regressions."""
    try:
        load_image(path.read_bytes())
    except ImageError:
        pass


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        pytest.param(ImagePolicy.for_agents(), "allowed folders \\(none here\\)", id="no-roots"),
        pytest.param(ImagePolicy(), "paths are at most 4096", id="any-path-but-too-long"),
    ],
)
def test_a_megabyte_path_is_refused_before_it_is_resolved(policy: ImagePolicy, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image("/tmp/" + "a/" * 500_000 + "x.png", policy)


def test_refusal_outside_the_roots_does_not_tell_whether_the_file_exists(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    existing = tmp_path / "secret.png"
    existing.write_bytes(b"\x89PNG")
    policy = ImagePolicy.for_agents(allowed_roots=(allowed,))
    messages = []
    for path in (existing, tmp_path / "missing.png"):
        with pytest.raises(ImageError) as raised:
            load_image(str(path), policy)
        messages.append(str(raised.value).replace(path.name, "NAME"))
    assert messages[0] == messages[1]
    assert "refused to read" in messages[0]


def test_refusals_outside_the_roots_read_alike_for_loops_and_unknown_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symlink loop, an account that exists and one that does not: all refused in the same words,
    before the path is resolved (a loop or an unknown `~user` used to answer "no image file")."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    monkeypatch.chdir(tmp_path)  # a relative path lies outside the roots too
    (allowed / "to-loop").symlink_to(tmp_path / "loop")  # inside the roots, leading to the loop outside
    policy = ImagePolicy.for_agents(allowed_roots=(allowed,))
    messages = set()
    paths = (tmp_path / "loop" / "x.png", allowed / "to-loop" / "x.png", "~root/x.png", "~no-such-user/x.png")
    for path in (*paths, tmp_path / "nothing.png"):
        with pytest.raises(ImageError, match=r"^refused to read") as raised:
            load_image(str(path), policy)
        messages.add(str(raised.value).replace(str(path), "PATH"))
    assert len(messages) == 1


def test_a_root_given_through_a_symlink_still_allows_its_files(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    Image.new("RGB", (4, 4)).save(real / "a.png")
    policy = ImagePolicy.for_agents(allowed_roots=(tmp_path / "linked",))
    assert load_image(str(tmp_path / "linked" / "a.png"), policy).image.size == (4, 4)
    assert load_image(str(real / "a.png"), policy).image.size == (4, 4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param("max_decoded_bytes", 1000, "needs about 0 MiB to decode", id="decoded-bytes"),
        pytest.param("max_side_px", 15, "no side may be longer than 15", id="side"),
        pytest.param("max_metadata_bytes", 10, "bytes of metadata", id="metadata"),
    ],
)
def test_each_budget_is_a_policy_setting(field: str, value: int, message: str) -> None:
    data = HOSTILE["webp-damaged-exif"]()  # 16 x 16 with an EXIF block
    load_image(data)
    with pytest.raises(ImageError, match=message):
        load_image(data, ImagePolicy.model_validate({field: value}))
