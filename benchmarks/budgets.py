"""What the hostile inputs the tests try cost, against their budgets.

The tests check what each input gives (a refusal, an error result, no endpoint request); how
fast, and with how much memory, depends on the machine, so it is measured here: CPU time in
this process for every case of the tests' tables, and for the decompression bombs the time and
peak memory of a refusal in a fresh interpreter. A row over its budget says OVER.

    .venv/bin/python -m benchmarks.budgets
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import print_table

CPU_BUDGET_S = 2.0  # any one hostile input, from arrival to its refusal or result
NAMES_BUDGET_S = 0.2  # object names are counted before they are checked
REFUSAL_BUDGET_S = 0.5  # a megabyte path or data URI is refused before it is looked at
BOMB_BUDGET_S, BOMB_BUDGET_MIB = 1.0, 30  # a bomb refused from its header allocates next to nothing
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One `pytest.param` of the tests' tables: its id and its values."""

    id: str
    values: tuple[Any, ...]


def params(parameter_sets: Iterable[Any]) -> list[Case]:
    return [Case(str(p.id), tuple(p.values)) for p in parameter_sets]


def cases(test: Any) -> list[Case]:
    """The `pytest.param` cases of a test with one parametrize mark."""
    return params(test.pytestmark[0].args[1])


def cpu_seconds(work: Callable[[], object]) -> float:
    started = time.process_time()
    try:
        work()
    except Exception:  # the tests check what each input gives; here only what it costs
        pass
    return time.process_time() - started


def row(category: str, case: str, seconds: float, budget: float) -> list[str]:
    verdict = "OVER" if seconds > budget else "ok"
    return [category, case, f"{seconds * 1000:,.0f}", f"{budget * 1000:,.0f}", verdict]


def pure_rows() -> list[list[str]]:
    """Names, answers, drawings, images and paths, each handled in this process."""
    from PIL import Image

    import tools
    from tests.hostile_images import HOSTILE
    from tests.tools import test_hostile_images, test_parsing, test_prompts
    from tools import prompts

    rows = []
    for case in cases(test_prompts.test_name_counts_are_checked_before_the_work):
        given = case.values[0]
        seconds = cpu_seconds(functools.partial(prompts.split_objects, given))
        rows.append(row("object names", case.id, seconds, NAMES_BUDGET_S))
    for case in cases(test_parsing.test_long_garbage_parses_to_reported_issues):
        seconds = cpu_seconds(functools.partial(tools.parse_detections, case.values[0], width=100, height=100))
        rows.append(row("parsing an answer", case.id, seconds, CPU_BUDGET_S))
    labels = " ; ".join(f"<loc0100><loc0100><loc0900><loc0900> label {i}" for i in range(250))
    parsed = tools.parse_detections(labels, width=640, height=480)  # the parser reads at most 256 objects
    result = parsed.model_copy(update={"objects": tuple(parsed.objects) * 40})  # 10,000, built elsewhere
    seconds = cpu_seconds(lambda: tools.annotate(Image.new("RGB", (640, 480)), result, max_side=768))
    rows.append(row("drawing", "10,000 labelled boxes", seconds, CPU_BUDGET_S))
    inputs = [(name, make()) for name, make in HOSTILE.items()]
    inputs += [(f"fuzz corpus {p.name}", p.read_bytes()) for p in sorted(test_hostile_images.CORPUS.glob("*.bin"))]
    for name, data in inputs:
        rows.append(row("loading an image", name, cpu_seconds(functools.partial(tools.load_image, data)), CPU_BUDGET_S))
    long_path = "/tmp/" + "a/" * 500_000 + "x.png"
    for label, policy in (("no roots", tools.ImagePolicy.for_agents()), ("any path", tools.ImagePolicy())):
        seconds = cpu_seconds(functools.partial(tools.load_image, long_path, policy))
        rows.append(row("a megabyte path", label, seconds, REFUSAL_BUDGET_S))
    uri = "data:image/png;base64," + "A" * 2_000_000
    seconds = cpu_seconds(lambda: tools.load_image(uri, tools.ImagePolicy(max_bytes=1_000)))
    rows.append(row("a 2 MB data URI over a 1 kB limit", "refused", seconds, REFUSAL_BUDGET_S))
    return rows


