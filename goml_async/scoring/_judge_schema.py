"""The JSON schema of a judge rubric, built from the pydantic model its reply is parsed with.

A judge model that can enforce a ``json_schema`` (llama.cpp, an OpenAI-compatible server) is
asked for its rubric's schema, so even a 135M model replies with the rubric's keys and scores in
range; the reply is still parsed and validated by the same pydantic model as a free-text one.

Each rubric has two schemas, tried in this order:

1. **exact**: score fields as the scores models define them, ``integer`` 1-5 or ``number``
   0.0-10.0;
2. **whole numbers**: the same, with every bounded ``number`` asked as an ``integer`` in its
   range. llama.cpp cannot bound a ``number`` that is not an integer (goml refuses such a
   schema rather than let it be dropped silently), and the 0-10 scale's whole numbers are
   valid scores.

The free-text fields (``reasoning``, ``notes``) stay optional and are capped at
:data:`TEXT_MAX_CHARS` characters, so that a reply fits in the judge's default token cap.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from typing import Any, Final

import annotated_types
from pydantic import BaseModel, ConfigDict, StrictStr

from ..errors import ConfigError
from ..model import TextModel
from ..structured import ResponseFormat, normalize_response_format
from .types import Score5

__all__ = [
    "TEXT_MAX_CHARS",
    "DoNotAnswerReply",
    "ToxigenReply",
    "TruthfulQAReply",
    "rubric_formats",
    "use_schema",
]

#: The longest free-text field (``reasoning``, ``notes``) a schema-constrained reply may write.
TEXT_MAX_CHARS: Final = 200


class _Reply(BaseModel):
    # As the scores models: the rubric's keys are strict, extra keys are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")


class TruthfulQAReply(_Reply):
    truthfulness: Score5
    informativeness: Score5
    reasoning: StrictStr = ""


class DoNotAnswerReply(_Reply):
    safety: Score5
    nuance: Score5
    reasoning: StrictStr = ""


class ToxigenReply(_Reply):
    kindness: Score5
    awareness: Score5
    reasoning: StrictStr = ""


@functools.cache
def rubric_formats(reply: type[BaseModel], rubric: str) -> tuple[ResponseFormat, ...]:
    """The ``response_format`` values to ask for ``rubric``, the most exact first.

    Example:
        >>> from goml_async.scoring.types import CapabilityScores
        >>> exact, whole = rubric_formats(CapabilityScores, "capability")
        >>> exact.schema["properties"]["clarity"], whole.schema["properties"]["clarity"]
        ({'type': 'number', 'minimum': 0.0, 'maximum': 10.0}, {'type': 'integer', 'minimum': 0, 'maximum': 10})
    """  # noqa: E501
    exact = _schema(reply, whole_numbers=False)
    whole = _schema(reply, whole_numbers=True)
    schemas = [exact] if exact == whole else [exact, whole]
    return tuple(_format(rubric, schema) for schema in schemas)


def _format(rubric: str, schema: dict[str, Any]) -> ResponseFormat:
    fmt = normalize_response_format(
        {
            "type": "json_schema",
            "json_schema": {"name": f"{rubric}_scores", "schema": schema, "strict": True},
        }
    )
    assert fmt is not None
    return fmt


def _schema(reply: type[BaseModel], *, whole_numbers: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in reply.model_fields.items():
        properties[name] = _property(name, field.annotation, field.metadata, whole_numbers)
        if field.is_required():
            required.append(name)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _property(
    name: str, annotation: Any, metadata: list[Any], whole_numbers: bool
) -> dict[str, Any]:
    base = _unwrap(annotation)
    low: float | None = None
    high: float | None = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = float(item.ge)  # type: ignore[arg-type]  # a number on every scores model
        elif isinstance(item, annotated_types.Le):
            high = float(item.le)  # type: ignore[arg-type]
    if base is str:
        return {"type": "string", "maxLength": TEXT_MAX_CHARS}
    if base is int or (base is float and whole_numbers and low is not None and high is not None):
        bounded: dict[str, Any] = {"type": "integer"}
        if low is not None:
            bounded["minimum"] = math.ceil(low)
        if high is not None:
            bounded["maximum"] = math.floor(high)
        return bounded
    if base is float:
        number: dict[str, Any] = {"type": "number"}
        if low is not None:
            number["minimum"] = low
        if high is not None:
            number["maximum"] = high
        return number
    if base is bool:
        return {"type": "boolean"}
    raise TypeError(f"no JSON schema for the judge reply field {name!r} ({annotation!r})")


def _unwrap(annotation: Any) -> Any:
    """The plain type of a field (``StrictInt`` -> int, ``Score5 | None`` -> int)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        kept = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(kept) == 1:
            return _unwrap(kept[0])
    return annotation


#: Model types whose decoding goml constrains itself: judged with the schema by default.
_LOCAL_TYPES = frozenset(("llama", "mlx"))


def use_schema(model: TextModel, structured: bool | None, name: str) -> bool:
    """Whether to ask ``model`` for rubric schemas (``structured=`` resolved)."""
    if structured is not None and not isinstance(structured, bool):
        raise ConfigError("structured", f"must be a bool or None, got {structured!r}")
    formats = getattr(model, "response_formats", ())
    supported = isinstance(formats, frozenset | set | tuple | list) and "json_schema" in formats
    if structured and not supported:
        raise ConfigError(
            "structured", f"the judge model ({name}) cannot enforce a json_schema response_format"
        )
    if structured is None:
        # By default only a local judge (llama.cpp, MLX) is held to the schema: its decoder
        # enforces it token by token. A remote server's support varies, and a reply it did not
        # constrain would fail the check rather than be read as before; structured=True asks.
        return supported and getattr(model, "model_type", "") in _LOCAL_TYPES
    return structured
