"""FakeOpenAIServer: a real loopback HTTP/1.1 server speaking OpenAI's wire format, with faults.

The client is a plain httpx.AsyncClient (on asyncio and trio); a few tests speak raw HTTP over a
socket to see the framing itself.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from goml_async import ConfigError, GomlError
from goml_async.testing import FakeOpenAIServer, RecordedRequest, Script

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi now"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server
    assert server.errors == []


@asynccontextmanager
async def client_for(server: FakeOpenAIServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        yield client


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, "stream": True, **extra}


async def post_stream(
    server: FakeOpenAIServer, path: str = "/chat/completions", **body: Any
) -> tuple[httpx.Response, bytes]:
    """POST a body and return the response (read) and its raw, de-chunked bytes."""
    payload = body if "prompt" in body else chat_body(**body)
    async with client_for(server) as client:
        response = await client.post(path, json=payload)
    return response, response.content


def sse_payloads(raw: bytes) -> list[str]:
    """The data of each SSE event (multi-line data joined by "\\n"), as a correct client reads."""
    payloads = []
    for block in re.split(r"\r\n\r\n|\n\n", raw.decode()):
        lines = [line for line in block.splitlines() if line.startswith("data:")]
        if lines:
            payloads.append("\n".join(line[5:].removeprefix(" ") for line in lines))
    return payloads


def chunks(raw: bytes) -> list[dict[str, Any]]:
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    return [json.loads(payload) for payload in payloads[:-1]]


def contents(events: list[dict[str, Any]]) -> list[str]:
    return [
        event["choices"][0]["delta"].get("content", "")
        for event in events
        if event["choices"] and event["choices"][0]["delta"].get("content")
    ]


def normalized(raw: bytes) -> bytes:
    raw = re.sub(rb'"id":"[^"]*"', b'"id":"X"', raw)
    return re.sub(rb'"created":\d+', b'"created":0', raw)


def raw_exchange(server: FakeOpenAIServer, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def dechunk(framed: bytes) -> list[bytes]:
    """The pieces of a chunked body, checking its framing up to the last chunk."""
    pieces: list[bytes] = []
    while True:
        size_line, _, framed = framed.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert framed == b"\r\n"
            return pieces
        pieces.append(framed[:size])
        assert framed[size : size + 2] == b"\r\n"
        framed = framed[size + 2 :]


def raw_post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", *headers, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- streaming replies ----------------------------------------------------------------------------


async def test_chat_stream_sends_role_tokens_finish_and_done(server: FakeOpenAIServer) -> None:
    response, raw = await post_stream(server)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["transfer-encoding"] == "chunked"
    events = chunks(raw)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert contents(events) == ["Hello", ",", " world", "!"]
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert {e["model"] for e in events} == {"fake-model"}
    assert len({e["id"] for e in events}) == 1 and events[0]["id"].startswith("chatcmpl-")
    assert [e["choices"][0]["finish_reason"] for e in events] == [None] * 5 + ["stop"]
    assert all("usage" not in e for e in events)
    timings = events[-1]["timings"]
    assert timings["prompt_n"] == 5 and timings["predicted_n"] == 4  # words of the messages
    # The server counts a stream as completed just after its last write: wait for it.
    assert server.wait_for(lambda: server.streams_completed == 1, timeout=2)
    assert server.streams_started == 1
    assert server.streams_aborted == 0


async def test_usage_chunk_only_when_include_usage(server: FakeOpenAIServer) -> None:
    events = chunks((await post_stream(server, stream_options={"include_usage": True}))[1])
    usage_chunk = events[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert usage_chunk["timings"]["predicted_n"] == 4
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and "timings" not in events[-2]
    server.script = Script(prompt_tokens=42, timings=False)
    events = chunks((await post_stream(server, stream_options={"include_usage": True}))[1])
    assert events[-1]["usage"] == {"prompt_tokens": 42, "completion_tokens": 4, "total_tokens": 46}
    assert all("timings" not in e for e in events)


async def test_completions_stream_has_text_completion_shape(server: FakeOpenAIServer) -> None:
    _, raw = await post_stream(server, "/completions", prompt="one two three", stream=True)
    events = chunks(raw)
    assert {e["object"] for e in events} == {"text_completion"}
    assert events[0]["id"].startswith("cmpl-")
    assert [e["choices"][0]["text"] for e in events] == ["Hello", ",", " world", "!", ""]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["timings"]["prompt_n"] == 3


async def test_max_tokens_cuts_the_reply_with_length(server: FakeOpenAIServer) -> None:
    events = chunks((await post_stream(server, max_tokens=2))[1])
    assert contents(events) == ["Hello", ","]
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    events = chunks((await post_stream(server, max_completion_tokens=4))[1])
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_chunk_size_one_delivers_the_same_bytes(server: FakeOpenAIServer) -> None:
    tokens = ["héllo", " wörld", " ✓", " 🦀", "!"]
    server.script = Script(tokens=tokens, timings=False)
    _, whole = await post_stream(server, stream_options={"include_usage": True})
    server.script = Script(tokens=tokens, timings=False, chunk_size=1)
    _, split = await post_stream(server, stream_options={"include_usage": True})
    assert normalized(split) == normalized(whole)
    assert contents(chunks(split)) == tokens


def test_chunk_size_writes_one_http_chunk_per_piece(server: FakeOpenAIServer) -> None:
    server.script = Script(tokens=["ab"], chunk_size=3, timings=False)
    body = json.dumps(chat_body()).encode()
    raw = raw_exchange(server, raw_post("/v1/chat/completions", body, "Connection: close"))
    pieces = dechunk(raw.partition(b"\r\n\r\n")[2])
    assert {len(piece) for piece in pieces[:-1]} == {3} and 1 <= len(pieces[-1]) <= 3
    assert contents(chunks(b"".join(pieces))) == ["ab"]


async def test_crlf_line_endings(server: FakeOpenAIServer) -> None:
    server.script = Script(line_ending="\r\n")
    _, raw = await post_stream(server)
    assert raw.endswith(b"data: [DONE]\r\n\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n") > 0
    assert contents(chunks(raw)) == ["Hello", ",", " world", "!"]


async def test_keepalive_comments_before_every_nth_token(server: FakeOpenAIServer) -> None:
    server.script = Script(tokens=list("abcdefg"), keepalive_every=3)
    _, raw = await post_stream(server)
    assert raw.count(b": ping\n\n") == 2
    assert contents(chunks(raw)) == list("abcdefg")


async def test_multiline_data_is_rejoined_by_a_correct_client(server: FakeOpenAIServer) -> None:
    server.script = Script(multiline_data=True)
    _, raw = await post_stream(server)
    first_event = raw.split(b"\n\n")[0].split(b"\n")
    assert len(first_event) == 2 and all(line.startswith(b"data: ") for line in first_event)
    assert contents(chunks(raw)) == ["Hello", ",", " world", "!"]


async def test_first_token_delay_comes_after_the_headers(server: FakeOpenAIServer) -> None:
    server.script = Script(tokens=["a", "b"], first_token_delay=0.5, token_delay=0.05)
    async with client_for(server) as client:
        started = time.monotonic()
        async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
            assert time.monotonic() - started < 0.4
            raw = await response.aread()
        assert time.monotonic() - started >= 0.6
    assert contents(chunks(raw)) == ["a", "b"]


# -- faults ---------------------------------------------------------------------------------------


async def test_statuses_then_success_with_retry_after(server: FakeOpenAIServer) -> None:
    server.script = Script(statuses=(503, 429), retry_after="0.2")
    async with client_for(server) as client:
        replies = [await client.post("/chat/completions", json=chat_body()) for _ in range(3)]
    assert [r.status_code for r in replies] == [503, 429, 200]
    assert [r.headers.get("retry-after") for r in replies] == ["0.2", "0.2", None]
    error = replies[0].json()["error"]
    assert error["code"] == 503 and error["type"] == "unavailable_error" and error["message"]
    assert replies[1].json()["error"]["type"] == "rate_limit_error"
    assert contents(chunks(replies[2].content)) == ["Hello", ",", " world", "!"]
    assert server.connections_opened == 1
    server.script = Script(statuses=[500])  # a new script counts again from its first request
    async with client_for(server) as client:
        again = await client.post("/chat/completions", json=chat_body())
    assert again.status_code == 500 and "retry-after" not in again.headers


async def test_error_after_sends_an_error_payload_then_done(server: FakeOpenAIServer) -> None:
    server.script = Script(error_after=2)
    payloads = sse_payloads((await post_stream(server))[1])
    assert payloads[-2:] == [
        '{"error":{"message":"boom","type":"server_error","code":500}}',
        "[DONE]",
    ]
    assert contents([json.loads(p) for p in payloads[:-2]]) == ["Hello", ","]
    assert server.wait_for(lambda: server.streams_completed == 1, timeout=2)


async def test_malformed_after_inserts_a_broken_event(server: FakeOpenAIServer) -> None:
    server.script = Script(malformed_after=1)
    payloads = sse_payloads((await post_stream(server))[1])
    assert payloads[2] == "{not json"
    rest = [json.loads(p) for p in payloads[:2] + payloads[3:-1]]
    assert contents(rest) == ["Hello", ",", " world", "!"]


async def test_disconnect_after_breaks_the_chunked_body(server: FakeOpenAIServer) -> None:
    server.script = Script(disconnect_after=2)
    received = []
    async with client_for(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line[6:]))
    assert contents(received) == ["Hello", ","]
    assert server.wait_for(lambda: server.streams_aborted == 1 and server.connections_open == 0)
    assert server.streams_completed == 0


async def test_client_closing_during_a_stall_is_noticed_at_once(server: FakeOpenAIServer) -> None:
    # The headers and the role chunk come before the stall; the client gives up in it.
    server.script = Script(stall_after=0, stall_seconds=30)
    async with client_for(server) as client:
        async with client.stream("POST", "/chat/completions", json=chat_body()) as response:
            assert response.status_code == 200
            assert server.wait_for(lambda: server.streams_started == 1)
        closed_at = time.monotonic()
        assert server.wait_for(lambda: server.streams_aborted == 1, timeout=2)
        assert time.monotonic() - closed_at < 0.5
    assert server.wait_for(lambda: server.connections_open == 0)
    assert server.streams_completed == 0


async def test_client_closing_while_writing_is_an_abort(server: FakeOpenAIServer) -> None:
    server.script = Script(tokens=["x" * 1000] * 20_000)  # 20 MB: more than socket buffers
    async with (
        client_for(server) as client,
        client.stream("POST", "/chat/completions", json=chat_body()) as response,
    ):
        assert response.status_code == 200
    assert server.wait_for(lambda: server.streams_aborted == 1 and server.connections_open == 0)
    assert server.streams_completed == 0


async def test_non_streaming_faults_replace_the_reply(server: FakeOpenAIServer) -> None:
    body = chat_body(stream=False)
    async with client_for(server) as client:
        server.script = Script(error_after=1)
        assert (await client.post("/chat/completions", json=body)).status_code == 500
        server.script = Script(malformed_after=4)
        assert (await client.post("/chat/completions", json=body)).content == b"{not json"
        server.script = Script(disconnect_after=0)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/chat/completions", json=body)


# -- connections and other routes -----------------------------------------------------------------


async def test_keep_alive_serves_50_requests_on_one_connection(server: FakeOpenAIServer) -> None:
    async with client_for(server) as client:
        for index in range(50):
            body = chat_body(stream=index % 2 == 0)
            response = await client.post("/chat/completions", json=body)
            assert response.status_code == 200
    assert server.connections_opened == 1
    assert server.wait_for(lambda: server.streams_completed == 25, timeout=2)
    assert len(server.requests) == 50


async def test_connection_close_is_honoured(server: FakeOpenAIServer) -> None:
    async with client_for(server) as client:
        for _ in range(2):
            headers = {"Connection": "close"}
            response = await client.post("/chat/completions", json=chat_body(), headers=headers)
            assert response.headers["connection"] == "close"
            assert contents(chunks(response.content)) == ["Hello", ",", " world", "!"]
    assert server.connections_opened == 2
    assert server.wait_for(lambda: server.connections_open == 0)


def test_pipelined_requests_are_answered_in_order(server: FakeOpenAIServer) -> None:
    get = b"GET /v1/models HTTP/1.1\r\nHost: test\r\n\r\n"
    last = b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    post = raw_post("http://test/v1/completions", b'{"prompt":"x"}')  # absolute-form target
    raw = raw_exchange(server, get + post + last)
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert raw.index(b'"object":"list"') < raw.index(b"text_completion") < raw.index(b'"ok"')


def test_chunked_request_bodies_are_rejected(server: FakeOpenAIServer) -> None:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    raw = raw_exchange(server, request)
    assert raw.startswith(b"HTTP/1.1 411 ")
    assert b'"type":"invalid_request_error"' in raw


def test_http_1_0_stream_is_delimited_by_the_close(server: FakeOpenAIServer) -> None:
    body = json.dumps(chat_body()).encode()
    request = raw_post("/v1/chat/completions", body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    head, _, sse = raw_exchange(server, request).partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert contents(chunks(sse)) == ["Hello", ",", " world", "!"]


async def test_health_says_loading_then_ok(server: FakeOpenAIServer) -> None:
    server.script = Script(loading_until_requests=2)
    async with httpx.AsyncClient(base_url=server.url) as client:
        replies = [await client.get("/health") for _ in range(3)]
    assert [r.status_code for r in replies] == [503, 503, 200]
    assert replies[0].json() == {
        "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
    }
    assert replies[2].json() == {"status": "ok"}


async def test_models_lists_the_script_model(server: FakeOpenAIServer) -> None:
    server.script = Script(model="tiny")
    async with client_for(server) as client:
        listing = (await client.get("/models")).json()
    assert listing == {
        "object": "list",
        "data": [{"id": "tiny", "object": "model", "owned_by": "goml"}],
    }


async def test_unknown_routes_and_bad_bodies_get_openai_errors(server: FakeOpenAIServer) -> None:
    async with client_for(server) as client:
        missing = await client.post("/embeddings", json={})
        wrong_method = await client.get("/chat/completions")
        not_json = await client.post("/chat/completions", content=b"{oops")
        no_messages = await client.post("/chat/completions", json={"stream": True})
        bad_limit = await client.post("/completions", json={"prompt": "x", "max_tokens": -1})
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"message", "type", "code"}
    assert missing.json()["error"]["code"] == 404
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert [r.status_code for r in (not_json, no_messages, bad_limit)] == [400, 400, 400]
    assert no_messages.json()["error"]["type"] == "invalid_request_error"
    assert server.connections_opened == 1


async def test_non_streaming_replies_with_usage(server: FakeOpenAIServer) -> None:
    async with client_for(server) as client:
        chat = (await client.post("/chat/completions", json=chat_body(stream=False))).json()
        body = {"prompt": ["a b", "c"], "max_tokens": 3}
        completion = (await client.post("/completions", json=body)).json()
    assert chat["object"] == "chat.completion"
    assert chat["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world!"},
            "finish_reason": "stop",
        }
    ]
    assert chat["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert chat["timings"]["predicted_n"] == 4
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == "Hello, world"
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert server.streams_started == 0


async def test_requests_are_recorded_with_headers_and_body(server: FakeOpenAIServer) -> None:
    async with client_for(server) as client:
        headers = {"Authorization": "Bearer sk-test", "X-Trace": "1"}
        await client.post("/chat/completions", json=chat_body(), headers=headers)
        await client.get("/models?limit=1")
    post, get = server.requests
    assert isinstance(post, RecordedRequest)
    assert (post.method, post.path) == ("POST", "/v1/chat/completions")
    assert post.headers["authorization"] == "Bearer sk-test" and post.headers["x-trace"] == "1"
    assert post.json == chat_body() and json.loads(post.body) == chat_body()
    assert (get.method, get.path, get.json, get.body) == ("GET", "/v1/models", None, b"")


# -- lifecycle and validation ---------------------------------------------------------------------


async def test_stop_closes_open_connections_and_joins_the_thread() -> None:
    server = FakeOpenAIServer(Script(stall_after=0, stall_seconds=30)).start()
    try:
        base_url = server.base_url
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=10) as client,
            client.stream("POST", "/chat/completions", json=chat_body()) as response,
        ):
            assert server.wait_for(lambda: server.streams_started == 1)
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 2
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()
        assert server.connections_open == 0 and server.streams_aborted == 1
        assert server.errors == []
        with pytest.raises(GomlError, match="not running"):
            _ = server.base_url
    finally:
        server.stop()
    server.stop()  # idempotent
    with server, pytest.raises(GomlError, match="already running"):
        server.start()


def test_start_fails_clearly_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = FakeOpenAIServer(port=taken.getsockname()[1])
        with pytest.raises(GomlError, match="could not start") as caught:
            server.start()
    assert isinstance(caught.value.__cause__, OSError)
    server.stop()


def test_the_script_must_be_a_script(server: FakeOpenAIServer) -> None:
    with pytest.raises(ConfigError, match="script"):
        FakeOpenAIServer({"tokens": ["a"]})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="script"):
        server.script = None  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tokens", "not a list"),
        ("tokens", [1, 2]),
        ("chunk_size", 0),
        ("line_ending", "\r"),
        ("token_delay", -1),
        ("statuses", [200]),
        ("stall_after", -1),
        ("keepalive_every", True),
        ("retry_after", "1\r\nX: y"),
    ],
)
def test_script_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        Script(**{field: value})  # type: ignore[arg-type]


def test_script_stores_sequences_as_tuples() -> None:
    script = Script(tokens=["a"], statuses=[503])
    assert script.tokens == ("a",) and script.statuses == (503,)
