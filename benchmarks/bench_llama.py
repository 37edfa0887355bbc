"""goml_async's llama.cpp backend against reading llama-server's SSE directly, on one server.

:class:`~goml_async.backends.llama.LlamaModel` streams from a llama-server process that it owns,
through the HTTP backend. This script starts ONE such server on the bundled model
(SmolLM2-135M-Instruct Q4_1, ``LoadConfig(context_len=2048)``, 2 threads) and measures, in the
same run and against the same server:

1. Streaming tokens/s. goml's ``model.generate(prompt, max_tokens=N, temperature=0,
   extra_body={"ignore_eos": True})`` against the peer, a plain ``httpx.AsyncClient.stream`` +
   ``aiter_lines`` + ``json.loads`` loop posting the same body (same prompt, same sampling
   fields, ``stream: true``, ``ignore_eos``, ``return_tokens``) to the same route, llama.cpp's
   native ``/completions`` (which streams every token with its ID). ``ignore_eos``
   makes every run generate exactly N tokens, which is checked (the server's own count, the
   tokens the client received and ``finish_reason == "length"``). The two alternate round-robin
   (the order flips every round) for ``--repeat`` rounds after one untimed warm-up each (the
   connections and the server's prompt cache). Tokens/s is N over the wall time from just
   before the request to the N-th token; TTFT is the time to the first token. Both read the same
   server, so its decode speed dominates and the ratio goml/raw shows the client's overhead.
   Target (docs DESIGN.md section 6): goml >= 0.97x raw, on the medians (as the other
   benchmarks). The server's decode speed moves by several per cent from one run to the next
   on a busy machine, more than the target's margin, so the report adds two views that cancel
   it: the median ratio of the paired runs of each round, and each run's tokens/s over the
   server's own decode tokens/s (``timings.predicted_per_second``), with the client's CPU time
   per token (this process's, so the CPU it takes from the server on a small machine shows).
2. Cancellation latency "from break to idle slot". A long generation (1000 tokens, ignore_eos)
   is left with ``break`` after 5 tokens inside ``async with stream:``; then ``GET /slots`` is
   polled every ~2 ms until no slot ``is_processing``. The raw peer closes its httpx response
   after 5 tokens instead. Median and p90 over ``--trials`` trials each, alternating.
   Target: < 100 ms median for goml.

The server shares the machine's cores with the client: on a 2-core machine with the server on
2 threads, every client's CPU time per token is taken from the server's decode. The script is a
report, not a test: it exits 0 whether the targets are met or not.

Run: ``python benchmarks/bench_llama.py [--tokens N] [--repeat R] [--trials T]
[--server binary|launcher] [--backend asyncio|trio] [--markdown docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import _report
import anyio
import httpx
from _report import command_line, markdown_table, positive_int, rich_table
from rich.console import Console
from rich.markup import escape

from goml_async import GenerateConfig, LoadConfig, ModelLoadError, bundled_model_path
from goml_async.backends._llama_wire import COMPLETION_PATH, completion_body
from goml_async.backends.llama import LlamaModel, start_llama_model
from goml_async.backends.llama_server import INSTALL_HINT, cached_llama_server
from goml_async.settings import GomlSettings

TARGET_RATIO = 0.97
TARGET_CANCEL_MS = 100.0
PROMPT = "Once upon a time, in a small village by the sea, there lived"
CONTEXT_LEN = 2048
THREADS = 2
EXTRA_BODY: dict[str, Any] = {"ignore_eos": True}
CANCEL_MAX_TOKENS = 1000
BREAK_AFTER = 5
POLL_SECONDS = 0.002  # between two GET /slots
RAW_RETRIES = 2  # like goml's default max_retries
IDLE_TIMEOUT = 10.0  # seconds a slot may stay busy after a break before the trial fails
GOML = "goml model.generate"
RAW = "raw httpx SSE"
HEADING = "## llama.cpp backend (bench_llama.py)"
INTRO = (
    "Every benchmark prints a ratio against a peer measured in the same run. "
    "Regenerate with `nox -s bench`."
)
STREAM_COLUMNS = (
    "client",
    "best tok/s",
    "median tok/s",
    "best TTFT ms",
    "median TTFT ms",
    "server tok/s",
    "vs server",
    "CPU us/token",
    "ratio (best)",
    "ratio (median)",
)
CANCEL_COLUMNS = ("client", "median ms", "p90 ms", "max ms", "closed, median ms")


# -- the server -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerChoice:
    """Which llama-server runs: a binary (its path) or the xllamacpp launcher."""

    kind: str
    binary: Path | None = None

    def options(self) -> dict[str, Any]:
        """start_llama_model's keywords for this choice."""
        if self.binary is not None:
            return {"binary": str(self.binary)}
        return {"use_launcher": True}


