"""`paligemma VERB PATHS...` (a verb per task: detect, segment, ocr, ask...): one task over many images, resumable.

Results go to a JSON Lines file, one record per image (errors too). Re-running the same
command with the same output skips the images already done, and tries again those that failed
on the endpoint's side or whose file has changed since; an interrupted run loses nothing but
the images in flight. The exit status is 0 when every image succeeded, 1 when
any failed, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import os
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

import tools
from tools import EndpointError, InvalidInputError, Options, PaliGemmaError, Task

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}


@dataclass(frozen=True)
class Job:
    """What to do to every image: one task of the registry, with its options."""

    task: Task[Any, Any]
    options: Options

    @property
    def prompt(self) -> str:
        """The PaliGemma prompt every image gets (a PromptError for options that cannot make one)."""
        return self.task.request(self.options)[0]

    async def run(self, path: Path, client: tools.PaliGemmaClient) -> tools.ToolResult:
        result: tools.ToolResult = await tools.arun_task(self.task, path, self.options, client=client)
        return result


def find_images(paths: Iterable[str], *, exclude: Iterable[Path] = ()) -> list[Path]:
    """Files, folders (recursively) and glob patterns, as absolute paths, each file once (a symlink
    and its target are one image, under the first name met), sorted per argument.

    Folders in `exclude` (where annotated images are written) are not searched.
    """
    skipped = [p.expanduser().resolve() for p in exclude]
    found: dict[Path, Path] = {}  # the file itself (symlinks followed) -> the name it was found under
    for given in paths:
        matches = glob.glob(given, recursive=True) if glob.has_magic(given) else [given]
        for match in matches:
            path = Path(os.path.abspath(Path(match).expanduser()))  # as named: a link keeps its own name
            if path.is_dir():
                for child in sorted(path.rglob("*")):
                    if any(child.resolve().is_relative_to(folder) for folder in skipped):
                        continue
                    if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                        found.setdefault(child.resolve(), child)
            else:
                found.setdefault(path.resolve(), path)  # a named file is tried whatever its suffix; errors are recorded
    return list(found.values())


def _stamp(path: Path) -> list[int] | None:
    """The file's size and modification time: a failed image whose file changed is tried again."""
    try:
        found = path.stat()
    except OSError:
        return None
    return [found.st_size, found.st_mtime_ns]


def _record(path: Path, result: tools.ToolResult | None, error: Exception | None) -> dict[str, Any]:
    if error is not None:
        return {
            "path": str(path),
            "ok": False,
            "error": tools.error_message(error, "the batch"),
            "error_type": type(error).__name__,
            "retry": isinstance(error, EndpointError),  # the endpoint may answer next time; a bad image won't
            "file": _stamp(path),  # ... unless it is replaced: then it is tried again
        }
    assert result is not None
    return {"path": str(path), "ok": True, "result": result.to_json(mask_coco_rle=True)}


class ResultsFile:
    """The JSON Lines output: read what a previous run finished, append as images finish."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def finished(self) -> dict[str, dict[str, Any]]:
        """The last record of every image in the file; a torn last line (a killed run) is dropped."""
        records: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return records
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "path" in record:
                    records[record["path"]] = record
        return records

    def compact(self, records: dict[str, dict[str, Any]]) -> None:
        """Rewrite the file with one record per image (atomically), dropping those to be retried."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            for record in records.values():
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(temporary, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()


def annotated_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]  # two folders may hold the same file name
    return f"{path.stem}-{digest}.png"


async def _one(
    path: Path, job: Job, client: tools.PaliGemmaClient, results: ResultsFile, annotate_dir: Path | None
) -> bool:
    try:
        result = await job.run(path, client)
    except PaliGemmaError as e:
        results.append(_record(path, None, e))
        return False
    if annotate_dir is not None and isinstance(result, tools.LocatedObjects):
        await asyncio.to_thread(_save_annotated, path, result, annotate_dir, client)
    results.append(_record(path, result, None))
    return True


def _save_annotated(path: Path, result: tools.LocatedObjects, folder: Path, client: tools.PaliGemmaClient) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = tools.load_image(path, client.image_policy).image
    tools.annotate(image, result).save(folder / annotated_name(path))


def _failed_for_good(record: dict[str, Any]) -> bool:
    """A failure not to try again: the image itself (not the endpoint), and its file unchanged since."""
    return not record.get("retry") and record.get("file") is not None and record["file"] == _stamp(Path(record["path"]))


