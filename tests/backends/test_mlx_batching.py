"""Continuous batching and the prompt cache of the MLX backend, on real mlx-lm models.

Concurrent streams of one model decode together in one loop on its worker thread: they overlap,
each keeps its own options, deadline and cancellation, at most ``parallel_slots`` decode at once
(the rest wait, first come first served), a slow reader pauses only its own sequence, and a
chat's next turn starts from the KV cache of the previous one. Greedy output is the same alone,
in a batch and from the cache: each test compares with the model decoding alone.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from processes import until

from goml_async import ConfigError, GenerationError, GenerationTimeout, LoadConfig
from goml_async.backends._mlx_scheduler import READ_AHEAD
from goml_async.backends._mlx_sequence import State
from goml_async.backends.mlx import MLXModel, load_mlx_model

pytestmark = pytest.mark.anyio

PROMPTS = ["def ", "import json", "class Foo(object):", "return self", "for i in range(", "x"]


@pytest.fixture
async def tiny(tiny_mlx: Path) -> AsyncIterator[MLXModel]:
    model = await load_mlx_model(tiny_mlx)
    yield model
    await model.aclose()


async def solo_ids(model: MLXModel, prompt: str, **options: Any) -> list[int]:
    return [token.id async for token in model.generate(prompt, **options)]


def submitted(model: MLXModel, count: int) -> bool:
    return model._scheduler.submitted >= count


def idle(model: MLXModel) -> bool:
    return model._scheduler.counts() == {"waiting": 0, "live": 0, "batch": 0, "solo": 0}


class Timed:
    """One stream's token IDs and when each arrived."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.text = ""
        self.times: list[float] = []
        self.ended = 0.0
        self.finish_reason: str | None = None

    async def read(self, stream: Any, pause: float = 0.0) -> None:
        async with stream:
            async for token in stream:
                self.ids.append(token.id)
                self.text += token.text
                self.times.append(time.perf_counter())
                if pause:
                    await anyio.sleep(pause)
        self.ended = time.perf_counter()
        self.finish_reason = stream.finish_reason


# -- overlap and equality -------------------------------------------------------------------------


async def test_concurrent_streams_overlap_and_match_their_solo_output(tiny: MLXModel) -> None:
    prompts = PROMPTS[:4]
    alone = {prompt: await solo_ids(tiny, prompt, max_tokens=48) for prompt in prompts}
    runs = {prompt: Timed() for prompt in prompts}
    async with anyio.create_task_group() as group:
        for prompt in prompts:
            group.start_soon(runs[prompt].read, tiny.generate(prompt, max_tokens=48))
    # Every stream had tokens before any of them finished: they decoded together.
    assert max(run.times[0] for run in runs.values()) < min(run.ended for run in runs.values())
    for prompt in prompts:
        assert runs[prompt].ids == alone[prompt]
        assert runs[prompt].finish_reason == "length"
    assert tiny._scheduler.peak_live == 4
    assert idle(tiny)


async def test_batched_tokens_carry_the_solo_text_logprobs_and_metrics(tiny: MLXModel) -> None:
    options: dict[str, Any] = {"max_tokens": 24, "top_logprobs": 3}
    alone = [await tiny.generate(prompt, **options).collect() for prompt in PROMPTS]
    alone_tokens = [[t async for t in tiny.generate(prompt, **options)] for prompt in PROMPTS]
    together: list[Any] = [None] * len(PROMPTS)
    tokens: list[Any] = [None] * len(PROMPTS)

    async def one(index: int) -> None:
        stream = tiny.generate(PROMPTS[index], **options)
        tokens[index] = [t async for t in stream]
        together[index] = stream

    async with anyio.create_task_group() as group:
        for index in range(len(PROMPTS)):
            group.start_soon(one, index)
    for index, result in enumerate(alone):
        mine, theirs = tokens[index], alone_tokens[index]
        assert [t.id for t in mine] == [t.id for t in theirs]
        assert "".join(t.text for t in mine) == result.text
        for ours, solo in zip(mine, theirs, strict=True):
            assert ours.logprob == pytest.approx(solo.logprob, abs=1e-4)
            assert [t.id for t in ours.top_logprobs] == [t.id for t in solo.top_logprobs]
        metrics = together[index].metrics
        assert metrics is not None and result.metrics is not None
        assert metrics.generated_tokens == 24
        assert metrics.prompt_tokens == result.metrics.prompt_tokens
        assert metrics.decode_tokens_per_sec > 0


