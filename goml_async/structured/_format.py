"""``response_format``: the accepted shapes, their validation and the normalized value.

Every malformed shape is a :class:`~goml_async.errors.ConfigError` naming the field
(``response_format.json_schema.schema``, ``response_format.choices[2]``, ...). Sizes are bounded
so that a hostile request cannot make grammar compilation expensive.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ..errors import ConfigError

__all__ = [
    "FormatType",
    "MAX_CHOICES",
    "MAX_CHOICE_CHARS",
    "MAX_PATTERN_CHARS",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "ResponseFormat",
    "ResponseFormatLike",
    "normalize_response_format",
]

FormatType: TypeAlias = Literal["json_object", "json_schema", "regex", "choice"]

#: The largest schema accepted, as compact JSON (grammar compilation grows with it).
MAX_SCHEMA_BYTES = 64 * 1024
#: The deepest nesting of objects and arrays accepted in a schema.
MAX_SCHEMA_DEPTH = 32
#: The longest regular expression accepted.
MAX_PATTERN_CHARS = 2048
#: The most alternatives a ``choice`` format may list, and the longest of them.
MAX_CHOICES = 512
MAX_CHOICE_CHARS = 1024

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FIELD = "response_format"


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """A validated ``response_format``: what the output must be.

    Build it with :func:`normalize_response_format` (``GenerateConfig`` does): it accepts
    OpenAI's shapes, goml's ``regex`` and ``choice`` shapes and pydantic model classes.

    Attributes:
        type: ``"json_object"`` (any JSON object), ``"json_schema"``, ``"regex"`` or
            ``"choice"``.
        name: the schema's name (``json_schema``; a pydantic class's name).
        schema_json: the schema as compact JSON, its required properties first in each
            object (the order llama.cpp generates them in, and the order the checker expects).
        strict: OpenAI's ``strict`` flag as given (None when absent); goml always enforces.
        pattern: the regular expression (``regex``); it must match the whole output.
        choices: the alternatives (``choice``); the output is exactly one of them.
        model: the pydantic model class given, whose instance ``Result.parsed`` returns.
    """

    type: FormatType
    name: str = ""
    schema_json: str = ""
    strict: bool | None = None
    pattern: str = ""
    choices: tuple[str, ...] = ()
    model: builtins.type[Any] | None = None

    @property
    def is_json(self) -> bool:
        """True for the JSON formats (``json_object`` and ``json_schema``)."""
        return self.type in ("json_object", "json_schema")

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema (a fresh copy); ``{"type": "object"}`` for ``json_object``."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.type != "json_schema":
            raise ConfigError(_FIELD, f"a {self.type} format has no JSON schema")
        value: dict[str, Any] = json.loads(self.schema_json)
        return value

    def to_openai(self) -> dict[str, Any]:
        """The ``response_format`` body field of OpenAI's API (JSON formats only)."""
        if self.type == "json_object":
            return {"type": "json_object"}
        if self.type != "json_schema":
            raise ConfigError(_FIELD, f"{self.type!r} is goml's own format, not OpenAI's")
        inner: dict[str, Any] = {"name": self.name, "schema": self.schema}
        if self.strict is not None:
            inner["strict"] = self.strict
        return {"type": "json_schema", "json_schema": inner}

    def describe(self) -> str:
        """A short description for messages (``json_schema 'person'``, ``regex '[0-9]+'``)."""
        if self.type == "json_schema":
            return f"json_schema {self.name!r}"
        if self.type == "regex":
            return f"regex {self.pattern[:60]!r}"
        if self.type == "choice":
            return f"choice of {len(self.choices)}"
        return "json_object"


#: What ``response_format=`` accepts: an OpenAI/goml mapping, a pydantic model class, a
#: ResponseFormat, or None (``{"type": "text"}`` is None too).
ResponseFormatLike: TypeAlias = ResponseFormat | Mapping[str, Any] | type[Any]


def normalize_response_format(value: object) -> ResponseFormat | None:
    """Validate a ``response_format`` value; None for unconstrained text.

    Raises:
        ConfigError: the shape is malformed, too large, or the schema is not a valid JSON
            schema; ``field`` names the offending part.
    """
    if value is None or isinstance(value, ResponseFormat):
        return value
    if isinstance(value, type):
        return _from_model(value)
    if not isinstance(value, Mapping):
        raise ConfigError(
            _FIELD,
            "must be a dict such as {'type': 'json_object'}, a pydantic model class or None, "
            f"got {type(value).__name__}",
        )
    kind = value.get("type")
    if not isinstance(kind, str):
        raise ConfigError(f"{_FIELD}.type", f"must be a str, got {kind!r}")
    if kind == "text":
        _only(value, {"type"}, _FIELD)
        return None
    if kind == "json_object":
        _only(value, {"type"}, _FIELD)
        return ResponseFormat("json_object")
    if kind == "json_schema":
        _only(value, {"type", "json_schema"}, _FIELD)
        return _from_json_schema(value.get("json_schema"))
    if kind == "regex":
        _only(value, {"type", "pattern"}, _FIELD)
        return ResponseFormat("regex", pattern=_pattern(value.get("pattern")))
    if kind == "choice":
        _only(value, {"type", "choices"}, _FIELD)
        return ResponseFormat("choice", choices=_choices(value.get("choices")))
    raise ConfigError(
        f"{_FIELD}.type",
        f"must be one of text, json_object, json_schema, regex, choice; got {kind!r}",
    )


