"""AgentConfig: where checkpoints live, how they are scored and where results go.

Values come from four places, highest first: explicit arguments (CLI flags), environment
variables, a TOML file, then the defaults. The variables are ``GOML_AGENT_<FIELD>``, except for
the fields shared with :class:`~goml_async.settings.GomlSettings`, which are read under its names
so that one variable serves every ``goml`` command: ``GOML_JUDGE_URL``, ``GOML_JUDGE_MODEL`` and
``GOML_INFLUX_TOKEN``. Their old names (``GOML_AGENT_JUDGE_URL``, ...) still work when the new
one is not set, with a logged deprecation note. The file may keep its keys at the top level or
under an ``[agent]`` table::

    [agent]
    host = "trainer.example.org"
    adapter_base = "/Volumes/Data/lem"
    backend = "mlx"
    base_model = "/models/gemma-3-1b-it"
    influx_url = "http://influx.example.org:8086"

There are no built-in hosts: with ``host`` unset, checkpoints are read from ``adapter_base`` on
this machine. An invalid value raises :class:`~goml_async.errors.ConfigError` naming the field
and where the value came from.

Example:
    >>> config = AgentConfig(adapter_base="/tmp/ckpts", base_model="default")
    >>> config.host is None, config.backend, config.buffer_path.name
    (True, 'llama', 'influx_buffer.jsonl')
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..errors import ConfigError
from ..settings import default_cache_dir
from ._config_sources import (
    ENV_PREFIX,
    PATH_FIELDS,
    TOML_FILE_KEYWORD,
    AgentEnvSource,
    FileSource,
    SharedEnvSource,
    env_name,
    origin,
)

if TYPE_CHECKING:
    from .types import RemoteTransport

__all__ = ["AgentConfig", "ENV_PREFIX", "WORK_DIR_IDENTITY", "default_work_dir"]

logger = logging.getLogger(__name__)

_SECRET_FIELDS = frozenset({"influx_token"})
_OPTIONAL_TEXT = (
    "host",
    "user",
    "filter",
    "base_model",
    "api_url",
    "judge_url",
    "influx_url",
    "system",
    "ssh_key",
    "known_hosts",
)

#: The settings that tell one agent's job from another's: where the checkpoints come from, what
#: scores them and where the results go. Agents that differ in any of them get their own default
#: work_dir (and so their own buffer, state and lock); the other settings (timeouts, tokens, the
#: judge, the loop's modes) change how a job runs, not which job it is.
WORK_DIR_IDENTITY: Final = (
    "host",
    "port",
    "user",
    "adapter_base",
    "filter",
    "backend",
    "base_model",
    "api_url",
    "model",
    "influx_url",
    "influx_api",
    "influx_db",
    "influx_org",
    "influx_bucket",
)


def default_work_dir(config: AgentConfig) -> Path:
    """The work_dir of a config that sets none: one folder per job under the user cache dir.

    ``<user cache dir>/goml_async/agent/<host or "local">-<adapter_base's name>-<hash>``, where
    the hash is the first 12 hex digits of the SHA-256 of the :data:`WORK_DIR_IDENTITY` settings
    (as JSON), e.g. ``~/.cache/goml_async/agent/local-lem-1f0c4b2a9d3e``. Two agents with the
    same job share it (and the second is refused by the work_dir lock); any other two do not.

    Example:
        >>> one = AgentConfig(adapter_base="/data/lem", base_model="default")
        >>> two = AgentConfig(adapter_base="/data/lem", base_model="default",
        ...                   influx_url="http://127.0.0.1:8086")
        >>> one.work_dir.parent == two.work_dir.parent, one.work_dir == two.work_dir
        (True, False)
        >>> one.work_dir.name.startswith("local-lem-")
        True
    """
    identity = {name: getattr(config, name) for name in WORK_DIR_IDENTITY}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    where = PurePosixPath(config.adapter_base).name or "root"
    slug = _UNSAFE_NAME.sub("_", f"{config.host or 'local'}-{where}")[:48]
    return _agents_folder() / f"{slug}-{digest[:12]}"


def _agents_folder() -> Path:
    """``<user cache dir>/goml_async/agent``: the agents' default work_dirs are in it."""
    return default_cache_dir() / "agent"


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class AgentConfig(BaseSettings):
    """Everything the checkpoint-scoring agent needs (env prefix ``GOML_AGENT_``).

    ``judge_url``, ``judge_model`` and ``influx_token`` are GomlSettings' fields too and are read
    from its variables, ``GOML_JUDGE_URL``, ``GOML_JUDGE_MODEL`` and ``GOML_INFLUX_TOKEN``
    (their ``GOML_AGENT_*`` names are deprecated). ``AgentConfig(_toml_file=path, ...)`` reads
    a TOML file below the environment, as :meth:`load` does.

    Attributes:
        host: the SSH host that holds the checkpoints; None reads ``adapter_base`` locally.
        user: the SSH user (None: the current user).
        port: the SSH port.
        ssh_key: a private key file; None uses the default keys in ``~/.ssh`` and the agent.
        known_hosts: the known_hosts file that verifies the host key (None:
            ``~/.ssh/known_hosts``).
        insecure_skip_host_key_check: accept any host key. Logged loudly; never the default.
        connect_timeout: seconds to connect and authenticate.
        command_timeout: seconds one remote command (or file stat) may take.
        adapter_base: the folder holding the ``adapters-*`` directories (required). For a
            remote host a relative path (or ``~/...``) is relative to the login directory.
        filter: only directories named ``adapters-{filter}*``.
        backend: how checkpoints are evaluated: ``mlx``, ``llama`` (local) or ``http``.
        base_model: the MLX folder or GGUF file the adapter is loaded on (``"default"``: the
            bundled SmolLM2); required for the local backends.
        api_url: the OpenAI-compatible server scored by the ``http`` backend.
        model: the model name sent to ``api_url`` (empty: the checkpoint's model tag).
        judge_url: the judge model's server (None: no judge scores). The judge is called with
            ``GOML_API_KEY`` (``OPENAI_API_KEY``), as every HTTP model is.
        judge_model: the model name sent to the judge server.
        system: an optional system prompt for the probes.
        capability_max_tokens: max tokens of a capability probe answer.
        content_max_tokens: max tokens of a content probe answer.
        content_probes: run the content probes (they need a judge).
        influx_url: the InfluxDB base URL (None: results stay in the buffer and state file).
        influx_api: ``v2`` (2.x/3.x write API) or ``v1`` (1.x ``/write``).
        influx_db: the v1 database (and the default v2 bucket).
        influx_org: the v2 organisation.
        influx_bucket: the v2 bucket (empty: ``influx_db``).
        influx_token: the Influx token; never shown in reprs or errors.
        influx_query: how scored labels are read back: ``influxql`` or ``sql`` (v3).
        influx_batch_size: lines per write request.
        work_dir: where adapters are copied and the buffer, state and lock files live
            (default: a folder per job, see :func:`default_work_dir`). One agent at a time
            uses a work_dir.
        poll_interval: seconds between discovery passes when there is nothing to do.
        one_shot: stop after one pass.
        dry_run: list what would be scored, score nothing.
        force: score every checkpoint again, and all of them in one pass.
        inter_checkpoint_delay: seconds to wait between two checkpoints.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

    # where the checkpoints are
    host: str | None = None
    user: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    insecure_skip_host_key_check: bool = False
    connect_timeout: float = Field(default=10.0, gt=0)
    command_timeout: float = Field(default=60.0, gt=0)
    adapter_base: str
    filter: str | None = None

    # how they are evaluated
    backend: Literal["mlx", "llama", "http"] = "llama"
    base_model: str | None = None
    api_url: str | None = None
    model: str = ""
    judge_url: str | None = None
    judge_model: str = ""
    system: str | None = None
    capability_max_tokens: int = Field(default=500, ge=1)
    content_max_tokens: int = Field(default=1000, ge=1)
    content_probes: bool = True

    # where the results go
    influx_url: str | None = None
    influx_api: Literal["v1", "v2"] = "v2"
    influx_db: str = "training"
    influx_org: str = ""
    influx_bucket: str = ""
    influx_token: SecretStr | None = None
    influx_query: Literal["influxql", "sql"] = "influxql"
    influx_batch_size: int = Field(default=5000, ge=1)

    # the loop
    # Not set: _check picks this job's folder under the agents' folder (it depends on the
    # other settings, so it cannot be a plain default).
    work_dir: Path = Field(default_factory=_agents_folder)
    poll_interval: float = Field(default=300.0, ge=0)
    one_shot: bool = False
    dry_run: bool = False
    force: bool = False
    inter_checkpoint_delay: float = Field(default=5.0, ge=0)

    def __init__(self, _toml_file: str | Path | None = None, **values: Any) -> None:
        file = None if _toml_file is None else Path(_toml_file).expanduser()
        try:
            # The file travels to settings_customise_sources with the init values (the only
            # per-call channel pydantic-settings has); it takes it out before validation.
            routed: dict[str, Any] = {} if file is None else {TOML_FILE_KEYWORD: file}
            super().__init__(**values, **routed)
        except ValidationError as exc:
            raise _config_error(exc, values, file) from _cause(exc)
        self._check(values, file)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: arguments, the environment, the file (the defaults come last).
        file = None
        if isinstance(init_settings, InitSettingsSource):
            file = init_settings.init_kwargs.pop(TOML_FILE_KEYWORD, None)
        return (
            init_settings,
            AgentEnvSource(settings_cls),
            SharedEnvSource(settings_cls),
            FileSource(settings_cls, file),
        )

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> AgentConfig:
        """Build the config from a TOML file, the environment and explicit overrides.

        Overrides whose value is None count as not given (an unset CLI flag), so they never
        hide an env var or a file value. In the file, relative ``ssh_key``, ``known_hosts``
        and ``work_dir`` paths are relative to the file's folder.

        Args:
            path: a TOML file (keys at the top level or under ``[agent]``); None: no file.
            **overrides: field values that win over the environment and the file.

        Raises:
            ConfigError: the file is missing or not TOML, or a value is invalid.

        Example:
            >>> config = AgentConfig.load(None, adapter_base="/data/lem", backend="http",
            ...                           api_url="http://127.0.0.1:8080/v1")
            >>> config.api_url
            'http://127.0.0.1:8080/v1'
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        return cls(_toml_file=path, **given)

    @property
    def buffer_path(self) -> Path:
        """The Influx write-ahead buffer: ``work_dir / "influx_buffer.jsonl"``."""
        return self.work_dir / "influx_buffer.jsonl"

    @property
    def state_path(self) -> Path:
        """The local record of scored checkpoints: ``work_dir / "scored.json"``."""
        return self.work_dir / "scored.json"

    def make_transport(self) -> RemoteTransport:
        """The transport to ``host`` (SSH), or to this machine when no host is set.

        Nothing connects until the first command; use it with ``async with``.

        Example:
            >>> AgentConfig(adapter_base="/tmp", base_model="default").make_transport()
            LocalTransport(root='/tmp')
        """
        from .transport import LocalTransport, SSHTransport

        if self.host is None:
            return LocalTransport(self.adapter_base, command_timeout=self.command_timeout)
        return SSHTransport(
            self.host,
            user=self.user,
            port=self.port,
            key_path=self.ssh_key,
            known_hosts=self.known_hosts,
            insecure_skip_host_key_check=self.insecure_skip_host_key_check,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
        )

    # -- validation -------------------------------------------------------------------------

    @field_validator(*_OPTIONAL_TEXT, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An empty env var (GOML_AGENT_HOST=) means "not set", as it does for most tools.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("host", "user")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and any(char.isspace() for char in value):
            raise ValueError("must not contain whitespace")
        return value

    @field_validator("adapter_base")
    @classmethod
    def _check_adapter_base(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the folder that holds the adapters-* directories")
        return value if value == "/" else value.rstrip("/")

    @field_validator("filter")
    @classmethod
    def _check_filter(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or "\n" in value):
            raise ValueError("must be part of a directory name (no '/')")
        return value

    @field_validator("api_url", "judge_url", "influx_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value is not None else None

    @field_validator(*PATH_FIELDS)
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    def _check(self, given: dict[str, Any], file: Path | None) -> None:
        """Rules that involve more than one field."""
        if self.host is None:
            # Local checkpoints: an absolute folder, so commands and copies agree on it.
            self.adapter_base = str(Path(self.adapter_base).expanduser().resolve())
        elif self.adapter_base.startswith("~/"):
            # Both SSH commands and SFTP start in the login folder: "~/x" is just "x".
            self.adapter_base = self.adapter_base[2:].rstrip("/") or "."
        for name in ("ssh_key", "known_hosts"):
            path = getattr(self, name)
            if self.host is not None and path is not None and not path.is_file():
                where = origin(type(self), name, given, file)
                raise ConfigError(name, f"no such file: {str(path)!r} ({where})")
        if self.backend == "http" and self.api_url is None:
            raise ConfigError(
                "api_url",
                f"required with backend 'http': the server to score (set {ENV_PREFIX}API_URL)",
            )
        if self.backend in ("mlx", "llama") and self.base_model is None and not self.dry_run:
            raise ConfigError(
                "base_model",
                f"required with backend {self.backend!r}: an MLX folder or GGUF file the adapters "
                f"are loaded on, or 'default' for the bundled model (set {ENV_PREFIX}BASE_MODEL)",
            )
        if not self.influx_bucket:
            self.influx_bucket = self.influx_db
        if "work_dir" not in self.model_fields_set:
            self.work_dir = default_work_dir(self)
        if self.insecure_skip_host_key_check and self.host is not None:
            logger.warning(
                "INSECURE: insecure_skip_host_key_check is set, so the host key of %s is NOT "
                "verified; anyone on the network path can impersonate it. Add its key to "
                "known_hosts instead (ssh-keyscan -p %d %s >> ~/.ssh/known_hosts).",
                self.host,
                self.port,
                self.host,
            )


def _config_error(exc: ValidationError, given: dict[str, Any], file: Path | None) -> ConfigError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    if field not in AgentConfig.model_fields:
        return ConfigError(field, f"unknown setting ({origin(AgentConfig, field, given, file)})")
    if first["type"] == "missing":
        return ConfigError(field, f"required; pass it, set {env_name(field)} or put it in the file")
    # Secrets are never echoed (and the chained ValidationError is dropped for them).
    shown = "<hidden>" if field in _SECRET_FIELDS else repr(first.get("input"))
    message = str(first["msg"]).removeprefix("Value error, ")
    where = origin(AgentConfig, field, given, file)
    return ConfigError(field, f"{message} (got {shown}; {where})")


def _cause(exc: ValidationError) -> ValidationError | None:
    fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    return None if fields & _SECRET_FIELDS else exc
