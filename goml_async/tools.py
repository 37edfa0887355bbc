"""Tool calling: OpenAI's tool shapes, validated, and the calls a model makes.

- :class:`Tool` is one validated ``{"type": "function", "function": {"name", "description",
  "parameters"}}``; :func:`normalize_tools` checks a ``tools=`` list (names match
  ``^[a-zA-Z0-9_-]{1,64}$`` and are unique, ``parameters`` is a JSON schema that structured
  output accepts, sizes are bounded).
- :func:`normalize_tool_choice` checks ``tool_choice=`` (``"auto"``, ``"none"``,
  ``"required"`` or ``{"type": "function", "function": {"name": ...}}``).
- :class:`ToolCall` is a call the model made (``arguments`` is a JSON string, as OpenAI's);
  :class:`ToolCallDelta` is a piece of one while streaming (``TokenStream.events()``).

Every malformed value is a :class:`~goml_async.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from .errors import ConfigError
from .structured._format import ResponseFormat, normalize_response_format
from .structured._grammar import grammar_for

__all__ = [
    "MAX_ARGUMENTS_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_TOOLS",
    "MAX_TOOL_CALLS",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolChoiceLike",
    "ToolLike",
    "normalize_tool_choice",
    "normalize_tools",
]

#: The most tools one call may offer.
MAX_TOOLS = 128
#: The most tool calls one reply (or one assistant message) may carry.
MAX_TOOL_CALLS = 64
#: The longest ``arguments`` string of one call; a server streaming more is cut off there.
MAX_ARGUMENTS_CHARS = 1024 * 1024
#: The longest tool description.
MAX_DESCRIPTION_CHARS = 8192
#: The longest tool-call ID.
MAX_ID_CHARS = 256

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_EMPTY_OBJECT = {"type": "object", "properties": {}}

ToolLike: TypeAlias = "Tool | Mapping[str, Any]"
ToolChoiceMode: TypeAlias = Literal["auto", "none", "required"]


def _name(field: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ConfigError(field, f"must match ^[a-zA-Z0-9_-]{{1,64}}$, got {value!r}"[:200])
    return value


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: the call's ID, the tool's name and its arguments (JSON text).

    Example:
        >>> call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
        >>> call.parsed_arguments()
        {'city': 'Paris'}
    """

    id: str
    name: str
    arguments: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 0 < len(self.id) <= MAX_ID_CHARS:
            raise ConfigError("tool_calls.id", f"must be a non-empty str, got {self.id!r}"[:200])
        _name("tool_calls.function.name", self.name)
        if not isinstance(self.arguments, str) or len(self.arguments) > MAX_ARGUMENTS_CHARS:
            raise ConfigError(
                "tool_calls.function.arguments",
                f"must be a JSON str of at most {MAX_ARGUMENTS_CHARS} characters",
            )

    def parsed_arguments(self) -> Any:
        """The arguments as a Python value (``json.loads``)."""
        return json.loads(self.arguments)

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's shape: ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def coerce(cls, value: object, field: str = "tool_calls") -> ToolCall:
        """A ToolCall, or OpenAI's dict shape of one, as a ToolCall."""
        if isinstance(value, ToolCall):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"must be a ToolCall or an OpenAI tool-call dict: {value!r}")
        function = value.get("function")
        if value.get("type", "function") != "function" or not isinstance(function, Mapping):
            raise ConfigError(field, f'needs "type": "function" and a function: {value!r}'[:200])
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, Mapping):
            arguments = json.dumps(arguments)
        return cls(value.get("id"), function.get("name"), arguments)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call while it streams, in arrival order beside the text tokens.

    Attributes:
        index: which call of the reply (0, 1, ...), as in OpenAI's streamed ``tool_calls``.
        id: the call's ID, on the call's first delta (None on the others).
        name: the tool's name, on the call's first delta (None on the others).
        arguments: the new fragment of the call's JSON arguments ("" when none).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """One validated tool (a function the model may call).

    Attributes:
        name: the function's name.
        description: what it does, for the model ("" when not given).
        parameters: its arguments' JSON schema (an object schema; ``{}`` when not given).
        strict: OpenAI's ``strict`` flag as given (None when absent); goml always validates.
    """

    name: str
    description: str = ""
    parameters_json: str = json.dumps(_EMPTY_OBJECT)
    strict: bool | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters' JSON schema."""
        value: dict[str, Any] = json.loads(self.parameters_json)
        return value

    @property
    def format(self) -> ResponseFormat:
        """The arguments' format: a ``json_schema`` response format of the parameters."""
        fmt = normalize_response_format(
            {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.parameters}}
        )
        assert fmt is not None
        return fmt

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's shape of the tool."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


