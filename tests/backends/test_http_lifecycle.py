"""HTTPModel resources over a stream's and an event loop's whole life.

A stream left with a plain ``break`` (no ``async with``, no ``aclose``) is finalised by the event
loop, not by the task that read it; one task may read several streams at once; a model used from
many event loops keeps no socket of a loop that has ended. Checked against the loopback
FakeOpenAIServer and against a real llama.cpp server.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio

from goml_async import GomlSettings, load_model
from goml_async.backends.http import HTTPModel
from goml_async.testing import FakeOpenAIServer, Script

pytestmark = [
    pytest.mark.anyio,
    # trio finalises an async generator left unfinished (what a plain break leaves) and says so
    # with a ResourceWarning, which Python hides by default; here warnings are errors, and an
    # error raised in trio's finaliser would stop the very clean-up these tests check.
    pytest.mark.filterwarnings(
        "ignore:Async generator 'goml_async.backends.http.HTTPModel._request':ResourceWarning"
    ),
]

TOKENS = ["one", " two", " three", " four", " five", " six"]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(Script(tokens=TOKENS)) as running:
        yield running


def make(server: FakeOpenAIServer, **options: Any) -> HTTPModel:
    options.setdefault("settings", GomlSettings(_env_file=None))
    return HTTPModel(server.base_url, "fake-model", **options)


async def first_token_then_break(model: HTTPModel) -> str:
    """What the README's loop invites: read one token and leave with a plain break."""
    async for token in model.generate("x"):
        text = token.text
        break
    return text


async def settled(model: HTTPModel) -> None:
    """Wait until every place of the limiter is free again (finalisers run on the loop)."""
    with anyio.fail_after(5):
        while model.concurrency_statistics().borrowed_tokens:
            gc.collect()
            await anyio.sleep(0.01)


async def test_a_plain_break_frees_the_place(server: FakeOpenAIServer) -> None:
    async with make(server, max_concurrency=1) as model:
        assert await first_token_then_break(model) == "one"
        await settled(model)
        # With only one place, the next stream can start only if the first gave it back.
        with anyio.fail_after(5):
            assert (await model.generate("x").collect()).text == "".join(TOKENS)


async def test_two_hundred_plain_breaks_in_a_row(server: FakeOpenAIServer) -> None:
    async with make(server, max_concurrency=4) as model:
        with anyio.fail_after(60):
            for _ in range(200):
                assert await first_token_then_break(model) == "one"
            await settled(model)
            assert (await model.generate("x").collect()).text == "".join(TOKENS)


async def test_two_streams_interleaved_in_one_task(server: FakeOpenAIServer) -> None:
    async with make(server) as model:
        first, second = model.generate("a"), model.generate("b")
        texts: dict[str, list[str]] = {"a": [], "b": []}
        with anyio.fail_after(10):
            async with first, second:
                for _ in TOKENS:
                    texts["a"].append((await first.__anext__()).text)
                    texts["b"].append((await second.__anext__()).text)
        assert texts["a"] == texts["b"] == TOKENS


async def test_three_streams_nested_in_one_task(server: FakeOpenAIServer) -> None:
    async with make(server) as model:
        seen = []
        with anyio.fail_after(10):
            async for outer in model.generate("a"):
                async for middle in model.generate("b"):
                    async for inner in model.generate("c"):
                        seen.append((outer.text, middle.text, inner.text))
                        break
                    break
        assert seen[0] == ("one", "one", "one")
        assert len(seen) == len(TOKENS)
        await settled(model)


async def test_aclose_closes_the_loops_connections(server: FakeOpenAIServer) -> None:
    model = make(server)
    assert (await model.generate("x").collect()).text == "".join(TOKENS)
    assert server.wait_for(lambda: server.connections_open >= 1)
    await model.aclose()
    assert server.wait_for(lambda: server.connections_open == 0)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_model_used_from_many_event_loops_keeps_no_socket(server: FakeOpenAIServer) -> None:
    model = make(server)

    async def one_call() -> str:
        return (await model.generate("x").collect()).text

    before = _open_fds()
    for _ in range(60):
        assert asyncio.run(one_call()) == "".join(TOKENS)
    for _ in range(60):
        assert trio.run(one_call) == "".join(TOKENS)
    # Each loop closed its own client when it ended: no socket is left (one per loop before).
    assert _open_fds() - before <= 1
    assert server.wait_for(lambda: server.connections_open == 0)
    assert model._clients.opened == 120


async def test_a_plain_break_frees_the_llama_server_place(
    tiny_gguf: Path, launcher_available: None
) -> None:
    async with await load_model(
        str(tiny_gguf), use_launcher=True, max_concurrency=1, threads=1
    ) as model:
        assert isinstance(model, HTTPModel)  # llama-server, spoken to over HTTP
        for _ in range(20):
            async for _token in model.generate("hello", max_tokens=64):
                break
        await settled(model)
        with anyio.fail_after(30):
            result = await model.generate("hello", max_tokens=4).collect()
        assert result.finish_reason in ("length", "stop")


async def test_a_prompt_too_long_for_the_context_names_the_model_not_the_internal_url(
    tiny_gguf: Path, launcher_available: None
) -> None:
    from goml_async.errors import APIStatusError

    async with await load_model(
        str(tiny_gguf), use_launcher=True, context_len=64, threads=1
    ) as model:
        assert isinstance(model, HTTPModel)
        with pytest.raises(APIStatusError) as caught:
            await model.generate("hello " * 500, max_tokens=4)
        message = str(caught.value)
        assert message.startswith(f"llama-server ({tiny_gguf.name}) answered 400")
        assert "context size" in message
        assert model.base_url not in message
        assert "127.0.0.1" not in message
