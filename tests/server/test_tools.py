"""``tools`` and ``tool_choice`` on the server, in process: the tools and the tool messages
reach the model validated, the calls come back in OpenAI's shapes (``message.tool_calls``
whole, ``delta.tool_calls`` pieces streamed, ``finish_reason: "tool_calls"``), and every
request that cannot be honoured fails closed: a 400 naming the field, a 422 (or an error event
in a stream) for a reply that breaks the tools or ``tool_choice``.

The model is a scripted one whose chat yields fixed tokens and tool-call deltas, for exact
shapes; the real backend (llama.cpp with SmolLM2) is tested through ``goml serve`` in
test_serve_llama_tools.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from goml_async import Message, Token, ToolCall, ToolCallDelta
from goml_async.model import BaseTextModel
from goml_async.server import create_app
from goml_async.server.app import ServerApp
from goml_async.server.events import TextEncoder
from goml_async.stream import StreamContext, StreamItem
from goml_async.testing import ScriptedModel

from .helpers import chunk_text, sse_payloads

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALL: list[StreamItem] = [
    ToolCallDelta(0, "call_1", "get_weather", '{"city":'),
    ToolCallDelta(0, arguments=' "Paris"}'),
]


class ToolScript(BaseTextModel):
    """A model whose chat yields a fixed list of tokens and tool-call deltas, and records what
    it was asked."""

    supports_tools = True

    def __init__(self, items: list[StreamItem]) -> None:
        super().__init__(model_type="tool-script")
        self.items = items
        self.calls: list[tuple[list[Message], StreamContext]] = []

    async def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        for item in self.items:
            if isinstance(item, Token):
                yield item

    async def _stream_chat(
        self, messages: list[Message], context: StreamContext
    ) -> AsyncIterator[StreamItem]:
        self.calls.append((messages, context))
        for item in self.items:
            yield item


def client(app: ServerApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


async def post(app: ServerApp, path: str = "/v1/chat/completions", **body: Any) -> httpx.Response:
    if path.endswith("chat/completions"):
        body.setdefault("messages", ASK)
    else:
        body.setdefault("prompt", "Once")
    async with client(app) as http:
        return await http.post(path, json=body)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def tool_call_pieces(payloads: list[Any]) -> list[dict[str, Any]]:
    return [
        piece
        for payload in payloads
        if isinstance(payload, dict) and payload.get("choices")
        for piece in payload["choices"][0]["delta"].get("tool_calls", [])
    ]


# -- calls in OpenAI's shapes ---------------------------------------------------------------------


async def test_a_whole_reply_carries_the_calls_and_finish_reason_tool_calls() -> None:
    model = ToolScript(CALL)
    response = await post(create_app(model), tools=[WEATHER, TIME], tool_choice="required")
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    (_, context), *_ = model.calls
    assert [tool.name for tool in context.config.tool_specs] == ["get_weather", "get_time"]
    assert context.config.choice is not None and context.config.choice.mode == "required"


async def test_text_before_a_call_stays_in_the_content() -> None:
    model = ToolScript([Token(-1, "Let me look. "), *CALL])
    response = await post(create_app(model), tools=[WEATHER])
    message = response.json()["choices"][0]["message"]
    assert message["content"] == "Let me look. "
    assert [call["function"]["name"] for call in message["tool_calls"]] == ["get_weather"]


async def test_a_stream_sends_openais_tool_call_deltas() -> None:
    items: list[StreamItem] = [
        *CALL,
        ToolCallDelta(1, None, "get_time", ""),  # no ID from the backend: the server gives one
        ToolCallDelta(1, arguments="{}"),
    ]
    response = await post(
        create_app(ToolScript(items)),
        tools=[WEATHER, TIME],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert response.status_code == 200
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]"
    pieces = tool_call_pieces(payloads)
    assert pieces[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":'},
    }
    assert pieces[1] == {"index": 0, "function": {"arguments": ' "Paris"}'}}
    assert pieces[2]["index"] == 1 and pieces[2]["type"] == "function"
    assert pieces[2]["id"].startswith("call_") and pieces[2]["function"]["name"] == "get_time"
    assert pieces[3] == {"index": 1, "function": {"arguments": "{}"}}
    finishes = [
        p["choices"][0]["finish_reason"]
        for p in payloads
        if isinstance(p, dict) and p.get("choices") and p["choices"][0]["finish_reason"]
    ]
    assert finishes == ["tool_calls"]
    # With include_usage every chunk but the last says "usage": null, tool-call chunks too.
    assert all(p["usage"] is None for p in payloads[:-2] if isinstance(p, dict))
    assert payloads[-2]["choices"] == [] and payloads[-2]["usage"]["completion_tokens"] >= 0


async def test_the_tool_round_trip_history_reaches_the_model() -> None:
    model = ToolScript([Token(-1, "It is sunny.")])
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": [{"type": "text", "text": "18 C"}], "tool_call_id": "call_1"},
    ]
    response = await post(create_app(model), messages=history, tools=[WEATHER])
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "It is sunny."}
    assert choice["finish_reason"] == "stop"
    messages, _ = model.calls[0]
    assert messages[1].tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert messages[2] == Message("tool", "18 C", tool_call_id="call_1")


async def test_tool_choice_none_or_auto_without_tools_asks_for_nothing() -> None:
    model = ScriptedModel(["Hi"])  # no tool support, and none needed
    for choice in ("none", "auto"):
        response = await post(create_app(model), tool_choice=choice, tools=[])
        assert response.status_code == 200, response.text
    assert all(not config.tools for _, config in model.calls)


# -- fail closed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_backend_without_tool_support_is_400_naming_tools(stream: bool) -> None:
    model = ScriptedModel(["Sunny."])
    response = await post(create_app(model), tools=[WEATHER], stream=stream)
    assert response.status_code == 400
    assert error_of(response)["param"] == "tools"
    assert "not supported" in error_of(response)["message"]
    assert model.calls == []


async def test_tool_messages_to_a_backend_without_tool_support_are_400() -> None:
    history = [*ASK, {"role": "tool", "content": "18 C", "tool_call_id": "call_1"}]
    response = await post(create_app(ScriptedModel(["x"])), messages=history)
    assert response.status_code == 400
    assert error_of(response)["param"] == "messages"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, None),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        (
            {"messages": [{"role": "tool", "content": "18 C"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"type": "function"}]}]},
            "messages[0].tool_calls",
        ),
        ({"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]}, None),
    ],
)
async def test_invalid_tools_are_400_naming_the_field(
    body: dict[str, Any], param: str | None
) -> None:
    model = ToolScript(CALL)
    response = await post(create_app(model), **body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    if param is not None:
        assert error["param"] == param, error
    else:
        assert error["param"].startswith(("tools[0]", "messages[0]")), error
    assert model.calls == []


@pytest.mark.parametrize("stream", [False, True])
async def test_tools_on_the_completions_route_are_400(stream: bool) -> None:
    response = await post(create_app(ToolScript(CALL)), "/v1/completions", tools=[WEATHER])
    assert response.status_code == 400
    assert (error_of(response)["param"], error_of(response)["code"]) == ("tools", "not_supported")


async def test_tools_with_a_response_format_are_400() -> None:
    response = await post(
        create_app(ToolScript(CALL)), tools=[WEATHER], response_format={"type": "json_object"}
    )
    assert response.status_code == 400
    assert error_of(response)["param"] == "tools"


@pytest.mark.parametrize(
    ("items", "choice", "says"),
    [
        ([Token(-1, "Sunny.")], "required", "text only"),
        (CALL, {"type": "function", "function": {"name": "get_time"}}, "called 'get_weather'"),
        ([ToolCallDelta(0, "c", "get_weather", '{"town": "x"}')], "auto", "not valid"),
    ],
)
async def test_a_reply_that_breaks_tool_choice_is_422(
    items: list[StreamItem], choice: Any, says: str
) -> None:
    app = create_app(ToolScript(items))
    response = await post(app, tools=[WEATHER, TIME], tool_choice=choice)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert (error["param"], error["code"]) == ("tools", "schema_violation")
    assert says in error["message"]
    assert app.health()["errors_by_status"] == {"422": 1}


async def test_a_stream_that_breaks_tool_choice_ends_with_an_error_event() -> None:
    app = create_app(ToolScript([Token(-1, "Sunny"), Token(-1, " today.")]))
    response = await post(app, tools=[WEATHER], tool_choice="required", stream=True)
    assert response.status_code == 200  # the headers went out with the first token
    payloads = sse_payloads(response.content)
    assert chunk_text(payloads) == "Sunny today."
    assert "[DONE]" not in payloads
    error = payloads[-1]["error"]
    assert (error["param"], error["code"]) == ("tools", "schema_violation")
    assert "text only" in error["message"]


async def test_the_text_encoder_sends_tool_call_events() -> None:
    data = TextEncoder().encode_tool_call(ToolCallDelta(0, "call_1", "f", "{}")).decode()
    assert data.startswith("event: tool_call\n")
    assert json.loads(data.split("data: ", 1)[1]) == {
        "index": 0,
        "id": "call_1",
        "name": "f",
        "arguments": "{}",
    }
