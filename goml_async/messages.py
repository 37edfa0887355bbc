"""Chat messages: :class:`Message` and the validation of a conversation.

A message is ``system``, ``user``, ``assistant`` or ``tool``. An assistant message may carry
the :class:`~goml_async.tools.ToolCall` objects the model made (its content may then be
empty); a ``tool`` message is a tool's result and names the call it answers
(``tool_call_id``). Every invalid value raises :class:`~goml_async.errors.ConfigError`
naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ._validate import string
from .errors import ConfigError
from .tools import MAX_ID_CHARS, MAX_TOOL_CALLS, ToolCall

__all__ = ["Message", "MessageLike", "Role", "coerce_messages"]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
_ROLES: frozenset[str] = frozenset(("system", "user", "assistant", "tool"))


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. ``role`` is ``"system"``, ``"user"``, ``"assistant"`` or ``"tool"``.

    Attributes:
        role: who speaks.
        content: the text ("" for an assistant message that only calls tools).
        tool_calls: (assistant only) the calls the model made, ToolCalls or OpenAI's dicts.
        tool_call_id: (tool only, required there) the ID of the call this result answers.

    Example:
        >>> from goml_async import ToolCall
        >>> call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
        >>> Message("assistant", "", tool_calls=[call]).tool_calls == (call,)
        True
        >>> Message("tool", "18 C, sunny", tool_call_id="call_1").to_dict()["tool_call_id"]
        'call_1'
    """

    role: Role
    content: str = ""
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ConfigError(
                "role", f"must be one of system, user, assistant, tool; got {self.role!r}"
            )
        string("content", self.content)
        calls = self.tool_calls
        if isinstance(calls, str | bytes | Mapping) or not isinstance(calls, Iterable):
            raise ConfigError("tool_calls", f"must be a list of tool calls, got {calls!r}"[:200])
        checked = tuple(ToolCall.coerce(call) for call in calls)
        if checked and self.role != "assistant":
            raise ConfigError("tool_calls", f"only assistant messages carry them, not {self.role}")
        if len(checked) > MAX_TOOL_CALLS:
            raise ConfigError("tool_calls", f"at most {MAX_TOOL_CALLS} per message")
        object.__setattr__(self, "tool_calls", checked)
        call_id = self.tool_call_id
        if self.role == "tool":
            if not isinstance(call_id, str) or not 0 < len(call_id) <= MAX_ID_CHARS:
                raise ConfigError(
                    "tool_call_id", f"a tool message needs the ID of its call, got {call_id!r}"
                )
        elif call_id is not None:
            raise ConfigError("tool_call_id", f"only tool messages carry one, not {self.role}")

    @classmethod
    def coerce(cls, value: MessageLike) -> Message:
        """Return ``value`` as a Message; a mapping needs ``role`` and ``content`` keys
        (``content`` may be null or absent in an assistant message with ``tool_calls``)."""
        if isinstance(value, Message):
            return value
        if isinstance(value, Mapping):
            calls = value.get("tool_calls") or ()
            missing = [key for key in ("role", "content") if key not in value]
            if calls and missing == ["content"]:
                missing = []
            if missing:
                raise ConfigError(
                    "messages", f"a message dict needs the key(s) {missing}: {value!r}"[:300]
                )
            content: Any = value.get("content")
            return cls(
                role=value["role"],
                content="" if content is None and calls else content,
                tool_calls=calls,
                tool_call_id=value.get("tool_call_id"),
            )
        raise ConfigError(
            "messages", f"each message must be a Message or a dict, got {type(value).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The message as OpenAI's dict: ``{"role", "content"}``, with ``tool_calls`` (content
        null when empty) or ``tool_call_id`` when the message has them."""
        if self.tool_calls:
            return {
                "role": self.role,
                "content": self.content or None,
                "tool_calls": [call.to_openai() for call in self.tool_calls],
            }
        if self.tool_call_id is not None:
            return {"role": self.role, "content": self.content, "tool_call_id": self.tool_call_id}
        return {"role": self.role, "content": self.content}


MessageLike: TypeAlias = Message | Mapping[str, Any]


def coerce_messages(messages: Iterable[MessageLike]) -> list[Message]:
    """Validate a chat conversation: a non-empty sequence of Messages or role/content dicts."""
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise ConfigError("messages", f"must be a list of messages, got {type(messages).__name__}")
    result = [Message.coerce(message) for message in messages]
    if not result:
        raise ConfigError("messages", "must contain at least one message")
    return result
