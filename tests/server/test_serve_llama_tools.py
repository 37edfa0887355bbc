"""``tools`` through ``goml serve`` on the bundled SmolLM2 (real llama-server), read by real
clients: openai-python (sync, and async on asyncio), goml_async's own HTTP backend (asyncio and
trio) and litellm when installed. A round trip is a required call, the tool's result as a
``tool`` message, then the final answer in text; streamed replies are assembled from
``delta.tool_calls`` as OpenAI's clients do. The fail-closed replies: a call cut short by
``max_tokens`` (422 or an error event), and tools the request got wrong (400 naming the field).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import jsonschema
import openai
import pytest
import tool_data
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from goml_async import Message, ToolCall
from goml_async.backends.http import HTTPModel

from .test_serve_llama import Serving, start_serve, stop_serve

pytestmark = pytest.mark.slow

# The shared tools, in openai-python's parameter types.
TOOLS = cast(list[ChatCompletionToolParam], tool_data.TOOLS)
ASK = cast(list[ChatCompletionMessageParam], tool_data.ASK)
WEATHER_PARAMETERS = tool_data.WEATHER_PARAMETERS
GET_WEATHER: Any = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def served(bundled_gguf: Path) -> Iterator[Serving]:
    # By the name "default", as litellm asks for it.
    serving = start_serve(bundled_gguf, model="default")
    try:
        yield serving
    finally:
        if serving.process.poll() is None:
            stop_serve(serving)


@pytest.fixture
def client(served: Serving) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def streamed_calls(client: openai.OpenAI, **request: Any) -> tuple[list[dict[str, Any]], str]:
    """The calls of a streamed reply, assembled from ``delta.tool_calls`` the way OpenAI's
    documentation does it, and the finish_reason."""
    calls: list[dict[str, Any]] = []
    finish = ""
    for chunk in client.chat.completions.create(stream=True, **request):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for piece in choice.delta.tool_calls or []:
            if piece.index == len(calls):
                assert piece.id and piece.type == "function" and piece.function
                calls.append({"id": piece.id, "name": piece.function.name, "arguments": ""})
            assert piece.function is not None
            calls[piece.index]["arguments"] += piece.function.arguments or ""
        finish = choice.finish_reason or finish
    return calls, finish


def check_weather_call(name: str | None, arguments: str) -> None:
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER_PARAMETERS)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_openai_round_trip(client: openai.OpenAI, stream: bool) -> None:
    request: dict[str, Any] = {
        "model": "",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": GET_WEATHER,
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        calls, finish = streamed_calls(client, **request)
        assert finish == "tool_calls"
        (call,) = calls
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
        # The whole reply is the same call (greedy), with the server's own ID.
        whole = client.chat.completions.create(**request).choices[0].message.tool_calls
        assert whole and [(c.function.name, c.function.arguments) for c in whole] == [
            (name, arguments)
        ]
    else:
        reply = client.chat.completions.create(**request)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert choice.message.tool_calls and len(choice.message.tool_calls) == 1
        first = choice.message.tool_calls[0]
        assert first.type == "function"
        call_id, name, arguments = first.id, first.function.name, first.function.arguments
    check_weather_call(name, arguments)
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "content": "18 degrees and sunny", "tool_call_id": call_id},
    ]
    answer: dict[str, Any] = {
        "model": "",
        "messages": history,
        "tools": TOOLS,
        "tool_choice": "none",
        "max_tokens": 32,
    }
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **answer))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    else:
        final = client.chat.completions.create(**answer)
        text = final.choices[0].message.content or ""
        assert final.choices[0].message.tool_calls is None
        assert final.choices[0].finish_reason in ("stop", "length")
    assert text.strip()


def test_tool_choice_named_auto_and_none(client: openai.OpenAI) -> None:
    named = client.chat.completions.create(
        model="",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=64,
    )
    calls = named.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls if call.type == "function"] == ["get_time"]
    auto = client.chat.completions.create(model="", messages=ASK, tools=TOOLS, max_tokens=64)
    message = auto.choices[0].message
    assert message.tool_calls or (message.content or "").strip()
    if message.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"
    none = client.chat.completions.create(
        model="", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=16
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


def test_eight_round_trips_all_valid(client: openai.OpenAI) -> None:
    cities = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Rome", "Bern"]
    answered = []
    for city in cities:
        ask: list[Any] = [{"role": "user", "content": f"What is the weather in {city}?"}]
        first = client.chat.completions.create(
            model="", messages=ask, tools=TOOLS[:1], tool_choice="required", max_tokens=64
        )
        (call,) = first.choices[0].message.tool_calls or []
        assert call.type == "function"
        check_weather_call(call.function.name, call.function.arguments)
        history = [
            *ask,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "content": "sunny", "tool_call_id": call.id},
        ]
        final = client.chat.completions.create(model="", messages=history, max_tokens=24)
        if (final.choices[0].message.content or "").strip():
            answered.append(city)
    assert answered == cities


def test_a_call_cut_short_is_422_not_a_200(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=3
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == ("tools", "schema_violation")


def test_a_streamed_call_cut_short_ends_with_an_error_event(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIError, match="tool"):
        streamed_calls(
            client, model="", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=3
        )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, None),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}}, None),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_invalid_tools_are_400_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str | None, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="", messages=ASK, max_tokens=8, stream=stream, **extra)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == param if param else error["param"].startswith("tool"), error


def test_tools_on_the_completions_route_are_400(served: Serving) -> None:
    with (
        openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.completions.create(
            model="", prompt="Once", max_tokens=4, extra_body={"tools": TOOLS}
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "tools"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the openai client's async side: asyncio
async def test_openai_async_streamed_call(served: Serving, anyio_backend: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{served.url}/v1", api_key="unused", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="",
            messages=ASK,
            tools=TOOLS,
            tool_choice=GET_WEATHER,
            max_tokens=64,
            stream=True,
        )
        arguments, finish = "", ""
        async for chunk in stream:
            if chunk.choices:
                for piece in chunk.choices[0].delta.tool_calls or []:
                    arguments += piece.function.arguments or "" if piece.function else ""
                finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    check_weather_call("get_weather", arguments)


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_goml_http_backend_round_trip(served: Serving, stream: bool) -> None:
    """goml_async's own client reads goml serve's tool calls, whole and streamed."""
    async with HTTPModel(f"{served.url}/v1", generate_endpoint="chat") as model:
        if stream:
            async with model.chat(ASK, tools=TOOLS, tool_choice=GET_WEATHER, max_tokens=64) as s:
                events = [event async for event in s.events()]
            assert events and s.finish_reason == "tool_calls"
            calls: Sequence[ToolCall] = s.tool_calls
        else:
            result = await model.chat(ASK, tools=TOOLS, tool_choice=GET_WEATHER, max_tokens=64)
            assert result.finish_reason == "tool_calls"
            calls = result.tool_calls
        (call,) = calls
        check_weather_call(call.name, call.arguments)
        history: list[Any] = [
            *ASK,
            Message("assistant", "", tool_calls=calls),
            Message("tool", "18 degrees and sunny", tool_call_id=call.id),
        ]
        final = await model.chat(history, tools=TOOLS, tool_choice="none", max_tokens=24)
    assert final.text.strip() and final.tool_calls == ()


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")
def test_litellm_round_trip(served: Serving) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch over the network
    import litellm

    common: dict[str, Any] = {
        "model": "openai/default",
        "api_base": f"{served.url}/v1",
        "api_key": "unused",
        "max_tokens": 64,
        "temperature": 0,
        "num_retries": 0,
    }
    reply = litellm.completion(messages=ASK, tools=TOOLS, tool_choice=GET_WEATHER, **common)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    check_weather_call(call.function.name, call.function.arguments)
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "content": "18 degrees and sunny", "tool_call_id": call.id},
    ]
    final = litellm.completion(messages=history, tools=TOOLS, tool_choice="none", **common)
    assert (final.choices[0].message.content or "").strip()
