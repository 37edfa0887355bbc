"""The server's sans-I/O parts: request validation, chunks, error mapping and the limits."""

from __future__ import annotations

from typing import Any

import pytest

from goml_async.backends import _openai
from goml_async.errors import (
    APIStatusError,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    NotSupported,
)
from goml_async.server import ServerConfig
from goml_async.server._requests import parse_completion_request
from goml_async.server._wire import ServerError, completion_reply, error_from_exception
from goml_async.server.events import OpenAIEncoder, TextEncoder
from goml_async.server.limits import (
    BodyTooLarge,
    bearer_token_ok,
    clamp_max_tokens,
    read_body,
    window_messages,
)
from goml_async.types import GenerateMetrics, Message

from .helpers import sse_events, sse_payloads

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


# -- requests -------------------------------------------------------------------------------------


def test_a_chat_request_keeps_every_sampling_field() -> None:
    body = {
        **CHAT,
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 12,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "seed": 7,
        "stop": ["\n\n", "END"],
        "frequency_penalty": 0.2,
        "presence_penalty": -0.5,
        "user": "someone",  # changes nothing in the reply: ignored
    }
    request = parse_completion_request(body, chat=True)
    assert request.chat and request.stream and request.include_usage
    assert (request.model, request.max_tokens) == ("m", 12)
    assert request.messages == (Message("user", "hi"),)
    assert request.options == {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "seed": 7,
        "stop_sequences": ("\n\n", "END"),
        "frequency_penalty": 0.2,
        "presence_penalty": -0.5,
    }


def test_absent_and_null_fields_keep_the_models_defaults() -> None:
    body = {**CHAT, "model": None, "temperature": None, "stop": None, "stream": None}
    request = parse_completion_request(body, chat=True)
    assert (request.model, request.stream, request.max_tokens, request.options) == (
        "",
        False,
        None,
        {},
    )


def test_stop_may_be_one_string() -> None:
    request = parse_completion_request({**CHAT, "stop": "END"}, chat=True)
    assert request.options["stop_sequences"] == ("END",)


def test_max_completion_tokens_is_read_too() -> None:
    assert parse_completion_request({**CHAT, "max_completion_tokens": 5}, chat=True).max_tokens == 5


def test_content_parts_and_developer_messages() -> None:
    body = {
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None},
        ]
    }
    request = parse_completion_request(body, chat=True)
    assert request.messages == (
        Message("system", "be brief"),
        Message("user", "ab"),
        Message("assistant", ""),
    )


def test_a_completion_prompt_may_be_a_one_item_list() -> None:
    assert parse_completion_request({"prompt": ["Once"]}, chat=False).prompt == "Once"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "temperature": "hot"}, "temperature"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "top_p": 1.5}, "top_p"),
        ({**CHAT, "top_k": -1}, "top_k"),
        ({**CHAT, "seed": 1.5}, "seed"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "max_tokens": True}, "max_tokens"),
        ({**CHAT, "stop": [1]}, "stop"),
        ({**CHAT, "stop": [""]}, "stop"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({**CHAT, "stream_options": []}, "stream_options"),
        ({**CHAT, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({**CHAT, "n": 2}, "n"),
        ({**CHAT, "model": 3}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
    ],
)
def test_bad_chat_fields_are_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ServerError) as caught:
        parse_completion_request(body, chat=True)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}: ")


@pytest.mark.parametrize("prompt", [None, 3, ["a", "b"], [1, 2]])
def test_bad_prompts_are_named(prompt: object) -> None:
    with pytest.raises(ServerError) as caught:
        parse_completion_request({"prompt": prompt}, chat=False)
    assert (caught.value.status, caught.value.param) == (400, "prompt")


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_the_body_must_be_an_object(body: object) -> None:
    with pytest.raises(ServerError) as caught:
        parse_completion_request(body, chat=True)
    assert caught.value.status == 400
    assert caught.value.body()["error"]["code"] == "invalid_json"


# -- errors ---------------------------------------------------------------------------------------


