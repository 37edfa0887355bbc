"""goml_async.integrations.fastapi: SSE responses from FastAPI and Starlette endpoints, and the
runnable example app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from processes import children_of, gone, wait_until
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from goml_async.backends import _openai
from goml_async.integrations.fastapi import (
    TokenStreamResponse,
    openai_sse_response,
    text_sse_response,
)
from goml_async.testing import ScriptedModel

from .helpers import drive, sse_events

REPO = Path(__file__).resolve().parents[2]
REPLY = ["Hello", ",\nworld", "!"]


def fastapi_app(model: ScriptedModel) -> FastAPI:
    app = FastAPI()

    @app.post("/openai")
    async def openai(body: dict[str, Any]) -> TokenStreamResponse:
        return openai_sse_response(model.chat(body["messages"]), model="m")

    @app.post("/completion")
    async def completion(body: dict[str, Any]) -> TokenStreamResponse:
        stream = model.generate(body["prompt"])
        return openai_sse_response(stream, model="m", chat=False, include_usage=False)

    @app.post("/text")
    async def text(body: dict[str, Any]) -> TokenStreamResponse:
        return text_sse_response(model.chat(body["messages"]), headers={"X-Model": "m"})

    return app


MESSAGES = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.anyio
async def test_openai_chunks_from_fastapi() -> None:
    transport = httpx.ASGITransport(app=fastapi_app(ScriptedModel(REPLY)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/openai", json=MESSAGES)
    assert response.headers["content-type"].startswith("text/event-stream")
    state = _openai.StreamState()
    tokens = [_openai.parse_event(event.data, state) for event in sse_events(response.content)]
    assert "".join(token.text for token in tokens if token is not None) == "Hello,\nworld!"
    assert state.done and state.finish_reason == "stop"
    assert state.usage == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}


@pytest.mark.anyio
async def test_completion_chunks_from_fastapi() -> None:
    transport = httpx.ASGITransport(app=fastapi_app(ScriptedModel(REPLY)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/completion", json={"prompt": "x"})
    events = sse_events(response.content)
    assert events[0].json()["choices"][0]["text"] == "Hello"
    assert events[-1].data == "[DONE]"


@pytest.mark.anyio
async def test_text_events_from_fastapi() -> None:
    transport = httpx.ASGITransport(app=fastapi_app(ScriptedModel(REPLY)))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/text", json=MESSAGES)
    assert response.headers["x-model"] == "m"
    events = sse_events(response.content)
    assert [event.data for event in events if event.event == "message"] == REPLY
    assert events[-1].event == "done"
    assert events[-1].json()["usage"]["completion_tokens"] == 3


@pytest.mark.anyio
async def test_a_failure_is_an_error_event() -> None:
    model = ScriptedModel(REPLY, fail_after=1)
    transport = httpx.ASGITransport(app=fastapi_app(model))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        text = sse_events((await http.post("/text", json=MESSAGES)).content)
        chunks = sse_events((await http.post("/openai", json=MESSAGES)).content)
    assert [event.event for event in text] == ["message", "error"]
    assert "scripted failure" in text[-1].json()["error"]["message"]
    assert chunks[-1].json()["error"]["code"] == "generation_error"
    assert all(event.data != "[DONE]" for event in chunks)


@pytest.mark.anyio
async def test_a_plain_starlette_app_and_a_disconnect() -> None:
    model = ScriptedModel(["tok"] * 1000, delay=0.005)
    responses: list[TokenStreamResponse] = []

    async def story(request: Request) -> TokenStreamResponse:
        response = text_sse_response(model.generate("story"))
        responses.append(response)
        return response

    app = Starlette(routes=[Route("/story", story, methods=["POST"])])
    seen = await drive(app, "/story", {}, disconnect_when=lambda x: x.chunks >= 3)
    assert seen.status == 200 and seen.headers["content-type"].startswith("text/event-stream")
    assert responses[0].outcome == "disconnected"
    assert model.metrics().generated_tokens < 20  # the stream was closed


def test_only_token_streams_are_accepted() -> None:
    with pytest.raises(TypeError):
        text_sse_response("text")  # type: ignore[arg-type]


# -- the example app ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_the_example_app_runs(bundled_gguf: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "fastapi_app.py"), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_PROXY": "127.0.0.1"},
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        assert wait_until(answering, 60), "the example app did not start within 60 s"
        children = children_of(process.pid)
        question: dict[str, str | int] = {
            "question": "What is the capital of France?",
            "max_tokens": 16,
        }
        response = httpx.get(f"{url}/ask", params=question, timeout=60)
        events = sse_events(response.content)
        text = "".join(event.data for event in events if event.event == "message")
        assert "Paris" in text
        assert events[-1].event == "done"
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert process.returncode == 0, output
    assert children and all(gone(pid) for pid in children)  # llama-server stopped
