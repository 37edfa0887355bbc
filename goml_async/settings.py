"""GomlSettings: every setting, read from ``GOML_*`` environment variables or given directly.

This is the only module that reads ``os.environ`` (and nothing in goml_async writes to it).
Constructor arguments override the environment; an invalid value raises
:class:`~goml_async.errors.ConfigError` naming the field.

Code that is given no settings object uses :func:`current_settings`: one GomlSettings per state
of the environment, built on first use and shared, so a library call never re-reads and
re-validates the environment on its own. Objects that take ``settings=`` resolve it once, when
they are built.

The ``goml agent`` settings (:class:`~goml_async.agent.config.AgentConfig`) share three fields
with these and read them under the same names: ``GOML_JUDGE_URL``, ``GOML_JUDGE_MODEL`` and
``GOML_INFLUX_TOKEN`` (the agent's judge also sends ``GOML_API_KEY``). Their older
``GOML_AGENT_*`` names still work, with a logged deprecation note.

Example:
    >>> GomlSettings(concurrency=8).concurrency
    8
    >>> current_settings() is current_settings()
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError

__all__ = ["GomlSettings", "current_settings", "default_cache_dir", "refresh_settings"]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/goml_async``, or ``~/.cache/goml_async``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "goml_async"


#: Environment variables read under another name than ``GOML_<FIELD>``, and their field.
_ALIASES = {"OPENAI_API_KEY": "api_key", "OPENAI_BASE_URL": "openai_base_url"}

_SUITES = frozenset({"all", "heuristic", "semantic", "content", "standard", "exact"})


class GomlSettings(BaseSettings):
    """Settings for goml_async (env prefix ``GOML_``).

    Attributes:
        default_backend: backend used when none is named (``mlx``, ``llama``, ``http``).
        api_key: API key for OpenAI-compatible servers (``GOML_API_KEY``, then
            ``OPENAI_API_KEY``); never shown in reprs or logs.
        base_url: default base URL of an OpenAI-compatible server (``GOML_BASE_URL``): the
            ``goml`` commands use it when no ``--model`` is given, instead of the bundled model.
        openai_base_url: ``OPENAI_BASE_URL``, read as openai-python reads it: the server an
            :class:`~goml_async.backends.http.HTTPModel` (or ``load_model()``) talks to when no
            URL is given and ``GOML_BASE_URL`` is not set. The commands do not fall back to it,
            so a shell set up for OpenAI never sends a ``goml`` prompt there unasked.
        llama_server: path of a ``llama-server`` binary (``GOML_LLAMA_SERVER``).
        llama_startup_timeout: seconds a llama-server may take to answer ``/health``.
        model_dir: a folder of local models (``GOML_MODEL_DIR``), listed by ``goml models list``
            when no folder is given.
        cache_dir: where converted models and built binaries are cached.
        mlx_cache_limit: MLX's buffer cache limit in bytes (None: MLX's default).
        mlx_memory_limit: MLX's memory limit in bytes (None: MLX's default).
        judge_url: base URL of the judge model's server.
        judge_model: model name to request from the judge server.
        concurrency: concurrent scoring jobs (``GOML_CONCURRENCY``); when not set, the scoring
            engine runs as many as the judge model serves at once (see
            :attr:`scoring_concurrency`).
        suites: scoring suites, ``"all"`` or a comma-separated list.
        server_api_key: the bearer token ``goml serve`` requires on ``/v1/*``
            (``GOML_SERVER_API_KEY``); None serves without authentication. Never shown.
        influx_token: the InfluxDB token ``goml expand`` writes with (``GOML_INFLUX_TOKEN``;
            ``user:password`` for InfluxDB 1.x). Never shown.
    """

    model_config = SettingsConfigDict(
        env_prefix="GOML_",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

    default_backend: str | None = None
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GOML_API_KEY", "OPENAI_API_KEY")
    )
    base_url: str | None = None
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )
    llama_server: Path | None = None
    llama_startup_timeout: float = Field(default=120.0, gt=0)
    model_dir: Path | None = None
    cache_dir: Path = Field(default_factory=default_cache_dir)
    mlx_cache_limit: int | None = Field(default=None, ge=0)
    mlx_memory_limit: int | None = Field(default=None, ge=0)
    judge_url: str | None = None
    judge_model: str = ""
    concurrency: int = Field(default=4, ge=1, le=1024)
    suites: str = "all"
    server_api_key: SecretStr | None = None
    influx_token: SecretStr | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            # A value read under an alias (OPENAI_BASE_URL) is reported by that name.
            field = _ALIASES.get(where.upper(), where)
            variable = where if field != where else f"GOML_{field.upper()}"
            if field not in type(self).model_fields:
                raise ConfigError(field, f"unknown setting: {first['msg']}") from None
            # Secrets are never echoed, and the chained ValidationError would repeat them.
            secret = field in ("api_key", "server_api_key", "influx_token")
            shown = "<hidden>" if secret else repr(first.get("input"))
            problem = f"{first['msg']} (got {shown}; env var {variable})"
            error = ConfigError(field, problem)
            raise error from (None if secret else exc)

    @field_validator("suites")
    @classmethod
    def _check_suites(cls, value: str) -> str:
        names = {part.strip().lower() for part in value.split(",") if part.strip()}
        unknown = sorted(names - _SUITES)
        if not names or unknown:
            raise ValueError(
                f"unknown suite(s) {unknown or [value]}; choose from {sorted(_SUITES)}"
            )
        return ",".join(sorted(names))

    @field_validator("base_url", "openai_base_url", "judge_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value

    def server_url(self) -> str | None:
        """The server to use when none is named: ``GOML_BASE_URL``, then ``OPENAI_BASE_URL``."""
        return self.base_url or self.openai_base_url

    @property
    def scoring_concurrency(self) -> int | None:
        """``concurrency`` when it was set (an argument or ``GOML_CONCURRENCY``), else None:
        the scoring engine then sizes itself to the judge model's parallel slots.

        Example:
            >>> GomlSettings(concurrency=8).scoring_concurrency
            8
        """
        return self.concurrency if "concurrency" in self.model_fields_set else None

    @field_validator("default_backend")
    @classmethod
    def _check_backend(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a backend name, got an empty string")
        return value


#: Variables GomlSettings reads besides ``GOML_*``: its aliases and those of the cache dir.
_ALSO_READ = frozenset({*_ALIASES, "XDG_CACHE_HOME", "HOME"})

#: The environment :func:`current_settings` last read, and the settings built from it.
_current: tuple[tuple[tuple[str, str], ...], GomlSettings] | None = None


def _environment() -> tuple[tuple[str, str], ...]:
    """The variables GomlSettings depends on, as they are now (names matched in any case)."""
    return tuple(
        sorted(
            (name, value)
            for name, value in os.environ.items()
            if name.upper().startswith("GOML_") or name.upper() in _ALSO_READ
        )
    )


def current_settings() -> GomlSettings:
    """The settings of the environment as it is now: built once, then shared.

    Library code that is given no :class:`GomlSettings` uses this one. It is built on the first
    call and returned again while the variables it reads (``GOML_*``, ``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``, ``XDG_CACHE_HOME``, ``HOME``) keep their values; after one changes,
    the next call builds it anew. Treat it as read-only: to use other values, pass your own
    ``GomlSettings(...)`` to the object or function.

    Raises:
        ConfigError: a ``GOML_*`` variable holds an invalid value (nothing is cached then).

    Example:
        >>> current_settings().concurrency >= 1
        True
    """
    global _current
    environment = _environment()
    # One read of the global: two threads may both build on a change, and either result is
    # the same settings, so no lock is needed.
    cached = _current
    if cached is not None and cached[0] == environment:
        return cached[1]
    settings = GomlSettings()
    _current = (environment, settings)
    return settings


def refresh_settings() -> GomlSettings:
    """Drop the shared settings and read the environment again now.

    :func:`current_settings` already notices a changed variable; this is for a test (or a
    program) that changed the shared instance in place and wants the environment's values back.

    Example:
        >>> refresh_settings() is current_settings()
        True
    """
    global _current
    _current = None
    return current_settings()
