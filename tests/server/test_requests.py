"""What a request may ask for: fields refused rather than ignored, penalties and logprobs
passed to the model and rendered in OpenAI's shapes (read back by openai-python's own types),
the stop limits, and input of any shape (never a 500)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from goml_async.server import create_app
from goml_async.server._requests import MAX_STOP_CHARS, parse_completion_request
from goml_async.server._wire import ServerError
from goml_async.server.app import ServerApp
from goml_async.testing import ScriptedModel
from goml_async.types import TopLogprob

from .helpers import sse_payloads

pytestmark = pytest.mark.anyio

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
PROMPT = {"prompt": "Once"}
TOKENS = ["Hel", "lo", "!"]
LOGPROBS = [-0.5, -0.25, -1.0]
ALTERNATIVES = [
    [TopLogprob("Hel", -0.5, 1), TopLogprob("Hi", -1.5, 2), TopLogprob("Hey", -2.5, 3)],
    [TopLogprob("lo", -0.25, 4), TopLogprob("p", -2.0, 5), TopLogprob("y", -3.0, 6)],
    [TopLogprob("!", -1.0, 7), TopLogprob(".", -1.25, 8), TopLogprob("?", -4.0, 9)],
]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


def scripted_with_logprobs() -> ScriptedModel:
    return ScriptedModel(TOKENS, logprobs=LOGPROBS, top_logprobs=ALTERNATIVES)


async def post(app: ServerApp, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    async with client(app) as http:
        return await http.post(path, json=body)


#: openai-python's async streams finalize their generators the asyncio way.
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def openai_client(app: ServerApp) -> openai.AsyncOpenAI:
    """openai-python's async client talking to ``app`` in process."""
    return openai.AsyncOpenAI(
        base_url="http://localhost/v1",
        api_key="unused",
        max_retries=0,
        # openai takes an httpx client as well as its own httpx2 one; its annotation names only
        # httpx2, and httpx is the client that has an in-process ASGI transport here.
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),  # type: ignore[arg-type]
    )


# -- fields that cannot be honoured are refused ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "functions": [{"name": "f"}]}, "functions"),
        ({**CHAT, "function_call": {"name": "f"}}, "function_call"),
        ({**CHAT, "logit_bias": {"50256": -100}}, "logit_bias"),
        ({**CHAT, "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({**CHAT, "modalities": ["text", "audio"]}, "modalities"),
        ({**CHAT, "prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({**CHAT, "web_search_options": {}}, "web_search_options"),
    ],
)
def test_a_chat_field_this_server_cannot_honour_is_400_naming_it(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(ServerError) as caught:
        parse_completion_request(body, chat=True)
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, "not_supported")
    assert error.message.startswith(f"{param}: ")


def test_tools_are_validated_and_become_options() -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    parsed = parse_completion_request({**CHAT, "tools": [tool], "tool_choice": "none"}, chat=True)
    assert [t.name for t in parsed.options["tools"]] == ["f"]
    assert parsed.options["tool_choice"].mode == "none"
    for choice in ("required", {"type": "function", "function": {"name": "f"}}):
        with pytest.raises(ServerError) as caught:
            parse_completion_request({**CHAT, "tool_choice": choice}, chat=True)
        assert (caught.value.status, caught.value.param) == (400, "tool_choice")
    with pytest.raises(ServerError) as caught:
        parse_completion_request({**PROMPT, "tools": [tool]}, chat=False)
    assert (caught.value.param, caught.value.code) == ("tools", "not_supported")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**PROMPT, "echo": True}, "echo"),
        ({**PROMPT, "best_of": 3}, "best_of"),
        ({**PROMPT, "suffix": "the end"}, "suffix"),
        ({**PROMPT, "logit_bias": {"1": 5}}, "logit_bias"),
        ({**PROMPT, "n": 2}, "n"),
    ],
)
def test_a_completion_field_this_server_cannot_honour_is_400(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(ServerError) as caught:
        parse_completion_request(body, chat=False)
    assert (caught.value.status, caught.value.param) == (400, param)


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": {"type": "text"}},
        {"tools": [], "tool_choice": "none"},
        {"tool_choice": "auto", "parallel_tool_calls": True},
        {"logit_bias": {}},
        {"modalities": ["text"]},
        {"user": "u-1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto"},
        {"n": 1},
    ],
)
def test_values_that_ask_for_nothing_special_are_accepted(extra: dict[str, Any]) -> None:
    assert parse_completion_request({**CHAT, **extra}, chat=True).options == {}


