"""Per-token overhead of goml_async's streaming layers over an in-memory token source.

Every backend hands its tokens to a :class:`~goml_async.TokenStream`, and the go-ml compatible
:class:`~goml_async.InferenceAdapter` adds another layer on top. This script measures what those
layers cost per token, against a peer measured in the same process and the same run: a bare
async generator yielding pre-built :class:`~goml_async.Token` objects, with no sleeps, so that
only the Python-level bookkeeping is timed (no model, no I/O).

Cases, each over the same pre-built token list:

1. ``baseline``: ``async for token in source()`` over the bare async generator (the peer).
2. ``TokenStream``: the generator wrapped in a TokenStream without stops or a cap.
3. ``TokenStream + stop``: the same with ``stop_sequences=("\\n\\nUser:",)``, over text that
   never completes the stop, so the client-side stop cutter runs on every token.
4. ``model.generate``, ``adapter.generate_stream`` and ``adapter.generate``: a minimal
   in-memory :class:`~goml_async.model.BaseTextModel` whose token source is the same bare
   generator, iterated directly, through the deprecated callback API and collected whole.

Each case reports ns/token (best and median of the repeats), the overhead over the baseline
(case - baseline, in ns/token) and the ratio case/baseline. The design target is an overhead
below 2 us per token for TokenStream and the InferenceAdapter: far below the time a real model
takes to produce a token, so the SDK never limits throughput.

A second table times the blocking facade (:mod:`goml_async.sync`) from a plain thread over the
same model, against ``await model.generate(...).collect()`` timed inside an event loop in the
same run (the peer): ``sync.BlockingModel.stream`` iterated to the end, and ``sync.generate``.
Its stream runs on the facade's background loop (always asyncio), so it is measured once, not
per ``--backend``. The target is <= 10 us per token for the blocking stream.

The script is a report, not a test: it exits 0 whether the targets are met or not.

Run: ``python benchmarks/bench_stream.py [--tokens N] [--repeat R] [--backend asyncio|trio|both]
[--no-blocking] [--markdown docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import statistics
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import _report
import anyio
from _report import command_line, positive_int
from rich.console import Console
from rich.table import Table

from goml_async import (
    GenerateConfig,
    GenerateMetrics,
    GenOpts,
    InferenceAdapter,
    StreamContext,
    Token,
    TokenStream,
)
from goml_async import sync as goml_sync
from goml_async.model import BaseTextModel

TARGET_NS = 2000.0
BLOCKING_TARGET_NS = 10_000.0
STOP = "\n\nUser:"
# Short words, one of them a lone "\n": a possible start of the stop, so the cutter's hold-back
# path runs too, but two newlines never follow each other and the stop is never completed.
WORDS = (" the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ".", "\n")
PROMPT = "Benchmark prompt"
WARMUP_TOKENS = 10_000
# GenerateConfig() caps at 256 tokens; max_tokens=0 means no client-side cap.
NO_CAP = GenerateConfig(max_tokens=0)
WITH_STOP = GenerateConfig(stop_sequences=(STOP,), max_tokens=0)
HEADING = "## Stream overhead (bench_stream.py)"
INTRO = (
    "Every benchmark prints a ratio against a peer measured in the same run. "
    "Regenerate with `nox -s bench`."
)
# ns/token: best and median of the repeats, overhead = case - baseline, ratio = case / baseline.
COLUMNS = ("case", "best", "median", "overhead (best)", "overhead (median)", "ratio (best)")

Source = Callable[[], AsyncIterator[Token]]


# -- the token source and the in-memory model ----------------------------------------------------


def machine_line() -> str:
    return _report.machine_line(("anyio", "trio", "goml_async"))


def build_tokens(count: int) -> list[Token]:
    """``count`` pre-built tokens cycling through :data:`WORDS` (built outside the timing)."""
    vocabulary = [Token(id=index, text=word) for index, word in enumerate(WORDS)]
    return [vocabulary[index % len(vocabulary)] for index in range(count)]


def bare_source(tokens: Sequence[Token]) -> Source:
    """The peer: an async generator function that yields ``tokens`` and does nothing else."""

    async def source() -> AsyncIterator[Token]:
        for token in tokens:
            yield token

    return source


class MemoryModel(BaseTextModel):
    """A TextModel whose token source is the bare generator, so only the layers differ.

    ScriptedModel is not used: each call it re-validates and copies its whole reply list and,
    per token, builds a new Token and checks its failure and delay options. The validation is
    per call but linear in the reply length, so over a long stream it is a per-token cost as
    well; either way it is work the baseline does not do, and it would be counted as overhead
    of the streaming layers.
    """

    def __init__(self, source: Source) -> None:
        super().__init__(model_type="memory")
        self._source = source

    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        return self._source()


@dataclass(frozen=True, slots=True)
class Fixture:
    """What every case runs over: the token count, the bare source and the model."""

    count: int
    source: Source
    model: MemoryModel

    @classmethod
    def build(cls, count: int) -> Fixture:
        source = bare_source(build_tokens(count))
        return cls(count=count, source=source, model=MemoryModel(source))


# -- the cases ------------------------------------------------------------------------------------
# Each consumes the whole stream and returns how many tokens reached the consumer, so that a cap
# or a stop that silently shortened the stream would be caught instead of flattering the numbers.
# Per-call setup (configs, the stream, the adapter) is inside the timing, amortised over the
# stream; at the default length it is well under 0.1 ns/token.


def _generated(metrics: GenerateMetrics | None, finish_reason: str | None) -> int:
    """Tokens counted by the stream; 0 unless it ended because the source ended."""
    if metrics is None or finish_reason != "stop":
        return 0
    return metrics.generated_tokens


async def case_baseline(fixture: Fixture) -> int:
    async for _ in fixture.source():
        pass
    return fixture.count


async def _drain(stream: TokenStream) -> int:
    async for _ in stream:
        pass
    return _generated(stream.metrics, stream.finish_reason)


async def case_token_stream(fixture: Fixture) -> int:
    source = fixture.source
    return await _drain(TokenStream(lambda _context: source(), config=NO_CAP))


async def case_token_stream_stop(fixture: Fixture) -> int:
    source = fixture.source
    return await _drain(TokenStream(lambda _context: source(), config=WITH_STOP))


async def case_model_generate(fixture: Fixture) -> int:
    return await _drain(fixture.model.generate(PROMPT, max_tokens=0))


def _adapter_opts(fixture: Fixture) -> GenOpts:
    # GenOpts() leaves max_tokens unset, which resolves to GenerateConfig()'s cap of 256 tokens;
    # a cap past the end of the source lets the stream run to the end like the other cases.
    return GenOpts(max_tokens=fixture.count + 1)


def _sink(text: str) -> None:
    """The trivial sync callback of the callback-streaming case."""


async def case_adapter_generate_stream(fixture: Fixture) -> int:
    adapter = InferenceAdapter(fixture.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result = await adapter.generate_stream(PROMPT, _adapter_opts(fixture), _sink)
    return _generated(result.metrics, result.finish_reason)


async def case_adapter_generate(fixture: Fixture) -> int:
    result = await InferenceAdapter(fixture.model).generate(PROMPT, _adapter_opts(fixture))
    return _generated(result.metrics, result.finish_reason)


@dataclass(frozen=True, slots=True)
class Case:
    """One measured way of consuming the stream."""

    name: str
    run: Callable[[Fixture], Awaitable[int]]
    gated: bool


# -- the blocking facade ----------------------------------------------------------------------
# Run from a plain thread, as a script does. Each returns (tokens delivered, elapsed ns): the
# peer times itself inside its event loop, so starting and ending that loop is not counted.


def blocking_peer(fixture: Fixture) -> tuple[int, int]:
    """``await model.generate(...).collect()`` in an event loop: the peer of the blocking rows."""

    async def timed() -> tuple[int, int]:
        start = time.perf_counter_ns()
        result = await fixture.model.generate(PROMPT, max_tokens=0).collect()
        elapsed = time.perf_counter_ns() - start
        return _generated(result.metrics, result.finish_reason), elapsed

    return anyio.run(timed)


def blocking_stream(fixture: Fixture) -> tuple[int, int]:
    model = goml_sync.BlockingModel(fixture.model)
    start = time.perf_counter_ns()
    delivered = 0
    for _ in model.stream(PROMPT, max_tokens=0):
        delivered += 1
    return delivered, time.perf_counter_ns() - start


def blocking_generate(fixture: Fixture) -> tuple[int, int]:
    start = time.perf_counter_ns()
    result = goml_sync.generate(fixture.model, PROMPT, max_tokens=0)
    elapsed = time.perf_counter_ns() - start
    return _generated(result.metrics, result.finish_reason), elapsed


@dataclass(frozen=True, slots=True)
class BlockingCase:
    """One measured way of consuming the stream from blocking code."""

    name: str
    run: Callable[[Fixture], tuple[int, int]]
    gated: bool


BLOCKING_CASES = (
    BlockingCase("peer: async collect()", blocking_peer, gated=False),
    BlockingCase("sync: BlockingModel.stream", blocking_stream, gated=True),
    BlockingCase("sync: generate", blocking_generate, gated=False),
)


CASES = (
    Case("baseline: bare async generator", case_baseline, gated=False),
    Case("TokenStream", case_token_stream, gated=True),
    Case("TokenStream + stop", case_token_stream_stop, gated=True),
    Case("model.generate", case_model_generate, gated=True),
    Case("adapter.generate_stream", case_adapter_generate_stream, gated=True),
    Case("adapter.generate", case_adapter_generate, gated=True),
)


# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseResult:
    """ns/token of one case, with the baseline's for the overhead and the ratio."""

    case: Case | BlockingCase
    best: float
    median: float
    baseline_best: float
    baseline_median: float

    @property
    def overhead_best(self) -> float:
        return self.best - self.baseline_best

    @property
    def overhead_median(self) -> float:
        return self.median - self.baseline_median

    @property
    def ratio(self) -> float:
        return self.best / self.baseline_best

    def cells(self) -> tuple[str, ...]:
        return (
            self.case.name,
            f"{self.best:,.0f}",
            f"{self.median:,.0f}",
            f"{self.overhead_best:+,.0f}",
            f"{self.overhead_median:+,.0f}",
            f"{self.ratio:.2f}x",
        )


