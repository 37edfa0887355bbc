"""The MLX backend stops a long prefill when its caller leaves, and frees the worker at once.

A prompt of thousands of tokens takes seconds to prefill on the tiny model (minutes on SmolLM2
on a CPU). Each test measures the full prefill time of its prompt first and bounds everything
else relative to it: a request cancelled during prefill must free the worker far sooner than
the rest of the prefill would take.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import mlx_lm
import pytest

from goml_async import GenerationTimeout
from goml_async.backends import _mlx_prefill
from goml_async.backends._mlx_prefill import MAX_CHUNK, MIN_CHUNK, PrefillPacer
from goml_async.backends.mlx import MLXModel, load_mlx_model

pytestmark = pytest.mark.anyio

#: The full prefill must take at least this long for the bounds below to mean something.
MIN_PREFILL_SECONDS = 1.5


@pytest.fixture
async def tiny(tiny_mlx: Path) -> Any:
    # No prompt cache: these tests prefill the same prompt again and time it.
    model = await load_mlx_model(tiny_mlx, prompt_cache_bytes=0)
    yield model
    await model.aclose()


def _source_text() -> str:
    """Python source: the text the tiny model's tokenizer was trained on."""
    return Path(json.__file__).read_text() + Path(os.__file__).read_text()


async def _slow_prompt(model: MLXModel) -> tuple[str, int, float]:
    """A prompt whose prefill takes at least MIN_PREFILL_SECONDS, its length and that time.

    Starts at 6000 tokens (about 3 s here) and doubles until the prompt is slow enough, so the
    test means the same on a faster machine.
    """
    ids = model._tokenizer.encode(_source_text())
    count = 6000
    while True:
        while len(ids) < count:
            ids = ids + ids
        prompt = model._tokenizer.decode(ids[:count])
        result = await model.generate(prompt, max_tokens=1).collect()
        assert result.metrics is not None
        if result.metrics.time_to_first_token >= MIN_PREFILL_SECONDS or count >= 200_000:
            return prompt, result.metrics.prompt_tokens, result.metrics.time_to_first_token
        count *= 2


async def _next_request_seconds(model: MLXModel) -> float:
    """How long a one-token request takes to complete: the worker must be free for it."""
    started = time.perf_counter()
    result = await model.generate("hello", max_tokens=1).collect()
    assert result.finish_reason == "length"
    return time.perf_counter() - started


async def test_a_first_token_deadline_during_prefill_frees_the_worker(tiny: MLXModel) -> None:
    prompt, prompt_tokens, full = await _slow_prompt(tiny)
    assert full >= MIN_PREFILL_SECONDS
    assert prompt_tokens == len(tiny._tokenizer.encode(prompt))  # the whole prompt counts
    started = time.perf_counter()
    with pytest.raises(GenerationTimeout) as caught:
        await tiny.generate(prompt, max_tokens=1, first_token_timeout=full / 5).collect()
    assert caught.value.deadline == "first_token"
    assert time.perf_counter() - started < full / 2
    # Before chunked prefill, this waited for the rest of the prefill (about 0.8 * full).
    assert await _next_request_seconds(tiny) < full / 4


async def test_cancelling_a_stream_during_prefill_frees_the_worker(tiny: MLXModel) -> None:
    prompt, _, full = await _slow_prompt(tiny)
    with anyio.move_on_after(full / 5) as scope:
        async with tiny.generate(prompt, max_tokens=4) as stream:
            async for _token in stream:
                pytest.fail("no token can arrive before the prefill is done")
    assert scope.cancelled_caught
    assert stream.finish_reason == "cancelled"
    assert await _next_request_seconds(tiny) < full / 4


async def test_cancelling_classify_during_prefill_returns_and_frees_the_worker(
    tiny: MLXModel,
) -> None:
    prompt, _, full = await _slow_prompt(tiny)
    started = time.perf_counter()
    with anyio.move_on_after(full / 5) as scope:
        await tiny.classify([prompt, prompt])
    # Before, classify waited for its whole prefill (shielded) before noticing the cancel.
    assert scope.cancelled_caught
    assert time.perf_counter() - started < full / 2
    assert await _next_request_seconds(tiny) < full / 4


async def test_cancelling_a_batch_during_prefill_returns_and_frees_the_worker(
    tiny: MLXModel,
) -> None:
    prompt, _, full = await _slow_prompt(tiny)
    started = time.perf_counter()
    with anyio.move_on_after(full / 5) as scope:
        await tiny.batch_generate([prompt, prompt], max_tokens=2)
    assert scope.cancelled_caught
    assert time.perf_counter() - started < full / 2
    assert await _next_request_seconds(tiny) < full / 4


async def test_paced_prefill_gives_mlx_lm_s_own_output(tiny: MLXModel, tiny_mlx: Path) -> None:
    """Prefilling in paced chunks first changes nothing in what mlx-lm then generates."""
    ids = tiny._tokenizer.encode(_source_text())[:1500]
    prompt = tiny._tokenizer.decode(ids)
    tokens = [t async for t in tiny.generate(prompt, max_tokens=8)]
    loaded = mlx_lm.load(str(tiny_mlx))
    model, tokenizer = loaded[0], loaded[1]
    reference = list(mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=8))
    assert [t.id for t in tokens] == [r.token for r in reference]
    for token, response in zip(tokens, reference, strict=True):
        assert token.logprob == pytest.approx(response.logprobs[response.token].item(), abs=1e-4)


async def test_the_prefill_is_chunked_and_checks_between_chunks(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks: list[int] = []
    real = _mlx_prefill.PrefillPacer.record

    def record(self: PrefillPacer, tokens: int, seconds: float) -> None:
        chunks.append(tokens)
        real(self, tokens, seconds)

    monkeypatch.setattr(_mlx_prefill.PrefillPacer, "record", record)
    ids = tiny._tokenizer.encode(_source_text())[:3000]
    result = await tiny.generate(tiny._tokenizer.decode(ids), max_tokens=1).collect()
    assert result.metrics is not None
    assert sum(chunks) == result.metrics.prompt_tokens - 1  # all but the last token
    assert len(chunks) > 3
    assert all(MIN_CHUNK <= size <= MAX_CHUNK for size in chunks[:-1])


def test_the_pacer_sizes_chunks_to_the_time_asked_for() -> None:
    pacer = PrefillPacer(chunk_seconds=0.1)
    first = pacer.chunk_tokens()
    pacer.record(first, 0.001)  # far too fast: grow, but at most twofold per chunk
    assert pacer.chunk_tokens() == 2 * first
    pacer.record(pacer.chunk_tokens(), 1.0)  # ten times too slow: shrink at once
    assert pacer.chunk_tokens() == MIN_CHUNK
    for _ in range(20):
        pacer.record(pacer.chunk_tokens(), pacer.chunk_tokens() / 1000)  # 1000 tokens/s
    assert pacer.chunk_tokens() == 100  # 0.1 s at 1000 tokens/s
    for _ in range(20):
        pacer.record(pacer.chunk_tokens(), 0.0)
    assert pacer.chunk_tokens() == MAX_CHUNK


async def test_prefill_chunk_seconds_is_checked(tiny_mlx: Path) -> None:
    from goml_async import ConfigError

    for bad in (0, -1.0, float("inf"), "1", True):
        with pytest.raises(ConfigError) as caught:
            await load_mlx_model(tiny_mlx, prefill_chunk_seconds=bad)  # type: ignore[arg-type]
        assert caught.value.field == "prefill_chunk_seconds"
