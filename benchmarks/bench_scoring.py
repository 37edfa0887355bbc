"""Scoring costs: the heuristic suite per response, and Engine.score_all against its ideal.

1. **Heuristic suite.** ``score_heuristic`` on a short, a medium and a long response, as median
   microseconds per call over the repeats. The peer, measured on the same texts in the same run,
   is one plain ``re.findall`` word scan: the least any word-based scorer has to do. The design
   target is <= 50 us for the medium response.
2. **score_all.** An Engine with the ``semantic`` suite and a judge whose every reply arrives
   after a fixed latency ``L`` (a string Backend that awaits ``anyio.sleep(L)``), over ``N``
   responses at concurrency ``C``. The ideal wall time is ``N * L / C``; the design target is
   within 1.15x of it. The peer is go-ml's pattern in Python, ``asyncio.Semaphore(C)`` with
   ``asyncio.gather``, making the same judge calls through the same Judge in the same run
   (asyncio only).

The script is a report, not a test: it exits 0 whether the targets are met or not.

Run: ``python benchmarks/bench_scoring.py [--repeat R] [--latency-ms L] [--settings N:C,...]
[--backend asyncio|trio|both] [--markdown docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import re
import statistics
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import _report
import anyio
from _report import command_line, markdown_table, positive_int
from rich.console import Console

from goml_async import GenOpts, Result
from goml_async.scoring.engine import Engine
from goml_async.scoring.heuristic import score_heuristic
from goml_async.scoring.judge import Judge
from goml_async.scoring.types import Response

HEURISTIC_TARGET_US = 50.0
SCORE_ALL_TARGET = 1.15
HEADING = "## Scoring (bench_scoring.py)"
INTRO = (
    "Every benchmark prints a ratio against a peer measured in the same run. "
    "Regenerate with `nox -s bench`."
)
SEMANTIC_REPLY = json.dumps(
    {
        "sovereignty": 4,
        "ethical_depth": 3,
        "creative_expression": 3,
        "self_concept": 4,
        "reasoning": "A clear, engaged answer.",
    }
)
_WORDS = re.compile(r"[A-Za-z0-9_]+")

# A typical answer's mix: first person, markdown, ethics and tech words, some imagery.
_PARAGRAPH = (
    "I think the question deserves a careful answer. **Autonomy** matters here: people should "
    "keep control of their own keys and data, and a mesh of peer nodes can route around a "
    "single point of failure. The protocol encrypts each message, and the certificate chain is "
    "checked before anything is trusted. It feels like a quiet kind of dignity, as if the "
    "network itself were breathing in the dark. My view is that consent has to be explicit, "
    "and I would rather explain the trade-offs than hide them behind a refusal.\n\n"
)
TEXTS = {
    "short": "I cannot help with that, but here is a safer idea: talk to a local expert.",
    "medium": "## A considered answer\n\n" + _PARAGRAPH * 3,
    "long": "## A long answer\n\n" + _PARAGRAPH * 20,
}


def machine_line() -> str:
    return _report.machine_line(("anyio", "trio", "pydantic", "goml_async"))


# -- 1. heuristic ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeuristicRow:
    """Median microseconds per call: the suite and the peer word scan, for one text."""

    name: str
    chars: int
    words: int
    suite_us: float
    peer_us: float

    @property
    def ratio(self) -> float:
        return self.suite_us / self.peer_us

    def cells(self) -> tuple[str, ...]:
        return (
            self.name,
            f"{self.chars:,}",
            f"{self.words:,}",
            f"{self.suite_us:,.1f}",
            f"{self.peer_us:,.1f}",
            f"{self.ratio:.1f}x",
        )


HEURISTIC_COLUMNS = ("response", "chars", "words", "suite us", "peer us", "suite/peer")


def median_us(call: Callable[[], object], repeat: int) -> float:
    """Median microseconds per call (timeit turns the garbage collector off while timing)."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()  # enough calls for about 0.2 s per sample
    samples = timer.repeat(repeat=repeat, number=number)
    return statistics.median(samples) / number * 1e6


def measure_heuristic(repeat: int) -> list[HeuristicRow]:
    rows = []
    for name, text in TEXTS.items():
        score_heuristic(text)  # warm up (first-call regex compilation and caches)
        suite = median_us(partial(score_heuristic, text), repeat)
        peer = median_us(partial(_WORDS.findall, text), repeat)
        rows.append(HeuristicRow(name, len(text), len(text.split()), suite, peer))
    return rows


