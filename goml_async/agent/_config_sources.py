"""Where AgentConfig's values come from: its environment variables and its TOML file.

Three pydantic-settings sources, below the explicit arguments:

- ``GOML_AGENT_<FIELD>`` for the agent's own fields;
- for the fields shared with :class:`~goml_async.settings.GomlSettings` (the judge and the
  Influx token), GomlSettings' own variables (``GOML_JUDGE_URL``, ...), then the deprecated
  ``GOML_AGENT_*`` names, with a logged note naming the new variable;
- the TOML file, through pydantic-settings' TOML source.
"""

from __future__ import annotations

import logging
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from ..errors import ConfigError
from ..settings import GomlSettings

logger = logging.getLogger("goml_async.agent.config")

#: The prefix of the agent's own variables.
ENV_PREFIX: Final = "GOML_AGENT_"

#: The prefix of GomlSettings' variables, under which the shared fields are read.
SETTINGS_PREFIX: Final = str(GomlSettings.model_config.get("env_prefix", "GOML_"))

#: The fields AgentConfig shares with GomlSettings (the same name in both classes).
SHARED_FIELDS: Final = ("judge_url", "judge_model", "influx_token")

#: Fields holding a path; a relative one in the file is relative to the file's folder.
PATH_FIELDS: Final = ("ssh_key", "known_hosts", "work_dir")

#: The init keyword that names the TOML file (like pydantic-settings' own ``_env_file``).
TOML_FILE_KEYWORD: Final = "_toml_file"


def env_name(field: str) -> str:
    """The variable ``field`` is read from: ``GOML_JUDGE_URL``, ``GOML_AGENT_PORT``, ..."""
    prefix = SETTINGS_PREFIX if field in SHARED_FIELDS else ENV_PREFIX
    return f"{prefix}{field.upper()}"


class AgentEnvSource(EnvSettingsSource):
    """``GOML_AGENT_<FIELD>`` for the agent's own fields (the shared ones are read elsewhere)."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        return {name: value for name, value in values.items() if name not in SHARED_FIELDS}


class SharedEnvSource(PydanticBaseSettingsSource):
    """The shared fields from GomlSettings' ``GOML_*`` variables, then their deprecated names.

    A value found only under the old name is used, and a note names the new variable; when
    both are set the new one wins and the note says the old one is ignored. ``origins`` maps
    each field read to the variable it came from. Notes are logged warnings rather than
    DeprecationWarnings, which Python hides from the ``goml agent`` user they are meant for.
    """

    def __init__(self, settings_cls: type[BaseSettings], *, note: bool = True) -> None:
        super().__init__(settings_cls)
        self._current = EnvSettingsSource(settings_cls, env_prefix=SETTINGS_PREFIX)
        self._deprecated = EnvSettingsSource(settings_cls, env_prefix=ENV_PREFIX)
        self._note = note
        self.origins: dict[str, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the fields together

    def __call__(self) -> dict[str, Any]:
        current, deprecated = self._current(), self._deprecated()
        values: dict[str, Any] = {}
        for name in SHARED_FIELDS:
            new, old = env_name(name), f"{ENV_PREFIX}{name.upper()}"
            # An empty variable counts as not set, as it does for the agent's other variables.
            if _is_set(current.get(name)) or (name in current and name not in deprecated):
                values[name], self.origins[name] = current[name], new
                if self._note and _is_set(deprecated.get(name)):
                    logger.warning("%s is deprecated and ignored: %s is set", old, new)
            elif name in deprecated:
                values[name], self.origins[name] = deprecated[name], old
                if self._note:
                    logger.warning("%s is deprecated: set %s instead", old, new)
        return values


def _is_set(value: Any) -> bool:
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


class FileSource(TomlConfigSettingsSource):
    """The TOML file of :meth:`AgentConfig.load`: pydantic-settings' TOML source, in the agent's
    format (the ``[agent]`` table over the top-level keys, relative paths relative to the file's
    folder). A missing file is an error here, where pydantic-settings would skip it silently."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path | None) -> None:
        if toml_file is not None and not toml_file.is_file():
            problem = "not a file" if toml_file.exists() else "no such config file"
            raise ConfigError("config", f"{problem}: {str(toml_file)!r}")
        super().__init__(settings_cls, toml_file=toml_file)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        return read_toml(Path(str(file_path)))


def read_toml(path: Path) -> dict[str, Any]:
    """The agent's keys from a TOML file: the ``[agent]`` table over the top-level keys."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config", f"no such config file: {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read {str(path)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{str(path)!r} is not valid TOML: {exc}") from exc
    table = data.pop("agent", {})
    if not isinstance(table, dict):
        raise ConfigError("agent", f"must be a table in {str(path)!r}, got {table!r}")
    values = {**data, **table}
    for name in PATH_FIELDS:
        value = values.get(name)
        if isinstance(value, str) and value:
            expanded = Path(value).expanduser()
            values[name] = str(expanded if expanded.is_absolute() else path.parent / expanded)
    return values


def origin(
    settings_cls: type[BaseSettings], field: str, given: dict[str, Any], file: Path | None
) -> str:
    """Where ``field``'s value came from, in the order the sources rank: for error messages.

    Only called on an error, so reading the environment and the file again costs nothing that
    matters (and keeps the sources free of state shared between calls).
    """
    if field in given:
        return "given as an argument"
    shared = SharedEnvSource(settings_cls, note=False)
    shared()
    if field in shared.origins:
        return f"env var {shared.origins[field]}"
    from_env = field in AgentEnvSource(settings_cls)()
    if not from_env and file is not None and field in read_toml(file):
        return f"in {str(file)!r}"
    return f"env var {env_name(field)}"
