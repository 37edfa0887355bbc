"""The MLX backend: mlx-lm on a worker thread, on Linux with mlx[cpu]."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import mlx.core as mx
import pytest

from goml_async import (
    GenerationError,
    ModelLoadError,
    TextModel,
    get_backend,
    load_model,
)
from goml_async.backends import _mlx_sampling as mlx_sampling
from goml_async.backends.mlx import MLXModel, load_mlx_model, set_memory_limits

pytestmark = pytest.mark.anyio


@pytest.fixture
async def tiny(tiny_mlx: Path) -> Any:
    model = await load_mlx_model(tiny_mlx)
    yield model
    await model.aclose()


# -- loading --------------------------------------------------------------------------------------


async def test_a_model_folder_routes_to_mlx(tiny_mlx: Path) -> None:
    model = await load_model(str(tiny_mlx))
    async with model:
        assert isinstance(model, MLXModel)
        assert isinstance(model, TextModel)
        assert model.model_type == "mlx"
        info = model.info()
        assert (info.architecture, info.num_layers, info.hidden_size) == ("llama", 2, 64)
        assert info.vocab_size == 512
    assert model._worker.stopped  # aclose stopped the worker


async def test_bad_folders_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        await load_mlx_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="mlx-lm could not load it"):
        await load_mlx_model(tmp_path)


async def test_a_missing_adapter_is_reported(tiny_mlx: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="adapter"):
        await load_model(str(tiny_mlx), adapter_path=str(tmp_path / "nope"))


def test_the_registry_entry() -> None:
    backend = get_backend("mlx")
    assert backend.name == "mlx"
    assert backend.available()


def test_memory_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(mx, "set_cache_limit", lambda n: calls.append(("cache", n)))
    monkeypatch.setattr(mx, "set_memory_limit", lambda n: calls.append(("memory", n)))
    set_memory_limits(cache_limit=1 << 20)
    set_memory_limits(memory_limit=1 << 30)
    assert calls == [("cache", 1 << 20), ("memory", 1 << 30)]
    from goml_async import ConfigError

    with pytest.raises(ConfigError) as caught:
        set_memory_limits(cache_limit=-1)
    assert caught.value.field == "cache_limit"


async def test_memory_limits_come_from_settings(
    tiny_mlx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(mx, "set_cache_limit", lambda n: calls.append(("cache", n)))
    monkeypatch.setattr(mx, "set_memory_limit", lambda n: calls.append(("memory", n)))
    monkeypatch.setenv("GOML_MLX_CACHE_LIMIT", str(64 << 20))
    async with await load_model(str(tiny_mlx), memory_limit=2 << 30):
        pass
    assert calls == [("cache", 64 << 20), ("memory", 2 << 30)]


# -- generation -----------------------------------------------------------------------------------


async def test_greedy_generation_is_deterministic_with_metrics(tiny: MLXModel) -> None:
    first = tiny.generate("hello there", max_tokens=12)
    tokens = [token async for token in first]
    again = await tiny.generate("hello there", max_tokens=12).collect()
    assert len(tokens) == 12
    assert again.text == first.text
    assert all(token.id >= 0 and token.logprob is not None for token in tokens)
    assert all(token.logprob is not None and token.logprob <= 0 for token in tokens)
    metrics = first.metrics
    assert metrics is not None
    assert first.finish_reason == "length"
    assert metrics.generated_tokens == 12
    assert metrics.prompt_tokens > 0
    assert metrics.decode_tokens_per_sec > 0
    assert metrics.peak_memory_bytes > 0


async def test_every_token_comes_from_the_worker_thread(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: set[str] = set()
    original = tiny._produce

    def produce(*args: Any) -> None:
        seen.add(threading.current_thread().name)
        original(*args)

    monkeypatch.setattr(tiny, "_produce", produce)
    await tiny.generate("a", max_tokens=3).collect()
    await tiny.generate("b", max_tokens=3).collect()
    assert seen == {tiny.worker_thread.name}
    assert tiny.worker_thread is not threading.current_thread()


async def test_sampling_options_reach_mlx_lm(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: dict[str, Any] = {}
    from mlx_lm.sample_utils import make_logits_processors as real_processors
    from mlx_lm.sample_utils import make_sampler as real_sampler

    def sampler(**kwargs: Any) -> Any:
        made["sampler"] = kwargs
        return real_sampler(**kwargs)

    def processors(**kwargs: Any) -> Any:
        made["processors"] = kwargs
        return real_processors(**kwargs)

    monkeypatch.setattr(mlx_sampling, "make_sampler", sampler)
    monkeypatch.setattr(mlx_sampling, "make_logits_processors", processors)
    result = await tiny.generate(
        "hello", max_tokens=5, temperature=0.8, top_p=0.9, top_k=20, repeat_penalty=1.2, seed=7
    ).collect()
    assert made["sampler"] == {"temp": 0.8, "top_p": 0.9, "top_k": 20}
    assert made["processors"] == {"repetition_penalty": 1.2}
    again = await tiny.generate(
        "hello", max_tokens=5, temperature=0.8, top_p=0.9, top_k=20, repeat_penalty=1.2, seed=7
    ).collect()
    assert again.text == result.text  # the seed reached mlx's random state


async def test_stop_tokens_end_the_stream(tiny: MLXModel) -> None:
    greedy = [t.id async for t in tiny.generate("json dumps", max_tokens=8)]
    stop_at = greedy[-1]
    first = greedy.index(stop_at)  # the stream ends at the stop token's first appearance
    stream = tiny.generate("json dumps", max_tokens=8, stop_tokens=[stop_at])
    assert [t.id async for t in stream] == greedy[:first]
    assert stream.finish_reason == "stop"


async def test_chat_applies_the_chat_template(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    templated: list[list[dict[str, str]]] = []
    real = tiny._tokenizer.apply_chat_template

    def apply(messages: list[dict[str, str]], **kwargs: Any) -> Any:
        templated.append(messages)
        assert kwargs["add_generation_prompt"] is True
        return real(messages, **kwargs)

    monkeypatch.setattr(tiny._tokenizer, "apply_chat_template", apply)
    result = await tiny.chat([{"role": "user", "content": "hi"}], max_tokens=4).collect()
    assert templated == [[{"role": "user", "content": "hi"}]]
    assert result.metrics is not None
    assert result.metrics.generated_tokens == 4


async def test_nothing_is_generated_ahead_of_the_reader(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer gets each token before the next one is generated."""
    produced: list[float] = []
    import mlx_lm

    real = mlx_lm.stream_generate

    def stream_generate(*args: Any, **kwargs: Any) -> Any:
        for response in real(*args, **kwargs):
            produced.append(time.perf_counter())
            yield response

    monkeypatch.setattr(mlx_lm, "stream_generate", stream_generate)
    received: list[float] = []
    async for _token in tiny.generate("hello", max_tokens=4):
        received.append(time.perf_counter())
        await anyio.sleep(0.2)  # a slow reader
    assert len(produced) == len(received) == 4
    for index in range(1, 4):
        # Token i+1 was produced only after the reader had taken token i and slept.
        assert produced[index] > received[index - 1] + 0.15


