"""Tool calls on OpenAI's wire: the request's ``tools``/``tool_choice`` and the reply's calls.

A streamed reply carries ``choices[0].delta.tool_calls``: a list of
``{"index", "id", "type", "function": {"name", "arguments"}}`` where the first delta of a call
has its ID and name and later ones add fragments of its arguments; a whole reply carries
``choices[0].message.tool_calls`` with each call complete. Both become
:class:`~goml_async.tools.ToolCallDelta` events (a whole call is one delta), which the
stream's assembler joins and bounds. A shape that is not OpenAI's (a list that is not a list,
an index that is not a number, a fragment that is not a string) is a clear
:class:`~goml_async.errors.GenerationError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import GenerationError
from ..tools import MAX_TOOL_CALLS, ToolCallDelta
from ..types import GenerateConfig

__all__ = ["message_tool_calls", "tool_call_deltas", "tools_fields"]


def tools_fields(config: GenerateConfig) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` as OpenAI reads them (nothing without tools)."""
    if not config.tools:
        return {}
    fields: dict[str, Any] = {"tools": [tool.to_openai() for tool in config.tool_specs]}
    if config.choice is not None:
        fields["tool_choice"] = config.choice.to_openai()
    return fields


def _malformed(what: str, value: object) -> GenerationError:
    return GenerationError(f"the server sent a malformed tool call ({what}): {value!r}"[:300])


def _delta(entry: object, index: object) -> ToolCallDelta:
    if not isinstance(entry, Mapping):
        raise _malformed("an entry that is not an object", entry)
    if type(index) is not int or not 0 <= index < MAX_TOOL_CALLS:
        raise _malformed(f"index not a number in 0..{MAX_TOOL_CALLS - 1}", index)
    function = entry.get("function") or {}
    if not isinstance(function, Mapping):
        raise _malformed("function is not an object", function)
    call_id, name, arguments = entry.get("id"), function.get("name"), function.get("arguments")
    for what, value in (("id", call_id), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise _malformed(f"{what} is not a string", value)
    if arguments is None:
        arguments = ""
    if not isinstance(arguments, str):
        raise _malformed("arguments is not a string", arguments)
    return ToolCallDelta(index, call_id, name, arguments)


def tool_call_deltas(raw: object) -> list[ToolCallDelta]:
    """The deltas of a streamed chunk's ``delta.tool_calls``."""
    if not isinstance(raw, list) or len(raw) > MAX_TOOL_CALLS:
        raise _malformed(f"tool_calls is not a list of at most {MAX_TOOL_CALLS}", raw)
    return [
        _delta(entry, entry.get("index") if isinstance(entry, Mapping) else None) for entry in raw
    ]


def message_tool_calls(raw: object) -> list[ToolCallDelta]:
    """A whole reply's ``message.tool_calls``, each call as one delta (index = position)."""
    if not isinstance(raw, list) or len(raw) > MAX_TOOL_CALLS:
        raise _malformed(f"tool_calls is not a list of at most {MAX_TOOL_CALLS}", raw)
    return [_delta(entry, index) for index, entry in enumerate(raw)]