async def test_each_stream_keeps_its_own_sampling_and_max_tokens(tiny: MLXModel) -> None:
    plans: list[dict[str, Any]] = [
        {"max_tokens": 10},
        {"max_tokens": 30, "frequency_penalty": 1.5},
        {"max_tokens": 20, "repeat_penalty": 1.3},
        {"max_tokens": 16, "temperature": 1.0, "seed": 5},
    ]
    alone = [await solo_ids(tiny, "def ", **plan) for plan in plans]
    together: list[list[int]] = [[] for _ in plans]

    async def one(index: int) -> None:
        together[index] = await solo_ids(tiny, "def ", **plans[index])

    async with anyio.create_task_group() as group:
        for index in range(len(plans)):
            group.start_soon(one, index)
    assert together == alone
    assert [len(ids) for ids in together] == [10, 30, 20, 16]


# -- leaving: cancel, deadline, close -------------------------------------------------------------


async def test_cancelling_one_of_four_leaves_the_others_untouched(tiny: MLXModel) -> None:
    prompts = PROMPTS[:4]
    alone = {p: await tiny.generate(p, max_tokens=40).collect() for p in prompts}
    texts: dict[str, str] = {}
    broke = anyio.Event()

    async def reader(prompt: str) -> None:
        texts[prompt] = (await tiny.generate(prompt, max_tokens=40).collect()).text

    async def quitter() -> None:
        async with tiny.generate(PROMPTS[4], max_tokens=0) as stream:
            count = 0
            async for _token in stream:
                count += 1
                if count == 5:
                    break
        assert stream.finish_reason == "cancelled"
        broke.set()

    async with anyio.create_task_group() as group:
        group.start_soon(quitter)
        for prompt in prompts[:3]:
            group.start_soon(reader, prompt)
    assert broke.is_set()
    for prompt in prompts[:3]:
        assert texts[prompt] == alone[prompt].text
    await until(lambda: idle(tiny))  # the unlimited one left the batch


async def test_a_deadline_on_one_stream_ends_only_that_stream(tiny: MLXModel) -> None:
    alone = {p: await tiny.generate(p, max_tokens=60).collect() for p in PROMPTS[:3]}
    texts: dict[str, str] = {}
    timed_out: list[GenerationTimeout] = []

    async def reader(prompt: str) -> None:
        texts[prompt] = (await tiny.generate(prompt, max_tokens=60).collect()).text

    async def hurried() -> None:
        with pytest.raises(GenerationTimeout) as caught:
            async for _token in tiny.generate("def ", max_tokens=0, total_timeout=0.3):
                await anyio.sleep(0.01)
        timed_out.append(caught.value)

    async with anyio.create_task_group() as group:
        group.start_soon(hurried)
        for prompt in alone:
            group.start_soon(reader, prompt)
    assert timed_out[0].deadline == "total"
    assert texts == {p: r.text for p, r in alone.items()}
    await until(lambda: idle(tiny))


async def test_closing_the_model_ends_its_streams_and_its_thread(tiny_mlx: Path) -> None:
    model = await load_mlx_model(tiny_mlx)
    streams = [model.generate(prompt, max_tokens=0) for prompt in PROMPTS[:3]]
    for stream in streams:
        await stream.__anext__()
    await until(lambda: model._scheduler.counts()["live"] == 3)
    await model.aclose()
    assert model._worker.stopped
    assert idle(model)
    for stream in streams:
        with pytest.raises(GenerationError, match="closed"):
            async for _token in stream:
                pass
        await stream.aclose()
    with pytest.raises(GenerationError, match="closed"):
        await model.generate("def ", max_tokens=2).collect()


# -- slots and the slow reader --------------------------------------------------------------------


async def test_slots_cap_the_batch_and_the_rest_wait_in_order(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx, LoadConfig(parallel_slots=2)) as model:
        assert model.parallel_slots == 2
        runs = [Timed() for _ in range(5)]
        async with anyio.create_task_group() as group:
            for index, run in enumerate(runs):
                group.start_soon(run.read, model.generate(PROMPTS[index], max_tokens=30))
                # The next stream is submitted only once this one is queued: a known order.
                await until(functools.partial(submitted, model, index + 1))
        assert model._scheduler.peak_live == 2
        firsts = [run.times[0] for run in runs]
        assert firsts[2:] == sorted(firsts[2:])  # first come, first served
        ends = sorted(run.ended for run in runs)
        for index in range(2, 5):
            # A waiting stream starts only when a slot frees: after index - 1 streams ended.
            assert firsts[index] > ends[index - 2]
        assert all(len(run.ids) == 30 for run in runs)


