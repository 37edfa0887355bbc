"""HTTPModel against servers that are not what they claim: silent, hostile or not OpenAI at all.

Each server is a real one on loopback: a socket that accepts and never answers, and a small
threaded ``http.server`` whose routes answer exactly the bytes a test gives (HTML pages,
whole JSON replies, endless SSE lines, huge error bodies, odd metadata).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from goml_async import GenerationError, GomlSettings, ModelLoadError, load_model
from goml_async.backends._http_reply import MAX_ERROR_BODY
from goml_async.backends.http import HTTPModel
from goml_async.errors import APIStatusError, ConfigError

pytestmark = pytest.mark.anyio

#: A route's answer: status, content type, and the body (bytes, or a callable writing chunks).
Answer = tuple[int, str, bytes | Callable[[Callable[[bytes], object]], None]]

LISTING = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()


@dataclass
class Routes:
    """What the scripted server answers, and what it was asked."""

    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    posts: int = 0

    def set(self, method: str, path: str, answer: Answer) -> None:
        self.answers[(method, path)] = answer


def _handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, method: str) -> None:
            if method == "POST":
                routes.posts += 1
                self.rfile.read(int(self.headers.get("content-length", 0)))
            status, kind, body = routes.answers.get(
                (method, self.path), (404, "text/html", b"<html><body>Not Found</body></html>")
            )
            self.send_response(status)
            self.send_header("Content-Type", kind)
            if isinstance(body, bytes):
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_header("Connection", "close")
            self.end_headers()
            # The client may stop reading early, as it should.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                body(self.wfile.write)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

    return Handler


@pytest.fixture
def routes() -> Iterator[tuple[Routes, str]]:
    scripted = Routes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(scripted))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield scripted, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def make(url: str, **options: Any) -> HTTPModel:
    options.setdefault("max_retries", 2)
    return HTTPModel(url, settings=GomlSettings(_env_file=None), **options)


# -- loading ---------------------------------------------------------------------------------------


async def test_a_server_that_never_answers_fails_the_load_within_the_probe_deadline() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts (backlog), never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(ModelLoadError, match=r"within 0\.5 s"):
            await load_model(url, probe_timeout=0.5)
        assert time.monotonic() - started < 5


async def test_a_web_server_that_is_not_openai_is_refused_at_load(
    routes: tuple[Routes, str],
) -> None:
    _, url = routes
    with pytest.raises(ModelLoadError) as caught:
        await load_model(url)
    message = str(caught.value)
    assert "answered 404 (text/html)" in message
    assert "not an OpenAI-compatible API base URL" in message
    assert "\n" not in message


async def test_a_model_listing_loads_and_probe_false_skips_the_check(
    routes: tuple[Routes, str],
) -> None:
    scripted, url = routes
    scripted.set("GET", "/v1/models", (200, "application/json", LISTING))
    async with await load_model(url) as model:
        assert model.info().architecture == "http"
    scripted.answers.clear()
    async with await load_model(url, probe=False) as model:
        assert isinstance(model, HTTPModel)


async def test_an_api_key_error_at_load_says_how_to_give_one(routes: tuple[Routes, str]) -> None:
    scripted, url = routes
    scripted.set("GET", "/v1/models", (401, "application/json", b'{"error": "no key"}'))
    with pytest.raises(ModelLoadError, match="GOML_API_KEY or OPENAI_API_KEY"):
        await load_model(url)


@pytest.mark.parametrize(
    "meta", [{"n_vocab": "abc", "n_embd": 1e400}, {"n_vocab": -5, "n_embd": True}, {"n_vocab": []}]
)
async def test_odd_metadata_counts_as_unknown(
    routes: tuple[Routes, str], meta: dict[str, Any]
) -> None:
    scripted, url = routes
    listing = {"data": [{"id": "m", "meta": {"general.architecture": ["x"], **meta}}]}
    # json.dumps writes 1e400 (inf) as Infinity, which Python's json reads back: a real case.
    scripted.set("GET", "/v1/models", (200, "application/json", json.dumps(listing).encode()))
    async with await load_model(url) as model:
        info = model.info()
    assert (info.architecture, info.vocab_size, info.hidden_size) == ("http", 0, 0)


@pytest.mark.parametrize("url", ["ftp://example.com/model", "notaurl://x", "FILE:///tmp/m"])
async def test_unsupported_url_schemes_are_named(url: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        await load_model(url)
    scheme = url.split(":", 1)[0]
    assert f"{scheme}:// URLs are not supported" in str(caught.value)
    assert "no such file" not in str(caught.value)


# -- replies that are not an event stream ---------------------------------------------------------


async def test_a_200_html_page_is_a_clear_error_and_is_not_retried(
    routes: tuple[Routes, str],
) -> None:
    scripted, url = routes
    page = b"<!doctype html><html><head><title>Router login</title></head></html>\n" * 10
    scripted.set("POST", "/v1/chat/completions", (200, "text/html; charset=utf-8", page))
    async with make(url) as model:
        with pytest.raises(GenerationError) as caught:
            await model.chat([{"role": "user", "content": "hi"}])
    assert "Content-Type 'text/html; charset=utf-8', not an event stream" in str(caught.value)
    assert "Router login" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert scripted.posts == 1


async def test_a_whole_json_reply_is_accepted_from_a_server_that_ignores_stream(
    routes: tuple[Routes, str],
) -> None:
    scripted, url = routes
    reply = {
        "choices": [
            {"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
    scripted.set(
        "POST", "/v1/chat/completions", (200, "application/json", json.dumps(reply).encode())
    )
    async with make(url) as model:
        result = await model.chat([{"role": "user", "content": "Capital of France?"}])
    assert (result.text, result.finish_reason) == ("Paris.", "stop")
    assert result.metrics is not None
    assert (result.metrics.prompt_tokens, result.metrics.generated_tokens) == (7, 2)
    assert scripted.posts == 1


@pytest.mark.parametrize(
    "body",
    [b'{"choices": "abc"}', b'{"not": "a completion"}', b"[1, 2]", b"{broken"],
)
async def test_a_json_reply_that_is_no_completion_is_a_clear_error(
    routes: tuple[Routes, str], body: bytes
) -> None:
    scripted, url = routes
    scripted.set("POST", "/v1/completions", (200, "application/json", body))
    async with make(url) as model:
        with pytest.raises(GenerationError, match="answered"):
            await model.generate("hi")
    assert scripted.posts == 1


# -- hostile sizes ------------------------------------------------------------------------------


async def test_a_huge_error_body_is_read_only_up_to_the_cap(routes: tuple[Routes, str]) -> None:
    scripted, url = routes
    sent = [0]

    def endless_error(write: Callable[[bytes], object]) -> None:
        chunk = b"E" * 65536
        for _ in range(3200):  # 200 MiB if the client read it all
            write(chunk)
            sent[0] += len(chunk)

    scripted.set("POST", "/v1/completions", (500, "text/plain", endless_error))
    async with make(url, max_retries=0) as model:
        with anyio.fail_after(30), pytest.raises(APIStatusError) as caught:
            await model.generate("hi")
    assert caught.value.status_code == 500
    assert len(caught.value.body) == MAX_ERROR_BODY
    assert "cut there" in str(caught.value)
    assert sent[0] < 100 * 1024 * 1024


async def test_an_sse_line_that_never_ends_is_refused_in_bounded_memory(
    routes: tuple[Routes, str],
) -> None:
    scripted, url = routes

    def endless_line(write: Callable[[bytes], object]) -> None:
        write(b"data: ")
        for _ in range(2000):  # 128 MiB without a line ending
            write(b"x" * 65536)

    scripted.set("POST", "/v1/completions", (200, "text/event-stream", endless_line))
    async with make(url) as model:
        with anyio.fail_after(60), pytest.raises(GenerationError, match="will not hold"):
            await model.generate("hi")
    assert scripted.posts == 1


# -- where the server comes from -----------------------------------------------------------------


def test_http_model_takes_goml_base_url_then_openai_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOML_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.example:9/v1")
    assert HTTPModel().base_url == "http://openai.example:9/v1"
    monkeypatch.setenv("GOML_BASE_URL", "http://goml.example:8")
    assert HTTPModel().base_url == "http://goml.example:8/v1"
    monkeypatch.delenv("GOML_BASE_URL")
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ConfigError, match="neither GOML_BASE_URL nor OPENAI_BASE_URL"):
        HTTPModel()


async def test_load_model_with_no_argument_uses_the_configured_server(
    routes: tuple[Routes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted, url = routes
    scripted.set("GET", "/v1/models", (200, "application/json", LISTING))
    monkeypatch.delenv("GOML_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    async with await load_model() as model:
        assert isinstance(model, HTTPModel)
        assert model.base_url == url
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ConfigError, match="load_default_model"):
        await load_model()


@pytest.mark.parametrize(
    "chunk",
    [
        '{"choices": "abc"}',
        '{"choices": [{"delta": ["not", "an", "object"]}]}',
        '{"choices": [{"delta": {"content": {"x": 1}}}]}',
        '{"choices": [{"text": 5}]}',
        '{"choices": {"0": {}}}',
        '{"usage": "lots", "choices": []}',
    ],
)
async def test_a_streamed_chunk_of_the_wrong_shape_is_a_clear_error(
    routes: tuple[Routes, str], chunk: str
) -> None:
    scripted, url = routes
    body = f"data: {chunk}\n\ndata: [DONE]\n\n".encode()
    scripted.set("POST", "/v1/completions", (200, "text/event-stream", body))
    async with make(url) as model:
        with pytest.raises(GenerationError, match="malformed chunk") as caught:
            await model.generate("hi")
    assert not isinstance(caught.value.__cause__, GenerationError)
    assert scripted.posts == 1