async def test_breaking_out_stops_generation_at_the_next_token(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    produced: list[int] = []
    import mlx_lm

    real = mlx_lm.stream_generate

    def stream_generate(*args: Any, **kwargs: Any) -> Any:
        for response in real(*args, **kwargs):
            produced.append(response.token)
            yield response

    monkeypatch.setattr(mlx_lm, "stream_generate", stream_generate)
    async with tiny.generate("hello", max_tokens=0) as stream:
        async for _token in stream:
            if len(produced) == 3:
                break
    await anyio.sleep(0.2)
    stopped_at = len(produced)
    await anyio.sleep(0.3)
    assert stream.finish_reason == "cancelled"
    assert stopped_at == 3  # not one token computed after the break
    assert len(produced) == stopped_at  # and nothing after
    # The worker is free again: the next request runs.
    assert (await tiny.generate("hello", max_tokens=2).collect()).finish_reason == "length"


async def test_cancellation_stops_generation(tiny: MLXModel) -> None:
    with anyio.move_on_after(0.05):
        async with tiny.generate("hello", max_tokens=0) as stream:
            async for _token in stream:
                await anyio.sleep(0.02)
    assert stream.finish_reason == "cancelled"
    result = await tiny.generate("hello", max_tokens=3).collect()
    assert len(result.text) > 0


async def test_a_model_failure_keeps_the_partial_text(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx_lm

    real = mlx_lm.stream_generate

    def failing(*args: Any, **kwargs: Any) -> Any:
        for index, response in enumerate(real(*args, **kwargs)):
            if index == 3:
                raise RuntimeError("[metal::malloc] out of memory")
            yield response

    monkeypatch.setattr(mlx_lm, "stream_generate", failing)
    with pytest.raises(GenerationError, match="out of memory") as caught:
        await tiny.generate("hello", max_tokens=10).collect()
    assert caught.value.tokens_generated == 3
    assert caught.value.partial_text
    assert isinstance(tiny.err(), GenerationError)


async def test_requests_are_serialised_on_the_worker(tiny: MLXModel) -> None:
    results = {}

    async def one(name: str) -> None:
        results[name] = (await tiny.generate(name, max_tokens=6).collect()).text

    async with anyio.create_task_group() as group:
        for name in ("hello", "there", "json"):
            group.start_soon(one, name)
    for name, text in results.items():
        assert text == (await tiny.generate(name, max_tokens=6).collect()).text


# -- classify and batch ---------------------------------------------------------------------------


async def test_classify_returns_the_greedy_next_token(tiny: MLXModel) -> None:
    [plain] = await tiny.classify(["hello there"])
    [with_logits] = await tiny.classify(["hello there"], return_logits=True)
    [first] = [t async for t in tiny.generate("hello there", max_tokens=1)]
    assert plain.token.id == first.id == with_logits.token.id
    assert plain.logits is None
    assert with_logits.logits is not None
    assert len(with_logits.logits) == 512
    assert max(range(512), key=with_logits.logits.__getitem__) == first.id


async def test_batch_generate_matches_single_generation(tiny: MLXModel) -> None:
    prompts = ["hello there", "json dumps"]
    batch = await tiny.batch_generate(prompts, max_tokens=6)
    assert [r.error for r in batch] == [None, None]
    for prompt, result in zip(prompts, batch, strict=True):
        single = [t async for t in tiny.generate(prompt, max_tokens=6)]
        assert [t.id for t in result.tokens] == [t.id for t in single]
    assert await tiny.batch_generate([]) == []


# -- deadlines (the conformance rules that apply to a local backend) ------------------------------


async def test_an_idle_deadline_stops_the_worker(
    tiny: MLXModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx_lm

    from goml_async import GenerationTimeout

    real = mlx_lm.stream_generate

    def slow(*args: Any, **kwargs: Any) -> Any:
        for index, response in enumerate(real(*args, **kwargs)):
            if index == 2:
                time.sleep(1.0)  # a stall inside MLX
            yield response

    monkeypatch.setattr(mlx_lm, "stream_generate", slow)
    with pytest.raises(GenerationTimeout) as caught:
        await tiny.generate("hello", max_tokens=0, idle_timeout=0.3).collect()
    assert caught.value.deadline == "idle"
    assert caught.value.tokens_generated == 2
    monkeypatch.setattr(mlx_lm, "stream_generate", real)
    # Once the stalled token is done, the worker notices the reader left and takes new work.
    with anyio.fail_after(5):
        assert (await tiny.generate("hello", max_tokens=2).collect()).finish_reason == "length"


# -- the bundled model, converted -----------------------------------------------------------------


@pytest.mark.slow
async def test_the_converted_default_model_agrees_with_llama_cpp() -> None:
    from goml_async import load_default_model

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    async with await load_default_model(backend="mlx") as mlx_model:
        assert isinstance(mlx_model, MLXModel)
        on_mlx = await mlx_model.chat(messages, max_tokens=12).collect()
    async with await load_default_model() as llama_model:
        on_llama = await llama_model.chat(messages, max_tokens=12).collect()
    assert "Paris" in on_mlx.text
    assert "Paris" in on_llama.text
