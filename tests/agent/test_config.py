"""AgentConfig: env vars, TOML files, precedence, validation, secrets and the insecure warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from goml_async.agent.config import AgentConfig, default_work_dir
from goml_async.agent.transport import LocalTransport, SSHTransport
from goml_async.errors import ConfigError
from goml_async.settings import GomlSettings, default_cache_dir

BASE: dict[str, Any] = {"adapter_base": "/data/lem", "base_model": "default"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GOML_AGENT_* variable of the machine leaks in; the cache dir is a temp folder."""
    import os

    for name in list(os.environ):
        if name.startswith("GOML_AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- sources --------------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    config = AgentConfig(**BASE)
    assert config.host is None and config.user is None and config.port == 22
    assert config.known_hosts is None and config.insecure_skip_host_key_check is False
    assert (config.connect_timeout, config.command_timeout) == (10.0, 60.0)
    assert (config.backend, config.influx_url, config.influx_api) == ("llama", None, "v2")
    assert (config.influx_db, config.influx_bucket, config.influx_query) == (
        "training",
        "training",
        "influxql",
    )
    assert (config.poll_interval, config.inter_checkpoint_delay) == (300.0, 5.0)
    assert (config.capability_max_tokens, config.content_max_tokens) == (500, 1000)
    assert not (config.one_shot or config.dry_run or config.force)
    assert config.work_dir == default_work_dir(config)
    # one folder per job under the cache dir; the name must never change between releases, or
    # an upgraded agent would no longer find its buffer and state
    assert config.work_dir == tmp_path / "cache" / "goml_async" / "agent" / "local-lem-5c28f1bc8a4c"
    assert config.work_dir.parent == default_cache_dir() / "agent"
    assert config.buffer_path == config.work_dir / "influx_buffer.jsonl"
    assert config.state_path == config.work_dir / "scored.json"


def test_the_default_work_dir_is_one_per_job(monkeypatch: pytest.MonkeyPatch) -> None:
    one = AgentConfig(**BASE)
    assert AgentConfig(**BASE).work_dir == one.work_dir  # the same job: the same folder
    # settings that change how a job runs, not which job it is, keep the folder
    same_job = AgentConfig(**BASE, poll_interval=5, judge_url="http://127.0.0.1:9/v1", force=True)
    assert same_job.work_dir == one.work_dir
    others = [
        AgentConfig(**{**BASE, "adapter_base": "/data/other"}),
        AgentConfig(**BASE, filter="27b"),
        AgentConfig(**BASE, influx_url="http://127.0.0.1:8086"),
        AgentConfig(**BASE, influx_url="http://127.0.0.1:8086", influx_db="other"),
        AgentConfig(**BASE, backend="http", api_url="http://127.0.0.1:8080/v1"),
        AgentConfig(**BASE, host="trainer.example.org", user="train"),
        AgentConfig(**BASE, host="trainer.example.org", user="train", port=2222),
    ]
    folders = {config.work_dir for config in [one, *others]}
    assert len(folders) == len(others) + 1
    assert {folder.parent for folder in folders} == {default_cache_dir() / "agent"}
    assert others[5].work_dir.name == "trainer.example.org-lem-6c1c51e181ab"
    # given explicitly (argument, env var or file), it is used as it is
    assert AgentConfig(**BASE, work_dir="/w").work_dir == Path("/w")
    monkeypatch.setenv("GOML_AGENT_WORK_DIR", "/from-env")
    assert AgentConfig(**BASE).work_dir == Path("/from-env")


def test_env_vars(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = write(tmp_path / "id_ed25519", "key")
    env = {
        "GOML_AGENT_HOST": "trainer.example.org",
        "GOML_AGENT_USER": "train",
        "GOML_AGENT_PORT": "2222",
        "GOML_AGENT_SSH_KEY": str(key),
        "GOML_AGENT_ADAPTER_BASE": "/Volumes/Data/lem",
        "GOML_AGENT_FILTER": "27b",
        "GOML_AGENT_BACKEND": "http",
        "GOML_AGENT_API_URL": "http://127.0.0.1:8090/v1/",
        "GOML_AGENT_INFLUX_URL": "http://127.0.0.1:8086",
        "GOML_AGENT_INFLUX_API": "v1",
        "GOML_AGENT_INFLUX_TOKEN": "s3cret",
        "GOML_AGENT_ONE_SHOT": "true",
        "GOML_AGENT_POLL_INTERVAL": "1.5",
        "GOML_AGENT_WORK_DIR": str(tmp_path / "work"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = AgentConfig()
    assert (config.host, config.user, config.port) == ("trainer.example.org", "train", 2222)
    assert config.ssh_key == key and config.adapter_base == "/Volumes/Data/lem"
    assert (config.filter, config.backend) == ("27b", "http")
    assert config.api_url == "http://127.0.0.1:8090/v1"  # trailing slash dropped
    assert (config.influx_url, config.influx_api) == ("http://127.0.0.1:8086", "v1")
    assert config.influx_token is not None
    assert config.influx_token.get_secret_value() == "s3cret"
    assert config.one_shot is True and config.poll_interval == 1.5
    assert config.work_dir == tmp_path / "work"


def test_empty_env_var_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_AGENT_HOST", "")
    monkeypatch.setenv("GOML_AGENT_INFLUX_URL", " ")
    config = AgentConfig(**BASE)
    assert config.host is None and config.influx_url is None


def test_agent_env_vars_do_not_disturb_goml_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # GomlSettings (prefix GOML_, extra="forbid") must ignore the agent's GOML_AGENT_* names.
    monkeypatch.setenv("GOML_AGENT_HOST", "trainer.example.org")
    monkeypatch.setenv("GOML_AGENT_ADAPTER_BASE", "/data")
    assert GomlSettings().default_backend is None


def test_toml_top_level(tmp_path: Path) -> None:
    file = write(
        tmp_path / "agent.toml",
        'host = "trainer.example.org"\nport = 2200\nadapter_base = "/data/lem"\n'
        'base_model = "/models/tiny"\nbackend = "mlx"\ninflux_token = "tok"\n'
        'ssh_key = "keys/id_ed25519"\n',
    )
    (tmp_path / "keys").mkdir()
    write(tmp_path / "keys" / "id_ed25519", "key")
    config = AgentConfig.load(file)
    assert (config.host, config.port, config.backend) == ("trainer.example.org", 2200, "mlx")
    assert config.base_model == "/models/tiny"
    # A relative path in the file is relative to the file's folder.
    assert config.ssh_key == tmp_path / "keys" / "id_ed25519"


def test_toml_agent_table_wins_over_top_level(tmp_path: Path) -> None:
    file = write(
        tmp_path / "goml.toml",
        'port = 2200\nadapter_base = "/top"\n\n[agent]\nadapter_base = "/data/lem"\n'
        'base_model = "default"\nwork_dir = "state"\npoll_interval = 30\n',
    )
    config = AgentConfig.load(str(file))
    assert (config.port, config.adapter_base, config.poll_interval) == (2200, "/data/lem", 30.0)
    assert config.work_dir == tmp_path / "state"


def test_precedence_explicit_then_env_then_file_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = write(tmp_path / "a.toml", 'port = 2200\nadapter_base = "/file"\nbase_model = "x"\n')
    monkeypatch.setenv("GOML_AGENT_PORT", "2300")
    assert AgentConfig.load(file, port=2400).port == 2400
    assert AgentConfig.load(file, port=None).port == 2300  # None: the flag was not given
    assert AgentConfig.load(file).adapter_base == "/file"
    monkeypatch.setenv("GOML_AGENT_ADAPTER_BASE", "/env")
    assert AgentConfig.load(file).adapter_base == "/env"
    assert AgentConfig.load(file, adapter_base="/flag").adapter_base == "/flag"
    monkeypatch.delenv("GOML_AGENT_PORT")
    assert AgentConfig.load(file).port == 2200
    assert AgentConfig.load(None, base_model="x").port == 22
    # The file is only read by load(): plain construction sees env and arguments.
    assert AgentConfig(base_model="x").adapter_base == "/env"


def test_load_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_AGENT_ADAPTER_BASE", "/env")
    config = AgentConfig.load(backend="http", api_url="https://api.example.org/v1")
    assert (config.adapter_base, config.backend) == ("/env", "http")


def test_local_adapter_base_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert AgentConfig(adapter_base="ckpts/", base_model="x").adapter_base == str(
        tmp_path / "ckpts"
    )
    home = str(Path.home())
    assert AgentConfig(adapter_base="~/lem", base_model="x").adapter_base == f"{home}/lem"
    # On a remote host "~/lem" is "lem": commands and SFTP both start in the login folder.
    remote = AgentConfig(host="h", adapter_base="~/lem/", base_model="x")
    assert remote.adapter_base == "lem"
    assert AgentConfig(host="h", adapter_base="/", base_model="x").adapter_base == "/"


# -- validation -----------------------------------------------------------------------------------


def expect_error(field: str, match: str, **values: Any) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as caught:
        AgentConfig(**{**BASE, **values})
    assert caught.value.field == field, caught.value
    assert isinstance(caught.value, ValueError)
    return caught.value


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("port", 0, "greater than or equal to 1"),
        ("port", 70000, "less than or equal to 65535"),
        ("port", "ssh", "valid integer"),
        ("connect_timeout", 0, "greater than 0"),
        ("command_timeout", -1, "greater than 0"),
        ("poll_interval", -1, "greater than or equal to 0"),
        ("inter_checkpoint_delay", -0.5, "greater than or equal to 0"),
        ("capability_max_tokens", 0, "greater than or equal to 1"),
        ("content_max_tokens", 0, "greater than or equal to 1"),
        ("influx_batch_size", 0, "greater than or equal to 1"),
        ("backend", "tensorrt", "'mlx', 'llama' or 'http'"),
        ("influx_api", "v3", "'v1' or 'v2'"),
        ("influx_query", "flux", "'influxql' or 'sql'"),
        ("api_url", "127.0.0.1:8090", "must start with http"),
        ("judge_url", "ftp://judge", "must start with http"),
        ("influx_url", "localhost:8086", "must start with http"),
        ("host", "two words", "whitespace"),
        ("user", "a b", "whitespace"),
        ("filter", "27b/x", "no '/'"),
        ("adapter_base", "  ", "adapters-\\* directories"),
        ("one_shot", "maybe", "valid boolean"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: Any, match: str) -> None:
    error = expect_error(field, match, **{field: value})
    assert str(error).startswith(f"{field}: ")
    assert "given as an argument" in str(error)


def test_missing_adapter_base() -> None:
    with pytest.raises(ConfigError, match="GOML_AGENT_ADAPTER_BASE") as caught:
        AgentConfig(base_model="default")
    assert caught.value.field == "adapter_base"


def test_http_backend_needs_api_url() -> None:
    expect_error("api_url", "required with backend 'http'", backend="http")


@pytest.mark.parametrize("backend", ["mlx", "llama"])
def test_local_backends_need_a_base_model(backend: str) -> None:
    expect_error(
        "base_model", f"required with backend '{backend}'", backend=backend, base_model=None
    )
    # A dry run evaluates nothing, so it needs no model.
    assert AgentConfig(adapter_base="/d", backend=backend, dry_run=True).base_model is None


def test_ssh_files_must_exist_for_a_host(tmp_path: Path) -> None:
    expect_error("ssh_key", "no such file", host="h", ssh_key=tmp_path / "nope")
    expect_error("known_hosts", "no such file", host="h", known_hosts=tmp_path / "nope")
    # Without a host they are not used, so they are not checked.
    assert AgentConfig(**BASE, ssh_key=tmp_path / "nope").ssh_key == tmp_path / "nope"


def test_unknown_setting() -> None:
    expect_error("hostname", "unknown setting", hostname="x")


def test_errors_say_where_the_value_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOML_AGENT_PORT", "99999")
    with pytest.raises(ConfigError, match="env var GOML_AGENT_PORT"):
        AgentConfig(**BASE)
    monkeypatch.delenv("GOML_AGENT_PORT")
    file = write(tmp_path / "bad.toml", "[agent]\nport = 0\n")
    with pytest.raises(ConfigError, match=f"in '{file}'") as caught:
        AgentConfig.load(file, **BASE)
    assert caught.value.field == "port"
    file = write(tmp_path / "typo.toml", 'adapter_base = "/d"\nbase_model = "x"\nprot = 22\n')
    with pytest.raises(ConfigError, match=f"unknown setting.*{file}") as caught:
        AgentConfig.load(file)
    assert caught.value.field == "prot"


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file") as caught:
        AgentConfig.load(tmp_path / "absent.toml")
    assert caught.value.field == "config"
    with pytest.raises(ConfigError, match="not valid TOML"):
        AgentConfig.load(write(tmp_path / "broken.toml", "port = = 1\n"))
    with pytest.raises(ConfigError, match="must be a table") as caught:
        AgentConfig.load(write(tmp_path / "flat.toml", 'agent = "x"\n'))
    assert caught.value.field == "agent"


# -- secrets and warnings -------------------------------------------------------------------------


def test_token_is_never_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = AgentConfig(**BASE, influx_token="s3cret-token")
    assert "s3cret-token" not in repr(config) and "s3cret-token" not in str(config)
    assert "s3cret-token" not in repr(config.model_dump())
    file = write(tmp_path / "t.toml", "influx_token = 12345678\n")
    with pytest.raises(ConfigError) as caught:
        AgentConfig.load(file, **BASE)
    assert caught.value.field == "influx_token"
    assert "12345678" not in str(caught.value) and "<hidden>" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_insecure_flag_logs_a_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="goml_async.agent.config")
    AgentConfig(**BASE, host="trainer.example.org", insecure_skip_host_key_check=True)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "INSECURE" in record.getMessage() and "trainer.example.org" in record.getMessage()
    caplog.clear()
    AgentConfig(**BASE, host="trainer.example.org")
    AgentConfig(**BASE, insecure_skip_host_key_check=True)  # local: no host key to skip
    assert caplog.records == []


# -- transports -----------------------------------------------------------------------------------


def test_make_transport_local(tmp_path: Path) -> None:
    transport = AgentConfig(**{**BASE, "adapter_base": str(tmp_path)}).make_transport()
    assert isinstance(transport, LocalTransport)
    assert transport.root == tmp_path


def test_make_transport_ssh(tmp_path: Path) -> None:
    key = write(tmp_path / "key", "k")
    known = write(tmp_path / "known_hosts", "")
    config = AgentConfig(
        **BASE,
        host="trainer.example.org",
        user="train",
        port=2222,
        ssh_key=key,
        known_hosts=known,
        connect_timeout=3,
        command_timeout=7,
    )
    transport = config.make_transport()
    assert isinstance(transport, SSHTransport)
    assert (transport.host, transport.user, transport.port) == (
        "trainer.example.org",
        "train",
        2222,
    )
    assert (transport.key_path, transport.known_hosts) == (key, known)
    assert (transport.connect_timeout, transport.command_timeout) == (3, 7)
    assert transport.insecure_skip_host_key_check is False
