"""Throughput and time to first token of goml_async's HTTP SSE client against its peers.

:class:`~goml_async.backends.http.HTTPModel` streams chat replies from OpenAI-compatible
servers. This script measures it against two peers in the same process and the same run, all
reading the same :class:`~goml_async.testing.FakeOpenAIServer` (a real loopback HTTP/1.1 SSE
server, no delays, every token the short text ``"tok"``, about 200 bytes of SSE per token):

* ``openai-python``: ``AsyncOpenAI(...).chat.completions.create(..., stream=True)`` iterated
  (asyncio only), the client most code uses today;
* ``raw httpx``: ``client.stream("POST", ...)`` + ``aiter_lines()`` + ``json.loads`` of each
  ``data:`` line, the least a Python SSE client can do with httpx;
* ``httpx bytes only`` (single stream, for reference): ``aiter_bytes()`` without any parsing,
  the ceiling that the server and the transport leave to every client.

Every client asks for the same reply (``stream_options.include_usage`` on, so the server sends
the same bytes to each), counts the content tokens it receives and must receive all of them.
goml and raw httpx use httpx; openai-python brings its own HTTP stack (httpx2 since openai 3).

Scenarios:

1. Single stream: tokens/s of one long stream (``--tokens``), best and median of ``--repeat``
   runs, the clients taking turns (round-robin) so that drift affects all alike. Each timed
   stream follows a short one by the same client, so its connection is open and its code warm.
2. Concurrent streams: ``--streams`` streams (256) at once on one event loop, each of
   ``--concurrent-tokens`` tokens. Each of the ``--concurrent-repeat`` runs per client uses a
   new client: a burst of short streams opens its connections, then two timed bursts follow,
   ``first`` and ``next`` (httpx 0.28's connection pool, httpcore 1.0.9, treats them very
   differently). Reported: total tokens/s over all streams, p50 and p99 time to first token
   (from just before each request is issued to its first content token, over all runs),
   connections opened during the timed bursts, and errors (a PoolTimeout counts as pool
   exhaustion).

Targets (the design's section 6 and the HTTP backend issue): goml >= 2x openai-python on a
single stream (the design aims at >= 10x), goml >= 0.6x raw httpx, 256 concurrent streams
without pool exhaustion, and goml >= 2x openai-python's total tokens/s with 256 streams.

The server runs on its own thread in this process: it shares the GIL with the clients, and on
a machine with few cores the CPU as well, so every client's time includes the server's share
per token (see the bytes-only row). The script is a report, not a test: it exits 0 whether the
targets are met or not.

Run: ``python benchmarks/bench_http.py [--tokens N] [--concurrent-tokens M] [--streams S]
[--repeat R] [--concurrent-repeat R] [--backend asyncio|trio|both]
[--markdown docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import _report
import anyio
import httpx
from _report import command_line, cpu_count, markdown_table, positive_int, rich_table
from rich.console import Console

from goml_async.backends.http import HTTPModel
from goml_async.testing import FakeOpenAIServer, Script

TOKEN_TEXT = "tok"
MODEL = "bench-model"
API_KEY = "bench-key"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Benchmark prompt"}]
WARMUP_TOKENS = 2_000
WARMUP_CONCURRENT_TOKENS = 8
ISSUE_RATIO = 2.0  # goml / openai-python, single stream and 256 streams (the issue)
DESIGN_RATIO = 10.0  # goml / openai-python, single stream (DESIGN.md section 6)
RAW_RATIO = 0.6  # goml / raw httpx, single stream
GOML = "goml HTTPModel"
OPENAI = "openai-python"
RAW = "raw httpx"
BYTES = "httpx bytes only"
# The timed bursts of the concurrent scenario, in order, on a pool whose connections were just
# opened by a burst of short streams.
PHASES = ("first", "next")
HEADING = "## HTTP SSE client (bench_http.py)"
INTRO = (
    "Every benchmark prints a ratio against a peer measured in the same run. "
    "Regenerate with `nox -s bench`."
)
SINGLE_COLUMNS = ("client", "best tok/s", "median tok/s", "us/token", "vs openai", "vs raw httpx")
CONCURRENT_COLUMNS = (
    "client",
    "burst",
    "best tok/s",
    "median tok/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "errors",
    "new conns",
    "vs openai",
)


# -- the clients ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One stream as its consumer saw it (``time.perf_counter`` seconds)."""

    tokens: int
    started: float
    first: float
    ended: float


