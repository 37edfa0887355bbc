"""Concurrent MLX streams: goml's continuous batching against ``mlx_lm.batch_generate``.

On the tiny random llama of the backend tests (``bench_mlx.build_tiny``), in one process and
one run, it measures:

1. Aggregate decode tokens/s of N concurrent greedy ``MLXModel.generate`` streams (N = 1, 2,
   4, 8; each its own prompt, ``max_tokens`` tokens) against ``mlx_lm.batch_generate`` of the
   same N prompts on the same weights (loaded separately with ``mlx_lm.load``): all tokens over
   the wall time from the first call to the last token. Goals: goml/raw >= 0.85x at each N, and
   goml at 8 streams >= 2x goml with one stream.
2. Fairness at 8 streams: each stream's own rate (its tokens over the time from its first to its
   last token); slowest/fastest, goal >= 0.8.
3. Prompt cache: TTFT of a chat's second turn whose first 1,000+ tokens (a long system prompt,
   the first question and its reply) were the first turn's, on a model whose cache holds the
   first turn (warm) against one with ``prompt_cache_bytes=0`` (cold). Goal: warm <= 0.25x cold.

The functions are importable (``measure_throughput``, ``measure_fairness``, ``measure_ttft``,
``run_all``); run the file to print the table: ``python benchmarks/_concurrency_mlx.py
[--tokens N] [--repeat R] [--backend asyncio|trio]``. A report, not a test: it exits 0 whether
the goals are met or not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from _report import positive_int, rich_table
from rich.console import Console

SIZES = (1, 2, 4, 8)
GOAL_RATIO = 0.85
GOAL_SCALING = 2.0
GOAL_FAIRNESS = 0.8
GOAL_TTFT = 0.25
PROMPTS = (
    "def ",
    "import json",
    "class Foo(object):",
    "return self",
    "for i in range(",
    "x = [",
    "with open(",
    "if __name__",
)


@dataclass(frozen=True, slots=True)
class Throughput:
    """Aggregate decode rates at one batch size."""

    streams: int
    goml: float
    raw: float

    @property
    def ratio(self) -> float:
        return self.goml / self.raw if self.raw else 0.0


@dataclass(frozen=True, slots=True)
class Ttft:
    """Median time to first token of the second turn, warm and cold, in seconds."""

    prefix_tokens: int
    cached_tokens: int
    warm: float
    cold: float

    @property
    def ratio(self) -> float:
        return self.warm / self.cold if self.cold else 0.0


async def goml_streams(model: Any, count: int, tokens: int) -> tuple[float, list[float]]:
    """``count`` concurrent greedy streams: aggregate tok/s and each stream's own tok/s."""
    spans: list[tuple[int, float, float]] = []
    started = time.perf_counter()

    async def one(prompt: str) -> None:
        times = [time.perf_counter() async for _ in model.generate(prompt, max_tokens=tokens)]
        spans.append((len(times), times[0], times[-1]))

    async with anyio.create_task_group() as group:
        for prompt in PROMPTS[:count]:
            group.start_soon(one, prompt)
    total = sum(n for n, _, _ in spans)
    wall = max(end for _, _, end in spans) - started
    own = [(n - 1) / (end - first) for n, first, end in spans if end > first]
    return total / wall, own


def raw_batch(peer: tuple[Any, Any], count: int, tokens: int) -> float:
    """``mlx_lm.batch_generate`` of the same prompts: aggregate tok/s."""
    import mlx_lm

    model, tokenizer = peer
    prompts = [list(tokenizer.encode(prompt)) for prompt in PROMPTS[:count]]
    started = time.perf_counter()
    response = mlx_lm.batch_generate(
        model, tokenizer, prompts, max_tokens=tokens, return_token_ids=True
    )
    wall = time.perf_counter() - started
    produced: list[list[int]] = response.token_ids or []
    return sum(len(ids) for ids in produced) / wall


async def measure_throughput(
    model: Any, peer: tuple[Any, Any], tokens: int, repeat: int
) -> list[Throughput]:
    """Best of ``repeat`` alternating rounds at each batch size (the machine is shared)."""
    rows = []
    for count in SIZES:
        goml, raw = [], []
        for _ in range(repeat):
            goml.append((await goml_streams(model, count, tokens))[0])
            raw.append(raw_batch(peer, count, tokens))
        rows.append(Throughput(count, max(goml), max(raw)))
    return rows


async def measure_fairness(model: Any, tokens: int, repeat: int) -> float:
    """Slowest/fastest per-stream rate at 8 streams (median over the rounds)."""
    ratios = []
    for _ in range(repeat):
        _, own = await goml_streams(model, 8, tokens)
        ratios.append(min(own) / max(own))
    return statistics.median(ratios)


def _chat(tokenizer: Any, reply: str | None) -> list[dict[str, str]]:
    source = Path(argparse.__file__).read_text(encoding="utf-8")
    system = tokenizer.decode(tokenizer.encode(source)[:1100])
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "def main():"}]
    if reply is not None:
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "x"}]
    return messages


