"""Assembling streamed tool calls, and checking them at the end of the stream.

Every backend's stream hands its :class:`~goml_async.tools.ToolCallDelta` events to one
:class:`ToolCallAssembler` (the HTTP and llama.cpp backends alike), which keeps memory bounded
whatever a server sends: at most :data:`~goml_async.tools.MAX_TOOL_CALLS` calls, at most
:data:`~goml_async.tools.MAX_ARGUMENTS_CHARS` characters of arguments in all, each new call at
the next index (no gaps), one ID and one name per call. At the end each call's arguments are
checked against its tool's parameters with ``jsonschema`` (as JSON, in any key order); a call
that fails, a call to a tool that was not offered, or a reply that does not meet
``tool_choice`` raises :class:`~goml_async.errors.SchemaViolation`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from .errors import GenerationError, SchemaViolation
from .structured._checker import validate_document
from .tools import (
    MAX_ARGUMENTS_CHARS,
    MAX_ID_CHARS,
    MAX_TOOL_CALLS,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)

__all__ = ["ToolCallAssembler", "check_tool_choice"]


class ToolCallAssembler:
    """Joins the deltas of a reply's tool calls, index by index.

    Example:
        >>> from goml_async.tools import ToolCallDelta, normalize_tools
        >>> tools = normalize_tools([{"type": "function", "function": {"name": "f"}}])
        >>> assembler = ToolCallAssembler(tools)
        >>> assembler.add(ToolCallDelta(0, "call_1", "f", '{"a"'))
        >>> assembler.add(ToolCallDelta(0, arguments=": 1}"))
        >>> assembler.finish()
        (ToolCall(id='call_1', name='f', arguments='{"a": 1}'),)
    """

    __slots__ = ("_arguments", "_ids", "_names", "_size", "_tools")

    def __init__(self, tools: Sequence[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._ids: list[str | None] = []
        self._names: list[str | None] = []
        self._arguments: list[list[str]] = []
        self._size = 0

    def __len__(self) -> int:
        return len(self._names)

    def add(self, delta: ToolCallDelta) -> None:
        """Take one delta.

        Raises:
            GenerationError: the delta breaks the stream's shape or a bound (an index that
                skips ahead, too many calls or characters, a second ID or name for a call,
                a fragment that is not a string).
        """
        index = delta.index
        count = len(self._names)
        if type(index) is not int or not 0 <= index <= count:
            raise GenerationError(
                f"a tool-call delta has index {index!r}, but the next call is {count} "
                "(indexes must start at 0 and may not skip)"[:300]
            )
        if index == count:
            if count >= MAX_TOOL_CALLS:
                raise GenerationError(f"the reply has more than {MAX_TOOL_CALLS} tool calls")
            self._ids.append(None)
            self._names.append(None)
            self._arguments.append([])
        self._ids[index] = _once("ID", self._ids[index], delta.id, index, MAX_ID_CHARS)
        self._names[index] = _once("name", self._names[index], delta.name, index, 64)
        fragment = delta.arguments
        if not isinstance(fragment, str):
            raise GenerationError(
                f"tool call {index}'s arguments fragment is not a string: {fragment!r}"[:300]
            )
        if fragment:
            self._size += len(fragment)
            if self._size > MAX_ARGUMENTS_CHARS:
                raise GenerationError(
                    f"the tool calls' arguments are longer than {MAX_ARGUMENTS_CHARS} characters"
                )
            self._arguments[index].append(fragment)

    def finish(self) -> tuple[ToolCall, ...]:
        """The assembled calls, each checked against its tool.

        Raises:
            SchemaViolation: a call has no name, names a tool that was not offered, or its
                arguments are not a valid document of the tool's parameters.
        """
        calls = []
        for index, name in enumerate(self._names):
            arguments = "".join(self._arguments[index])
            tool = self._tools.get(name) if name is not None else None
            if tool is None:
                offered = ", ".join(sorted(self._tools)) or "none"
                raise SchemaViolation(
                    f"tool call {index} names {name!r}, which is not among the tools "
                    f"(offered: {offered})",
                    format_type="tools",
                    partial_text=arguments[:200],
                )
            _check_arguments(tool, arguments)
            call_id = self._ids[index] or f"call_{uuid.uuid4().hex[:24]}"
            calls.append(ToolCall(call_id, tool.name, arguments))
        return tuple(calls)


def _once(what: str, seen: str | None, value: object, index: int, limit: int) -> str | None:
    """A call's ID or name: set by its first delta; a later delta may only repeat it."""
    if value is None or value == "":
        return seen
    if not isinstance(value, str) or len(value) > limit:
        raise GenerationError(f"tool call {index}'s {what} is not a short string: {value!r}"[:300])
    if seen is not None and value != seen:
        raise GenerationError(
            f"tool call {index} got a second {what}: {value!r} after {seen!r}"[:300]
        )
    return value


def _check_arguments(tool: Tool, arguments: str) -> None:
    # jsonschema, not the llguidance matcher: the matcher expects an object's required
    # properties first, and a server's arguments may list them in any order.
    try:
        validate_document(tool.format, arguments)
    except SchemaViolation as exc:
        raise SchemaViolation(
            f"the arguments of the call to {tool.name!r} are not valid for its parameters: {exc}"[
                :800
            ],
            format_type="tools",
            offset=exc.offset,
            partial_text=arguments[:200],
        ) from None


def check_tool_choice(choice: ToolChoice | None, calls: Sequence[ToolCall], text: str) -> None:
    """Raise SchemaViolation when the reply does not meet ``tool_choice``.

    ``required`` (or a named function) needs at least one call, to that function when named;
    ``none`` (or no tools at all) allows no call.
    """
    mode = choice.mode if choice is not None else "none"
    if calls and mode == "none":
        raise SchemaViolation(
            f"the model called {calls[0].name!r} although tool_choice is none (or no tools "
            "were offered)",
            format_type="tools",
            partial_text=text,
        )
    if mode != "required":
        return
    if not calls:
        what = f"the function {choice.name!r}" if choice and choice.name else "a tool"
        raise SchemaViolation(
            f"tool_choice asks for a call to {what}, but the model answered with text only "
            f"({text[:80]!r})",
            format_type="tools",
            partial_text=text,
        )
    if choice is not None and choice.name is not None:
        for call in calls:
            if call.name != choice.name:
                raise SchemaViolation(
                    f"tool_choice names {choice.name!r}, but the model called {call.name!r}",
                    format_type="tools",
                    partial_text=text,
                )
