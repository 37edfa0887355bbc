"""Tool calling on a real llama-server with the bundled SmolLM2: LlamaModel (tools in the prompt,
the reply held to a JSON schema by the server) and HTTPModel on the same server's /v1 (OpenAI's
tool shapes, which llama-server drops for SmolLM2's template: the client fails closed).

One server serves the whole module, so every test runs on both anyio backends without a
server start per test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from model_fixtures import module_llama_server, shared_llama
from tool_data import ASK, TOOLS, WEATHER_PARAMETERS

from goml_async import ConfigError, Message, SchemaViolation, Token, ToolCallDelta
from goml_async.backends.http import HTTPModel
from goml_async.backends.llama import LlamaModel
from goml_async.backends.llama_server import LlamaServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SLOTS = 4


@pytest.fixture(scope="module", params=["llama-server", "launcher"])
def server(request: pytest.FixtureRequest, bundled_gguf: Path) -> Iterator[LlamaServer]:
    """The module's server: the built llama-server, then the xllamacpp launcher."""
    yield from module_llama_server(request, bundled_gguf, SLOTS)


@pytest.fixture
async def llama(server: LlamaServer, bundled_gguf: Path) -> AsyncIterator[LlamaModel]:
    async with await shared_llama(server, bundled_gguf) as model:
        yield model


@pytest.fixture
async def http(server: LlamaServer) -> AsyncIterator[HTTPModel]:
    async with HTTPModel(server.base_url + "/v1", generate_endpoint="chat") as model:
        yield model


def test_the_managed_server_runs_with_jinja(server: LlamaServer) -> None:
    assert "--jinja" in server.command


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_tool_call_round_trip_on_llama(llama: LlamaModel, stream: bool) -> None:
    calls: list[Any] = []
    if stream:
        events: list[Token | ToolCallDelta] = []
        async with llama.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=64) as s:
            events = [event async for event in s.events()]
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert deltas and deltas[0].name == s.tool_calls[0].name
        assert s.finish_reason == "tool_calls"
        calls = list(s.tool_calls)
    else:
        result = await llama.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=64)
        assert result.finish_reason == "tool_calls"
        assert result.text == ""
        calls = list(result.tool_calls)
    assert len(calls) == 1
    call = calls[0]
    assert call.name in ("get_weather", "get_time")
    if call.name == "get_weather":
        jsonschema.validate(call.parsed_arguments(), WEATHER_PARAMETERS)
    else:
        assert isinstance(call.parsed_arguments()["city"], str)
    # The tool's result goes back, and the model answers in text.
    history: list[Any] = [
        *ASK,
        Message("assistant", "", tool_calls=calls),
        Message("tool", "18 degrees and sunny", tool_call_id=call.id),
    ]
    answer = await llama.chat(history, tools=TOOLS, tool_choice="none", max_tokens=32)
    assert answer.text.strip()
    assert answer.tool_calls == ()
    assert answer.finish_reason in ("stop", "length")


async def test_tool_choice_auto_and_named(llama: LlamaModel) -> None:
    named = await llama.chat(
        ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=64,
    )
    assert [call.name for call in named.tool_calls] == ["get_time"]
    # auto: a call or a text answer, never anything else (the schema holds both).
    auto = await llama.chat(ASK, tools=TOOLS, max_tokens=64)
    assert auto.tool_calls or auto.text.strip()
    if auto.tool_calls:
        assert auto.finish_reason == "tool_calls"
    none = await llama.chat(ASK, tools=TOOLS, tool_choice="none", max_tokens=16)
    assert none.tool_calls == () and none.text


@pytest.mark.timeout(400)
async def test_many_round_trips_all_valid(llama: LlamaModel) -> None:
    """Eight questions, four at a time: every one ends in a valid call, then an answer."""
    cities = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Rome", "Bern"]
    valid: list[str] = []

    async def one(city: str) -> None:
        ask = [{"role": "user", "content": f"What is the weather in {city}?"}]
        first = await llama.chat(ask, tools=TOOLS[:1], tool_choice="required", max_tokens=64)
        (call,) = first.tool_calls
        jsonschema.validate(call.parsed_arguments(), WEATHER_PARAMETERS)
        history: list[Any] = [
            *ask,
            first.to_message(),
            Message("tool", "sunny", tool_call_id=call.id),
        ]
        final = await llama.chat(history, max_tokens=24)
        assert final.text
        valid.append(city)

    async with anyio.create_task_group() as group:
        for city in cities:
            group.start_soon(one, city)
    assert sorted(valid) == sorted(cities)


async def test_a_reply_cut_short_is_a_violation_not_a_call(llama: LlamaModel) -> None:
    stream = llama.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=3)
    with pytest.raises(SchemaViolation, match="before a complete tool call"):
        await stream
    assert stream.tool_calls == ()


async def test_tools_on_generate_are_refused(llama: LlamaModel) -> None:
    with pytest.raises(ConfigError) as info:
        llama.generate("hi", tools=TOOLS)
    assert info.value.field == "tools"


# -- HTTPModel on llama-server's /v1 --------------------------------------------------------------


async def test_http_required_fails_closed_when_the_server_drops_the_tools(
    http: HTTPModel,
) -> None:
    """llama-server drops tools that SmolLM2's template cannot render and answers in text."""
    stream = http.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=12)
    with pytest.raises(SchemaViolation, match="text only"):
        await stream
    assert stream.finish_reason == "error"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_http_sends_a_tool_round_trip_history(http: HTTPModel, stream: bool) -> None:
    """The assistant's tool_calls and the tool message travel in OpenAI's shapes and the server
    answers from them."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
    }
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "18 degrees and sunny", "tool_call_id": "call_1"},
    ]
    if stream:
        async with http.chat(history, tools=TOOLS, max_tokens=16) as s:
            events = [event async for event in s.events()]
        assert events and all(isinstance(e, Token) for e in events)
        assert s.finish_reason in ("stop", "length")
    else:
        result = await http.chat(history, tools=TOOLS, max_tokens=16)
        assert result.text and result.tool_calls == ()