class Peer(Protocol):
    """A client under test: reads one whole streamed chat reply per :meth:`consume`."""

    name: str

    async def consume(self) -> Outcome:
        """Request one streamed reply, read it to the end and count its content tokens."""
        ...

    async def aclose(self) -> None:
        """Close the client's connections."""
        ...


def machine_line() -> str:
    return _report.machine_line(
        ("anyio", "trio", "httpx", "httpcore", "openai", "httpx2", "httpcore2", "goml_async")
    )


def pool_limits(size: int) -> httpx.Limits:
    """The same connection pool for every httpx-based client: ``size`` kept-alive connections."""
    return httpx.Limits(max_connections=size, max_keepalive_connections=size)


def raw_body() -> bytes:
    """The request the raw httpx peers send: what the other clients send, minus defaults."""
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(body).encode()


class GomlPeer:
    """goml's :class:`HTTPModel`: ``async for token in model.chat(...)``."""

    name = GOML

    def __init__(self, base_url: str, pool: int) -> None:
        # max_concurrency sizes both the limiter and the httpx pool (kept-alive connections).
        self._model = HTTPModel(base_url, MODEL, api_key=API_KEY, max_concurrency=pool)

    async def consume(self) -> Outcome:
        started = time.perf_counter()
        first = 0.0
        count = 0
        # max_tokens=0: no client-side cap (GenerateConfig() would stop at 256 tokens).
        async for _token in self._model.chat(MESSAGES, max_tokens=0):
            if not count:
                first = time.perf_counter()
            count += 1
        return Outcome(count, started, first, time.perf_counter())

    async def aclose(self) -> None:
        await self._model.aclose()


class OpenAIPeer:
    """openai-python's ``AsyncOpenAI`` streaming chat completions (asyncio only)."""

    name = OPENAI

    def __init__(self, base_url: str, pool: int) -> None:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        # openai's own httpx client (httpx2 since openai 3; it reads httpx.Limits' fields) with
        # its own defaults, except the pool: the same as goml's instead of 1,000 connections
        # with 100 kept alive. Default retries (2) as for goml: neither retries here.
        limits: Any = pool_limits(pool)
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=API_KEY, http_client=DefaultAsyncHttpxClient(limits=limits)
        )
        self._messages: Any = MESSAGES  # openai wants its TypedDicts; these are the same dicts

    async def consume(self) -> Outcome:
        started = time.perf_counter()
        first = 0.0
        count = 0
        stream = await self._client.chat.completions.create(
            model=MODEL,
            messages=self._messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if not count:
                    first = time.perf_counter()
                count += 1
        return Outcome(count, started, first, time.perf_counter())

    async def aclose(self) -> None:
        await self._client.close()  # closes its http_client too


class RawHttpxPeer:
    """The plain loop: ``aiter_lines()`` and ``json.loads`` of every ``data:`` line."""

    name = RAW

    def __init__(self, base_url: str, pool: int) -> None:
        self._url = f"{base_url}/chat/completions"
        self._body = raw_body()
        self._client = httpx.AsyncClient(
            limits=pool_limits(pool),
            timeout=httpx.Timeout(None, connect=10.0, pool=None),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )

    async def consume(self) -> Outcome:
        started = time.perf_counter()
        first = 0.0
        count = 0
        async with self._client.stream("POST", self._url, content=self._body) as response:
            response.raise_for_status()
            # Read to the end of the body (past [DONE]) so the connection goes back to the pool.
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:]).get("choices")
                if choices and choices[0]["delta"].get("content"):
                    if not count:
                        first = time.perf_counter()
                    count += 1
        return Outcome(count, started, first, time.perf_counter())

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class SSESize:
    """The size of a streamed reply: ``fixed + per_token * tokens`` bytes."""

    fixed: float
    per_token: float

    def tokens(self, size: int) -> int:
        return round((size - self.fixed) / self.per_token)


