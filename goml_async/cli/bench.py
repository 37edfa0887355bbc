"""``goml bench``: measure a model's speed here: time to first token and decode tokens/s."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from goml_async._validate import integer
from goml_async.model import TextModel
from goml_async.types import GenerateConfig, Message

from ._common import add_model_arguments, describe_target, load_target

__all__ = ["BenchRun", "add_parser", "measure", "run"]

_DESCRIPTION = """\
Measure a model on this machine: each round streams one greedy reply and records the time to
the first token, the decode speed and the total time, as the backend reports them. A warm-up
round runs first (not counted), so loading and caches do not skew the numbers.

--model takes the bundled default ("default"), a .gguf file, an MLX folder or the base URL of
an OpenAI-compatible server. For comparisons against peers (openai-python, raw llama-server,
raw mlx_lm) see benchmarks/ in the source tree.
"""
_EPILOG = """\
examples:
  goml bench                                      the bundled model, 3 rounds of 128 tokens
  goml bench --model models/m.gguf --tokens 256 --rounds 5
  goml bench --model http://127.0.0.1:8080/v1 --model-name qwen3 --json
"""


@dataclass(frozen=True, slots=True)
class BenchRun:
    """One measured round."""

    tokens: int
    time_to_first_token: float
    decode_tokens_per_sec: float
    total_seconds: float


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="measure a model's time to first token and tokens/s",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, server_model="--model-name")
    parser.add_argument("-n", "--tokens", type=int, default=128, help="tokens per round")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="measured rounds")
    parser.add_argument(
        "--prompt", default="Write a long story about a lighthouse keeper.", help="the prompt"
    )
    parser.add_argument("--json", action="store_true", help="print the rounds as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    integer("--tokens", args.tokens, minimum=1)
    integer("--rounds", args.rounds, minimum=1)
    status: int = anyio.run(_bench, args)
    return status


async def measure(
    model: TextModel, prompt: str, *, tokens: int, rounds: int, warmup: bool = True
) -> list[BenchRun]:
    """Stream ``rounds`` greedy replies of up to ``tokens`` tokens and time each one.

    Token counts and decode speed come from the backend's own metrics; the time to the first
    token and the total are measured here, around the stream.
    """
    config = GenerateConfig(max_tokens=tokens, temperature=0.0)
    messages = [Message("user", prompt)]
    runs: list[BenchRun] = []
    for index in range(rounds + int(warmup)):
        started = time.perf_counter()
        first: float | None = None
        async with model.chat(messages, config) as stream:
            async for _ in stream:
                if first is None:
                    first = time.perf_counter() - started
        total = time.perf_counter() - started
        if warmup and index == 0:
            continue
        metrics = stream.metrics
        count = metrics.generated_tokens if metrics is not None else 0
        decode = metrics.decode_tokens_per_sec if metrics is not None else 0.0
        if not decode and first is not None and count > 1 and total > first:
            decode = (count - 1) / (total - first)  # a backend without timings
        runs.append(BenchRun(count, first or 0.0, decode, total))
    return runs


async def _bench(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    model = await load_target(
        args.model, backend=args.backend, http_model=args.model_name, console=err
    )
    async with model:
        err.print(f"measuring: 1 warm-up + {args.rounds} rounds of {args.tokens} tokens ...")
        runs = await measure(model, args.prompt, tokens=args.tokens, rounds=args.rounds)
    if args.json:
        print(json.dumps([asdict(r) for r in runs], indent=2))
        return 0
    table = Table(title=f"goml bench: {describe_target(args.model)} ({model.model_type})")
    for name in ("round", "tokens", "first token ms", "decode tok/s", "total s"):
        table.add_column(name, justify="right")
    for number, r in enumerate(runs, 1):
        table.add_row(
            str(number),
            str(r.tokens),
            f"{r.time_to_first_token * 1000:.1f}",
            f"{r.decode_tokens_per_sec:.1f}",
            f"{r.total_seconds:.2f}",
        )
    table.add_section()
    table.add_row(
        "median",
        f"{statistics.median(r.tokens for r in runs):g}",
        f"{statistics.median(r.time_to_first_token for r in runs) * 1000:.1f}",
        f"{statistics.median(r.decode_tokens_per_sec for r in runs):.1f}",
        f"{statistics.median(r.total_seconds for r in runs):.2f}",
    )
    Console().print(table)
    return 0