async def run_batch(
    images: list[Path],
    job: Job,
    client: tools.PaliGemmaClient,
    results: ResultsFile,
    *,
    concurrency: int,
    annotate_dir: Path | None = None,
    progress: bool = True,
) -> tuple[int, int, int]:
    """Process what is not finished yet; return (succeeded, failed, skipped)."""
    previous = results.finished()
    for record in previous.values():
        other = record.get("result", {}).get("prompt")
        if record.get("ok") and other != job.prompt:
            raise tools.InvalidInputError(
                f"{results.path} holds results for the prompt {other!r}, not {job.prompt!r}: "
                "pass another --output to keep both."
            )
    kept = {p: r for p, r in previous.items() if r.get("ok") or _failed_for_good(r)}
    results.compact(kept)
    todo = [p for p in images if str(p) not in kept]
    slots = asyncio.Semaphore(concurrency)
    succeeded = failed = 0

    async def guarded(path: Path) -> bool:
        async with slots:
            return await _one(path, job, client, results, annotate_dir)

    with tqdm(total=len(todo), disable=not progress, unit="image", file=sys.stderr) as bar:
        for finished in asyncio.as_completed([guarded(p) for p in todo]):
            if await finished:
                succeeded += 1
            else:
                failed += 1
            bar.update(1)
    return succeeded, failed, len(images) - len(todo)


def write_coco(results: ResultsFile, images: list[Path], destination: Path) -> int:
    """COCO detection/segmentation JSON of the successful records for `images`; returns annotations written."""
    records = results.finished()
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    categories: dict[str, int] = {}
    for image_id, path in enumerate(images, start=1):
        record = records.get(str(path))
        if not record or not record.get("ok"):
            continue
        result = record["result"]
        coco["images"].append(
            {"id": image_id, "file_name": str(path), "width": result["image_width"], "height": result["image_height"]}
        )
        for obj in result.get("objects", []):
            category = categories.setdefault(obj["label"], len(categories) + 1)
            box = tools.Box.model_validate(obj["box"])
            annotation = {
                "id": len(coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": list(box.coco_xywh),
                "area": obj.get("area_px") if obj.get("area_px") is not None else box.width * box.height,
                "iscrowd": 0,
            }
            if obj.get("mask_coco_rle"):
                annotation["segmentation"] = obj["mask_coco_rle"]
            coco["annotations"].append(annotation)
    coco["categories"] = [{"id": i, "name": name} for name, i in categories.items()]
    destination.write_text(json.dumps(coco))
    return len(coco["annotations"])


def _check_destinations(output: Path, coco: Path | None, annotate_dir: Path | None) -> None:
    """Where the results go, checked (and their folders made) before any image is sent: a wrong
    one used to end the batch with a traceback, after the work for the COCO file."""
    for option, file in (("--output", output), ("--coco", coco)):
        if file is None:
            continue
        if file.is_dir() or not file.name:
            raise InvalidInputError(f"{option} {str(file)!r} is a folder; give a file name, e.g. results.json.")
        file.parent.mkdir(parents=True, exist_ok=True)
    if annotate_dir is not None:
        if annotate_dir.exists() and not annotate_dir.is_dir():
            raise InvalidInputError(f"--annotate-dir {str(annotate_dir)!r} is a file; give a folder for the drawings.")
        annotate_dir.mkdir(parents=True, exist_ok=True)


def main(
    job: Job,
    paths: list[str],
    *,
    output: Path,
    client: tools.PaliGemmaClient,
    concurrency: int,
    coco: Path | None,
    annotate_dir: Path | None,
    progress: bool,
) -> int:
    """Run the batch; print a summary; return the exit status."""
    _check_destinations(output, coco, annotate_dir)
    images = find_images(paths, exclude=[annotate_dir] if annotate_dir else [])
    if not images:
        print("paligemma: no images found under " + ", ".join(paths), file=sys.stderr)
        return 1
    results = ResultsFile(output)
    try:
        batch = run_batch(
            images, job, client, results, concurrency=concurrency, annotate_dir=annotate_dir, progress=progress
        )
        succeeded, failed, skipped = asyncio.run(batch)
    except KeyboardInterrupt:
        done = sum(1 for p in images if str(p) in results.finished())
        print(
            f"\ninterrupted: {done} of {len(images)} images are recorded in {output}; "
            "run the same command again to do the rest.",
            file=sys.stderr,
        )
        return 128 + signal.SIGINT
    failed_total = sum(1 for p in images if not results.finished().get(str(p), {}).get("ok"))
    print(
        f"{len(images)} images: {succeeded} done now, {skipped} done before, {failed} failed now; results in {output}",
        file=sys.stderr,
    )
    if coco is not None:
        count = write_coco(results, images, coco)
        print(f"COCO annotations ({count}) in {coco}", file=sys.stderr)
    return 1 if failed_total else 0
