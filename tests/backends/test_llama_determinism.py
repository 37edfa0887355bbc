"""Greedy output on llama-server does not depend on what else the server is doing.

The repro of a user's report: after a burst of other requests, the same temperature-0 chat,
sent four times at once and then alone, must answer as it did when the server was idle. On a
unified KV cache (llama-server's choice when it picks the slot count itself) it did not: the
sequence's cells then sit among other sequences' cells, and the attention sums come out in
another order. The managed server runs one KV stream per slot (``--no-kv-unified``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from goml_async import load_model
from goml_async.backends.llama import LlamaModel

# The burst is 16 x 48 tokens on two cores: it needs more than the suite's 120 s default when
# the machine is busy.
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(400)]

# A question SmolLM2 answers right when idle, and wrongly ("Le Grand Château, ...") on a
# unified KV cache once other sequences have been through it.
QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 16}


async def _answer(model: LlamaModel, messages: list[dict[str, str]], **options: Any) -> str:
    return (await model.chat(messages, **{**GREEDY, **options}).collect()).text


async def _all(model: LlamaModel, count: int, messages: list[dict[str, str]]) -> list[str]:
    answers = [""] * count

    async def one(index: int) -> None:
        answers[index] = await _answer(model, messages)

    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)
    return answers


async def test_greedy_output_is_the_same_solo_batched_and_after_a_burst(
    bundled_gguf: Path, llama_binary: dict[str, Any]
) -> None:
    # The default LoadConfig: the slots and KV layout are the managed server's own choice.
    async with await load_model(str(bundled_gguf), threads=2, **llama_binary) as model:
        assert isinstance(model, LlamaModel)
        idle = await _answer(model, QUESTION)
        assert "Paris" in idle

        async def story(index: int) -> None:
            messages = [{"role": "user", "content": f"Write a story about the number {index}."}]
            await _answer(model, messages, max_tokens=48)

        async with anyio.create_task_group() as group:
            for index in range(16):
                group.start_soon(story, index)

        answers = await _all(model, 4, QUESTION)
        answers += [await _answer(model, QUESTION) for _ in range(2)]
        mixed: list[str] = []

        async def other(index: int) -> None:
            messages = [{"role": "user", "content": f"Explain topic {index} in detail."}]
            await _answer(model, messages, max_tokens=32)

        async def question() -> None:
            mixed.append(await _answer(model, QUESTION))

        async with anyio.create_task_group() as group:
            group.start_soon(question)
            for index in range(3):
                group.start_soon(other, index)
    assert answers + mixed == [idle] * 7