def machine_line() -> str:
    return _report.machine_line(("anyio", "trio", "httpx", "goml_async"))


def find_binary() -> Path | None:
    """The llama-server binary LlamaServer would pick: GOML_LLAMA_SERVER, PATH, then the cache."""
    found = GomlSettings().llama_server or shutil.which("llama-server") or cached_llama_server()
    return Path(found) if found else None


def choose_server(requested: str | None) -> ServerChoice:
    """The binary unless the launcher is asked for (or no binary was built, by default)."""
    if requested == "launcher":
        return ServerChoice("launcher")
    binary = find_binary()
    if binary is not None:
        return ServerChoice("binary", binary)
    if requested == "binary":
        raise SystemExit(
            "no llama-server binary (GOML_LLAMA_SERVER, PATH or the cache of "
            "scripts/build-llama-server); run with --server launcher instead"
        )
    return ServerChoice("launcher")


def missing_prerequisite(choice: ServerChoice) -> str | None:
    """Why the benchmark cannot run here (it says so and exits 0), or None when it can."""
    try:
        bundled_model_path()
    except ModelLoadError as exc:
        return str(exc)
    if choice.binary is None and importlib.util.find_spec("xllamacpp") is None:
        return f"no llama-server binary and no xllamacpp launcher (install: {INSTALL_HINT})"
    return None


def binary_version(binary: Path) -> str:
    """The ``version:`` line of ``llama-server --version`` (it prints it on stderr)."""
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"version unknown ({exc})"
    for line in (done.stderr + done.stdout).splitlines():
        if line.startswith("version:"):
            return line.strip()
    return "version unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def build_info(model: LlamaModel) -> str:
    """llama.cpp's ``build_info`` from ``GET /props``."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        response = await client.get(model.server.base_url + "/props")
    try:
        return str(response.json().get("build_info", "?"))
    except (json.JSONDecodeError, AttributeError):
        return "?"


def server_line(choice: ServerChoice, build: str) -> str:
    if choice.binary is not None:
        return f"llama-server binary {choice.binary} ({binary_version(choice.binary)}, {build})"
    return f"xllamacpp launcher (xllamacpp {package_version('xllamacpp')}, {build})"


# -- one streamed reply ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRun:
    """One timed reply of exactly N tokens."""

    tokens: int
    seconds: float  # request start to the N-th token
    ttft: float  # request start to the first token
    server_tps: float  # the server's own decode speed (timings.predicted_per_second)
    cpu: float  # this process's CPU seconds for the whole reply (the client's own cost)

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu / self.tokens * 1e6

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds

    @property
    def efficiency(self) -> float:
        """Tokens/s seen by the client over the server's own decode tokens/s in the same run:
        immune to the server's speed changing from run to run (not to CPU taken from it)."""
        return self.tokens_per_sec / self.server_tps if self.server_tps else 0.0