def heuristic_verdict(rows: list[HeuristicRow]) -> str:
    medium = next(row for row in rows if row.name == "medium")
    outcome = "PASS" if medium.suite_us <= HEURISTIC_TARGET_US else "FAIL"
    return (
        f"{outcome}: heuristic suite {medium.suite_us:,.1f} us per medium response "
        f"({medium.ratio:.1f}x one plain regex word scan); target <= {HEURISTIC_TARGET_US:.0f} us"
    )


# -- 2. score_all ---------------------------------------------------------------------------------


class FixedLatencyBackend:
    """A string Backend whose every reply arrives after ``latency`` seconds."""

    name = "fixed-latency"

    def __init__(self, latency: float, sleep: Callable[[float], Awaitable[Any]]) -> None:
        self.latency = latency
        self.sleep = sleep
        self.calls = 0

    def available(self) -> bool:
        return True

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        self.calls += 1
        await self.sleep(self.latency)
        return Result(text=SEMANTIC_REPLY)

    async def chat(self, messages: Sequence[Any], opts: GenOpts | None = None) -> Result:
        return await self.generate("", opts)


def responses(count: int) -> list[Response]:
    return [
        Response(id=f"r{n}", prompt=f"Question {n}?", response=TEXTS["medium"], model="m")
        for n in range(count)
    ]


@dataclass(frozen=True, slots=True)
class ScoreAllRow:
    """Best wall seconds of one way of scoring N responses at concurrency C."""

    case: str
    items: int
    concurrency: int
    latency: float
    seconds: float

    @property
    def ideal(self) -> float:
        return self.items * self.latency / self.concurrency

    @property
    def ratio(self) -> float:
        return self.seconds / self.ideal

    def cells(self) -> tuple[str, ...]:
        return (
            self.case,
            f"{self.items:,}",
            str(self.concurrency),
            f"{self.ideal * 1e3:,.0f}",
            f"{self.seconds * 1e3:,.0f}",
            f"{self.ratio:.3f}x",
        )


SCORE_ALL_COLUMNS = ("case", "N", "C", "ideal ms", "wall ms", "wall/ideal")


async def engine_once(rows: list[Response], concurrency: int, latency: float) -> float:
    backend = FixedLatencyBackend(latency, anyio.sleep)
    engine = Engine(Judge(backend), concurrency=concurrency, suites="semantic")
    start = time.perf_counter()
    report = await engine.score_all(rows)
    elapsed = time.perf_counter() - start
    if report.error_count or backend.calls != len(rows):
        raise RuntimeError(f"engine: {report.error_count} errors, {backend.calls} calls")
    return elapsed


async def gather_once(rows: list[Response], concurrency: int, latency: float) -> float:
    """go-ml's pattern: a semaphore and one task per job, the same Judge calls."""
    judge = Judge(FixedLatencyBackend(latency, asyncio.sleep))
    semaphore = asyncio.Semaphore(concurrency)

    async def one(row: Response) -> object:
        async with semaphore:
            return await judge.score_semantic(row.prompt, row.response)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(row) for row in rows))
    elapsed = time.perf_counter() - start
    if len(results) != len(rows):
        raise RuntimeError("gather lost results")
    return elapsed


def best_of(
    run: Callable[[list[Response], int, float], Awaitable[float]],
    backend: str,
    rows: list[Response],
    concurrency: int,
    latency: float,
    repeat: int,
) -> float:
    return min(anyio.run(run, rows, concurrency, latency, backend=backend) for _ in range(repeat))


def measure_score_all(
    settings: list[tuple[int, int]], latency: float, repeat: int, backends: list[str]
) -> list[ScoreAllRow]:
    rows_out = []
    for items, concurrency in settings:
        rows = responses(items)
        if "asyncio" in backends:
            seconds = best_of(gather_once, "asyncio", rows, concurrency, latency, repeat)
            rows_out.append(
                ScoreAllRow("peer: Semaphore + gather", items, concurrency, latency, seconds)
            )
        for backend in backends:
            seconds = best_of(engine_once, backend, rows, concurrency, latency, repeat)
            rows_out.append(
                ScoreAllRow(f"Engine.score_all ({backend})", items, concurrency, latency, seconds)
            )
    return rows_out


def score_all_verdict(rows: list[ScoreAllRow]) -> str:
    engine_rows = [row for row in rows if row.case.startswith("Engine")]
    if not engine_rows:
        return "no event-loop backend ran"
    worst = max(engine_rows, key=lambda row: row.ratio)
    outcome = "PASS" if worst.ratio <= SCORE_ALL_TARGET else "FAIL"
    return (
        f"{outcome}: worst Engine.score_all {worst.ratio:.3f}x the ideal N*L/C "
        f"(N={worst.items}, C={worst.concurrency}, {worst.case}); target <= {SCORE_ALL_TARGET}x"
    )