class BytesPeer(RawHttpxPeer):
    """The ceiling: the same request, its body read with ``aiter_bytes()`` and not parsed.

    It counts bytes, not tokens; the calibrated :class:`SSESize` turns them into tokens."""

    name = BYTES

    def __init__(self, base_url: str, pool: int, size: SSESize) -> None:
        super().__init__(base_url, pool)
        self._size = size

    async def consume(self) -> Outcome:
        started = time.perf_counter()
        size = 0
        async with self._client.stream("POST", self._url, content=self._body) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        ended = time.perf_counter()
        return Outcome(self._size.tokens(size), started, ended, ended)


def openai_available() -> bool:
    return importlib.util.find_spec("openai") is not None


# -- measuring one stream at a time ---------------------------------------------------------------


@dataclass(slots=True)
class Samples:
    """tokens/s of one client over the repeats (and, for concurrent runs, what else was seen)."""

    name: str
    rates: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    new_connections: int = 0
    pool_errors: int = 0

    @property
    def best(self) -> float:
        return max(self.rates) if self.rates else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


async def timed(consume: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """Run one stream after a full collection (the collector stays on: allocation is a cost)."""
    gc.collect()
    return await consume()


def check(peer: Peer, outcome: Outcome, expected: int) -> None:
    if outcome.tokens != expected:
        raise RuntimeError(f"{peer.name}: received {outcome.tokens} of {expected} tokens")


def script(count: int) -> Script:
    return Script(tokens=[TOKEN_TEXT] * count, model=MODEL)


def set_tokens(server: FakeOpenAIServer, count: int) -> None:
    server.script = script(count)


async def measure_single(
    server: FakeOpenAIServer, peers: Sequence[Peer], count: int, repeat: int
) -> list[Samples]:
    """Every peer reads one ``count``-token stream per repeat, round-robin.

    Each timed stream follows a short one by the same client, so that its connection is open
    and its code warm (httpx drops connections idle for 5 s, as they are while others run)."""
    warmup, long = script(WARMUP_TOKENS), script(count)
    samples = {peer.name: Samples(peer.name) for peer in peers}
    for _ in range(repeat):
        for peer in peers:
            server.script = warmup
            check(peer, await peer.consume(), WARMUP_TOKENS)
            server.script = long
            outcome = await timed(peer.consume)
            check(peer, outcome, count)
            samples[peer.name].rates.append(count / (outcome.ended - outcome.started))
    return list(samples.values())


# -- measuring many streams at once ---------------------------------------------------------------


def is_pool_error(exc: BaseException) -> bool:
    """Whether ``exc`` or a cause is a PoolTimeout (httpx's or httpx2's): the pool ran dry."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "PoolTimeout":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe(exc: BaseException) -> str:
    cause = exc.__cause__
    return type(exc).__name__ + (f"({type(cause).__name__})" if cause is not None else "")


async def run_streams(peer: Peer, streams: int, expected: int, samples: Samples) -> float:
    """``streams`` streams released at once; returns the total tokens/s, records the rest."""
    outcomes: list[Outcome] = []
    release = anyio.Event()

    async def one() -> None:
        await release.wait()
        try:
            outcome = await peer.consume()
        except Exception as exc:  # counted and reported: one failed stream must not end the run
            samples.errors[describe(exc)] += 1
            samples.pool_errors += is_pool_error(exc)
            return
        if outcome.tokens != expected:
            samples.errors[f"short stream ({outcome.tokens} of {expected})"] += 1
        outcomes.append(outcome)

    gc.collect()
    async with anyio.create_task_group() as tg:
        for _ in range(streams):
            tg.start_soon(one)
        started = time.perf_counter()
        release.set()
    elapsed = time.perf_counter() - started
    samples.ttfts += [o.first - o.started for o in outcomes if o.tokens]
    return sum(o.tokens for o in outcomes) / elapsed


async def timed_burst(
    server: FakeOpenAIServer, peer: Peer, streams: int, count: int, row: Samples
) -> None:
    opened = server.connections_opened
    row.rates.append(await run_streams(peer, streams, count, row))
    row.new_connections += server.connections_opened - opened


async def measure_concurrent(
    server: FakeOpenAIServer,
    factories: Sequence[Callable[[], Peer]],
    streams: int,
    count: int,
    repeat: int,
) -> dict[str, list[Samples]]:
    """Per repeat and client, round-robin: a new client, a burst of short streams that opens
    its connections, then the timed bursts of :data:`PHASES` (``count`` tokens per stream)."""
    opening, long = script(WARMUP_CONCURRENT_TOKENS), script(count)
    samples: dict[str, dict[str, Samples]] = {phase: {} for phase in PHASES}
    for _ in range(repeat):
        for factory in factories:
            peer = factory()
            rows = {
                phase: samples[phase].setdefault(peer.name, Samples(peer.name)) for phase in PHASES
            }
            try:
                server.script = opening
                warmup = Samples(peer.name)
                await run_streams(peer, streams, WARMUP_CONCURRENT_TOKENS, warmup)
                first = rows[PHASES[0]]
                first.errors.update({f"warm-up: {k}": n for k, n in warmup.errors.items()})
                first.pool_errors += warmup.pool_errors
                server.script = long
                for phase in PHASES:
                    await timed_burst(server, peer, streams, count, rows[phase])
            finally:
                await peer.aclose()
    return {phase: list(rows.values()) for phase, rows in samples.items()}


# -- one backend ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    tokens: int
    concurrent_tokens: int
    streams: int
    repeat: int
    concurrent_repeat: int


@dataclass(frozen=True, slots=True)
class BackendResult:
    backend: str
    single: list[Samples]
    concurrent: dict[str, list[Samples]]  # by phase


async def calibrate(server: FakeOpenAIServer) -> SSESize:
    """The SSE body size of this server's replies, from two replies of different lengths."""
    sizes: list[int] = []
    async with httpx.AsyncClient(timeout=None) as client:
        for count in (WARMUP_TOKENS, 2 * WARMUP_TOKENS):
            set_tokens(server, count)
            response = await client.post(f"{server.base_url}/chat/completions", content=raw_body())
            sizes.append(len(response.content))
    per_token = (sizes[1] - sizes[0]) / WARMUP_TOKENS
    return SSESize(sizes[0] - per_token * WARMUP_TOKENS, per_token)


async def measure_backend(
    server: FakeOpenAIServer, backend: str, options: Options
) -> BackendResult:
    base_url, pool = server.base_url, options.streams
    size = await calibrate(server)
    factories: list[Callable[[], Peer]] = [partial(GomlPeer, base_url, pool)]
    if backend == "asyncio" and openai_available():
        factories.append(partial(OpenAIPeer, base_url, pool))
    factories.append(partial(RawHttpxPeer, base_url, pool))
    peers = [factory() for factory in factories]
    peers.append(BytesPeer(base_url, pool, size))
    try:
        single = await measure_single(server, peers, options.tokens, options.repeat)
    finally:
        for peer in peers:
            await peer.aclose()
    concurrent = await measure_concurrent(
        server, factories, options.streams, options.concurrent_tokens, options.concurrent_repeat
    )
    return BackendResult(backend, single, concurrent)


def run_backend(server: FakeOpenAIServer, backend: str, options: Options) -> BackendResult:
    return anyio.run(measure_backend, server, backend, options, backend=backend)


# -- verdicts -------------------------------------------------------------------------------------


def by_name(rows: Sequence[Samples], name: str) -> Samples | None:
    return next((row for row in rows if row.name == name), None)


def ratio(rows: Sequence[Samples], name: str, peer: str) -> float | None:
    """Median tokens/s of ``name`` over ``peer``'s, None when either is missing."""
    mine, theirs = by_name(rows, name), by_name(rows, peer)
    if mine is None or theirs is None or not theirs.median:
        return None
    return mine.median / theirs.median


def line(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}: {text}"


def concurrent_verdicts(result: BackendResult, streams: int) -> list[str]:
    tag = result.backend
    gomls = [row for rows in result.concurrent.values() if (row := by_name(rows, GOML))]
    errors = sum(sum(row.errors.values()) for row in gomls)
    pool = sum(row.pool_errors for row in gomls)
    lines = [
        line(
            errors == 0,
            f"[{tag}] {streams} concurrent goml streams: {pool} pool exhaustion error(s), "
            f"{errors} error(s) in all",
        )
    ]
    for phase, rows in result.concurrent.items():
        many = ratio(rows, GOML, OPENAI)
        if many is not None:
            lines.append(
                line(
                    many >= ISSUE_RATIO,
                    f"[{tag}] {streams} streams, {phase} burst: goml/openai-python total "
                    f"tokens/s = {many:.1f}x (target >= {ISSUE_RATIO:g}x)",
                )
            )
    return lines


def verdicts(results: Sequence[BackendResult], streams: int) -> list[str]:
    lines: list[str] = []
    for result in results:
        tag = result.backend
        single = ratio(result.single, GOML, OPENAI)
        if single is not None:
            design = "meets" if single >= DESIGN_RATIO else "misses"
            lines.append(
                line(
                    single >= ISSUE_RATIO,
                    f"[{tag}] single stream goml/openai-python = {single:.1f}x (target >= "
                    f"{ISSUE_RATIO:g}x; {design} the design's >= {DESIGN_RATIO:g}x)",
                )
            )
        raw = ratio(result.single, GOML, RAW)
        if raw is not None:
            lines.append(
                line(
                    raw >= RAW_RATIO,
                    f"[{tag}] single stream goml/raw httpx = {raw:.2f}x (target >= {RAW_RATIO}x)",
                )
            )
        lines += concurrent_verdicts(result, streams)
    if not any(by_name(result.single, OPENAI) for result in results):
        lines.append("SKIP: openai-python is not installed (or asyncio not run): no openai ratios")
    return lines


# -- reporting ------------------------------------------------------------------------------------


def notes(options: Options) -> list[str]:
    cores = cpu_count()
    crowded = (
        f" With nproc {cores}, it also competes with the client for CPU." if cores <= 2 else ""
    )
    return [
        "The server (FakeOpenAIServer) runs on its own thread in this process and shares the "
        "GIL with the clients: every client's time includes the server's share per token (the "
        f"'{BYTES}' row is that ceiling).{crowded}",
        f"Fair pools: goml HTTPModel(max_concurrency={options.streams}) holds up to "
        f"{options.streams} kept-alive httpx connections; AsyncOpenAI gets http_client="
        f"DefaultAsyncHttpxClient(limits=Limits(max_connections={options.streams}, "
        f"max_keepalive_connections={options.streams})) (its own HTTP stack, httpx2 in openai "
        "3, other settings default) and raw httpx the same limits; default retries (2) for goml "
        "and openai; every client asks for include_usage.",
        "Warm-ups: each timed single stream follows a short stream by the same client (httpx "
        "drops connections idle for 5 s, as they are while the other clients run). Each "
        "concurrent run uses a new client: a burst of "
        f"{WARMUP_CONCURRENT_TOKENS}-token streams opens its connections, then two timed bursts "
        "follow: 'first' and 'next'.",
        "The 'first' burst of the httpx clients lasts about httpx's 5 s keep-alive expiry: "
        "httpcore 1.0.9's pool spins reassigning idle connections to the queued requests until "
        "they expire (encode/httpcore#1035); openai-python's httpx2 pool does not.",
        "Ratios are of medians. TTFT: from just before a request is issued to its first "
        "content token, over all runs; 'new conns' counts connections opened during the timed "
        "runs (0: the pool was reused).",
    ]


def us_per_token(rate: float) -> str:
    return f"{1e6 / rate:.2f}" if rate else "-"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def single_cells(rows: Sequence[Samples], row: Samples) -> tuple[str, ...]:
    return (
        row.name,
        f"{row.best:,.0f}",
        f"{row.median:,.0f}",
        us_per_token(row.median),
        times(ratio(rows, row.name, OPENAI)),
        times(ratio(rows, row.name, RAW)),
    )


def concurrent_cells(rows: Sequence[Samples], row: Samples, phase: str) -> tuple[str, ...]:
    errors = ", ".join(f"{name} x{n}" for name, n in row.errors.items()) or "0"
    return (
        row.name,
        phase,
        f"{row.best:,.0f}",
        f"{row.median:,.0f}",
        f"{_report.percentile(row.ttfts, 50) * 1e3:,.1f}",
        f"{_report.percentile(row.ttfts, 99) * 1e3:,.1f}",
        errors,
        str(row.new_connections),
        times(ratio(rows, row.name, OPENAI)),
    )


def single_title(backend: str, options: Options) -> str:
    return (
        f"{backend}: one stream of {options.tokens:,} tokens, best/median of {options.repeat} runs"
    )


def concurrent_title(backend: str, options: Options) -> str:
    return (
        f"{backend}: {options.streams} concurrent streams of {options.concurrent_tokens:,} tokens, "
        f"total tokens/s, best/median of {options.concurrent_repeat} runs"
    )


def tables(result: BackendResult, options: Options) -> list[tuple[str, Sequence[str], list[Any]]]:
    """(title, columns, rows of cells) of both scenarios of one backend."""
    single = [single_cells(result.single, row) for row in result.single]
    concurrent = [
        concurrent_cells(rows, row, phase)
        for phase, rows in result.concurrent.items()
        for row in rows
    ]
    return [
        (single_title(result.backend, options), SINGLE_COLUMNS, single),
        (concurrent_title(result.backend, options), CONCURRENT_COLUMNS, concurrent),
    ]


def markdown_section(results: Sequence[BackendResult], options: Options) -> str:
    parts = [
        HEADING,
        "",
        f"- Machine: {machine_line()}",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command_line()}`",
        *(f"- {note}" for note in notes(options)),
    ]
    for result in results:
        for title, columns, rows in tables(result, options):
            parts += ["", f"### {title}", "", markdown_table(columns, rows)]
    parts += ["", *(f"- **{verdict}**" for verdict in verdicts(results, options.streams))]
    return "\n".join(parts)


def write_markdown(path: Path, section: str) -> None:
    """Create or replace this script's section in ``path``; everything outside it is kept."""
    _report.write_markdown(path, "bench_http", section, INTRO)


def medians(rows: Sequence[Samples], names: Sequence[str]) -> dict[str, float]:
    """Median tokens/s of the named clients that ran."""
    return {name: row.median for name in names if (row := by_name(rows, name)) is not None}


def result_measures(result: BackendResult, streams: int) -> list[_report.Measure]:
    """The summary rows of one event loop: the single-stream and concurrent ratios, errors."""
    tag = result.backend
    single_goml = by_name(result.single, GOML)
    measures: list[_report.Measure] = []
    for peer, target in ((OPENAI, DESIGN_RATIO), (RAW, RAW_RATIO)):
        theirs, value = by_name(result.single, peer), ratio(result.single, GOML, peer)
        if single_goml is None or theirs is None or value is None:
            continue
        measures.append(
            _report.Measure(
                measure=f"one stream ({tag})",
                unit="tokens/s",
                goml=single_goml.median,
                peer=theirs.median,
                peer_name=peer,
                ratio=value,
                target=f">= {target:g}x",
                passed=value >= target,
            )
        )
    for phase, rows in result.concurrent.items():
        mine, theirs = by_name(rows, GOML), by_name(rows, OPENAI)
        value = ratio(rows, GOML, OPENAI)
        if mine is None or theirs is None or value is None:
            continue
        measures.append(
            _report.Measure(
                measure=f"{streams} concurrent streams, {phase} burst, total ({tag})",
                unit="tokens/s",
                goml=mine.median,
                peer=theirs.median,
                peer_name=OPENAI,
                ratio=value,
                target=f">= {ISSUE_RATIO:g}x",
                passed=value >= ISSUE_RATIO,
            )
        )
    gomls = [row for rows in result.concurrent.values() if (row := by_name(rows, GOML))]
    errors = sum(sum(row.errors.values()) for row in gomls)
    measures.append(
        _report.Measure(
            measure=f"{streams} concurrent streams: errors, pool exhaustion included ({tag})",
            unit="errors",
            goml=errors,
            peer=None,
            peer_name="",
            ratio=None,
            target="0",
            passed=errors == 0,
        )
    )
    return measures


def write_results(results: Sequence[BackendResult], options: Options) -> Path:
    """The key ratios of every event loop, and asyncio's tokens/s for the plot."""
    measures = [m for result in results for m in result_measures(result, options.streams)]
    throughput = []
    for result in results:
        if result.backend != "asyncio":
            continue
        throughput.append(
            _report.Throughput(
                "HTTP client: one stream (asyncio)",
                GOML,
                medians(result.single, (GOML, OPENAI, RAW)),
            )
        )
        last = PHASES[-1]
        throughput.append(
            _report.Throughput(
                f"HTTP client: {options.streams} streams, total ({last} burst, asyncio)",
                GOML,
                medians(result.concurrent[last], (GOML, OPENAI, RAW)),
            )
        )
    return _report.write_results(
        "bench_http",
        title="HTTP SSE client",
        heading=HEADING.removeprefix("## "),
        machine=machine_line(),
        measures=measures,
        throughput=throughput,
    )


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--tokens", type=positive_int, default=20_000, help="tokens of the single stream"
    )
    parser.add_argument(
        "--concurrent-tokens",
        type=positive_int,
        default=200,
        help="tokens per concurrent stream",
    )
    parser.add_argument("--streams", type=positive_int, default=256, help="concurrent streams")
    parser.add_argument(
        "--repeat", type=positive_int, default=5, help="single-stream runs per client"
    )
    parser.add_argument(
        "--concurrent-repeat",
        type=positive_int,
        default=3,
        help="concurrent runs per client (each a new client and two timed bursts)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write/replace the results section in this file, and the key numbers in "
        "benchmarks/results/bench_http.json",
    )
    return parser.parse_args(argv)


def backends(choice: str, console: Console) -> list[str]:
    chosen = ["asyncio", "trio"] if choice == "both" else [choice]
    if "trio" in chosen and importlib.util.find_spec("trio") is None:
        console.print("[yellow]trio is not installed: skipping the trio backend[/]")
        chosen.remove("trio")
    if "asyncio" in chosen and not openai_available():
        console.print("[yellow]openai is not installed: no openai-python peer[/]")
    return chosen


def raise_fd_limit(needed: int) -> None:
    """Each loopback connection costs two descriptors here (client and server ends)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(
        args.tokens, args.concurrent_tokens, args.streams, args.repeat, args.concurrent_repeat
    )
    # Rich falls back to 80 columns when piped (nox, CI logs); the tables need a little more.
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.print(
        f"Machine: {machine_line()}",
        markup=False,
        highlight=False,
    )
    for note in notes(options):
        console.print(f"Note: {note}", markup=False, highlight=False)
    raise_fd_limit(8 * options.streams + 256)
    results: list[BackendResult] = []
    with FakeOpenAIServer() as server:
        for backend in backends(args.backend, console):
            result = run_backend(server, backend, options)
            results.append(result)
            for title, columns, rows in tables(result, options):
                console.print(rich_table(title, columns, rows))
    if not results:
        console.print("no backend to run")
        return 0
    for verdict in verdicts(results, options.streams):
        console.print(verdict, markup=False, highlight=False)
    if args.markdown is not None:
        write_markdown(args.markdown, markdown_section(results, options))
        console.print(f"wrote the results section of {args.markdown}")
        console.print(f"wrote {write_results(results, options)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
