"""Tools described in the prompt, the reply held to a JSON schema: any model, any template.

Most small models' chat templates (SmolLM2's among them) have no tool format: handed
``tools``, llama-server drops them without a word and mlx-lm's template renders none. And
even a template with one lets the model write free text under ``tool_choice: "required"``.
So the llama.cpp backend always, and the MLX backend where the template has no tool format
(or a call is required), describe the tools in a system message and hold the reply to one
JSON schema, which the backend enforces token by token (llama-server's grammar, MLX's
llguidance matcher):

- ``required`` (or a named function): ``{"name": <a tool>, "arguments": <its parameters>}``;
- ``auto``: that, or ``{"content": <text>}`` to answer without a call;
- ``none``: no schema and no tool list (the earlier calls and results stay in the chat).

Earlier calls become assistant messages holding that JSON, and tool results user messages
naming their call, so any chat template renders them. The reply is read back as it streams:
the text of a ``content`` answer as text tokens, a call as one tool-call delta at its end.
Every template and every model behaves the same way, and even the 135M SmolLM2 produces
calls whose arguments fit their schema.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any, cast

from ..errors import SchemaViolation
from ..messages import Message
from ..stream import StreamItem
from ..structured import ResponseFormat, normalize_response_format
from ..tools import Tool, ToolCallDelta
from ..types import GenerateConfig, Token

__all__ = ["decoded_reply", "has_tool_history", "prompt_messages", "reply_format"]

_CONTENT_START = re.compile(r'\s*\{\s*"content"\s*:\s*"')


def has_tool_history(messages: Sequence[Message]) -> bool:
    """True when the chat holds tool results or assistant messages with tool calls."""
    return any(message.role == "tool" or message.tool_calls for message in messages)


def reply_format(config: GenerateConfig) -> ResponseFormat | None:
    """The JSON schema the reply must fit, or None when the model may not call tools."""
    choice = config.choice
    if not config.calls_tools or choice is None:
        return None
    tools = [t for t in config.tool_specs if choice.name is None or t.name == choice.name]
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    if choice.mode == "auto":
        options.append(
            {
                "type": "object",
                "properties": {"content": {"type": "string"}},
                "required": ["content"],
                "additionalProperties": False,
            }
        )
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    fmt = normalize_response_format(
        {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    )
    assert fmt is not None
    return fmt


def _tool_list(tools: Sequence[Tool], config: GenerateConfig) -> str:
    choice = config.choice
    lines = [
        "You can call the following tools. To call one, reply with only a JSON object "
        '{"name": <the tool\'s name>, "arguments": <its arguments>}.'
    ]
    if choice is not None and choice.mode == "auto":
        lines.append('To answer without a tool, reply with {"content": <your answer>}.')
    if choice is not None and choice.name is not None:
        lines.append(f"Call the tool {choice.name}.")
    for tool in tools:
        spec = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        lines.append(json.dumps(spec, ensure_ascii=False))
    return "\n".join(lines)


def prompt_messages(messages: Sequence[Message], config: GenerateConfig) -> list[Message]:
    """The conversation as plain system/user/assistant messages, with the tools described."""
    names: dict[str, str] = {}
    rendered: list[Message] = []
    for message in messages:
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                names[call.id] = call.name
                try:
                    arguments = json.loads(call.arguments)
                except ValueError:
                    arguments = call.arguments
                calls.append(json.dumps({"name": call.name, "arguments": arguments}))
            text = "\n".join(filter(None, [message.content, *calls]))
            rendered.append(Message("assistant", text))
        elif message.role == "tool":
            call_id = message.tool_call_id or ""
            name = names.get(call_id, "a tool")
            rendered.append(
                Message("user", f"Result of {name} (call {call_id}):\n{message.content}")
            )
        else:
            rendered.append(message)
    if config.calls_tools:
        tools = _tool_list(config.tool_specs, config)
        if rendered and rendered[0].role == "system":
            rendered[0] = Message("system", f"{rendered[0].content}\n\n{tools}")
        else:
            rendered.insert(0, Message("system", tools))
    return rendered


def _string_prefix(raw: str) -> tuple[str, bool]:
    """The decoded text of a JSON string body read so far, and whether it has ended."""
    escaped = False
    for index, char in enumerate(raw):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return json.loads(f'"{raw[:index]}"'), True
    # Back off over an escape sequence cut short (at most "\uXXXX", 6 characters).
    for cut in range(len(raw), max(len(raw) - 7, -1), -1):
        try:
            return json.loads(f'"{raw[:cut]}"'), False
        except ValueError:
            continue
    return "", False


async def decoded_reply(
    source: AsyncIterator[StreamItem], config: GenerateConfig
) -> AsyncIterator[StreamItem]:
    """The schema-held JSON reply as text tokens (a ``content`` answer) or a tool-call delta.

    Raises:
        SchemaViolation: the reply ended before a complete JSON document (a token limit).
    """
    raw = ""
    content_at = -1  # where the content string's body starts in ``raw``
    sent = 0  # characters of the content delivered
    async with aclosing(cast("AsyncGenerator[StreamItem]", source)) as items:
        async for item in items:
            if not isinstance(item, Token):
                continue  # the backend got no tools, so it sends no calls of its own
            raw += item.text
            if content_at < 0:
                match = _CONTENT_START.match(raw)
                if match is None:
                    continue
                content_at = match.end()
            text, _ = _string_prefix(raw[content_at:])
            if len(text) > sent:
                yield Token(item.id, text[sent:], item.logprob, item.top_logprobs)
                sent = len(text)
    if content_at >= 0:
        return
    try:
        reply = json.loads(raw)
        name, arguments = reply["name"], reply["arguments"]
    except (ValueError, KeyError, TypeError):
        raise SchemaViolation(
            f"the reply ended before a complete tool call ({raw[-80:]!r})",
            format_type="tools",
            partial_text=raw,
        ) from None
    yield ToolCallDelta(0, f"call_{uuid.uuid4().hex[:24]}", name, json.dumps(arguments))