async def test_parallel_slots_one_decodes_streams_one_after_another(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx, LoadConfig(parallel_slots=1)) as model:
        alone = [await solo_ids(model, p, max_tokens=12) for p in PROMPTS[:3]]
        runs = [Timed() for _ in range(3)]
        async with anyio.create_task_group() as group:
            for index, run in enumerate(runs):
                group.start_soon(run.read, model.generate(PROMPTS[index], max_tokens=12))
        assert [run.ids for run in runs] == alone
        spans = sorted((run.times[0], run.ended) for run in runs)
        assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))
        assert model._scheduler.peak_live == 1


async def test_a_slow_reader_pauses_only_its_own_sequence(tiny: MLXModel) -> None:
    alone_slow = await solo_ids(tiny, "import json", max_tokens=80)
    alone_fast = await solo_ids(tiny, "def ", max_tokens=200)
    slow_ids: list[int] = []
    go_on = anyio.Event()
    fast = Timed()

    async def slow_reader() -> None:
        async with tiny.generate("import json", max_tokens=80) as stream:
            async for token in stream:
                slow_ids.append(token.id)
                if len(slow_ids) == 1:
                    await go_on.wait()  # a reader that stops reading for a while

    async with anyio.create_task_group() as group:
        group.start_soon(slow_reader)
        await until(lambda: len(slow_ids) == 1)
        await fast.read(tiny.generate("def ", max_tokens=200))
        # The fast stream finished while the slow one was not read: it was never held up,
        # and the slow one ran at most READ_AHEAD tokens ahead of its reader, then paused.
        [paused] = tiny._scheduler._live
        assert paused.state is State.PAUSED
        assert len(paused.generated) <= 1 + READ_AHEAD
        go_on.set()
    assert fast.ids == alone_fast
    assert slow_ids == alone_slow
    assert idle(tiny)


async def test_alone_nothing_is_computed_ahead_of_the_reader(tiny: MLXModel) -> None:
    count = 0
    async with tiny.generate("def ", max_tokens=0) as stream:
        async for _token in stream:
            count += 1
            if count == 3:
                [seq] = tiny._scheduler._live
                assert seq.state is State.SOLO
                assert len(seq.generated) == 3  # the reader has every token computed
                break
    await until(lambda: idle(tiny))


async def test_prompts_that_arrive_together_join_the_batch_in_one_insertion(
    tiny: MLXModel,
) -> None:
    # Their short prompts are all prefilled within one step and enter the batch together, so
    # its KV arrays are merged once; each still gives the tokens it gives alone.
    alone = [await solo_ids(tiny, prompt, max_tokens=16) for prompt in PROMPTS]
    before = tiny._scheduler.insertions
    results = await tiny.batch_generate(PROMPTS, max_tokens=16)
    assert [[t.id for t in r.tokens] for r in results] == alone
    assert tiny._scheduler.insertions - before == 1
    assert tiny._scheduler.peak_live == len(PROMPTS)


# -- classify and batch_generate share the scheduler ----------------------------------------------


async def test_classify_and_batch_run_alongside_streams(tiny: MLXModel) -> None:
    alone_stream = await solo_ids(tiny, "def ", max_tokens=40)
    alone_batch = [await solo_ids(tiny, p, max_tokens=12) for p in PROMPTS[:3]]
    alone_classify = [(await tiny.classify([p]))[0].token.id for p in PROMPTS[:3]]
    got: dict[str, Any] = {}

    async def stream() -> None:
        got["stream"] = await solo_ids(tiny, "def ", max_tokens=40)

    async def batch() -> None:
        got["batch"] = await tiny.batch_generate(PROMPTS[:3], max_tokens=12)

    async def classify() -> None:
        got["classify"] = await tiny.classify(PROMPTS[:3])

    async with anyio.create_task_group() as group:
        for job in (stream, batch, classify):
            group.start_soon(job)
    assert got["stream"] == alone_stream
    assert [[t.id for t in r.tokens] for r in got["batch"]] == alone_batch
    assert [r.token.id for r in got["classify"]] == alone_classify
    assert idle(tiny)


# -- the prompt cache -----------------------------------------------------------------------------


def _turns(reply: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    first = [
        {"role": "system", "content": "You write Python. " * 40},
        {"role": "user", "content": "def main():"},
    ]
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "x"}]
    return first, second


