"""The public surface: explicit, sorted, complete ``__all__`` lists and extra-free imports.

Modelled on httpx's ``tests/test_exported_members.py`` and anyio's ``tests/test_all_attributes.py``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import goml_async

PACKAGE_DIR = Path(goml_async.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent

#: Top-level modules of the optional extras (and trio, a test-only dependency). A goml_async
#: module may import one of these at its top only if it is a leaf that needs that extra.
OPTIONAL_MODULES = frozenset(
    {
        "aiofiles",
        "asyncssh",
        "gguf",
        "influxdb_client",
        "mcp",
        "mlx",
        "mlx_lm",
        "numpy",
        "sse_starlette",
        "starlette",
        "trio",
        "uvicorn",
        "xllamacpp",
    }
)

#: Submodules whose ``__all__`` the top-level package re-exports.
REEXPORTED_MODULES = ("types", "errors", "stream", "model", "compat", "registry", "settings")

#: Names in those submodules' ``__all__`` deliberately left out of ``goml_async.__all__``.
NOT_REEXPORTED: dict[str, str] = {
    "coerce_messages": "types: validation helper for backend authors (BaseTextModel calls it)",
    "resolve_config": "types: config-merging helper for backend authors (BaseTextModel calls it)",
    "BUNDLED_MODEL_FILE": "registry: a file-name constant; bundled_model_path() is the API",
    "default_cache_dir": "settings: the default factory of GomlSettings.cache_dir; read that",
    "current_settings": "settings: the shared GomlSettings of library code given none",
    "refresh_settings": "settings: drops the shared GomlSettings, for tests",
}

#: Type aliases that appear in public signatures but are not re-exported (reported as a bug):
#: TokenSource is the type of TokenStream's ``source`` argument (StreamContext, the other half
#: of that contract, is exported).
MISSING_TYPE_ALIASES = ("TokenSource",)

#: Known gaps in submodule ``__all__`` lists (reported as bugs; remove an entry once fixed).
KNOWN_INCOMPLETE_ALL: dict[str, str] = {}


def _module_names() -> list[str]:
    """Every public goml_async submodule, found on disk (nothing is imported here)."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not parts or parts[-1] == "__main__":
            continue  # the package itself is tested below; __main__ runs the CLI on import
        if any(part.startswith("_") for part in parts):
            continue  # private modules (_sse, _retry, ...) need no __all__
        names.append(".".join(["goml_async", *parts]))
    return names


@dataclass(frozen=True)
class Surface:
    """What a module declares in ``__all__`` and what it defines."""

    declared: list[str] | None
    defined: set[str]  # public classes and functions defined in the module itself
    bound: set[str]  # every top-level name


def _source_path(module_name: str) -> Path:
    relative = Path(*module_name.split(".")[1:])
    package_init = PACKAGE_DIR / relative / "__init__.py"
    return package_init if package_init.exists() else (PACKAGE_DIR / relative).with_suffix(".py")


def _runtime_surface(module: ModuleType) -> Surface:
    declared = getattr(module, "__all__", None)
    defined = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    }
    return Surface(None if declared is None else list(declared), defined, set(vars(module)))


def _static_surface(module_name: str) -> Surface:
    """Read the surface from the source, for leaf modules whose optional extra is missing."""
    tree = ast.parse(_source_path(module_name).read_text(encoding="utf-8"))
    declared: list[str] | None = None
    defined: set[str] = set()
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            bound.add(node.name)
            if not node.name.startswith("_"):
                defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    bound.add(target.id)
                    if target.id == "__all__" and node.value is not None:
                        declared = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).partition(".")[0] for alias in node.names)
    return Surface(declared, defined, bound)


def _surface(module_name: str) -> Surface:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in OPTIONAL_MODULES:
            raise
        return _static_surface(module_name)
    return _runtime_surface(module)


def _module_params() -> list[object]:
    params: list[object] = []
    for name in _module_names():
        marks = []
        if name in KNOWN_INCOMPLETE_ALL:
            reason = KNOWN_INCOMPLETE_ALL[name]
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


# -- the top-level package ------------------------------------------------------------------------