async def test_the_app_answers_a_refused_field_with_400_and_counts_it() -> None:
    model = ScriptedModel(TOKENS)
    app = create_app(model)
    response = await post(app, {**CHAT, "functions": [{"name": "f"}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "functions"
    assert model.calls == []
    assert app.health()["errors_by_status"] == {"400": 1}


# -- penalties and logprobs reach the model -------------------------------------------------------


async def test_penalties_and_logprobs_reach_the_model() -> None:
    model = scripted_with_logprobs()
    body = {**CHAT, "presence_penalty": 0.5, "frequency_penalty": -1.5}
    await post(create_app(model), {**body, "logprobs": True, "top_logprobs": 2})
    config = model.calls[0][1]
    assert (config.presence_penalty, config.frequency_penalty) == (0.5, -1.5)
    assert (config.logprobs, config.top_logprobs) == (True, 2)


@pytest.mark.parametrize(
    ("body", "chat", "param"),
    [
        ({**CHAT, "presence_penalty": 2.5}, True, "presence_penalty"),
        ({**CHAT, "frequency_penalty": "high"}, True, "frequency_penalty"),
        ({**CHAT, "logprobs": 1}, True, "logprobs"),
        ({**CHAT, "logprobs": True, "top_logprobs": 21}, True, "top_logprobs"),
        ({**CHAT, "top_logprobs": 3}, True, "top_logprobs"),  # needs logprobs: true
        ({**PROMPT, "logprobs": 6}, False, "logprobs"),
        ({**PROMPT, "logprobs": True}, False, "logprobs"),
    ],
)
def test_bad_penalties_and_logprobs_are_named(body: dict[str, Any], chat: bool, param: str) -> None:
    with pytest.raises(ServerError) as caught:
        parse_completion_request(body, chat=chat)
    assert (caught.value.status, caught.value.param) == (400, param)


async def test_a_model_without_logprobs_gets_400_not_a_reply_without_them() -> None:
    for stream in (False, True):
        response = await post(
            create_app(ScriptedModel(TOKENS)), {**CHAT, "logprobs": True, "stream": stream}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "not_supported"


async def test_chat_logprobs_in_openais_shape() -> None:
    body = {**CHAT, "logprobs": True, "top_logprobs": 2}
    reply = ChatCompletion.model_validate(
        (await post(create_app(scripted_with_logprobs()), body)).json()
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    content = logprobs.content
    assert [entry.token for entry in content] == TOKENS
    assert [entry.logprob for entry in content] == LOGPROBS
    assert content[0].bytes == list(b"Hel")
    assert [alt.token for alt in content[0].top_logprobs] == ["Hel", "Hi"]
    assert [alt.logprob for alt in content[2].top_logprobs] == [-1.0, -1.25]


async def test_streamed_chat_logprobs_match_the_plain_ones() -> None:
    app = create_app(scripted_with_logprobs())
    body = {**CHAT, "logprobs": True, "top_logprobs": 1}
    plain = ChatCompletion.model_validate((await post(app, body)).json())
    streamed = await post(app, {**body, "stream": True})
    chunks = [ChatCompletionChunk.model_validate(p) for p in sse_payloads(streamed.content)[:-1]]
    entries = [
        entry
        for chunk in chunks
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content
        for entry in chunk.choices[0].logprobs.content
    ]
    assert plain.choices[0].logprobs is not None
    assert [e.model_dump() for e in entries] == [
        e.model_dump() for e in plain.choices[0].logprobs.content or []
    ]
    assert len(entries) == 3 and all(len(e.top_logprobs) == 1 for e in entries)


@ASYNCIO_ONLY
async def test_completion_logprobs_in_the_legacy_shape(anyio_backend: str) -> None:
    app = create_app(scripted_with_logprobs())
    body = {**PROMPT, "logprobs": 2}
    reply = Completion.model_validate((await post(app, body, "/v1/completions")).json())
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens == TOKENS
    assert logprobs.token_logprobs == LOGPROBS
    assert logprobs.text_offset == [0, 3, 5]
    assert logprobs.top_logprobs == [
        {"Hel": -0.5, "Hi": -1.5},
        {"lo": -0.25, "p": -2.0},
        {"!": -1.0, ".": -1.25},
    ]
    async with openai_client(app) as openai:
        stream = await openai.completions.create(model="", prompt="Once", logprobs=2, stream=True)
        chunks = [chunk async for chunk in stream]
    parts = [c.choices[0].logprobs for c in chunks if c.choices[0].logprobs is not None]
    assert [p.tokens for p in parts] == [[token] for token in TOKENS]
    assert [p.text_offset for p in parts] == [[0], [3], [5]]
    assert [p.top_logprobs for p in parts][1] == [{"lo": -0.25, "p": -2.0}]


@ASYNCIO_ONLY
async def test_openai_python_reads_the_logprobs(anyio_backend: str) -> None:
    async with openai_client(create_app(scripted_with_logprobs(), model_name="m")) as client:
        reply = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            logprobs=True,
            top_logprobs=3,
        )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [entry.logprob for entry in logprobs.content] == LOGPROBS
    assert [alt.token for alt in logprobs.content[1].top_logprobs] == ["lo", "p", "y"]


# -- stop limits ----------------------------------------------------------------------------------


def test_a_stop_sequence_longer_than_the_limit_is_400() -> None:
    assert parse_completion_request({**CHAT, "stop": ["x" * MAX_STOP_CHARS]}, chat=True)
    with pytest.raises(ServerError) as caught:
        parse_completion_request({**CHAT, "stop": ["x" * (MAX_STOP_CHARS + 1)]}, chat=True)
    assert (caught.value.status, caught.value.param) == (400, "stop")
    assert f"at most {MAX_STOP_CHARS} characters" in caught.value.message
    with pytest.raises(ServerError) as too_many:
        parse_completion_request({**CHAT, "stop": ["x"] * 17}, chat=True)
    assert too_many.value.param == "stop"


async def test_the_app_refuses_a_40000_character_stop_before_the_model_sees_it() -> None:
    model = ScriptedModel(TOKENS)
    response = await post(create_app(model), {**CHAT, "stop": "y" * 40_000})
    assert response.status_code == 400 and response.json()["error"]["param"] == "stop"
    assert model.calls == []


# -- input of any shape ---------------------------------------------------------------------------

FIELDS = [
    "model", "messages", "prompt", "stream", "stream_options", "n", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "top_k", "repeat_penalty", "seed", "stop",
    "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "logit_bias",
    "response_format", "tools", "tool_choice", "functions", "function_call", "modalities",
    "audio", "prediction", "echo", "best_of", "suffix", "user",
]  # fmt: skip
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
MESSAGE_FIELDS = ["role", "content"]


def refusal(body: object, *, chat: bool) -> ServerError | None:
    """The error a body is refused with, or None when it is accepted."""
    try:
        parse_completion_request(body, chat=chat)
    except ServerError as error:
        return error
    return None


@settings(max_examples=300, deadline=None)
@given(chat=st.booleans(), name=st.sampled_from(FIELDS), value=JSON)
def test_any_json_in_any_field_is_accepted_or_a_400(chat: bool, name: str, value: Any) -> None:
    base = CHAT if chat else PROMPT
    error = refusal({**base, name: value}, chat=chat)
    assert error is None or (400 <= error.status < 500 and len(error.message) < 400)


@settings(max_examples=200, deadline=None)
@given(chat=st.booleans(), name=st.sampled_from(FIELDS), value=JSON)
def test_any_body_of_any_shape_is_accepted_or_a_400(chat: bool, name: str, value: Any) -> None:
    error = refusal(value if name == "model" else {name: value}, chat=chat)
    assert error is None or 400 <= error.status < 500


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chat=st.booleans(),
    name=st.sampled_from(FIELDS + MESSAGE_FIELDS),
    value=JSON,
)
async def test_the_app_never_answers_500_to_any_json_in_any_field(
    chat: bool, name: str, value: Any
) -> None:
    if name in MESSAGE_FIELDS:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi", name: value}]}
    else:
        body = {**(CHAT if chat else PROMPT), name: value}
    app = create_app(ScriptedModel(TOKENS), max_tokens=8)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions" if chat else "/v1/completions",
            content=json.dumps(body),  # NaN and Infinity too, as Python's json reads them
            headers={"content-type": "application/json"},
        )
    assert response.status_code in (200, 400, 404), response.text
    assert response.headers["content-type"] == "application/json"
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert app.health()["client_errors_total"] == 1


@pytest.mark.parametrize("role", [["user"], {"user": 1}, 3, None])
async def test_a_role_of_the_wrong_type_is_400_and_counted(role: object) -> None:
    app = create_app(ScriptedModel(TOKENS))
    response = await post(app, {"messages": [{"role": role, "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].role"
    assert app.health()["errors_by_status"] == {"400": 1}


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"messages": [{"role": ' + b"[" * 50_000 + b"]" * 50_000 + b', "content": "x"}]}',
        b'{"messages": [{"role": ' + b"[" * 500 + b"]" * 500 + b', "content": "x"}]}',
        b'{"seed": ' + b"9" * 5000 + b"}",  # more digits than Python converts
    ],
)
async def test_deeply_nested_or_huge_json_is_400_and_counted(raw: bytes) -> None:
    app = create_app(ScriptedModel(TOKENS), max_body_bytes=1024 * 1024)
    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert len(error["message"]) < 400
    assert app.health()["errors_by_status"] == {"400": 1}
    json.dumps(error)  # plain JSON all the way down
