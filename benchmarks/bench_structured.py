"""What a JSON schema costs: constrained decode speed against unconstrained, and the checker.

Two measures, each against its peer in the same run:

1. **llama.cpp**: decode tokens/s of the bundled SmolLM2-135M-Instruct (Q4_1) on one
   managed llama-server slot, the same prompt asked with ``response_format`` = a JSON schema
   (llama-server's own grammar sampler constrains every token, and goml's stream checker
   checks it) and without (the peer), in alternating rounds so that neither always runs
   first. tok/s is llama.cpp's own decode timing (tokens after the first / decode time), so
   the prompt, the HTTP transfer and the client are left out; the client-side rate is
   printed too. The schema asks for an array of six person objects, so every constrained reply
   is long and full of structure.
2. **stream checker**: what goml's own check of streamed text (an llguidance byte matcher,
   :class:`goml_async.structured.StreamChecker`, run by every TokenStream with a format)
   costs per token: the constrained reply's token texts fed one by one and the document
   finished, timed over many repeats, in microseconds per token and as a share of the
   measured decode time per token.

3. **MLX** (``_structured_mlx.py``): the same prompt and schema on SmolLM2 converted to MLX,
   constrained by goml's own llguidance logits processor against unconstrained, alternating
   rounds; and the mask's own cost per token. ``--no-mlx`` leaves it out.

The goal is a constrained decode no more than 10% slower (ratio >= 0.90) on both.

The script is a report, not a test: it exits 0 whether the goal is met or not.

Run: ``python benchmarks/bench_structured.py [--rounds N] [--tokens N] [--checker-repeat N]
[--markdown docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _report
import _structured_mlx
import anyio
from _report import Measure, markdown_table, positive_int, rich_table
from rich.console import Console

from goml_async import GenerateMetrics, LoadConfig, bundled_model_path
from goml_async.backends.llama import LlamaModel, start_llama_model
from goml_async.structured import StreamChecker, normalize_response_format

NAME = "bench_structured"
HEADING = "Structured output (bench_structured.py)"
TARGET = 0.90
THREADS = 2
PROMPT = "List six people, each with a name and an age, as JSON."
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
SCHEMA = {"type": "array", "items": PERSON, "minItems": 6, "maxItems": 6}
FORMAT = {"type": "json_schema", "json_schema": {"name": "people", "schema": SCHEMA}}


@dataclass(frozen=True, slots=True)
class Run:
    """One reply: llama.cpp's decode rate, the client-side rate, and the token texts."""

    decode_tps: float
    client_tps: float
    tokens: int
    texts: tuple[str, ...]


async def one_run(model: LlamaModel, max_tokens: int, constrained: bool) -> Run:
    options: dict[str, Any] = {"max_tokens": max_tokens}
    if constrained:
        options["response_format"] = FORMAT
    texts: list[str] = []
    started = time.perf_counter()
    async with model.chat([{"role": "user", "content": PROMPT}], **options) as stream:
        async for token in stream:
            texts.append(token.text)
    elapsed = time.perf_counter() - started
    metrics = stream.metrics or GenerateMetrics()
    return Run(
        metrics.decode_tokens_per_sec,
        metrics.generated_tokens / elapsed if elapsed else 0.0,
        metrics.generated_tokens,
        tuple(texts),
    )


async def measure_llama(rounds: int, max_tokens: int) -> dict[str, list[Run]]:
    config = LoadConfig(context_len=2048, parallel_slots=1)
    async with await start_llama_model(bundled_model_path(), config, threads=THREADS) as model:
        samples = await _report.round_robin(
            {
                "json_schema": lambda: one_run(model, max_tokens, True),
                "unconstrained": lambda: one_run(model, max_tokens, False),
            },
            rounds,
        )
    return {name: list(runs) for name, runs in samples.items()}


def checker_ns_per_token(texts: Sequence[str], repeat: int) -> float:
    """The median ns per token of a StreamChecker fed ``texts`` and finished."""
    fmt = normalize_response_format(FORMAT)
    assert fmt is not None
    StreamChecker(fmt).feed("".join(texts))  # the grammar is compiled (and cached) once
    per_token = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        checker = StreamChecker(fmt)
        for text in texts:
            checker.feed(text)
        checker.finish()
        per_token.append((time.perf_counter_ns() - started) / len(texts))
    return statistics.median(per_token)


@dataclass(frozen=True, slots=True)
class Results:
    runs: dict[str, list[Run]]
    checker_ns: float
    mlx: str

    def median(self, name: str, field: str) -> float:
        return float(statistics.median(float(getattr(run, field)) for run in self.runs[name]))

    @property
    def ratio(self) -> float:
        return self.median("json_schema", "decode_tps") / self.median("unconstrained", "decode_tps")

    @property
    def client_ratio(self) -> float:
        return self.median("json_schema", "client_tps") / self.median("unconstrained", "client_tps")

    @property
    def checker_share(self) -> float:
        """The checker's time per token over the constrained decode time per token."""
        return self.checker_ns / (1e9 / self.median("json_schema", "decode_tps"))


COLUMNS = ("case", "decode tok/s", "client tok/s", "tokens", "ratio (decode)", "ratio (client)")


