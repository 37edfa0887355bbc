"""Token IDs, log-probabilities, stop tokens, penalties and classify on a managed llama.cpp server.

Every test runs on the real ``llama-server`` and on the xllamacpp launcher (``llama_binary``),
with the tiny random GGUF: a 512-token vocabulary, so whole distributions are cheap to ask for.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from goml_async import GenerateConfig, GenerationError, Token, load_model
from goml_async.backends.llama import LlamaModel

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PROMPT = "def f(x):"
CHAT = [{"role": "user", "content": "import os"}]


@pytest.fixture
async def tiny(tiny_gguf: Path, llama_binary: dict[str, Any]) -> AsyncIterator[LlamaModel]:
    model = await load_model(str(tiny_gguf), threads=2, **llama_binary)
    assert isinstance(model, LlamaModel)
    async with model:
        yield model


async def busy_slots(model: LlamaModel) -> int:
    async with httpx.AsyncClient() as client:
        slots = (await client.get(model.server.base_url + "/slots", timeout=5)).json()
    return sum(1 for slot in slots if slot["is_processing"])


async def idle_within(model: LlamaModel, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while await busy_slots(model):
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


def assert_greedy_logprobs(tokens: list[Token], top: int) -> None:
    """Each token is its position's most likely one, with ``top`` alternatives, best first."""
    assert tokens
    for token in tokens:
        assert token.id >= 0
        assert token.logprob is not None
        assert -math.log(512) - 2 < token.logprob < 0
        assert len(token.top_logprobs) == top
        if not top:
            continue
        best = token.top_logprobs[0]
        assert (best.id, best.text, best.logprob) == (token.id, token.text, token.logprob)
        values = [alternative.logprob for alternative in token.top_logprobs]
        assert values == sorted(values, reverse=True)


# -- IDs and log-probabilities --------------------------------------------------------------------


async def test_generated_tokens_carry_ids_by_default(tiny: LlamaModel) -> None:
    stream = tiny.generate(PROMPT, max_tokens=8)
    tokens = [token async for token in stream]
    assert len(tokens) == 8
    assert all(0 <= token.id < 512 for token in tokens)
    assert all(token.logprob is None and token.top_logprobs == () for token in tokens)
    assert stream.finish_reason == "length"
    assert stream.metrics is not None
    assert (stream.metrics.prompt_tokens, stream.metrics.generated_tokens) == (6, 8)


async def test_generate_with_top_logprobs(tiny: LlamaModel) -> None:
    tokens = [token async for token in tiny.generate(PROMPT, max_tokens=6, top_logprobs=3)]
    assert_greedy_logprobs(tokens, 3)


async def test_generate_with_logprobs_but_no_alternatives(tiny: LlamaModel) -> None:
    tokens = [token async for token in tiny.generate(PROMPT, max_tokens=4, logprobs=True)]
    assert_greedy_logprobs(tokens, 0)


async def test_chat_tokens_carry_ids_with_logprobs(tiny: LlamaModel) -> None:
    plain = await tiny.chat(CHAT, max_tokens=6).collect()
    tokens = [token async for token in tiny.chat(CHAT, max_tokens=6, top_logprobs=2)]
    assert_greedy_logprobs(tokens, 2)
    assert "".join(token.text for token in tokens) == plain.text


async def test_logprobs_are_those_of_the_raw_distribution(tiny: LlamaModel) -> None:
    """Temperature and penalties change what is sampled, never the reported distribution."""
    greedy = [token async for token in tiny.generate(PROMPT, max_tokens=1, top_logprobs=5)]
    shaped = tiny.generate(
        PROMPT,
        max_tokens=1,
        top_logprobs=5,
        temperature=1.5,
        seed=3,
        repeat_penalty=1.5,
        presence_penalty=2.0,
        frequency_penalty=2.0,
    )
    [token] = [token async for token in shaped]
    [first] = greedy
    assert len(token.top_logprobs) == len(first.top_logprobs) == 5
    assert token.id != first.id  # the penalties did change what was sampled
    assert [t.id for t in token.top_logprobs] == [t.id for t in first.top_logprobs]
    for ours, raw in zip(token.top_logprobs, first.top_logprobs, strict=True):
        assert ours.logprob == pytest.approx(raw.logprob, abs=1e-5)