def agent_rows() -> list[list[str]]:
    """Hostile tool calls through the dispatcher, the LangChain tools and an MCP session (no endpoint request)."""
    import anyio
    from mcp import Client

    import tools
    from tests.images import gradient_image
    from tests.tools.fake_endpoint import Behaviour, fake_endpoint
    from tests.tools.test_dispatch import HOSTILE_CALLS
    from tests.tools.test_hostile_adapters import HOSTILE_ARGUMENTS
    from tools.agents import McpSettings, build_server, langchain_tools, run_tool_call

    def store() -> tools.ImageStore:
        images = tools.ImageStore()
        images.add(gradient_image(300, 200))
        return images

    rows = []
    with fake_endpoint(Behaviour()) as base_url:
        with tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0) as client:
            for case in params(HOSTILE_CALLS):
                seconds = cpu_seconds(functools.partial(run_tool_call, case.values[0], client=client, images=store()))
                rows.append(row("dispatcher", case.id, seconds, CPU_BUDGET_S))
            by_name = {t.name: t for t in langchain_tools(client=client, images=store())}
            for case in params(HOSTILE_ARGUMENTS):
                name, arguments = case.values
                message = {"type": "tool_call", "id": "call_1", "name": name, "args": arguments}
                seconds = cpu_seconds(functools.partial(by_name[name].invoke, message))
                rows.append(row("LangChain tool", case.id, seconds, CPU_BUDGET_S))
        mcp_client = tools.PaliGemmaClient(base_url=base_url, model="fake", max_retries=0)
        server = build_server(McpSettings(), mcp_client)

        async def call(name: str, arguments: dict[str, Any]) -> None:
            async with Client(server) as session:
                await session.call_tool(name, arguments)

        for case in params(HOSTILE_ARGUMENTS):
            seconds = cpu_seconds(functools.partial(anyio.run, call, *case.values))
            rows.append(row("MCP session", case.id, seconds, CPU_BUDGET_S))
    return rows


BOMB_PROBE = """
import json, resource, sys, time
from pathlib import Path
from tools.errors import ImageError
from tools.image_policy import ImagePolicy
from tools.images import load_image
data = Path(sys.argv[1]).read_bytes()
policy = ImagePolicy(**json.loads(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    load_image(data, policy)
    error = None
except ImageError as e:
    error = str(e)
elapsed = time.monotonic() - start
growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"error": error, "elapsed": elapsed, "growth_mib": growth_kib / 1024}))
"""


def bomb_rows() -> list[list[str]]:
    """Each decompression bomb of the tests refused in a fresh interpreter, whose peak RSS shows what it allocated."""
    from tests.tools.test_images import BOMBS

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for case in params(BOMBS):
            make, policy, _ = case.values
            file = Path(folder) / "input.bin"
            file.write_bytes(make())
            command = [sys.executable, "-c", BOMB_PROBE, str(file), json.dumps(policy)]
            out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True, cwd=ROOT).stdout
            measured = json.loads(out)
            over = measured["elapsed"] > BOMB_BUDGET_S or measured["growth_mib"] > BOMB_BUDGET_MIB
            rows.append(
                [
                    case.id,
                    "refused" if measured["error"] else "LOADED",
                    f"{measured['elapsed'] * 1000:,.0f} (budget {BOMB_BUDGET_S * 1000:,.0f})",
                    f"{measured['growth_mib']:.1f} (budget {BOMB_BUDGET_MIB})",
                    "OVER" if over else "ok",
                ]
            )
    return rows


def main() -> None:
    header = ["category", "input", "CPU ms", "budget ms", "verdict"]
    pure, agents = pure_rows(), agent_rows()
    print_table("Hostile inputs of the tests, handled in this process", header, pure)
    print_table("Hostile tool calls of the tests (a local stand-in endpoint that must get no request)", header, agents)
    over = [r for r in [*pure, *agents] if r[-1] == "OVER"]
    print(f"\n{len(over)} of {len(pure) + len(agents)} over budget" + "".join(f"\n  {r[0]}: {r[1]}" for r in over))
    print_table(
        "Decompression bombs of the tests, refused in a fresh interpreter",
        ["input", "outcome", "wall ms", "peak memory growth MiB", "verdict"],
        bomb_rows(),
    )


if __name__ == "__main__":
    main()