def _tool(value: object, index: int) -> Tool:
    field = f"tools[{index}]"
    if isinstance(value, Tool):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            field, f"must be a dict in OpenAI's tool shape, got {type(value).__name__}"
        )
    if value.get("type") != "function":
        raise ConfigError(f"{field}.type", f'must be "function", got {value.get("type")!r}')
    extra = set(value) - {"type", "function"}
    if extra:
        raise ConfigError(field, f"unknown key(s) {sorted(extra)}")
    function = value.get("function")
    if not isinstance(function, Mapping):
        raise ConfigError(f"{field}.function", "must be a dict with name and parameters")
    extra = set(function) - {"name", "description", "parameters", "strict"}
    if extra:
        raise ConfigError(f"{field}.function", f"unknown key(s) {sorted(extra)}")
    name = _name(f"{field}.function.name", function.get("name"))
    description = function.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise ConfigError(
            f"{field}.function.description", f"must be a str of <= {MAX_DESCRIPTION_CHARS} chars"
        )
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ConfigError(f"{field}.function.strict", f"must be a bool, got {strict!r}")
    parameters = function.get("parameters", _EMPTY_OBJECT)
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"{field}.function.parameters", "must be a JSON schema (a dict)")
    if parameters.get("type", "object") != "object":
        raise ConfigError(
            f"{field}.function.parameters", "must be an object schema (arguments are an object)"
        )
    try:
        fmt = normalize_response_format(
            {"type": "json_schema", "json_schema": {"name": name, "schema": dict(parameters)}}
        )
        assert fmt is not None
        # Compiled (and cached) now, so parameters that cannot be checked fail here.
        grammar_for(fmt)
    except ConfigError as exc:
        raise ConfigError(f"{field}.function.parameters", exc.problem) from None
    return Tool(name, description, fmt.schema_json, strict)


def normalize_tools(value: object) -> tuple[Tool, ...]:
    """Validate a ``tools=`` list (Tools or OpenAI dicts); () for None or an empty list."""
    if value is None:
        return ()
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ConfigError("tools", f"must be a list of tools, got {type(value).__name__}")
    if len(value) > MAX_TOOLS:
        raise ConfigError("tools", f"at most {MAX_TOOLS} tools, got {len(value)}")
    tools = tuple(_tool(item, index) for index, item in enumerate(value))
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise ConfigError("tools", f"two tools are named {tool.name!r}")
        seen.add(tool.name)
    return tools


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """A validated ``tool_choice``: ``mode`` is ``auto``, ``none`` or ``required``; ``name``
    is set when one function was named (then ``mode`` is ``required``)."""

    mode: ToolChoiceMode
    name: str | None = None

    def to_openai(self) -> str | dict[str, Any]:
        """OpenAI's shape: the mode's string, or ``{"type": "function", "function": {...}}``."""
        if self.name is not None:
            return {"type": "function", "function": {"name": self.name}}
        return self.mode


ToolChoiceLike: TypeAlias = "ToolChoice | str | Mapping[str, Any]"


def normalize_tool_choice(value: object, tools: Sequence[Tool]) -> ToolChoice | None:
    """Validate ``tool_choice=`` against ``tools``; None when neither is given.

    Without a choice, ``auto`` applies when there are tools. ``required`` or a named function
    with no tools, or a name that is not among the tools, is a ConfigError.
    """
    if value is None:
        return ToolChoice("auto") if tools else None
    if isinstance(value, ToolChoice):
        choice = value
    elif isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise ConfigError(
                "tool_choice", f'must be "auto", "none", "required" or a function, got {value!r}'
            )
        choice = ToolChoice(value)  # type: ignore[arg-type]
    elif isinstance(value, Mapping):
        function = value.get("function")
        if value.get("type") != "function" or not isinstance(function, Mapping):
            raise ConfigError(
                "tool_choice", 'a dict must be {"type": "function", "function": {"name": ...}}'
            )
        choice = ToolChoice("required", _name("tool_choice.function.name", function.get("name")))
    else:
        raise ConfigError("tool_choice", f"must be a str or a dict, got {type(value).__name__}")
    if choice.mode == "required" and not tools:
        what = f"the function {choice.name!r}" if choice.name else '"required"'
        raise ConfigError("tool_choice", f"{what} needs tools")
    if choice.name is not None and choice.name not in {tool.name for tool in tools}:
        raise ConfigError("tool_choice", f"names {choice.name!r}, which is not among the tools")
    return choice