async def time_once(case: Case, fixture: Fixture) -> int:
    """Run ``case`` once over ``fixture``; return the elapsed ns (garbage collector off, as
    timeit does, so that a collection triggered elsewhere is not charged to this case)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        delivered = await case.run(fixture)
        elapsed = time.perf_counter_ns() - start
    finally:
        if was_enabled:
            gc.enable()
    if delivered != fixture.count:
        raise RuntimeError(f"{case.name}: delivered {delivered} of {fixture.count} tokens")
    return elapsed


async def measure(count: int, repeat: int) -> list[CaseResult]:
    """Time every case ``repeat`` times, round-robin so that drift affects all cases alike."""
    warmup = Fixture.build(min(count, WARMUP_TOKENS))
    for case in CASES:
        await time_once(case, warmup)
    fixture = Fixture.build(count)
    samples: dict[str, list[float]] = {case.name: [] for case in CASES}
    for _ in range(repeat):
        for case in CASES:
            samples[case.name].append(await time_once(case, fixture) / count)
    return summarise(CASES, samples)


def summarise(
    cases: Sequence[Case] | Sequence[BlockingCase], samples: dict[str, list[float]]
) -> list[CaseResult]:
    """Best and median ns/token of each case, against the first case's (the baseline)."""
    baseline = samples[cases[0].name]
    return [
        CaseResult(
            case=case,
            best=min(samples[case.name]),
            median=statistics.median(samples[case.name]),
            baseline_best=min(baseline),
            baseline_median=statistics.median(baseline),
        )
        for case in cases
    ]


