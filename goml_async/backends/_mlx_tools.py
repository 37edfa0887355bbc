"""Tool calling on MLX with a chat template that has a tool format, read by mlx-lm's parsers.

mlx-lm's tokenizer knows, from the chat template (or the vocabulary), whether the model writes
tool calls and how: ``has_tool_calling``, the markers around a call (``tool_call_start`` and
``tool_call_end``, ``<tool_call>`` and ``</tool_call>`` in Hermes/Qwen templates) and
``tool_parser``, which turns the text between them into ``{"name", "arguments"}``. Such a
model gets the tools through its own template (``apply_chat_template(messages,
tools=...)``, earlier calls and tool results in OpenAI's shapes) and, under ``tool_choice:
"auto"``, decodes freely: :func:`parsed_reply` streams the text outside the markers as text
tokens and each call as one tool-call delta once its end marker arrives.

A template cannot force a call, so ``required`` and a named function hold the reply to the
call schema of :mod:`~goml_async.backends._tool_reply` instead (still with the template's
own tool list in the prompt); a template without a tool format uses that module throughout.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any, cast

from ..errors import SchemaViolation
from ..messages import Message
from ..stream import StreamItem
from ..tools import Tool, ToolCallDelta
from ..types import Token

__all__ = [
    "ChatPrompt",
    "has_template_tools",
    "parsed_reply",
    "template_messages",
    "template_tools",
]


@dataclasses.dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A chat to render with the template, with the tools it offers (None: no tool list)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


def has_template_tools(tokenizer: Any) -> bool:
    """True when mlx-lm found a tool-call format and a parser for this model's template."""
    try:
        return bool(
            tokenizer.has_tool_calling
            and tokenizer.tool_parser is not None
            and tokenizer.tool_call_start
        )
    except AttributeError:  # a tokenizer that is not mlx-lm's wrapper
        return False


def template_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """The tools in OpenAI's shape, as Hugging Face chat templates and mlx-lm parsers read them."""
    return [tool.to_openai() for tool in tools]


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The chat as dicts for a tool-aware template.

    Hugging Face templates expect a call's ``arguments`` as an object (they ``tojson`` it),
    not OpenAI's JSON string, and ``content`` as a string.
    """
    rendered: list[dict[str, Any]] = []
    for message in messages:
        entry = message.to_dict()
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                try:
                    arguments: Any = json.loads(call.arguments)
                except ValueError:
                    arguments = call.arguments
                calls.append(
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": arguments},
                    }
                )
            entry["tool_calls"] = calls
            entry["content"] = message.content
        rendered.append(entry)
    return rendered


def _held_back(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` could start ``marker`` (kept back)."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class _Calls:
    """Turns the text of each call into deltas with mlx-lm's parser; failures fail closed."""

    def __init__(self, parser: Any, tools: list[dict[str, Any]]) -> None:
        self._parser = parser
        self._tools = tools
        self.count = 0

    def deltas(self, body: str, reply: str) -> list[ToolCallDelta]:
        try:
            parsed = self._parser(body, self._tools)
        except Exception as exc:  # the parsers raise ValueError, JSONDecodeError, KeyError...
            raise SchemaViolation(
                f"the model wrote a tool call its parser cannot read ({exc}): {body[:80]!r}",
                format_type="tools",
                partial_text=reply,
            ) from None
        deltas = []
        for call in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise SchemaViolation(
                    f"the tool-call parser returned no function name: {call!r}"[:300],
                    format_type="tools",
                    partial_text=reply,
                )
            arguments = call.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
            deltas.append(ToolCallDelta(self.count, str(call_id), call["name"], arguments))
            self.count += 1
        return deltas


async def parsed_reply(
    source: AsyncIterator[StreamItem], tokenizer: Any, tools: Sequence[Tool]
) -> AsyncIterator[StreamItem]:
    """The free reply of a tool-aware template: text tokens outside calls, a delta per call.

    Text that could be the start of a call marker is held back until it is not. A call whose
    end marker never comes (a token limit) is parsed at the end if the template has no end
    marker, and is a violation otherwise.

    Raises:
        SchemaViolation: a call the parser cannot read, or a call cut short.
    """
    start = cast(str, tokenizer.tool_call_start)
    end = cast(str, tokenizer.tool_call_end or "")
    calls = _Calls(tokenizer.tool_parser, template_tools(tools))
    reply = ""  # everything the model wrote, for error reports
    pending = ""  # text not delivered yet (outside a call) or the call's text so far
    inside = False
    async with aclosing(cast("AsyncGenerator[StreamItem]", source)) as items:
        async for item in items:
            if not isinstance(item, Token):
                continue
            reply += item.text
            pending += item.text
            text = ""
            while True:
                if not inside:
                    at = pending.find(start)
                    if at < 0:
                        keep = _held_back(pending, start)
                        text += pending[: len(pending) - keep]
                        pending = pending[len(pending) - keep :]
                        break
                    text += pending[:at]
                    pending = pending[at + len(start) :]
                    inside = True
                elif end:
                    at = pending.find(end)
                    if at < 0:
                        break
                    body, pending = pending[:at], pending[at + len(end) :]
                    inside = False
                    if text:
                        yield Token(item.id, text, item.logprob, item.top_logprobs)
                        text = ""
                    for delta in calls.deltas(body, reply):
                        yield delta
                else:
                    break  # no end marker: the call runs to the end of the reply
            if text:
                yield Token(item.id, text, item.logprob, item.top_logprobs)
    if inside:
        if end:
            raise SchemaViolation(
                f"the reply ended inside a tool call, before {end!r} ({reply[-80:]!r})",
                format_type="tools",
                partial_text=reply,
            )
        for delta in calls.deltas(pending, reply):
            yield delta
    elif pending:
        yield Token(-1, pending)
