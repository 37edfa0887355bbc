"""The backend-independent core of tool calling: shapes, messages, the assembler, the stream and
OpenAI's wire (streamed deltas, whole replies, hostile servers)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from goml_async import (
    BaseTextModel,
    ConfigError,
    GenerateConfig,
    GenerationError,
    Message,
    SchemaViolation,
    Token,
    ToolCall,
    ToolCallDelta,
)
from goml_async._openai_wire.parse import StreamState, parse_event
from goml_async._openai_wire.requests import chat_body
from goml_async._tool_calls import ToolCallAssembler
from goml_async.backends._http_reply import whole_reply_token
from goml_async.stream import StreamContext, StreamItem
from goml_async.tools import MAX_ARGUMENTS_CHARS, MAX_TOOL_CALLS, normalize_tools

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
TOOLS = [WEATHER, TIME]


# -- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "field"),
    [
        ([{"type": "function", "function": {"name": "bad name"}}], "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "x" * 65}}], "tools[0].function.name"),
        ([{"type": "retrieval"}], "tools[0].type"),
        ([WEATHER, WEATHER], "tools"),
        ([{"type": "function", "function": {"name": "f", "parameters": []}}], "tools[0]"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}],
            "tools[0].function.parameters",
        ),
        (
            [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "minimum": "x"}},
                }
            ],
            "tools[0].function.parameters",
        ),
        ([TIME] * 129, "tools"),
        ("get_weather", "tools"),
    ],
)
def test_bad_tools_are_config_errors_naming_the_field(tools: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        GenerateConfig(tools=tools)
    assert info.value.field.startswith(field)


@pytest.mark.parametrize(
    ("tools", "choice", "needle"),
    [
        ([], "required", "needs tools"),
        ([], {"type": "function", "function": {"name": "get_time"}}, "needs tools"),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "not among the tools"),
        (TOOLS, "always", "must be"),
        (TOOLS, {"type": "function"}, "a dict must be"),
    ],
)
def test_bad_tool_choice(tools: Any, choice: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        GenerateConfig(tools=tools, tool_choice=choice)
    assert info.value.field.startswith("tool_choice")


def test_tool_choice_defaults_to_auto_with_tools_and_names_map_to_required() -> None:
    assert GenerateConfig(tools=TOOLS).choice.mode == "auto"  # type: ignore[union-attr]
    assert GenerateConfig().choice is None
    named = GenerateConfig(
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}
    ).choice
    assert named is not None and (named.mode, named.name) == ("required", "get_time")
    assert named.to_openai() == {"type": "function", "function": {"name": "get_time"}}


def test_tools_and_response_format_together_fail_closed() -> None:
    with pytest.raises(ConfigError, match="not supported yet") as info:
        GenerateConfig(tools=TOOLS, response_format={"type": "json_object"})
    assert info.value.field == "tools"


def test_messages_with_tools() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assistant = Message.coerce({"role": "assistant", "content": None, "tool_calls": [call]})
    assert assistant.tool_calls == (ToolCall("c1", "f", "{}"),)
    assert assistant.to_dict() == {"role": "assistant", "content": None, "tool_calls": [call]}
    tool = Message.coerce({"role": "tool", "content": "42", "tool_call_id": "c1"})
    assert tool.to_dict() == {"role": "tool", "content": "42", "tool_call_id": "c1"}
    with pytest.raises(ConfigError) as info:
        Message("tool", "42")
    assert info.value.field == "tool_call_id"
    with pytest.raises(ConfigError) as info:
        Message("user", "hi", tool_calls=[ToolCall("c1", "f", "{}")])
    assert info.value.field == "tool_calls"
    with pytest.raises(ConfigError) as info:
        Message("user", "hi", tool_call_id="c1")
    assert info.value.field == "tool_call_id"


# -- the assembler --------------------------------------------------------------------------------


def test_assembler_joins_interleaved_calls() -> None:
    assembler = ToolCallAssembler(normalize_tools(TOOLS))
    for delta in [
        ToolCallDelta(0, "a", "get_weather", '{"ci'),
        ToolCallDelta(1, "b", "get_time", ""),
        ToolCallDelta(0, None, None, 'ty": "Oslo"}'),
        ToolCallDelta(1, "b", None, "{}"),  # an ID repeated is accepted
    ]:
        assembler.add(delta)
    assert assembler.finish() == (
        ToolCall("a", "get_weather", '{"city": "Oslo"}'),
        ToolCall("b", "get_time", "{}"),
    )


@pytest.mark.parametrize(
    ("deltas", "needle"),
    [
        ([ToolCallDelta(1, "a", "get_time")], "may not skip"),
        ([ToolCallDelta(-1, "a", "get_time")], "may not skip"),
        ([ToolCallDelta(True, "a", "get_time")], "may not skip"),
        ([ToolCallDelta(0, "a", "get_time"), ToolCallDelta(0, "b")], "second ID"),
        ([ToolCallDelta(0, "a", "get_time"), ToolCallDelta(0, None, "x")], "second name"),
        ([ToolCallDelta(0, "a", "get_time", 5)], "not a string"),  # type: ignore[arg-type]
        ([ToolCallDelta(0, ["a"], "get_time")], "not a short string"),  # type: ignore[arg-type]
        (
            [ToolCallDelta(i, str(i), "get_time") for i in range(MAX_TOOL_CALLS + 1)],
            "more than",
        ),
        (
            [ToolCallDelta(0, "a", "get_time")]
            + [ToolCallDelta(0, None, None, "x" * 65536)] * (MAX_ARGUMENTS_CHARS // 65536 + 1),
            "longer than",
        ),
    ],
)
def test_assembler_rejects_hostile_deltas(deltas: list[ToolCallDelta], needle: str) -> None:
    assembler = ToolCallAssembler(normalize_tools(TOOLS))
    with pytest.raises(GenerationError, match=needle):
        for delta in deltas:
            assembler.add(delta)


@pytest.mark.parametrize(
    ("deltas", "needle"),
    [
        ([ToolCallDelta(0, "a", "get_weather", '{"days": 2}')], "'city' is a required"),
        ([ToolCallDelta(0, "a", "get_weather", '{"city": 5}')], "get_weather"),
        ([ToolCallDelta(0, "a", "get_weather", '{"city": "Oslo"')], "not JSON"),
        ([ToolCallDelta(0, "a", "delete_all", "{}")], "not among the tools"),
        ([ToolCallDelta(0, "a", None, "{}")], "not among the tools"),
    ],
)
def test_assembler_checks_calls_against_the_tools(deltas: list[ToolCallDelta], needle: str) -> None:
    assembler = ToolCallAssembler(normalize_tools(TOOLS))
    for delta in deltas:
        assembler.add(delta)
    with pytest.raises(SchemaViolation, match=needle) as info:
        assembler.finish()
    assert info.value.format_type == "tools"


# -- the stream -----------------------------------------------------------------------------------


class _Scripted(BaseTextModel):
    """A model whose chat source yields a fixed list of tokens and deltas."""

    supports_tools = True

    def __init__(self, items: list[StreamItem], finish: str | None = None) -> None:
        super().__init__(model_type="scripted-tools")
        self.items = items
        self.finish = finish

    async def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        if prompt:
            raise AssertionError("not used")
        yield Token(-1, "")

    async def _stream_chat(
        self, messages: list[Message], context: StreamContext
    ) -> AsyncIterator[StreamItem]:
        for item in self.items:
            yield item
        if self.finish is not None:
            context.finish_reason = self.finish  # type: ignore[assignment]


CALL_ITEMS: list[StreamItem] = [
    Token(-1, "Let me check. "),
    ToolCallDelta(0, "call_1", "get_weather", '{"city":'),
    ToolCallDelta(0, arguments=' "Paris"}'),
]
USER = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.mark.anyio
async def test_events_come_in_order_and_iteration_yields_text_only() -> None:
    model = _Scripted(CALL_ITEMS)
    async with model.chat(USER, tools=TOOLS) as stream:
        events = [event async for event in stream.events()]
    assert events == CALL_ITEMS
    assert stream.tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert stream.finish_reason == "tool_calls"
    result = await model.chat(USER, tools=TOOLS)
    assert result.text == "Let me check. "
    assert result.tool_calls == stream.tool_calls
    assert result.finish_reason == "tool_calls"
    assert result.to_message().tool_calls == result.tool_calls
    async with model.chat(USER, tools=TOOLS) as stream:
        assert [token.text async for token in stream] == ["Let me check. "]
    assert stream.tool_calls == result.tool_calls


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("items", "options", "needle"),
    [
        ([Token(-1, "Sunny.")], {"tool_choice": "required"}, "text only"),
        (
            CALL_ITEMS,
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            "but the model called 'get_weather'",
        ),
        (CALL_ITEMS, {"tool_choice": "none"}, "tool_choice is none"),
        (CALL_ITEMS, {}, r"not among the tools \(offered: none\)"),
        ([ToolCallDelta(0, "c", "get_weather", '{"town": "x"}')], {}, "get_weather"),
    ],
)
async def test_the_end_of_the_stream_fails_closed(
    items: list[StreamItem], options: dict[str, Any], needle: str
) -> None:
    model = _Scripted(items)
    offered: dict[str, Any] = {"tools": TOOLS} if options or needle == "get_weather" else {}
    stream = model.chat(USER, **offered, **options)
    with pytest.raises(SchemaViolation, match=needle):
        await stream
    assert stream.finish_reason == "error"
    assert stream.tool_calls == ()
    assert isinstance(model.err(), SchemaViolation)


@pytest.mark.anyio
async def test_a_hostile_delta_ends_the_stream_with_a_clear_error() -> None:
    model = _Scripted([ToolCallDelta(0, "a", "get_time"), ToolCallDelta(3, "b", "get_time")])
    stream = model.chat(USER, tools=TOOLS)
    with pytest.raises(GenerationError, match="may not skip"):
        await stream
    assert stream.finish_reason == "error"


@pytest.mark.anyio
async def test_tools_need_chat_and_a_backend_that_supports_them() -> None:
    from goml_async.testing import ScriptedModel

    with pytest.raises(ConfigError) as info:
        _Scripted([]).generate("hi", tools=TOOLS)
    assert info.value.field == "tools"
    plain = ScriptedModel(["hi"])  # a backend without tool support fails closed
    with pytest.raises(ConfigError, match="tool calling is not supported") as info:
        plain.chat(USER, tools=TOOLS)
    assert info.value.field == "tools"
    with pytest.raises(ConfigError) as info:
        plain.chat([*USER, {"role": "tool", "content": "x", "tool_call_id": "c"}])
    assert info.value.field == "messages"


# -- OpenAI's wire --------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_streamed_tool_call_chunks_become_deltas() -> None:
    state = StreamState()
    first = {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert parse_event(_chunk(first), state) is None
    assert list(state.tool_deltas) == [ToolCallDelta(0, "call_1", "get_weather", "")]
    state.tool_deltas.clear()
    more = {"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}
    parse_event(_chunk(more, "tool_calls"), state)
    assert list(state.tool_deltas) == [ToolCallDelta(0, None, None, '{"city"')]
    assert state.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "calls",
    [
        {"index": 0},
        [{"index": "0", "function": {"arguments": "{}"}}],
        [{"index": 0, "function": {"arguments": {"city": "x"}}}],
        [{"index": 0, "function": "get_weather"}],
        [{"index": 0, "id": 7}],
        ["call"],
        [{"index": 0}] * (MAX_TOOL_CALLS + 1),
    ],
)
def test_hostile_tool_call_chunks_are_clear_errors(calls: Any) -> None:
    with pytest.raises(GenerationError, match="malformed tool call"):
        parse_event(_chunk({"tool_calls": calls}), StreamState())


def test_a_whole_reply_with_tool_calls() -> None:
    state = StreamState()
    reply = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    assert whole_reply_token(reply, state) is None
    assert list(state.tool_deltas) == [ToolCallDelta(0, "c1", "get_time", "{}")]


def test_the_chat_body_carries_tools_and_tool_messages() -> None:
    config = GenerateConfig(tools=[WEATHER], tool_choice="required")
    messages = [
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=[ToolCall("c1", "get_weather", '{"city": "Oslo"}')]),
        Message("tool", "Rain.", tool_call_id="c1"),
    ]
    body = chat_body("m", messages, config)
    assert body["tools"] == [WEATHER]
    assert body["tool_choice"] == "required"
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert body["messages"][2] == {"role": "tool", "content": "Rain.", "tool_call_id": "c1"}
    assert "tools" not in chat_body("m", messages[:1], GenerateConfig())