def _only(value: Mapping[str, Any], allowed: set[str], field: str) -> None:
    extra = sorted(str(key) for key in value if key not in allowed)
    if extra:
        raise ConfigError(
            f"{field}.{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
        )


def _from_model(cls: type[Any]) -> ResponseFormat:
    schema_of = getattr(cls, "model_json_schema", None)
    if not callable(schema_of) or not callable(getattr(cls, "model_validate", None)):
        raise ConfigError(_FIELD, f"a class must be a pydantic model, got {cls.__name__}")
    schema = schema_of()
    name = cls.__name__ if _NAME.fullmatch(cls.__name__) else "response"
    return ResponseFormat(
        "json_schema", name=name, schema_json=_schema_json(schema), strict=True, model=cls
    )


def _from_json_schema(inner: object) -> ResponseFormat:
    field = f"{_FIELD}.json_schema"
    if not isinstance(inner, Mapping):
        raise ConfigError(field, f"must be a dict with name and schema, got {inner!r}"[:200])
    _only(inner, {"name", "schema", "strict", "description"}, field)
    name = inner.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{field}.name", f"must be 1-64 letters, digits, '_' or '-', got {name!r}"[:200]
        )
    strict = inner.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ConfigError(f"{field}.strict", f"must be a bool, got {strict!r}")
    description = inner.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError(f"{field}.description", f"must be a str, got {description!r}")
    if "schema" not in inner:
        raise ConfigError(f"{field}.schema", "is required")
    schema = inner["schema"]
    if not isinstance(schema, Mapping):
        raise ConfigError(f"{field}.schema", f"must be a dict, got {type(schema).__name__}")
    return ResponseFormat("json_schema", name=name, schema_json=_schema_json(schema), strict=strict)


def _schema_json(schema: Mapping[str, Any]) -> str:
    field = f"{_FIELD}.json_schema.schema"
    _check_depth(schema, field)
    try:
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, f"must be JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise ConfigError(field, f"is larger than {MAX_SCHEMA_BYTES} bytes as JSON")
    plain = json.loads(text)
    _check_schema(plain, field)
    return json.dumps(_required_first(plain), separators=(",", ":"), ensure_ascii=False)


def _check_depth(value: object, field: str) -> None:
    # Iterative, so a hostile, deeply nested value cannot exhaust the recursion limit.
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ConfigError(field, f"nests deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(item, Mapping):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            pending.extend((child, depth + 1) for child in item)


def _check_schema(schema: dict[str, Any], field: str) -> None:
    import jsonschema

    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "".join(f".{part}" for part in exc.path)
        raise ConfigError(f"{field}{where}", f"not a valid JSON schema: {exc.message}") from None


def _required_first(schema: object) -> Any:
    """``schema`` with each object's required properties listed before the optional ones.

    JSON Schema leaves property order free; llama.cpp's grammar emits required properties
    first and the stream checker expects schema order, so both agree on this one.
    """
    if isinstance(schema, list):
        return [_required_first(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _required_first(value) for key, value in schema.items()}
    properties = result.get("properties")
    required = result.get("required")
    if isinstance(properties, dict) and isinstance(required, list):
        first = [key for key in properties if key in required]
        rest = [key for key in properties if key not in required]
        result["properties"] = {key: properties[key] for key in first + rest}
    return result


def _pattern(pattern: object) -> str:
    field = f"{_FIELD}.pattern"
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(field, f"must be a non-empty str, got {pattern!r}"[:200])
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ConfigError(field, f"is longer than {MAX_PATTERN_CHARS} characters")
    return pattern


def _choices(choices: object) -> tuple[str, ...]:
    field = f"{_FIELD}.choices"
    if isinstance(choices, str | bytes) or not isinstance(choices, Sequence) or not choices:
        raise ConfigError(field, f"must be a non-empty list of str, got {choices!r}"[:200])
    if len(choices) > MAX_CHOICES:
        raise ConfigError(field, f"lists more than {MAX_CHOICES} alternatives")
    for index, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice:
            raise ConfigError(f"{field}[{index}]", f"must be a non-empty str, got {choice!r}")
        if len(choice) > MAX_CHOICE_CHARS:
            raise ConfigError(f"{field}[{index}]", f"is longer than {MAX_CHOICE_CHARS} characters")
    if len(set(choices)) != len(choices):
        raise ConfigError(field, "lists an alternative twice")
    return tuple(choices)
