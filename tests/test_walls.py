"""The walls between the packages, read from the source: who imports whom, and what clients use of `tools`."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import tools
import tools.agents

ROOT = Path(__file__).resolve().parents[1]


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """(module, names taken from it, line) for every absolute import in the file, lazy ones and
    `pytest.importorskip("module")` included (a skip would hide an undeclared module)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, (), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, tuple(alias.name for alias in node.names), node.lineno


def crossings(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources(package)
        for module, _, line in imported(path)
        if module.split(".")[0] in forbidden
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        pytest.param("server", ("tools", "clients", "training"), id="server-stands-alone"),
        pytest.param("tools", ("server", "clients", "training"), id="tools-stand-alone"),
    ],
)
def test_packages_import_nothing_across_their_walls(package: str, forbidden: tuple[str, ...]) -> None:
    assert crossings(package, forbidden) == []


def test_no_core_module_imports_the_llm_adapters() -> None:
    core = [p for p in sources("tools") if "agents" not in p.relative_to(ROOT / "tools").parts]
    assert core, "no core modules found"
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in core
        for module, _, line in imported(path)
        if module == "tools.agents" or module.startswith("tools.agents.")
    ]
    assert found == []


PUBLIC = {"tools": set(tools.__all__), "tools.agents": set(tools.agents.__all__)}


def private_uses(path: Path) -> list[str]:
    """What a client takes from `tools` beyond the names the two public namespaces export."""
    problems = []
    tree = ast.parse(path.read_text(), str(path))
    for module, names, line in imported(path):
        if module.split(".")[0] != "tools":
            continue
        if module not in PUBLIC:
            problems.append(f"{line}: imports the module {module}")
        elif module == "tools" and names:
            problems += [f"{line}: tools.{n}" for n in names if n not in PUBLIC["tools"] and n != "agents"]
        else:
            problems += [f"{line}: {module}.{n}" for n in names if n not in PUBLIC[module]]
    for node in ast.walk(tree):  # `import tools` then `tools.X`
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tools":
            if node.attr not in PUBLIC["tools"] and node.attr != "agents":
                problems.append(f"{node.lineno}: tools.{node.attr}")
    return problems


@pytest.mark.parametrize("path", sources("clients"), ids=lambda p: p.name)
def test_clients_use_only_what_tools_exports(path: Path) -> None:
    assert private_uses(path) == []


def test_the_check_sees_private_uses(tmp_path: Path) -> None:
    client = tmp_path / "client.py"
    client.write_text(
        "import tools\nfrom tools import read_text\nfrom tools.functions import default_client\n"
        "from tools.agents import _Call\nprint(tools.functions, tools.read_text)\n"
    )
    assert private_uses(client) == [
        "3: imports the module tools.functions",
        "4: tools.agents._Call",
        "5: tools.functions",
    ]


# --- what the tests import is declared ----------------------------------------------------------
# Serving comes from the `cpu` or `gpu` extra, whichever the machine has, so it is not in `dev`.
SERVING_MODULES = {"torch", "transformers", "safetensors", "vllm"}
OURS = {"server", "tools", "clients", "training", "tests", "benchmarks"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(text: str) -> tuple[str, set[str]]:
    """The distribution a requirement names, and its extras."""
    match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", text)
    assert match is not None, text
    return canonical(match[1]), {extra.strip() for extra in (match[2] or "").split(",") if extra.strip()}


def declared_distributions() -> set[str]:
    """The distributions the main dependencies and the `dev` extra declare, with the project's extras it names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    found: set[str] = set()
    todo, done = [*project["dependencies"], *extras["dev"]], {"dev"}
    while todo:
        name, wanted = requirement(todo.pop())
        if name != canonical(project["name"]):
            found.add(name)
            continue
        for extra in wanted - done:
            done.add(extra)
            todo += extras[extra]
    return found


def test_every_module_the_tests_import_is_declared() -> None:
    by_module = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    missing = {}
    for path in sources("tests"):
        for module, _, line in imported(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in OURS or top in SERVING_MODULES:
                continue
            if not {canonical(d) for d in by_module.get(top, [])} & declared:
                missing.setdefault(top, f"{path.relative_to(ROOT)}:{line}")
    assert missing == {}
