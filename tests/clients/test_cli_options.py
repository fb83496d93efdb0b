"""Numbers, names and JSON given on the command line are checked by argparse, with a message
naming the option: none reaches vLLM, uvicorn or the client as a traceback or a silent default."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli import build_parser

BAD = [
    pytest.param(["serve", "--port", "-1"], "--port: expected a port from 1 to 65535", id="serve-port-negative"),
    pytest.param(["serve", "--port", "70000"], "--port: expected a port from 1 to 65535", id="serve-port-too-big"),
    pytest.param(["serve", "--data-parallel-size", "0"], "--data-parallel-size: expected a whole number", id="dp-0"),
    pytest.param(["serve", "--tensor-parallel-size", "-2"], "--tensor-parallel-size: expected", id="tp-negative"),
    pytest.param(["serve", "--pipeline-parallel-size", "0"], "--pipeline-parallel-size: expected", id="pp-0"),
    pytest.param(["serve", "--max-model-len", "-5"], "--max-model-len: expected", id="max-model-len-negative"),
    pytest.param(["serve", "--kv-cache-gib", "0"], "--kv-cache-gib: expected", id="kv-cache-0"),
    pytest.param(["serve", "--timeout", "nan"], "--timeout: expected a positive number", id="serve-timeout-nan"),
    pytest.param(["serve", "--served-model-name", ""], "--served-model-name: expected a name", id="empty-name"),
    pytest.param(["serve", "--api-key", " "], "--api-key: expected a name", id="empty-api-key"),
    pytest.param(["mcp", "--max-image-mb", "-1"], "--max-image-mb: expected a positive number", id="mcp-image-mb"),
    pytest.param(["mcp", "--port", "-5"], "--port: expected a port", id="mcp-port"),
    pytest.param(["ocr", "x.png", "--timeout", "0"], "--timeout: expected a positive number", id="batch-timeout-0"),
    pytest.param(["ocr", "x.png", "--concurrency", "0"], "--concurrency: expected a whole number >= 1", id="conc-0"),
    pytest.param(["ocr", "x.png", "--extra-body", "[1, 2]"], "--extra-body: expected a JSON object", id="body-list"),
    pytest.param(["ocr", "x.png", "--extra-body", "{"], "--extra-body: expected a JSON object", id="body-broken"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_values_are_refused_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_good_values_pass() -> None:
    args = build_parser().parse_args(["serve", "--port", "8123", "--kv-cache-gib", "2", "--timeout", "30"])
    assert (args.port, args.kv_cache_gib, args.timeout) == (8123, 2, 30.0)
    args = build_parser().parse_args(["ocr", "x.png", "--extra-body", '{"top_k": 1}'])
    assert args.extra_body == {"top_k": 1}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["-o", "{tmp}"], "--output '{tmp}' is a folder", id="output-a-folder"),
        pytest.param(["--coco", "{tmp}"], "--coco '{tmp}' is a folder", id="coco-a-folder"),
        pytest.param(["--annotate-dir", "{tmp}/a.png"], "--annotate-dir '{tmp}/a.png' is a file", id="annotate-a-file"),
    ],
)
def test_batch_destinations_are_checked_before_any_image_is_sent(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from clients.cli import main

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    argv = ["detect", str(tmp_path), "--objects", "cat", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    assert main([*argv, *(e.format(tmp=tmp_path) for e in extra)]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_batch_makes_the_folders_of_its_destinations(tmp_path: Path) -> None:
    from clients.batch import _check_destinations

    _check_destinations(tmp_path / "new" / "r.jsonl", tmp_path / "other" / "c.json", tmp_path / "drawn")
    assert (tmp_path / "new").is_dir() and (tmp_path / "other").is_dir() and (tmp_path / "drawn").is_dir()