def test_top_level_all_is_sorted_without_duplicates() -> None:
    names = list(goml_async.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_top_level_all_names_are_attributes() -> None:
    missing = [name for name in goml_async.__all__ if not hasattr(goml_async, name)]
    assert missing == []


def test_top_level_version_is_a_string() -> None:
    assert isinstance(goml_async.__version__, str)
    assert goml_async.__version__


def test_top_level_reexports_the_core_modules() -> None:
    exported = set(goml_async.__all__)
    missing: dict[str, list[str]] = {}
    for short in REEXPORTED_MODULES:
        module = importlib.import_module(f"goml_async.{short}")
        left_out = [
            name
            for name in module.__all__
            if name not in exported
            and name not in NOT_REEXPORTED
            and name not in MISSING_TYPE_ALIASES
        ]
        if left_out:
            missing[short] = left_out
    assert missing == {}


@pytest.mark.parametrize("short", REEXPORTED_MODULES)
def test_top_level_names_are_the_submodule_objects(short: str) -> None:
    module = importlib.import_module(f"goml_async.{short}")
    shared = [name for name in module.__all__ if name in goml_async.__all__]
    assert shared, f"goml_async re-exports nothing from goml_async.{short}"
    for name in shared:
        assert getattr(goml_async, name) is getattr(module, name), name


def test_deliberate_exceptions_are_still_accurate() -> None:
    # Each exception must name a real submodule export that really is left out; a stale entry
    # (renamed, removed or since re-exported) fails here.
    declared = {
        name
        for short in REEXPORTED_MODULES
        for name in importlib.import_module(f"goml_async.{short}").__all__
    }
    for name in [*NOT_REEXPORTED, *MISSING_TYPE_ALIASES]:
        assert name in declared, name
    assert not set(NOT_REEXPORTED) & set(goml_async.__all__)


def test_top_level_reexports_the_types_of_public_signatures() -> None:
    assert [name for name in MISSING_TYPE_ALIASES if name not in goml_async.__all__] == []


# -- every submodule ------------------------------------------------------------------------------


def test_module_discovery_finds_the_core_modules() -> None:
    names = _module_names()
    for short in (*REEXPORTED_MODULES, "sync", "testing", "cli"):
        assert f"goml_async.{short}" in names
    assert "goml_async.__main__" not in names


def test_known_incomplete_entries_are_real_modules() -> None:
    assert set(KNOWN_INCOMPLETE_ALL) <= set(_module_names())


@pytest.mark.parametrize("short", ["types", "registry", "cli", "cli.generate"])
def test_static_surface_agrees_with_the_runtime_one(short: str) -> None:
    # The source-only reading is the fallback for leaf modules whose extra is not installed.
    module = importlib.import_module(f"goml_async.{short}")
    static, runtime = _static_surface(module.__name__), _runtime_surface(module)
    assert static.declared == runtime.declared
    assert static.defined == runtime.defined
    assert static.bound <= runtime.bound


@pytest.mark.parametrize("module_name", _module_params())
def test_submodule_all_is_sorted_and_complete(module_name: str) -> None:
    surface = _surface(module_name)
    assert surface.declared is not None, f"{module_name} has no __all__"
    assert surface.declared == sorted(surface.declared), f"{module_name}.__all__ is not sorted"
    assert len(surface.declared) == len(set(surface.declared)), "duplicates in __all__"
    not_bound = [name for name in surface.declared if name not in surface.bound]
    assert not_bound == [], f"{module_name}.__all__ names what the module does not have"
    not_listed = sorted(surface.defined - set(surface.declared))
    assert not_listed == [], f"{module_name} defines public names missing from __all__"


# -- packaging ------------------------------------------------------------------------------------


def test_package_is_typed() -> None:
    assert (PACKAGE_DIR / "py.typed").is_file()


_IMPORT_WITHOUT_EXTRAS = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = {blocked!r}


    class BlockOptionalExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"blocked by the test: {{name}}", name=name)
            return None


    def loaded():
        return sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)


    assert loaded() == [], loaded()
    sys.meta_path.insert(0, BlockOptionalExtras())

    import goml_async
    import goml_async.cli
    import goml_async.sync
    import goml_async.testing

    assert goml_async.cli.main is not None
    assert goml_async.testing.ScriptedModel is not None
    assert loaded() == [], loaded()
    try:
        import trio  # installed for the tests, so this proves the blocker works
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the import blocker did not block trio")
    print("imported", len(goml_async.__all__), "names")
    """
)


def test_import_needs_no_optional_extra() -> None:
    blocked = sorted(
        {
            "mlx",
            "mlx_lm",
            "xllamacpp",
            "gguf",
            "asyncssh",
            "influxdb_client",
            "starlette",
            "uvicorn",
            "numpy",
            "trio",
        }
    )
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", _IMPORT_WITHOUT_EXTRAS.format(blocked=blocked)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"imported {len(goml_async.__all__)} names"