def raw_body(max_tokens: int) -> dict[str, Any]:
    """What goml sends for ``generate(PROMPT, max_tokens=..., temperature=0)`` + ignore_eos."""
    return {
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "return_tokens": True,
        "response_fields": ["stop", "stop_type", "timings", "tokens_predicted", "tokens_evaluated"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "prompt": PROMPT,
    }


def check_same_body(count: int) -> None:
    """Fail loudly if goml's request body differs from the peer's (the comparison is void)."""
    config = GenerateConfig(max_tokens=count, temperature=0.0)
    goml = completion_body("", PROMPT, config, EXTRA_BODY)
    if goml != raw_body(count):
        raise RuntimeError(f"goml sends {goml!r}, the raw peer {raw_body(count)!r}")


def check_run(client: str, delivered: int, generated: int, finish: str | None, count: int) -> None:
    """Every run must generate, and deliver, exactly ``count`` tokens."""
    if delivered != count or generated != count or finish != "length":
        raise RuntimeError(
            f"{client}: the server generated {generated} token(s), {delivered} reached the "
            f"client, finish_reason {finish!r}; expected exactly {count} (ignore_eos)"
        )


async def goml_stream(model: LlamaModel, count: int) -> StreamRun:
    first = last = 0.0
    delivered = 0
    cpu = time.process_time()
    start = time.perf_counter()
    stream = model.generate(PROMPT, max_tokens=count, temperature=0, extra_body=EXTRA_BODY)
    async with stream:
        async for _ in stream:
            last = time.perf_counter()
            delivered += 1
            if delivered == 1:
                first = last
    cpu = time.process_time() - cpu
    metrics = stream.metrics
    generated = metrics.generated_tokens if metrics is not None else 0
    check_run(GOML, delivered, generated, stream.finish_reason, count)
    server_tps = metrics.decode_tokens_per_sec if metrics is not None else 0.0
    return StreamRun(delivered, last - start, first - start, server_tps, cpu)


@dataclass(slots=True)
class RawReply:
    """What the raw loop keeps of one reply besides the timing."""

    delivered: int = 0
    first: float = 0.0
    last: float = 0.0
    finish: str | None = None
    generated: int = 0
    server_tps: float = 0.0

    def take(self, payload: dict[str, Any]) -> bool:
        """Record one chunk of llama.cpp's native stream; True when it carried a token."""
        timings = payload.get("timings")
        if timings:
            self.server_tps = float(timings.get("predicted_per_second", 0.0))
        if payload.get("stop") is True:
            self.generated = int(payload.get("tokens_predicted", 0))
            self.finish = "length" if payload.get("stop_type") == "limit" else "stop"
        if not payload.get("tokens"):
            return False
        self.last = time.perf_counter()
        self.delivered += 1
        if self.delivered == 1:
            self.first = self.last
        return True


@asynccontextmanager
async def raw_post(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> AsyncIterator[httpx.Response]:
    """``client.stream("POST", url, json=body)``, retried when the kept-alive connection was
    closed by the server just as the request went out (llama-server closes connections idle for
    5 s, httpx keeps them 5 s too); goml's client retries such failures as well."""
    for attempt in range(RAW_RETRIES + 1):
        request = client.build_request("POST", url, json=body)
        try:
            response = await client.send(request, stream=True)
        except httpx.RemoteProtocolError:
            if attempt == RAW_RETRIES:
                raise
            continue
        try:
            response.raise_for_status()
            yield response
        finally:
            await response.aclose()
        return


async def raw_stream(client: httpx.AsyncClient, url: str, count: int) -> StreamRun:
    reply = RawReply()
    body = raw_body(count)
    cpu = time.process_time()
    start = time.perf_counter()
    async with raw_post(client, url, body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                reply.take(json.loads(line[6:]))
    cpu = time.process_time() - cpu
    check_run(RAW, reply.delivered, reply.generated, reply.finish, count)
    elapsed, ttft = reply.last - start, reply.first - start
    return StreamRun(reply.delivered, elapsed, ttft, reply.server_tps, cpu)


# -- cancellation ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelRun:
    """One break after BREAK_AFTER tokens, in milliseconds from the break."""

    closed_ms: float  # the stream (or response) is closed: control is back in the caller
    idle_ms: float  # GET /slots shows no slot processing


async def busy_slots(poller: httpx.AsyncClient, url: str) -> int:
    response = await poller.get(url)
    response.raise_for_status()
    return sum(1 for slot in response.json() if slot.get("is_processing"))


async def wait_idle(poller: httpx.AsyncClient, url: str) -> float:
    """Poll ``/slots`` every ~2 ms until no slot is processing; return when that was seen."""
    deadline = time.perf_counter() + IDLE_TIMEOUT
    while await busy_slots(poller, url):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"a slot was still processing {IDLE_TIMEOUT:g} s after the break")
        await anyio.sleep(POLL_SECONDS)
    return time.perf_counter()


def cancel_run(client: str, delivered: int, broke: float, closed: float, idle: float) -> CancelRun:
    if delivered != BREAK_AFTER:
        raise RuntimeError(f"{client}: the stream ended after {delivered} token(s) before break")
    return CancelRun((closed - broke) * 1000, (idle - broke) * 1000)


async def goml_cancel(model: LlamaModel, poller: httpx.AsyncClient, slots: str) -> CancelRun:
    delivered = 0
    broke = 0.0
    stream = model.generate(
        PROMPT, max_tokens=CANCEL_MAX_TOKENS, temperature=0, extra_body=EXTRA_BODY
    )
    async with stream:
        async for _ in stream:
            delivered += 1
            if delivered == BREAK_AFTER:
                broke = time.perf_counter()
                break
    closed = time.perf_counter()
    return cancel_run(GOML, delivered, broke, closed, await wait_idle(poller, slots))


async def raw_cancel(
    client: httpx.AsyncClient, url: str, poller: httpx.AsyncClient, slots: str
) -> CancelRun:
    reply = RawReply()
    broke = 0.0
    body = raw_body(CANCEL_MAX_TOKENS)
    async with raw_post(client, url, body) as response:
        lines_iterator = cast("AsyncGenerator[str, None]", response.aiter_lines())
        async with aclosing(lines_iterator) as lines:
            async for line in lines:
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if reply.take(json.loads(line[6:])) and reply.delivered == BREAK_AFTER:
                    broke = time.perf_counter()
                    break
    closed = time.perf_counter()
    return cancel_run(RAW, reply.delivered, broke, closed, await wait_idle(poller, slots))


# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSummary:
    name: str
    runs: list[StreamRun]

    @property
    def best(self) -> float:
        return max(run.tokens_per_sec for run in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(run.tokens_per_sec for run in self.runs)

    @property
    def efficiency(self) -> float:
        return statistics.median(run.efficiency for run in self.runs)

    def cells(self, peer: StreamSummary) -> tuple[str, ...]:
        ttfts = [run.ttft * 1000 for run in self.runs]
        return (
            self.name,
            f"{self.best:,.1f}",
            f"{self.median:,.1f}",
            f"{min(ttfts):,.1f}",
            f"{statistics.median(ttfts):,.1f}",
            f"{statistics.median(run.server_tps for run in self.runs):,.1f}",
            f"{self.efficiency:.3f}",
            f"{statistics.median(run.cpu_us_per_token for run in self.runs):,.0f}",
            f"{self.best / peer.best:.3f}x",
            f"{self.median / peer.median:.3f}x",
        )


def paired_ratio(goml: StreamSummary, raw: StreamSummary) -> float:
    """Median over the rounds of goml/raw tokens/s, each round's two runs side by side."""
    pairs = zip(goml.runs, raw.runs, strict=True)
    return statistics.median(mine.tokens_per_sec / theirs.tokens_per_sec for mine, theirs in pairs)


@dataclass(frozen=True, slots=True)
class CancelSummary:
    name: str
    runs: list[CancelRun]

    @property
    def median(self) -> float:
        return statistics.median(run.idle_ms for run in self.runs)

    @property
    def p90(self) -> float:
        return _report.percentile([run.idle_ms for run in self.runs], 90)

    def cells(self) -> tuple[str, ...]:
        return (
            self.name,
            f"{self.median:,.1f}",
            f"{self.p90:,.1f}",
            f"{max(run.idle_ms for run in self.runs):,.1f}",
            f"{statistics.median(run.closed_ms for run in self.runs):,.2f}",
        )


@dataclass(frozen=True, slots=True)
class Results:
    server: str
    startup_seconds: float
    goml: StreamSummary
    raw: StreamSummary
    cancel: list[CancelSummary]


async def measure_streaming(
    model: LlamaModel, client: httpx.AsyncClient, count: int, repeat: int
) -> tuple[StreamSummary, StreamSummary]:
    url = model.server.base_url + COMPLETION_PATH
    samples = await _report.round_robin(
        {GOML: lambda: goml_stream(model, count), RAW: lambda: raw_stream(client, url, count)},
        repeat,
    )
    return StreamSummary(GOML, samples[GOML]), StreamSummary(RAW, samples[RAW])


async def measure_cancel(
    model: LlamaModel, client: httpx.AsyncClient, poller: httpx.AsyncClient, trials: int
) -> list[CancelSummary]:
    url = model.server.base_url + COMPLETION_PATH
    slots = model.server.base_url + "/slots"
    await wait_idle(poller, slots)
    samples = await _report.round_robin(
        {
            GOML: lambda: goml_cancel(model, poller, slots),
            RAW: lambda: raw_cancel(client, url, poller, slots),
        },
        trials,
    )
    return [CancelSummary(name, runs) for name, runs in samples.items()]


async def run_all(args: argparse.Namespace, choice: ServerChoice, console: Console) -> Results:
    check_same_body(args.tokens)
    started = time.perf_counter()
    config = LoadConfig(context_len=CONTEXT_LEN)
    async with await start_llama_model(
        bundled_model_path(), config, threads=THREADS, **choice.options()
    ) as model:
        startup = time.perf_counter() - started
        server = server_line(choice, await build_info(model))
        console.print(f"Server: {server}, ready in {startup:.2f} s at {model.server.base_url}")
        timeout = httpx.Timeout(None, connect=10.0)
        async with (
            httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
            httpx.AsyncClient(timeout=timeout, trust_env=False) as poller,
        ):
            console.print(f"streaming: {args.repeat} round(s) of {args.tokens} tokens ...")
            goml, raw = await measure_streaming(model, client, args.tokens, args.repeat)
            console.print(f"cancellation: {args.trials} trial(s) per client ...")
            cancel = await measure_cancel(model, client, poller, args.trials)
    return Results(server, startup, goml, raw, cancel)


# -- reporting ------------------------------------------------------------------------------------


def verdict(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}: {text}"


def stream_verdict(goml: StreamSummary, raw: StreamSummary) -> str:
    ratio = goml.median / raw.median
    return verdict(
        ratio >= TARGET_RATIO,
        f"streaming goml/raw httpx = {ratio:.3f}x median tokens/s (best runs "
        f"{goml.best / raw.best:.3f}x, paired rounds {paired_ratio(goml, raw):.3f}x, "
        f"server-normalised {goml.efficiency / raw.efficiency:.3f}x); target >= {TARGET_RATIO}x",
    )


def cancel_verdict(goml: CancelSummary, raw: CancelSummary) -> str:
    return verdict(
        goml.median < TARGET_CANCEL_MS,
        f"break to idle slot, goml median {goml.median:.1f} ms (p90 {goml.p90:.1f} ms; raw "
        f"httpx median {raw.median:.1f} ms); target < {TARGET_CANCEL_MS:g} ms median",
    )


def verdicts(results: Results) -> list[str]:
    goml_cancel, raw_cancel = results.cancel
    return [
        stream_verdict(results.goml, results.raw),
        cancel_verdict(goml_cancel, raw_cancel),
    ]


def stream_rows(results: Results) -> list[tuple[str, ...]]:
    return [results.goml.cells(results.raw), results.raw.cells(results.raw)]


def stream_title(args: argparse.Namespace) -> str:
    return (
        f"{args.backend}: streaming {args.tokens} tokens (ignore_eos), best/median of "
        f"{args.repeat} round-robin runs"
    )


def cancel_title(args: argparse.Namespace) -> str:
    return (
        f"{args.backend}: break to idle slot, {args.trials} trials (break after {BREAK_AFTER} "
        f"of {CANCEL_MAX_TOKENS} tokens)"
    )


def markdown_section(results: Results, args: argparse.Namespace) -> str:
    parts = [
        HEADING,
        "",
        f"- Machine: {machine_line()}",
        f"- Server: {results.server}; bundled SmolLM2-135M-Instruct Q4_1, -c {CONTEXT_LEN}, "
        f"-t {THREADS}; one server for the whole run",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command_line()}`",
        "- tok/s = tokens / time from request start to the last token; ratio = goml / raw "
        "httpx (the target applies to the medians); server tok/s = llama.cpp's own decode "
        "timings; vs server = the client's tok/s over the server's decode tok/s in the same run, "
        "which cancels the server's run-to-run speed changes; CPU = this process's CPU time per "
        "token. Medians unless marked best.",
        f"- Cancellation: ms from `break` until `GET /slots` (polled every "
        f"{POLL_SECONDS * 1000:g} ms) shows no slot processing; closed = from `break` until "
        "control is back after leaving `async with stream` (raw: the response).",
        "",
        f"### {stream_title(args)}",
        "",
        markdown_table(STREAM_COLUMNS, stream_rows(results)),
        "",
        f"### {cancel_title(args)}",
        "",
        markdown_table(CANCEL_COLUMNS, [summary.cells() for summary in results.cancel]),
        "",
    ]
    parts += [f"- **{line}**" for line in verdicts(results)]
    return "\n".join(parts).rstrip()


def write_markdown(path: Path, section: str) -> None:
    """Create or replace this script's section in ``path``; everything outside it is kept."""
    _report.write_markdown(path, "bench_llama", section, INTRO)


def write_results(results: Results, args: argparse.Namespace) -> Path:
    """The streaming ratio and the break-to-idle latency, and both clients' tokens/s."""
    goml_cancel, raw_cancel = results.cancel
    stream_ratio = results.goml.median / results.raw.median
    measures = [
        _report.Measure(
            measure=f"streaming {args.tokens} tokens ({args.backend})",
            unit="tokens/s",
            goml=results.goml.median,
            peer=results.raw.median,
            peer_name=RAW,
            ratio=stream_ratio,
            target=f">= {TARGET_RATIO}x",
            passed=stream_ratio >= TARGET_RATIO,
        ),
        _report.Measure(
            measure="break to idle slot, median",
            unit="ms",
            goml=goml_cancel.median,
            peer=raw_cancel.median,
            peer_name=RAW,
            ratio=goml_cancel.median / raw_cancel.median if raw_cancel.median else None,
            target=f"< {TARGET_CANCEL_MS:g} ms",
            passed=goml_cancel.median < TARGET_CANCEL_MS,
        ),
    ]
    throughput = [
        _report.Throughput(
            f"llama backend: {args.tokens} tokens from llama-server ({args.backend})",
            GOML,
            {GOML: results.goml.median, RAW: results.raw.median},
        )
    ]
    return _report.write_results(
        "bench_llama",
        title="llama.cpp backend",
        heading=HEADING.removeprefix("## "),
        machine=machine_line(),
        measures=measures,
        throughput=throughput,
    )


def print_results(console: Console, results: Results, args: argparse.Namespace) -> None:
    console.print(rich_table(stream_title(args), STREAM_COLUMNS, stream_rows(results)))
    cancel_rows = [summary.cells() for summary in results.cancel]
    console.print(rich_table(cancel_title(args), CANCEL_COLUMNS, cancel_rows))
    for line in verdicts(results):
        console.print(line)


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=positive_int, default=128, help="tokens per reply")
    parser.add_argument("--repeat", type=positive_int, default=5, help="streaming rounds")
    parser.add_argument("--trials", type=positive_int, default=20, help="cancellation trials")
    parser.add_argument(
        "--server",
        choices=("binary", "launcher"),
        help="llama-server binary or xllamacpp launcher (default: the binary if one is built)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write/replace the results section in this file, and the key numbers in "
        "benchmarks/results/bench_llama.json",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Rich falls back to 80 columns when piped (nox, CI logs); the tables need a little more.
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"Machine: {machine_line()}")
    choice = choose_server(args.server)
    missing = missing_prerequisite(choice)
    if missing is not None:
        console.print(f"[yellow]skipped: {escape(missing)}[/]")
        return 0
    results = anyio.run(run_all, args, choice, console, backend=args.backend)
    print_results(console, results, args)
    if args.markdown is not None:
        write_markdown(args.markdown, markdown_section(results, args))
        console.print(f"wrote the results section of {args.markdown}")
        console.print(f"wrote {write_results(results, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
