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


# Long greedy replies (the capability probes' logic_01 and two more): on two threads a reply
# decoded alone took other sums than the same reply decoded beside three others once its
# sequence held more than 256 cells (llama.cpp's CPU flash attention splits a lone one-token
# query's cache among the threads from 512 cells on), and diverged after ~250 tokens.
LONG_PROMPTS = (
    "All cats are animals. All animals need water. Does a cat need water? Explain your reasoning.",
    "Explain photosynthesis step by step, in detail.",
    "Write a long essay about the ocean.",
    "Write a long story about a lighthouse keeper.",
)
LONG: dict[str, Any] = {"temperature": 0, "max_tokens": 320, "logprobs": True}


async def _tokens(model: LlamaModel, prompt: str) -> list[tuple[int, float | None]]:
    stream = model.chat([{"role": "user", "content": prompt}], **LONG)
    return [(token.id, token.logprob) async for token in stream]


async def test_long_greedy_replies_are_the_same_token_for_token_alone_and_four_at_once(
    bundled_gguf: Path, llama_binary: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    if llama_binary.get("use_launcher"):
        # Known gap: the xllamacpp launcher's build still differs on these replies with the
        # same flags (docs/concepts/concurrency-llama.md). It runs, and tells when it is fixed.
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="xllamacpp's build still differs batched")
        )
    async with await load_model(str(bundled_gguf), threads=2, **llama_binary) as model:
        assert isinstance(model, LlamaModel)
        alone = [await _tokens(model, prompt) for prompt in LONG_PROMPTS]
        together: list[list[tuple[int, float | None]]] = [[] for _ in LONG_PROMPTS]

        async def one(index: int) -> None:
            together[index] = await _tokens(model, LONG_PROMPTS[index])

        async with anyio.create_task_group() as group:
            for index in range(len(LONG_PROMPTS)):
                group.start_soon(one, index)
    assert min(len(reply) for reply in alone) > 250  # past the 256 cells where it diverged
    # The IDs and their log-probabilities, bit for bit.
    assert together == alone


# Long probe replies that a reused prefix (the chat template's system preamble, cached from the
# request before) changed on the built llama-server: computed afresh, they never change.
REUSE_PROBES = ("logic_01", "logic_03", "logic_04", "math_05")


async def test_without_the_prompt_cache_the_order_of_requests_does_not_matter(
    bundled_gguf: Path, llama_binary: dict[str, Any]
) -> None:
    from goml_async.scoring.probes import CAPABILITY_PROBES
    from goml_async.scoring.runner import CAPABILITY_CONFIG

    assert CAPABILITY_CONFIG.prompt_cache is False  # what scoring runs with
    prompts = {probe.id: probe.prompt for probe in CAPABILITY_PROBES if probe.id in REUSE_PROBES}
    fresh: dict[str, Any] = {"temperature": 0, "max_tokens": 400, "prompt_cache": False}

    async def ask(model: LlamaModel, name: str) -> str:
        result = await model.chat([{"role": "user", "content": prompts[name]}], **fresh).collect()
        assert result.metrics is not None and result.metrics.cached_tokens == 0
        return result.text

    async with await load_model(str(bundled_gguf), threads=2, **llama_binary) as model:
        assert isinstance(model, LlamaModel)
        forward = {name: await ask(model, name) for name in REUSE_PROBES}
        backward = {name: await ask(model, name) for name in reversed(REUSE_PROBES)}
    assert backward == forward