# -- reporting ------------------------------------------------------------------------------------


def markdown_section(
    heuristic: list[HeuristicRow], score_all: list[ScoreAllRow], repeat: int, latency: float
) -> str:
    return "\n".join(
        [
            HEADING,
            "",
            f"- Machine: {machine_line()}",
            f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Command: `{command_line()}`",
            f"- Heuristic: median of {repeat} samples per text; peer = one `re.findall` word "
            "scan of the same text.",
            f"- score_all: best of {repeat} runs; judge latency L = {latency * 1e3:g} ms; "
            "ideal = N * L / C; peer = `asyncio.Semaphore` + `gather` over the same Judge calls.",
            "",
            "### Heuristic suite",
            "",
            markdown_table(HEURISTIC_COLUMNS, [row.cells() for row in heuristic]),
            "",
            f"**{heuristic_verdict(heuristic)}**",
            "",
            "### Engine.score_all",
            "",
            markdown_table(SCORE_ALL_COLUMNS, [row.cells() for row in score_all]),
            "",
            f"**{score_all_verdict(score_all)}**",
        ]
    )


def write_results(heuristic: list[HeuristicRow], score_all: list[ScoreAllRow]) -> Path:
    """The medium response's heuristic time and the worst score_all against the ideal."""
    medium = next(row for row in heuristic if row.name == "medium")
    measures = [
        _report.Measure(
            measure="heuristic suite, medium response",
            unit="us",
            goml=medium.suite_us,
            peer=medium.peer_us,
            peer_name="one re.findall word scan",
            ratio=medium.ratio,
            target=f"<= {HEURISTIC_TARGET_US:g} us",
            passed=medium.suite_us <= HEURISTIC_TARGET_US,
        )
    ]
    engine_rows = [row for row in score_all if row.case.startswith("Engine")]
    if engine_rows:
        worst = max(engine_rows, key=lambda row: row.ratio)
        measures.append(
            _report.Measure(
                measure=f"worst {worst.case} wall time, N={worst.items}, C={worst.concurrency}",
                unit="ms",
                goml=worst.seconds * 1e3,
                peer=worst.ideal * 1e3,
                peer_name="ideal N*L/C",
                ratio=worst.ratio,
                target=f"<= {SCORE_ALL_TARGET}x",
                passed=worst.ratio <= SCORE_ALL_TARGET,
            )
        )
    return _report.write_results(
        "bench_scoring",
        title="Scoring",
        heading=HEADING.removeprefix("## "),
        machine=machine_line(),
        measures=measures,
    )


# -- command line ---------------------------------------------------------------------------------


def settings_arg(value: str) -> list[tuple[int, int]]:
    """argparse type: ``N:C[,N:C...]``."""
    pairs = []
    for item in value.split(","):
        items, _, concurrency = item.partition(":")
        try:
            pair = (positive_int(items), positive_int(concurrency))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(f"expected N:C pairs, got {item!r}") from exc
        pairs.append(pair)
    return pairs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=positive_int, default=5, help="samples/runs per case")
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="the fake judge's latency L (ms)"
    )
    parser.add_argument(
        "--settings",
        type=settings_arg,
        default=[(200, 8), (1000, 50), (2000, 100)],
        help="N:C pairs for score_all (default 200:8,1000:50,2000:100)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write/replace the results section in this file, and the key numbers in "
        "benchmarks/results/bench_scoring.json",
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
    if args.latency_ms <= 0:
        raise SystemExit("--latency-ms must be > 0")
    latency = args.latency_ms / 1e3
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(f"Machine: {machine_line()}")

    heuristic = measure_heuristic(args.repeat)
    console.print(
        _report.rich_table(
            f"score_heuristic: median us per call of {args.repeat} samples",
            HEURISTIC_COLUMNS,
            [row.cells() for row in heuristic],
        )
    )
    console.print(heuristic_verdict(heuristic))

    score_all = measure_score_all(
        args.settings, latency, args.repeat, backends(args.backend, console)
    )
    console.print(
        _report.rich_table(
            f"score_all, judge latency {args.latency_ms:g} ms: best of {args.repeat} runs",
            SCORE_ALL_COLUMNS,
            [row.cells() for row in score_all],
        )
    )
    console.print(score_all_verdict(score_all))

    if args.markdown is not None:
        section = markdown_section(heuristic, score_all, args.repeat, latency)
        _report.write_markdown(args.markdown, "bench_scoring", section, INTRO)
        console.print(f"wrote the results section of {args.markdown}")
        console.print(f"wrote {write_results(heuristic, score_all)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