def test_errors_have_openais_shape() -> None:
    error = ServerError(404, "no such model", param="model", code="model_not_found")
    assert error.body() == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert ServerError(500, "boom").type == "server_error"


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ConfigError("stop_sequences", "bad"), 400, "invalid_value"),
        (NotSupported("no chat template"), 400, "not_supported"),
        (GenerationTimeout("late", deadline="total", seconds=2.0), 504, "timeout"),
        (APIStatusError("too long", status_code=400), 400, None),
        (APIStatusError("upstream down", status_code=503), 500, "generation_error"),
        (GenerationError("boom"), 500, "generation_error"),
        (RuntimeError("bug"), 500, "internal_error"),
    ],
)
def test_exceptions_map_to_statuses(exc: BaseException, status: int, code: str | None) -> None:
    error = error_from_exception(exc)
    assert (error.status, error.code) == (status, code)


def test_a_config_error_names_the_request_parameter() -> None:
    assert error_from_exception(ConfigError("stop_sequences", "bad")).param == "stop"


def test_a_timeout_says_which_limit_passed() -> None:
    exc = GenerationTimeout("late", deadline="total", seconds=2.0, tokens_generated=3)
    assert "timeout of 2 s (3 token(s) generated)" in error_from_exception(exc).message


# -- replies and chunks ---------------------------------------------------------------------------


METRICS = GenerateMetrics(prompt_tokens=7, generated_tokens=3)


def test_a_plain_chat_reply() -> None:
    reply = completion_reply(
        chat=True,
        completion_id="chatcmpl-1",
        created=5,
        model="m",
        text="Hi!",
        finish_reason="stop_sequence",
        metrics=METRICS,
    )
    assert reply == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def test_a_plain_completion_reply_says_length() -> None:
    reply = completion_reply(
        chat=False,
        completion_id="cmpl-1",
        created=5,
        model="m",
        text="abc",
        finish_reason="length",
        metrics=None,
    )
    assert reply["object"] == "text_completion"
    assert reply["choices"][0]["text"] == "abc"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["total_tokens"] == 0


def _chat_stream_body(include_usage: bool) -> bytes:
    encoder = OpenAIEncoder(chat=True, model="m", include_usage=include_usage, created=9)
    parts = [encoder.start()]
    parts += [encoder.token(text) for text in ("Hel", "", 'lo "\n', "é")]
    parts.append(encoder.end("length", METRICS))
    return b"".join(parts)


def test_chat_chunks_read_back_with_the_clients_parser() -> None:
    body = _chat_stream_body(include_usage=True)
    state = _openai.StreamState()
    texts = []
    for event in sse_events(body):
        token = _openai.parse_event(event.data, state)
        if token is not None:
            texts.append(token.text)
    assert "".join(texts) == 'Hello "\né'
    assert state.done and state.finish_reason == "length"
    assert state.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_chat_chunks_have_openais_layout() -> None:
    payloads = sse_payloads(_chat_stream_body(include_usage=True))
    role, *tokens, last, usage_chunk, done = payloads
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [chunk["choices"][0]["delta"]["content"] for chunk in tokens] == ["Hel", 'lo "\n', "é"]
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] == 10
    assert done == "[DONE]"
    ids = {payload["id"] for payload in payloads[:-1]}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(payload["usage"] is None for payload in payloads[:-2])
    assert {payload["object"] for payload in payloads[:-1]} == {"chat.completion.chunk"}


def test_without_include_usage_no_usage_field_is_sent() -> None:
    payloads = sse_payloads(_chat_stream_body(include_usage=False))
    assert all("usage" not in payload for payload in payloads[:-1])
    assert payloads[-2]["choices"][0]["finish_reason"] == "length"


def test_completion_chunks_carry_text() -> None:
    encoder = OpenAIEncoder(chat=False, model="m")
    body = encoder.start() + encoder.token("Once") + encoder.end("stop", None)
    first, last, done = sse_payloads(body)
    assert first["object"] == "text_completion" and first["id"].startswith("cmpl-")
    assert first["choices"][0]["text"] == "Once"
    assert last["choices"][0]["finish_reason"] == "stop"
    assert done == "[DONE]"


def test_an_error_event_ends_without_done() -> None:
    encoder = OpenAIEncoder(chat=True, model="m")
    events = sse_events(encoder.error(ServerError(504, "late", code="timeout")))
    assert [event.json()["error"]["code"] for event in events] == ["timeout"]