async def test_the_second_turn_of_a_chat_reuses_the_first(tiny: MLXModel, tiny_mlx: Path) -> None:
    first, _ = _turns("")
    one = await tiny.chat(first, max_tokens=8).collect()
    assert one.metrics is not None and one.metrics.cached_tokens == 0
    _, second = _turns(one.text)
    two = await tiny.chat(second, max_tokens=16).collect()
    assert two.metrics is not None
    # The first turn's prompt, up to where the reply's text tokenizes differently from the
    # tokens generated (here a run of spaces merges with the template's newline).
    assert two.metrics.cached_tokens >= 0.9 * one.metrics.prompt_tokens
    assert two.metrics.cached_tokens < two.metrics.prompt_tokens
    async with await load_mlx_model(tiny_mlx, prompt_cache_bytes=0) as uncached:
        cold = await uncached.chat(second, max_tokens=16).collect()
        assert cold.metrics is not None and cold.metrics.cached_tokens == 0
    assert two.text == cold.text  # the cache changes nothing in greedy output


async def test_the_prompt_cache_stays_within_its_bound(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx, prompt_cache_bytes=400_000) as model:
        assert model.prompt_cache_bytes == 400_000
        for prompt in PROMPTS:
            await model.generate(prompt * 30, max_tokens=4).collect()
            cache = model._scheduler.prompt_cache
            assert 0 < cache.nbytes <= 400_000
        # The oldest prompts were evicted first; the last one is still there.
        last = await model.generate(PROMPTS[-1] * 30, max_tokens=4).collect()
        assert last.metrics is not None and last.metrics.cached_tokens > 0
        first = await model.generate(PROMPTS[0] * 30, max_tokens=4).collect()
        assert first.metrics is not None and first.metrics.cached_tokens == 0


async def test_prompt_cache_bytes_is_checked(tiny_mlx: Path) -> None:
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(ConfigError) as caught:
            await load_mlx_model(tiny_mlx, prompt_cache_bytes=bad)  # type: ignore[arg-type]
        assert caught.value.field == "prompt_cache_bytes"


# -- SmolLM2, converted ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_smollm2_is_the_same_alone_batched_and_from_the_cache(smollm2_mlx: Path) -> None:
    questions = ["What is the capital of France?", "Name a colour.", "Count to five."]
    chats = [[{"role": "user", "content": q}] for q in questions]
    first, _ = _turns("")
    async with await load_mlx_model(smollm2_mlx, prompt_cache_bytes=0) as cold:
        alone = [await cold.chat(chat, max_tokens=16).collect() for chat in chats]
        reply = await cold.chat(first, max_tokens=16).collect()
        _, second = _turns(reply.text)
        second_cold = await cold.chat(second, max_tokens=12).collect()
    async with await load_mlx_model(smollm2_mlx) as model:
        together: list[Any] = [None] * len(chats)

        async def one(index: int) -> None:
            together[index] = await model.chat(chats[index], max_tokens=16).collect()

        async with anyio.create_task_group() as group:
            for index in range(len(chats)):
                group.start_soon(one, index)
        assert [r.text for r in together] == [r.text for r in alone]
        assert (await model.chat(first, max_tokens=16).collect()).text == reply.text
        warm = await model.chat(second, max_tokens=12).collect()
    assert warm.metrics is not None and warm.metrics.cached_tokens > 0
    assert warm.text == second_cold.text


_EXIT_SCRIPT = """
import sys, anyio
from goml_async.backends.mlx import load_mlx_model

async def main():
    async with await load_mlx_model(sys.argv[1]) as model:
        async def ask(prompt):
            await model.chat([{"role": "user", "content": prompt}], max_tokens=8)

        async with anyio.create_task_group() as group:
            for prompt in ("Hi", "Name a colour.", "Count to three."):
                group.start_soon(ask, prompt)
    print("done", flush=True)

anyio.run(main)
"""


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # one subprocess run is enough
async def test_a_program_that_batched_exits_cleanly(smollm2_mlx: Path, tmp_path: Path) -> None:
    """MLX frees per-thread state that holds Python objects when a thread ends; a worker
    thread that ended as the interpreter shut down made the process abort ("terminate called
    without an active exception", exit status 134) after every program that had batched."""
    script = tmp_path / "batched.py"
    script.write_text(_EXIT_SCRIPT, encoding="utf-8")
    done = await anyio.run_process(
        [sys.executable, str(script), str(smollm2_mlx)], check=False, stderr=subprocess.PIPE
    )
    assert done.stdout.decode().strip() == "done"
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"terminate called" not in done.stderr


async def test_a_closed_models_thread_serves_the_next_model(tiny_mlx: Path) -> None:
    first = await load_mlx_model(tiny_mlx)
    thread = first.worker_thread
    await first.generate("def ", max_tokens=2)
    await first.aclose()
    assert first._worker.stopped and thread.is_alive()  # idle, waiting for the next model
    async with await load_mlx_model(tiny_mlx) as second:
        assert second.worker_thread is thread
        assert (await second.generate("def ", max_tokens=2)).text