def run_backend(backend: str, count: int, repeat: int) -> list[CaseResult]:
    return anyio.run(measure, count, repeat, backend=backend)


def time_blocking_once(case: BlockingCase, fixture: Fixture) -> int:
    """Run ``case`` once over ``fixture``; return the elapsed ns (garbage collector off)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        delivered, elapsed = case.run(fixture)
    finally:
        if was_enabled:
            gc.enable()
    if delivered != fixture.count:
        raise RuntimeError(f"{case.name}: delivered {delivered} of {fixture.count} tokens")
    return elapsed


def measure_blocking(count: int, repeat: int) -> list[CaseResult]:
    """Time the blocking cases and their peer, round-robin; the first row is the peer."""
    warmup = Fixture.build(min(count, WARMUP_TOKENS))
    for case in BLOCKING_CASES:  # also starts the facade's loop thread
        time_blocking_once(case, warmup)
    fixture = Fixture.build(count)
    samples: dict[str, list[float]] = {case.name: [] for case in BLOCKING_CASES}
    for _ in range(repeat):
        for case in BLOCKING_CASES:
            samples[case.name].append(time_blocking_once(case, fixture) / count)
    return summarise(BLOCKING_CASES, samples)


def blocking_verdict(rows: list[CaseResult]) -> str:
    stream = next(row for row in rows if row.case.gated)
    outcome = "PASS" if stream.median <= BLOCKING_TARGET_NS else "FAIL"
    return (
        f"{outcome}: {stream.case.name} costs {stream.median:,.0f} ns/token (median), "
        f"{stream.median / stream.baseline_median:.2f}x async collect(); "
        f"target <= {BLOCKING_TARGET_NS:,.0f} ns/token"
    )


def worst_overhead(results: dict[str, list[CaseResult]]) -> tuple[str, CaseResult]:
    """The gated case with the largest median overhead, over all backends."""
    candidates = [
        (backend, result)
        for backend, rows in results.items()
        for result in rows
        if result.case.gated
    ]
    return max(candidates, key=lambda item: item[1].overhead_median)


def verdict(results: dict[str, list[CaseResult]]) -> str:
    backend, worst = worst_overhead(results)
    outcome = "PASS" if worst.overhead_median < TARGET_NS else "FAIL"
    return (
        f"{outcome}: largest median overhead {worst.overhead_median:,.0f} ns/token "
        f"({worst.case.name}, {backend}); target < {TARGET_NS:,.0f} ns/token for TokenStream "
        "and InferenceAdapter over the bare generator"
    )


# -- reporting ------------------------------------------------------------------------------------


BLOCKING_TITLE = "blocking facade (overhead and ratio against async collect())"


def rich_table(backend: str, count: int, repeat: int, rows: list[CaseResult]) -> Table:
    table = Table(title=f"{backend}: ns/token over {count:,} tokens, best/median of {repeat} runs")
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row.cells())
    return table


def markdown_table(rows: list[CaseResult]) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def markdown_section(
    results: dict[str, list[CaseResult]],
    count: int,
    repeat: int,
    blocking: list[CaseResult] | None = None,
) -> str:
    parts = [
        HEADING,
        "",
        f"- Machine: {machine_line()}",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command_line()}`",
        f"- {count:,} tokens per run; best and median of {repeat} run(s); overhead = case - "
        "baseline (ns/token); ratio = case / baseline.",
    ]
    for backend, rows in results.items():
        parts += ["", f"### {backend}", "", markdown_table(rows)]
    parts += ["", f"**{verdict(results)}**"]
    if blocking is not None:
        parts += [
            "",
            "### Blocking facade",
            "",
            "`goml_async.sync` from a plain thread, over the same model; the peer is "
            "`await model.generate(...).collect()` timed inside an asyncio loop in the same run, "
            "so overhead and ratio are against it.",
            "",
            markdown_table(blocking),
            "",
            f"**{blocking_verdict(blocking)}**",
        ]
    return "\n".join(parts)


def write_markdown(path: Path, section: str) -> None:
    """Create or replace this script's section in ``path``; everything outside it is kept."""
    _report.write_markdown(path, "bench_stream", section, INTRO)


