"""Concurrent streams on llama-server's slots: overlap, greedy parity, cancellation, deadlines,
the client-side line, and the prompt cache (real llama-server and the xllamacpp launcher)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from model_fixtures import _TINY, StartLlama, busy_slots

from goml_async import GenerationTimeout
from goml_async.backends.llama import LlamaModel
from goml_async.server import create_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
PROMPTS = [
    "What is the capital of France?",
    "What is the capital of Germany?",
    "Name a primary colour.",
    "Who wrote Hamlet?",
]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 24}
ENDLESS: dict[str, Any] = {"temperature": 0, "extra_body": {"ignore_eos": True}}


def ask(prompt: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": prompt}]


async def solo_answers(model: LlamaModel) -> list[str]:
    return [(await model.chat(ask(p), **GREEDY).collect()).text for p in PROMPTS]


class CountingTransport(httpx.AsyncBaseTransport):
    """An HTTP transport that counts the responses open at once: requests the server holds."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.open = 0
        self.most = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.open += 1
        self.most = max(self.most, self.open)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self.open -= 1
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Counted(response.stream, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Counted(httpx.AsyncByteStream):
    def __init__(self, stream: Any, owner: CountingTransport) -> None:
        self._stream, self._owner, self._closed = stream, owner, False

    async def __aiter__(self) -> Any:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner.open -= 1
        await self._stream.aclose()


# -- slots and the client's line ------------------------------------------------------------------


async def test_the_client_lets_through_as_many_streams_as_there_are_slots(
    tiny_gguf: Path, start_llama: StartLlama
) -> None:
    transport = CountingTransport()
    async with await start_llama(tiny_gguf, parallel_slots=2, transport=transport) as model:
        assert model.parallel_slots == model.server.slots == model.batch_concurrency == 2
        assert model.concurrency_statistics().total_tokens == 2
        assert "--parallel" in model.server.command and "--no-kv-unified" in model.server.command
        # K and V, each layer, each KV head, f16: the tiny model's own numbers.
        per_token = 2 * _TINY["num_hidden_layers"] * _TINY["num_key_value_heads"]
        per_token *= _TINY["head_dim"] * 2
        assert model.server.kv_cache_bytes == per_token * 2 * model.server.slot_context
        waited = 0
        texts: list[str] = []

        async def one(index: int) -> None:
            nonlocal waited
            stream = model.generate(f"prompt {index}", max_tokens=24, **ENDLESS)
            async for _token in stream:
                waited = max(waited, model.concurrency_statistics().tasks_waiting)
            texts.append(stream.text)

        async with anyio.create_task_group() as group:
            for index in range(4):  # twice the slots
                group.start_soon(one, index)
    assert len(texts) == 4 and all(texts)  # all succeeded: no 503 from a full server
    assert transport.most == 2  # never more in flight on the server than it has slots
    assert waited >= 1  # the others waited in the client's line
    assert transport.open == 0


async def test_streams_overlap_on_the_slots(tiny_gguf: Path, start_llama: StartLlama) -> None:
    events: list[tuple[str, int]] = []
    async with await start_llama(tiny_gguf) as model:
        assert model.parallel_slots == 4

        async def one(index: int) -> None:
            first = True
            async for _token in model.generate(f"story {index}", max_tokens=64, **ENDLESS):
                if first:
                    events.append(("first", index))
                    first = False
            events.append(("done", index))

        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(one, index)
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == ["first"] * 4, events  # every stream had tokens before any finished


# -- greedy text under concurrency ----------------------------------------------------------------


async def test_batched_greedy_output_equals_solo(
    bundled_gguf: Path, start_llama: StartLlama
) -> None:
    async with await start_llama(bundled_gguf) as model:
        solo = await solo_answers(model)
        batched = [""] * len(PROMPTS)

        async def one(index: int) -> None:
            batched[index] = (await model.chat(ask(PROMPTS[index]), **GREEDY).collect()).text

        async with anyio.create_task_group() as group:
            for index in range(len(PROMPTS)):
                group.start_soon(one, index)
    assert "Paris" in solo[0] and "Berlin" in solo[1]
    assert batched == solo


async def test_cancelling_one_of_four_leaves_the_others_intact(
    bundled_gguf: Path, start_llama: StartLlama
) -> None:
    async with await start_llama(bundled_gguf) as model:
        solo = await solo_answers(model)
        texts: dict[int, str] = {}
        victim = anyio.CancelScope()
        started = anyio.Event()
        decoding = [anyio.Event() for _ in PROMPTS]

        async def one(index: int) -> None:
            stream = model.chat(ask(PROMPTS[index]), **GREEDY)
            async for _token in stream:
                decoding[index].set()
            texts[index] = stream.text

        async def cancelled() -> None:
            with victim:
                messages = ask("Write a long story about a dragon.")
                async for _token in model.chat(messages, max_tokens=500, **ENDLESS):
                    started.set()
            texts[0] = "cancelled"

        async with anyio.create_task_group() as group:
            group.start_soon(cancelled)
            await started.wait()  # mid-stream: it has tokens
            for index in range(1, 4):
                group.start_soon(one, index)
            for event in decoding[1:]:  # all four streams are mid-stream now
                await event.wait()
            victim.cancel()
        # The cancelled stream's slot is freed, not left decoding to its 500 tokens.
        for _ in range(500):
            if not await busy_slots(model):
                break
            await anyio.sleep(0.02)
        assert await busy_slots(model) == 0
    assert texts == {0: "cancelled", 1: solo[1], 2: solo[2], 3: solo[3]}


async def test_a_deadline_on_one_stream_stops_only_that_one(
    bundled_gguf: Path, start_llama: StartLlama
) -> None:
    async with await start_llama(bundled_gguf) as model:
        solo = await solo_answers(model)
        texts: dict[int, str] = {}
        timed_out: list[GenerationTimeout] = []

        async def bounded() -> None:
            messages = ask("Write a long story.")
            stream = model.chat(messages, max_tokens=4000, total_timeout=1.0, **ENDLESS)
            try:
                await stream.collect()
            except GenerationTimeout as exc:
                timed_out.append(exc)

        async def one(index: int) -> None:
            texts[index] = (await model.chat(ask(PROMPTS[index]), **GREEDY).collect()).text

        async with anyio.create_task_group() as group:
            group.start_soon(bounded)
            for index in range(1, 4):
                group.start_soon(one, index)
    assert len(timed_out) == 1 and timed_out[0].deadline == "total"
    assert texts == {1: solo[1], 2: solo[2], 3: solo[3]}


# -- the prompt cache -----------------------------------------------------------------------------


async def test_the_second_turn_reuses_the_cached_prefix(
    bundled_gguf: Path, start_llama: StartLlama
) -> None:
    async with await start_llama(bundled_gguf) as model:
        first = await model.chat(ask(PROMPTS[0]), **GREEDY).collect()
        turn = [
            *ask(PROMPTS[0]),
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "And of Germany?"},
        ]
        second = await model.chat(turn, **GREEDY).collect()
        prompt = "The capital of France is"
        cold = await model.generate(prompt, max_tokens=4, temperature=0).collect()
        warm = await model.generate(prompt, max_tokens=4, temperature=0).collect()
    assert first.metrics is not None and second.metrics is not None
    assert first.metrics.cached_tokens == 0
    # The whole first turn was cached; prompt_tokens stays the whole prompt.
    assert second.metrics.cached_tokens >= first.metrics.prompt_tokens
    assert second.metrics.prompt_tokens > second.metrics.cached_tokens
    assert cold.metrics is not None and warm.metrics is not None
    assert (cold.metrics.cached_tokens, warm.metrics.cached_tokens > 0) == (0, True)
    assert warm.metrics.prompt_tokens == cold.metrics.prompt_tokens
    assert warm.text == cold.text


async def test_goml_serve_reports_the_cached_prompt_tokens(
    bundled_gguf: Path, start_llama: StartLlama
) -> None:
    async with await start_llama(bundled_gguf) as model:
        app = create_app(model, model_name="m")
        body = {"model": "m", "messages": ask(PROMPTS[0]), **GREEDY}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            cold = (await http.post("/v1/chat/completions", json=body)).json()["usage"]
            warm = (await http.post("/v1/chat/completions", json=body)).json()["usage"]
            streamed = await http.post(
                "/v1/chat/completions",
                json={**body, "stream": True, "stream_options": {"include_usage": True}},
            )
    assert "prompt_tokens_details" not in cold
    assert warm["prompt_tokens"] == cold["prompt_tokens"]
    assert 0 < warm["prompt_tokens_details"]["cached_tokens"] < warm["prompt_tokens"]
    chunks = [
        json.loads(line.removeprefix("data: "))
        for line in streamed.text.splitlines()
        if line.startswith("data: {")
    ]
    usage = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
    assert usage[-1]["prompt_tokens_details"]["cached_tokens"] > 0
