"""Tests for goml_async.settings: GOML_* environment variables, overrides and validation."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import goml_async
from goml_async.errors import ConfigError
from goml_async.settings import (
    GomlSettings,
    current_settings,
    default_cache_dir,
    refresh_settings,
)

_SECRET = "sk-test-0123456789-do-not-print"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Start every test from an environment with no goml settings in it."""
    for name in list(os.environ):
        if name.upper().startswith("GOML_") or name.upper() == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_defaults(tmp_path: Path) -> None:
    settings = GomlSettings()
    assert settings.default_backend is None
    assert settings.api_key is None
    assert settings.base_url is None
    assert settings.llama_server is None
    assert settings.model_dir is None
    assert settings.cache_dir == tmp_path / "home" / ".cache" / "goml_async"
    assert settings.judge_url is None
    assert settings.judge_model == ""
    assert settings.concurrency == 4
    assert settings.suites == "all"


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_CONCURRENCY", "8")
    monkeypatch.setenv("GOML_JUDGE_URL", "http://127.0.0.1:8090/v1")
    monkeypatch.setenv("GOML_JUDGE_MODEL", "judge-7b")
    monkeypatch.setenv("GOML_DEFAULT_BACKEND", "llama")
    monkeypatch.setenv("GOML_MODEL_DIR", "/srv/models")
    settings = GomlSettings()
    assert settings.concurrency == 8
    assert settings.judge_url == "http://127.0.0.1:8090/v1"
    assert settings.judge_model == "judge-7b"
    assert settings.default_backend == "llama"
    assert settings.model_dir == Path("/srv/models")


def test_suites_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_SUITES", "heuristic, Exact")
    assert GomlSettings().suites == "exact,heuristic"


def test_constructor_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_CONCURRENCY", "8")
    monkeypatch.setenv("GOML_DEFAULT_BACKEND", "mlx")
    settings = GomlSettings(concurrency=3, default_backend="llama")
    assert settings.concurrency == 3
    assert settings.default_backend == "llama"


def test_api_key_from_goml_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_API_KEY", "goml-key")
    settings = GomlSettings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "goml-key"


def test_api_key_falls_back_to_openai_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    settings = GomlSettings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "openai-key"


def test_goml_api_key_wins_over_openai_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    monkeypatch.setenv("GOML_API_KEY", "goml-key")
    settings = GomlSettings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "goml-key"


def test_api_key_constructor_argument_wins_over_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    monkeypatch.setenv("GOML_API_KEY", "goml-key")
    settings = GomlSettings(api_key="given-key")
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "given-key"


def test_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_API_KEY", _SECRET)
    settings = GomlSettings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == _SECRET
    assert _SECRET not in repr(settings)
    assert _SECRET not in str(settings)
    assert _SECRET not in settings.model_dump_json()
    assert _SECRET not in repr(settings.model_dump())
    assert _SECRET not in repr(settings.api_key)


def test_api_key_is_not_shown_in_other_fields_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_API_KEY", _SECRET)
    with pytest.raises(ConfigError) as info:
        GomlSettings(concurrency=0)
    assert _SECRET not in str(info.value)
    assert _SECRET not in str(info.value.__cause__)


def test_api_key_is_not_shown_in_its_own_error() -> None:
    with pytest.raises(ConfigError) as info:
        GomlSettings(api_key={"key": _SECRET})
    assert info.value.field == "api_key"
    assert _SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 5000}, "concurrency"),
        ({"suites": "bogus"}, "suites"),
        ({"suites": "heuristic,bogus"}, "suites"),
        ({"suites": " , "}, "suites"),
        ({"judge_url": "ftp://x"}, "judge_url"),
        ({"base_url": "localhost:8080"}, "base_url"),
        ({"default_backend": "  "}, "default_backend"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_invalid_constructor_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: ") as info:
        GomlSettings(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("GOML_CONCURRENCY", "abc", "concurrency"),
        ("GOML_CONCURRENCY", "0", "concurrency"),
        ("GOML_SUITES", "bogus", "suites"),
        ("GOML_JUDGE_URL", "ftp://x", "judge_url"),
    ],
)
def test_invalid_environment_values_name_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{field}: ") as info:
        GomlSettings()
    assert info.value.field == field
    assert variable in str(info.value)
    assert repr(value) in str(info.value)


def test_cache_dir_honours_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "goml_async"
    assert GomlSettings().cache_dir == tmp_path / "xdg" / "goml_async"


def test_cache_dir_without_xdg_is_under_home(tmp_path: Path) -> None:
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "goml_async"


def test_goml_cache_dir_wins_over_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("GOML_CACHE_DIR", str(tmp_path / "explicit"))
    assert GomlSettings().cache_dir == tmp_path / "explicit"


# -- the shared settings --------------------------------------------------------------------------


def test_current_settings_are_built_once_per_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = current_settings()
    assert current_settings() is first  # nothing changed: nothing re-read
    monkeypatch.setenv("GOML_CONCURRENCY", "8")
    second = current_settings()
    assert second is not first and second.concurrency == 8
    assert current_settings() is second
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # read by the cache_dir default
    assert current_settings().cache_dir == tmp_path / "xdg" / "goml_async"
    monkeypatch.setenv("GOML_AGENT_HOST", "h")  # not one of its fields, but a GOML_ name
    assert current_settings().concurrency == 8


def test_refresh_settings_reads_the_environment_again() -> None:
    shared = current_settings()
    shared.concurrency = 99  # changed in place, against the advice
    fresh = refresh_settings()
    assert fresh is not shared and fresh.concurrency == 4
    assert current_settings() is fresh


def test_an_invalid_environment_is_reported_and_not_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOML_CONCURRENCY", "lots")
    for _ in range(2):
        with pytest.raises(ConfigError, match="GOML_CONCURRENCY"):
            current_settings()
    monkeypatch.setenv("GOML_CONCURRENCY", "2")
    assert current_settings().concurrency == 2


def test_objects_without_settings_share_the_current_ones() -> None:
    from goml_async.service import Service

    assert Service().settings is current_settings()
    assert Service().settings is Service().settings  # not one environment read per object
    given = GomlSettings(concurrency=3)
    assert Service(given).settings is given


_ENVIRON_WRITERS = {"setdefault", "update", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def _writes_environ(node: ast.AST) -> bool:
    def is_environ(target: ast.AST) -> bool:
        return isinstance(target, ast.Attribute) and target.attr == "environ"

    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
        return is_environ(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in ("putenv", "unsetenv"):
            return True
        return node.func.attr in _ENVIRON_WRITERS and is_environ(node.func.value)
    return False


def test_nothing_in_the_package_writes_to_the_environment() -> None:
    package = Path(goml_async.__file__).parent
    writes = [
        f"{path.relative_to(package)}:{getattr(node, 'lineno', '?')}"
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if _writes_environ(node)
    ]
    assert writes == []
    # the check itself finds each kind of write
    probe = "os.environ['A'] = '1'\nos.environ.setdefault('B', '1')\ndel os.environ['C']\n"
    assert sum(_writes_environ(node) for node in ast.walk(ast.parse(probe))) == 3


def test_scoring_concurrency_is_set_only_when_concurrency_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOML_CONCURRENCY", raising=False)
    unset = GomlSettings()
    assert unset.concurrency == 4 and unset.scoring_concurrency is None
    assert GomlSettings(concurrency=4).scoring_concurrency == 4
    monkeypatch.setenv("GOML_CONCURRENCY", "9")
    assert GomlSettings().scoring_concurrency == 9
