"""The package's module layout: no import cycle, moved modules still import from their old paths.

The import graph is read from the source (every ``import`` statement, also those inside
functions, but not those under ``if TYPE_CHECKING:``), so a cycle fails here even where it
would only break a particular import order at run time.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import goml_async

PACKAGE_DIR = Path(goml_async.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent

#: Old module path -> the module it moved to (the old path is the same module object).
MOVED_MODULES = {
    "goml_async.backends.gguf_meta": "goml_async.convert.gguf_meta",
    "goml_async.backends.lora_convert": "goml_async.convert.lora_to_gguf",
    "goml_async.backends.mlx_convert": "goml_async.convert.gguf_to_mlx",
}


def _modules() -> dict[str, Path]:
    """Every goml_async module by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name that ``from ... import`` in ``module`` names."""
    if node.level == 0:
        return node.module or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports(module: str, *, typing: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``module`` that runs (at the top or in a function); with
    ``typing``, also those only the type checker reads (under ``if TYPE_CHECKING:``)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not typing and isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        visit(node)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")))
    return found


def _edges(module: str, *, typing: bool = False) -> set[str]:
    """The goml_async modules that ``module`` imports."""
    targets: set[str] = set()
    for node in _imports(module, typing=typing):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name in MODULES)
            continue
        base = _absolute(module, node)
        for alias in node.names:
            if f"{base}.{alias.name}" in MODULES:  # from package import submodule
                targets.add(f"{base}.{alias.name}")
            elif base in MODULES:
                targets.add(base)
    targets.discard(module)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_the_package_has_no_import_cycle() -> None:
    graph = {module: _edges(module) for module in MODULES}
    assert _cycles(graph) == []


def test_no_cycle_even_for_the_type_checker() -> None:
    # A cycle hidden under TYPE_CHECKING still ties two modules together: the lower one names
    # what it needs as a Protocol instead (as the server's completion endpoints do).
    graph = {module: _edges(module, typing=True) for module in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_converters_import_neither_the_registry_nor_the_backends() -> None:
    # File-format tools sit below the backends: the registry and the backends use them.
    for module in MODULES:
        if module.startswith("goml_async.convert"):
            imported = _edges(module)
            assert not {m for m in imported if m.startswith("goml_async.backends")}, module
            assert "goml_async.registry" not in imported, module


def test_modules_in_the_package_do_not_import_its_root() -> None:
    # goml_async/__init__ imports nearly everything: a module that imports it back (for
    # __version__, say) makes a cycle. goml_async._version holds the version instead.
    offenders = []
    for module in MODULES:
        if module == "goml_async":
            continue
        for node in _imports(module):
            if isinstance(node, ast.Import):
                if any(alias.name == "goml_async" for alias in node.names):
                    offenders.append(f"{module}: import goml_async")
            elif _absolute(module, node) == "goml_async":
                names = [a.name for a in node.names if f"goml_async.{a.name}" not in MODULES]
                if names:
                    offenders.append(f"{module}: from goml_async import {', '.join(names)}")
    assert offenders == []


def test_the_root_reads_its_version_from_the_version_module() -> None:
    from goml_async import _version

    assert goml_async.__version__ is _version.__version__


# -- moved modules --------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_an_old_module_path_is_the_moved_module(old: str, new: str) -> None:
    moved = importlib.import_module(new)
    assert importlib.import_module(old) is moved
    package, _, leaf = old.rpartition(".")
    assert getattr(importlib.import_module(package), leaf) is moved


def test_patching_through_an_old_path_reaches_the_moved_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from goml_async.backends import mlx_convert
    from goml_async.convert import gguf_to_mlx

    monkeypatch.setattr(mlx_convert, "bundled_model_path", lambda: Path("/patched.gguf"))
    # The moved code looks the name up in its module's globals when it runs.
    assert vars(gguf_to_mlx)["bundled_model_path"]() == Path("/patched.gguf")


def test_the_old_names_of_the_split_registry_still_import() -> None:
    from goml_async import _bundled, discovery, registry

    assert registry.bundled_model_path is _bundled.bundled_model_path
    assert registry.BUNDLED_MODEL_FILE == _bundled.BUNDLED_MODEL_FILE
    assert registry.discover_models is discovery.discover_models
    assert registry.discover_gguf_models is discovery.discover_gguf_models
    assert goml_async.discover_models is discovery.discover_models


#: Imported first thing in a fresh interpreter, each on its own: the new modules, the old
#: paths, and the modules they were split from.
FRESH_IMPORTS = sorted(
    {
        *MOVED_MODULES,
        *MOVED_MODULES.values(),
        "goml_async._bundled",
        "goml_async._version",
        "goml_async.convert",
        "goml_async.discovery",
        "goml_async.errors",
        "goml_async.registry",
        "goml_async.scoring.probes",
        "goml_async.service",
    }
)


@pytest.mark.parametrize("module", FRESH_IMPORTS)
def test_a_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    code = f"import {module}, goml_async; print(sorted(goml_async.__all__) == goml_async.__all__)"
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "True"
