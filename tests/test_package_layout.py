"""The package's shape: public types defined in public modules, no import cycle, and the typing
that ``py.typed`` promises checked by mypy."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import captum_masks

PACKAGE = Path(captum_masks.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_at_import_time(path: Path) -> set[str]:
    """The package's modules that ``path`` imports when it is imported: its top-level imports,
    not those under ``if TYPE_CHECKING:`` nor inside functions."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("captum_masks")
        ):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("captum_masks"))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_at_import_time(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    # a package's __init__ re-exports its modules: importing a module imports its package first,
    # so an edge into a package's own __init__ from inside it is not a cycle of concepts
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    visiting, done, cycles = set(), set(), []

    def visit(node, trail):
        if node in done:
            return
        if node in visiting:
            cycles.append(trail[trail.index(node) :] + [node])
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert cycles == []


def test_the_engine_never_imports_a_method():
    methods = {
        "captum_masks.meaningful_perturbation",
        "captum_masks.neuromask",
        "captum_masks.extremal_perturbation",
        "captum_masks.guided_feature_inversion",
        "captum_masks.rise",
        "captum_masks.layer",
    }
    graph = import_graph()
    engine = {name: deps for name, deps in graph.items() if "._engine" in name}
    assert engine and all(not deps & methods for deps in engine.values())


@pytest.mark.parametrize("name", captum_masks.__all__)
def test_every_public_name_is_defined_in_a_public_module(name):
    value = getattr(captum_masks, name)
    module = getattr(value, "__module__", "captum_masks")
    assert not any(part.startswith("_") for part in module.split(".")), (name, module)


def test_the_package_ships_py_typed():
    assert (PACKAGE / "py.typed").is_file()


def test_mypy_finds_no_error_in_the_package():
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "pyproject.toml"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
