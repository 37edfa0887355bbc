"""AgentConfig's sources: the fields shared with GomlSettings, their deprecated names, the file."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import EnvSettingsSource, InitSettingsSource, TomlConfigSettingsSource

from goml_async.agent.config import AgentConfig
from goml_async.cli import main
from goml_async.errors import ConfigError
from goml_async.settings import GomlSettings

BASE: dict[str, Any] = {"adapter_base": "/data/lem", "base_model": "default"}
SHARED = {
    "judge_url": ("GOML_JUDGE_URL", "GOML_AGENT_JUDGE_URL", "http://judge.example.org/v1"),
    "judge_model": ("GOML_JUDGE_MODEL", "GOML_AGENT_JUDGE_MODEL", "qwen3"),
    "influx_token": ("GOML_INFLUX_TOKEN", "GOML_AGENT_INFLUX_TOKEN", "tok"),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No goml variable of the machine leaks in; the cache dir is a temp folder."""
    for name in list(os.environ):
        if name.upper().startswith("GOML_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def notes(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="goml_async.agent.config")
    return caplog


def deprecations(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The deprecation notes AgentConfig logged."""
    return [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def value(config: AgentConfig | GomlSettings, field: str) -> Any:
    got = getattr(config, field)
    return got.get_secret_value() if hasattr(got, "get_secret_value") else got


def test_the_shared_fields_are_those_both_classes_have() -> None:
    from goml_async.agent._config_sources import SHARED_FIELDS

    assert set(SHARED_FIELDS) == set(AgentConfig.model_fields) & set(GomlSettings.model_fields)
    assert set(SHARED_FIELDS) == set(SHARED)


@pytest.mark.parametrize("field", sorted(SHARED))
def test_shared_fields_are_read_under_goml_settings_names(
    field: str, monkeypatch: pytest.MonkeyPatch, notes: pytest.LogCaptureFixture
) -> None:
    new, _, text = SHARED[field]
    monkeypatch.setenv(new, text)
    assert value(AgentConfig(**BASE), field) == text
    assert value(GomlSettings(), field) == text  # the one variable serves both
    assert deprecations(notes) == []


@pytest.mark.parametrize("field", sorted(SHARED))
def test_the_old_name_still_works_and_names_the_new_one(
    field: str, monkeypatch: pytest.MonkeyPatch, notes: pytest.LogCaptureFixture
) -> None:
    new, old, text = SHARED[field]
    monkeypatch.setenv(old, text)
    assert value(AgentConfig(**BASE), field) == text
    assert deprecations(notes) == [f"{old} is deprecated: set {new} instead"]


@pytest.mark.parametrize("field", sorted(SHARED))
def test_the_new_name_wins_over_the_old_one(
    field: str, monkeypatch: pytest.MonkeyPatch, notes: pytest.LogCaptureFixture
) -> None:
    new, old, text = SHARED[field]
    monkeypatch.setenv(new, text)
    monkeypatch.setenv(old, "old-value")
    assert value(AgentConfig(**BASE), field) == text
    assert deprecations(notes) == [f"{old} is deprecated and ignored: {new} is set"]


def test_an_empty_new_variable_leaves_the_old_one_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_JUDGE_URL", "")
    monkeypatch.setenv("GOML_AGENT_JUDGE_URL", "http://judge.example.org/v1")
    assert AgentConfig(**BASE).judge_url == "http://judge.example.org/v1"
    monkeypatch.delenv("GOML_AGENT_JUDGE_URL")
    assert AgentConfig(**BASE).judge_url is None  # empty means not set


def test_shared_precedence_flag_then_env_then_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, notes: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "agent.toml"
    file.write_text('[agent]\njudge_url = "http://file.example.org/v1"\njudge_model = "f"\n')
    assert AgentConfig.load(file, **BASE).judge_url == "http://file.example.org/v1"
    monkeypatch.setenv("GOML_AGENT_JUDGE_URL", "http://old.example.org/v1")
    assert AgentConfig.load(file, **BASE).judge_url == "http://old.example.org/v1"
    monkeypatch.setenv("GOML_JUDGE_URL", "http://new.example.org/v1")
    assert AgentConfig.load(file, **BASE).judge_url == "http://new.example.org/v1"
    flag = AgentConfig.load(file, **BASE, judge_url="http://flag.example.org/v1")
    assert flag.judge_url == "http://flag.example.org/v1"
    assert flag.judge_model == "f"  # fields not given elsewhere still come from the file
    assert AgentConfig.load(None, **BASE).judge_model == ""  # the default


@pytest.mark.parametrize(
    ("variable", "where"),
    [
        ("GOML_JUDGE_URL", "env var GOML_JUDGE_URL"),
        ("GOML_AGENT_JUDGE_URL", "env var GOML_AGENT_JUDGE_URL"),
    ],
)
def test_errors_name_the_variable_that_was_read(
    variable: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "ftp://judge")
    with pytest.raises(ConfigError, match=f"must start with http.*; {where}\\)") as caught:
        AgentConfig(**BASE)
    assert caught.value.field == "judge_url"


def test_a_secret_from_the_environment_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_INFLUX_TOKEN", "s3cret-token")
    config = AgentConfig(**BASE)
    assert config.influx_token is not None
    assert "s3cret-token" not in repr(config) and "s3cret-token" not in str(config.model_dump())


def test_an_env_value_is_blamed_before_the_file_that_it_hides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "agent.toml"
    file.write_text("port = 2200\n")
    monkeypatch.setenv("GOML_AGENT_PORT", "99999")
    with pytest.raises(ConfigError, match="env var GOML_AGENT_PORT"):
        AgentConfig.load(file, **BASE)


# -- the file -------------------------------------------------------------------------------------


def test_the_file_is_read_by_pydantic_settings_toml_source(tmp_path: Path) -> None:
    file = tmp_path / "agent.toml"
    file.write_text('adapter_base = "/top"\n[agent]\nport = 2200\n')
    init = InitSettingsSource(AgentConfig, init_kwargs={"port": 1, "_toml_file": file})
    env = EnvSettingsSource(AgentConfig)
    sources = AgentConfig.settings_customise_sources(AgentConfig, init, env, env, env)
    toml = sources[-1]
    assert isinstance(toml, TomlConfigSettingsSource) and toml.toml_file_path == file
    assert init.init_kwargs == {"port": 1}  # the file was named, not validated as a field
    assert toml() == {"adapter_base": "/top", "port": 2200}
    # One file per call, given as the _toml_file init keyword (like pydantic-settings' _env_file).
    config = AgentConfig(_toml_file=file, base_model="x")
    assert (config.adapter_base, config.port) == ("/top", 2200)


def test_concurrent_loads_each_read_their_own_file(tmp_path: Path) -> None:
    files = []
    for index in range(8):
        file = tmp_path / f"agent-{index}.toml"
        file.write_text(
            f'adapter_base = "/data/{index}"\nbase_model = "x"\nport = {2200 + index}\n'
        )
        files.append(file)
    results: dict[int, AgentConfig] = {}
    start = threading.Barrier(len(files))

    def load(index: int) -> None:
        start.wait()
        results[index] = AgentConfig.load(files[index])

    threads = [threading.Thread(target=load, args=(index,)) for index in range(len(files))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {index: config.port for index, config in results.items()} == {
        index: 2200 + index for index in range(len(files))
    }
    assert AgentConfig(**BASE).port == 22  # and nothing of theirs stays behind


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a file") as caught:
        AgentConfig.load(tmp_path, **BASE)
    assert caught.value.field == "config"


# -- the command ----------------------------------------------------------------------------------


def test_goml_agent_shows_the_deprecation_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOML_AGENT_JUDGE_URL", "http://127.0.0.1:9/v1")
    argv = ["agent", "--adapter-base", str(tmp_path), "--backend", "http"]
    argv += ["--api-url", "http://127.0.0.1:9/v1", "--work-dir", str(tmp_path / "w"), "--dry-run"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "GOML_AGENT_JUDGE_URL is deprecated: set GOML_JUDGE_URL instead" in err