# -- stop tokens ----------------------------------------------------------------------------------


def first_new_id(tokens: list[Token], at_least: int) -> int:
    """The index of the first token, from ``at_least`` on, whose ID was not seen before it."""
    return next(
        index
        for index in range(at_least, len(tokens))
        if tokens[index].id not in {t.id for t in tokens[:index]}
    )


@pytest.mark.parametrize("kind", ["generate", "chat"])
async def test_stop_tokens_stop_at_the_id_and_free_the_slot(
    bundled_gguf: Path, llama_binary: dict[str, Any], kind: str
) -> None:
    # SmolLM2, not the tiny model: 1500 of its tokens take at least 14 s (107 tokens/s on an
    # idle 2-core machine, slower under load), so a slot idle within 10 s shows that
    # generation stopped at the stop token.
    options: dict[str, Any] = {"temperature": 1.0, "seed": 11, "extra_body": {"ignore_eos": True}}
    model = await load_model(str(bundled_gguf), context_len=2048, threads=2, **llama_binary)
    assert isinstance(model, LlamaModel)
    async with model:

        def start(**more: Any) -> Any:
            if kind == "chat":
                return model.chat(CHAT, **options, **more)
            return model.generate(PROMPT, **options, **more)

        sampled = [token async for token in start(max_tokens=12, logprobs=True)]
        index = first_new_id(sampled, 3)
        stream = start(max_tokens=1500, stop_tokens=[sampled[index].id])
        result = await stream.collect()
        assert stream.finish_reason == "stop"
        assert result.text == "".join(token.text for token in sampled[:index])
        assert await idle_within(model, 10.0)


# -- penalties ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "penalised_config",
    [
        GenerateConfig(max_tokens=12, presence_penalty=2),
        GenerateConfig(max_tokens=12, frequency_penalty=2),
    ],
    ids=["presence_penalty", "frequency_penalty"],
)
async def test_penalties_change_the_output(
    tiny: LlamaModel, penalised_config: GenerateConfig
) -> None:
    # Greedy, the tiny model repeats one token; a penalty on repeats must break that.
    plain = [token.id async for token in tiny.generate(PROMPT, max_tokens=12)]
    assert len(set(plain)) == 1
    penalised = [token.id async for token in tiny.generate(PROMPT, penalised_config)]
    assert len(set(penalised)) > 1


# -- classify -------------------------------------------------------------------------------------

PROMPTS = ["def f(x):", "import os", "class A:"]


async def test_classify_samples_the_next_token(tiny: LlamaModel) -> None:
    results = await tiny.classify(PROMPTS, top_logprobs=2)
    for prompt, result in zip(PROMPTS, results, strict=True):
        [first] = [token async for token in tiny.generate(prompt, max_tokens=1, top_logprobs=2)]
        assert (result.token.id, result.token.text) == (first.id, first.text)
        assert result.token.logprob == pytest.approx(first.logprob, abs=1e-4)
        assert [t.id for t in result.token.top_logprobs] == [t.id for t in first.top_logprobs]
        assert result.logits is None


async def test_classify_returns_the_whole_vocabularys_logprobs(tiny: LlamaModel) -> None:
    results = await tiny.classify(PROMPTS, return_logits=True)
    for result in results:
        logits = result.logits
        assert logits is not None
        assert len(logits) == 512
        assert max(range(512), key=logits.__getitem__) == result.token.id
        assert logits[result.token.id] == result.token.logprob
        # Log-probabilities: the raw logits minus their log-sum-exp.
        assert math.fsum(math.exp(value) for value in logits) == pytest.approx(1.0, abs=1e-4)
        assert result.token.top_logprobs == ()


async def test_classify_edge_cases(tiny: LlamaModel) -> None:
    assert await tiny.classify([]) == []
    with pytest.raises(GenerationError, match="encodes to no tokens"):
        await tiny.classify(["def", ""])