def write_results(
    results: dict[str, list[CaseResult]], blocking: list[CaseResult] | None = None
) -> Path:
    """The worst layer's median overhead per event loop (and the blocking stream's cost)."""
    measures = []
    for backend, rows in results.items():
        worst = max((row for row in rows if row.case.gated), key=lambda row: row.overhead_median)
        measures.append(
            _report.Measure(
                measure=f"cost per token, costliest layer ({worst.case.name}, {backend})",
                unit="ns/token",
                goml=worst.median,
                peer=worst.baseline_median,
                peer_name="bare async generator",
                ratio=worst.median / worst.baseline_median,
                target=f"goml - peer < {TARGET_NS:,.0f} ns/token",
                passed=worst.overhead_median < TARGET_NS,
            )
        )
    for row in blocking or ():
        if row.case.gated:
            measures.append(
                _report.Measure(
                    measure=f"cost per token, blocking facade ({row.case.name})",
                    unit="ns/token",
                    goml=row.median,
                    peer=row.baseline_median,
                    peer_name="async collect()",
                    ratio=row.median / row.baseline_median,
                    target=f"<= {BLOCKING_TARGET_NS:,.0f} ns/token",
                    passed=row.median <= BLOCKING_TARGET_NS,
                )
            )
    return _report.write_results(
        "bench_stream",
        title="Stream overhead",
        heading=HEADING.removeprefix("## "),
        machine=machine_line(),
        measures=measures,
    )


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=positive_int, default=200_000, help="tokens per run")
    parser.add_argument("--repeat", type=positive_int, default=5, help="runs per case")
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument(
        "--no-blocking",
        action="store_true",
        help="skip the blocking facade's table (goml_async.sync)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write/replace the results section in this file, and the key numbers in "
        "benchmarks/results/bench_stream.json",
    )
    return parser.parse_args(argv)


def backends(choice: str, console: Console) -> list[str]:
    chosen = ["asyncio", "trio"] if choice == "both" else [choice]
    if "trio" in chosen and importlib.util.find_spec("trio") is None:
        console.print("[yellow]trio is not installed: skipping the trio backend[/]")
        chosen.remove("trio")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Rich falls back to 80 columns when piped (nox, CI logs); the table needs a little more.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(f"Machine: {machine_line()}")
    results: dict[str, list[CaseResult]] = {}
    for backend in backends(args.backend, console):
        results[backend] = run_backend(backend, args.tokens, args.repeat)
        console.print(rich_table(backend, args.tokens, args.repeat, results[backend]))
    if not results:
        console.print("no backend to run")
        return 0
    console.print(verdict(results))
    blocking = None
    if not args.no_blocking:
        blocking = measure_blocking(args.tokens, args.repeat)
        console.print(rich_table(BLOCKING_TITLE, args.tokens, args.repeat, blocking))
        console.print(blocking_verdict(blocking))
    if args.markdown is not None:
        section = markdown_section(results, args.tokens, args.repeat, blocking)
        write_markdown(args.markdown, section)
        console.print(f"wrote the results section of {args.markdown}")
        console.print(f"wrote {write_results(results, blocking)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