async def _ttft(model: Any, messages: list[dict[str, str]]) -> tuple[float, Any]:
    started = time.perf_counter()
    async with model.chat(messages, max_tokens=4) as stream:
        async for _ in stream:
            first = time.perf_counter() - started
            break
    return first, stream


async def measure_ttft(folder: Path, repeat: int) -> Ttft:
    """Second-turn TTFT warm (the first turn cached) and cold (no prompt cache)."""
    from goml_async.backends.mlx import load_mlx_model

    warm, cold = [], []
    cached = prefix = 0
    async with (
        await load_mlx_model(folder) as model,
        await load_mlx_model(folder, prompt_cache_bytes=0) as uncached,
    ):
        tokenizer = model._tokenizer
        first = await model.chat(_chat(tokenizer, None), max_tokens=8).collect()
        second = _chat(tokenizer, first.text)
        prefix = len(tokenizer.apply_chat_template(_chat(tokenizer, None)))
        for _ in range(repeat):
            await model.chat(_chat(tokenizer, None), max_tokens=8).collect()  # turn 1, cached
            seconds, _ = await _ttft(model, second)
            warm.append(seconds)
            result = await model.chat(second, max_tokens=1).collect()
            cached = result.metrics.cached_tokens if result.metrics else 0
            cold.append((await _ttft(uncached, second))[0])
    return Ttft(prefix, cached, statistics.median(warm), statistics.median(cold))


async def run_all(folder: Path, tokens: int, repeat: int) -> dict[str, Any]:
    """Every measurement of this file on the model folder ``folder``."""
    import mlx_lm

    from goml_async.backends.mlx import load_mlx_model

    loaded = mlx_lm.load(str(folder))
    peer = (loaded[0], loaded[1])
    async with await load_mlx_model(folder) as model:
        await goml_streams(model, 8, 8)  # warm-up
        raw_batch(peer, 8, 8)
        throughput = await measure_throughput(model, peer, tokens, repeat)
        fairness = await measure_fairness(model, tokens, repeat)
    ttft = await measure_ttft(folder, repeat)
    return {"throughput": throughput, "fairness": fairness, "ttft": ttft}


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table: one row per measurement, with its goal and whether it is met."""
    throughput: list[Throughput] = results["throughput"]
    single = throughput[0].goml
    out: list[tuple[str, ...]] = []
    for row in throughput:
        met = row.ratio >= GOAL_RATIO
        out.append(
            (
                f"{row.streams} stream(s) tok/s",
                f"{row.goml:,.0f}",
                f"{row.raw:,.0f}",
                f"{row.ratio:.2f}x",
                f">= {GOAL_RATIO}x",
                "PASS" if met else "FAIL",
            )
        )
    scaling = throughput[-1].goml / single if single else 0.0
    out.append(
        (
            "8 streams / 1 stream (goml)",
            f"{throughput[-1].goml:,.0f}",
            f"{single:,.0f}",
            f"{scaling:.2f}x",
            f">= {GOAL_SCALING}x",
            "PASS" if scaling >= GOAL_SCALING else "FAIL",
        )
    )
    fair = results["fairness"]
    out.append(
        (
            "fairness at 8 (slowest/fastest)",
            "",
            "",
            f"{fair:.2f}",
            f">= {GOAL_FAIRNESS}",
            "PASS" if fair >= GOAL_FAIRNESS else "FAIL",
        )
    )
    ttft: Ttft = results["ttft"]
    out.append(
        (
            f"2nd-turn TTFT ms, {ttft.prefix_tokens}-token prefix (warm | cold)",
            f"{ttft.warm * 1000:.1f}",
            f"{ttft.cold * 1000:.1f}",
            f"{ttft.ratio:.2f}x",
            f"<= {GOAL_TTFT}x",
            "PASS" if ttft.ratio <= GOAL_TTFT else "FAIL",
        )
    )
    return out


COLUMNS = ("measure", "goml", "peer", "ratio", "goal", "")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--tokens", type=positive_int, default=128, help="tokens per stream")
    parser.add_argument("--repeat", type=positive_int, default=3, help="rounds per measure")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import os

    import bench_mlx

    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"Machine: {bench_mlx.machine_line()}")
    missing = bench_mlx.missing_mlx() or bench_mlx.missing_tiny()
    if missing is not None:
        console.print(f"[yellow]skipped: {missing}[/]")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-mlx-concurrency-") as workdir:
        folder = bench_mlx.build_tiny(Path(workdir))
        results = anyio.run(run_all, folder, args.tokens, args.repeat, backend=args.backend)
    title = (
        f"{args.backend}: concurrent greedy streams on the tiny llama, {args.tokens} tokens each "
        f"(peer: mlx_lm.batch_generate; best of {args.repeat})"
    )
    console.print(rich_table(title, COLUMNS, rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