def test_text_events_rejoin_line_breaks() -> None:
    encoder = TextEncoder()
    body = (
        encoder.token("a\nb") + encoder.token(" c") + encoder.token("") + encoder.end("stop", None)
    )
    events = sse_events(body)
    assert [(event.event, event.data) for event in events[:2]] == [
        ("message", "a\nb"),
        ("message", " c"),
    ]
    assert events[2].event == "done" and events[2].json()["finish_reason"] == "stop"
    error = sse_events(encoder.error(ServerError(500, "boom")))[0]
    assert error.event == "error" and error.json()["error"]["message"] == "boom"


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "expected"), [(None, 64), (0, 64), (10, 10), (9000, 64)])
def test_max_tokens_is_clamped(requested: int | None, expected: int) -> None:
    assert clamp_max_tokens(requested, 64) == expected


def _chat(count: int, *, system: bool) -> list[Message]:
    messages = [Message("user" if n % 2 == 0 else "assistant", str(n)) for n in range(count)]
    return [Message("system", "sys"), *messages] if system else messages


def test_the_window_keeps_the_system_message_and_the_last_ones() -> None:
    kept = window_messages(_chat(6, system=True), 3)
    assert [m.content for m in kept] == ["sys", "3", "4", "5"]


def test_the_window_without_a_system_message() -> None:
    assert [m.content for m in window_messages(_chat(6, system=False), 2)] == ["4", "5"]


def test_the_window_keeps_short_chats_and_zero_means_all() -> None:
    chat = _chat(4, system=True)
    assert window_messages(chat, 4) == chat
    assert window_messages(chat, 0) == chat


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer wrong", False),
        ("Basic s3cret", False),
        ("", False),
        ("Bearer", False),
    ],
)
def test_bearer_tokens(header: str, ok: bool) -> None:
    headers = {"authorization": header} if header else {}
    assert bearer_token_ok(headers, "s3cret") is ok
    assert bearer_token_ok(headers, None)


@pytest.mark.anyio
async def test_read_body_stops_at_the_limit() -> None:
    pulled = 0

    async def chunks() -> Any:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"x" * 10

    with pytest.raises(BodyTooLarge):
        await read_body(chunks(), 25)
    assert pulled == 3  # stopped as soon as the limit was passed
    with pytest.raises(BodyTooLarge):
        await read_body(chunks(), 25, declared_length=26)

    async def small() -> Any:
        yield b"ab"
        yield b"c"

    assert await read_body(small(), 3) == b"abc"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrency", 0),
        ("max_tokens", 0),
        ("max_context", -1),
        ("max_body_bytes", 0),
        ("timeout", 0),
        ("timeout", float("inf")),
        ("api_key", ""),
        ("model_name", ""),
    ],
)
def test_server_config_names_a_bad_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        ServerConfig(**{field: value})  # type: ignore[arg-type]  # wrong values on purpose
    assert caught.value.field == field


def test_the_api_key_is_not_shown() -> None:
    assert "s3cret" not in repr(ServerConfig(api_key="s3cret"))


def test_measured_timings_travel_as_llama_cpp_does() -> None:
    measured = GenerateMetrics(
        prompt_tokens=7,
        generated_tokens=3,
        prefill_seconds=0.5,
        decode_seconds=0.25,
        prefill_tokens_per_sec=14.0,
        decode_tokens_per_sec=12.0,
    )
    encoder = OpenAIEncoder(chat=True, model="m")
    state = _openai.StreamState()
    for event in sse_events(encoder.token("a") + encoder.end("stop", measured)):
        _openai.parse_event(event.data, state)
    assert _openai.metrics_from(state.usage, state.timings) == GenerateMetrics(
        prompt_tokens=7,
        generated_tokens=3,
        prefill_seconds=0.5,
        decode_seconds=0.25,
        prefill_tokens_per_sec=14.0,
        decode_tokens_per_sec=12.0,
    )
    plain = completion_reply(
        chat=True,
        completion_id="c",
        created=1,
        model="m",
        text="a",
        finish_reason="stop",
        metrics=measured,
    )
    assert plain["timings"]["predicted_per_second"] == 12.0
    assert "timings" not in completion_reply(
        chat=True,
        completion_id="c",
        created=1,
        model="m",
        text="a",
        finish_reason="stop",
        metrics=METRICS,
    )