def rows(results: Results) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name in ("json_schema", "unconstrained"):
        decode = results.median(name, "decode_tps")
        client = results.median(name, "client_tps")
        base_decode = results.median("unconstrained", "decode_tps")
        base_client = results.median("unconstrained", "client_tps")
        out.append(
            (
                name,
                f"{decode:.1f}",
                f"{client:.1f}",
                f"{results.median(name, 'tokens'):.0f}",
                f"{decode / base_decode:.3f}x",
                f"{client / base_client:.3f}x",
            )
        )
    return out


def verdict(results: Results) -> str:
    passed = results.ratio >= TARGET
    return (
        f"**{'PASS' if passed else 'FAIL'}: llama.cpp decode with a JSON schema / unconstrained = "
        f"{results.ratio:.3f}x median tok/s (client side {results.client_ratio:.3f}x); "
        f"goal >= {TARGET:.2f}x (at most 10% slower)**"
    )


def markdown_section(results: Results, args: argparse.Namespace) -> str:
    rounds = args.rounds
    return "\n".join(
        [
            f"## {HEADING}",
            "",
            f"- Machine: {_report.machine_line(('anyio', 'llguidance', 'goml_async'))}",
            f"- Command: `{_report.command_line()}`",
            "- Model: bundled SmolLM2-135M-Instruct Q4_1 on one managed llama-server slot, "
            f"-t {THREADS}; prompt {PROMPT!r}; the schema asks for an array of six "
            "`{name, age}` objects.",
            "- decode tok/s = llama.cpp's own decode timing (the prompt and the transfer left "
            "out); client tok/s = tokens / request time; medians of "
            f"{rounds} alternating rounds each, max_tokens {args.tokens}.",
            "",
            f"### llama.cpp: JSON schema against unconstrained, {rounds} rounds",
            "",
            markdown_table(COLUMNS, rows(results)),
            "",
            "### goml's stream checker (llguidance byte matcher), per token",
            "",
            f"- {results.checker_ns / 1000:.1f} us per token (median of {args.checker_repeat} "
            "runs over the constrained reply's tokens, the end-of-document validation "
            f"included): {results.checker_share:.1%} of a constrained decode step.",
            "",
            "### MLX",
            "",
            f"- {results.mlx}.",
            "",
            f"- {verdict(results)}",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=6, help="rounds per case (6)")
    parser.add_argument("--tokens", type=positive_int, default=256, help="max_tokens (256)")
    parser.add_argument(
        "--checker-repeat", type=positive_int, default=200, help="checker timing repeats (200)"
    )
    parser.add_argument("--no-mlx", action="store_true", help="leave the MLX half out")
    parser.add_argument("--markdown", type=Path, help="write the section to this page")
    return parser.parse_args(argv)


def run_mlx(args: argparse.Namespace, console: Console) -> tuple[float | None, str]:
    """The MLX half: its ratio and summary line, or None and why it did not run."""
    if args.no_mlx:
        return None, "not measured: --no-mlx"
    why = _structured_mlx.missing()
    if why is not None:
        return None, why
    console.print(f"MLX: {args.rounds} alternating rounds of each case ...")
    runs, mask_ns = anyio.run(_structured_mlx.measure_mlx, PROMPT, FORMAT, args.rounds, args.tokens)
    return _structured_mlx.summary(runs, mask_ns)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    console.print(f"llama.cpp: {args.rounds} alternating rounds of each case ...")
    runs = anyio.run(measure_llama, args.rounds, args.tokens)
    constrained_texts = runs["json_schema"][0].texts
    checker_ns = checker_ns_per_token(constrained_texts, args.checker_repeat)
    mlx_ratio, mlx_line = run_mlx(args, console)
    results = Results(runs, checker_ns, mlx_line)
    console.print(
        rich_table("llama.cpp: JSON schema against unconstrained", COLUMNS, rows(results))
    )
    console.print(
        f"checker: {checker_ns / 1000:.1f} us/token = {results.checker_share:.1%} of a "
        "constrained decode step"
    )
    console.print(f"MLX: {results.mlx}")
    console.print(verdict(results).replace("**", ""))
    if args.markdown is not None:
        _report.write_markdown(args.markdown, NAME, markdown_section(results, args), "")
        path = _report.write_results(
            NAME,
            title="STRUCTURED",
            heading=HEADING,
            machine=_report.machine_line(("anyio", "llguidance", "goml_async")),
            measures=[
                Measure(
                    "llama.cpp decode, JSON schema",
                    "tokens/s",
                    results.median("json_schema", "decode_tps"),
                    results.median("unconstrained", "decode_tps"),
                    "unconstrained",
                    results.ratio,
                    f">= {TARGET:.2f}x",
                    results.ratio >= TARGET,
                ),
                Measure("stream checker per token", "us", checker_ns / 1000, None, "", None),
                *(
                    [
                        Measure(
                            "MLX decode, JSON schema / unconstrained",
                            "x",
                            mlx_ratio,
                            1.0,
                            "unconstrained",
                            mlx_ratio,
                            f">= {TARGET:.2f}x",
                            mlx_ratio >= TARGET,
                        )
                    ]
                    if mlx_ratio is not None
                    else []
                ),
            ],
        )
        console.print(f"wrote {args.markdown} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
