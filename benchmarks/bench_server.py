"""``goml serve`` against the same llama-server read directly, and requests/s of short replies.

Everything is measured in one run, on one machine, with the same client for both sides of each
ratio:

1. Streaming tokens/s. ONE llama-server (bundled SmolLM2-135M-Instruct Q4_1, ``-c 2048``,
   ``-t 2``) is started here; ``goml serve --model <that server>/v1`` runs as a subprocess in
   front of it (the HTTP backend, the very code path of the llama backend, which is a subclass
   of it). The same raw loop (``httpx`` ``aiter_lines`` + ``json.loads``) posts the same
   ``/v1/completions`` body (same prompt, ``max_tokens`` N, ``temperature`` 0, ``stream`` with
   ``include_usage``) to llama-server directly and through goml serve, round-robin for
   ``--repeat`` rounds after one untimed warm-up each. Greedy decoding makes both generate the
   same tokens, which is checked (count and text). tokens/s = tokens / time from request start
   to the last token; the ratio served/direct shows what the extra hop costs.
2. Requests/s of short non-streamed chat requests, ``--concurrency`` clients sending
   ``--requests`` requests per round:

   - goml serve on a ScriptedModel (a fixed 4-token reply, no model at all) against a bare
     Starlette endpoint returning the same fixed ``chat.completion`` JSON, both on uvicorn with
     the same settings in their own process: the ratio is the cost of goml's request handling
     (validation, limits, the TokenStream) over the framework's floor;
   - the real model (``max_tokens`` 1) through goml serve against llama-server directly.

The client, the servers and llama-server share the machine's cores, so on a small machine
every process takes CPU from the others. The script is a report, not a test: it exits 0.

Run: ``python benchmarks/bench_server.py [--tokens N] [--repeat R] [--requests Q]
[--concurrency C] [--server binary|launcher] [--markdown docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _report
import anyio
import httpx
from _report import command_line, markdown_table, positive_int, rich_table
from bench_llama import (
    ServerChoice,
    build_info,
    choose_server,
    missing_prerequisite,
    server_line,
)
from rich.console import Console
from rich.markup import escape

from goml_async import LoadConfig, bundled_model_path
from goml_async.backends.llama import start_llama_model

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time, in a small village by the sea, there lived"
CONTEXT_LEN = 2048
THREADS = 2
MESSAGES = [{"role": "user", "content": "Say hi."}]
LISTENING = re.compile(r"listening on (http://\S+)")
DIRECT = "llama-server direct"
SERVED = "through goml serve"
BARE = "bare Starlette endpoint"
SCRIPTED = "goml serve, ScriptedModel"
HEADING = "## OpenAI-compatible server (bench_server.py)"
INTRO = (
    "Every benchmark prints a ratio against a peer measured in the same run. "
    "Regenerate with `nox -s bench`."
)
STREAM_COLUMNS = ("path", "best tok/s", "median tok/s", "median TTFT ms", "ratio (median)")
RPS_COLUMNS = ("server", "best req/s", "median req/s", "wall ms/request", "ratio (median)")
REPLY = ["Hello", "!", " How", " are"]
JSON = {"content-type": "application/json"}

#: A server in its own process: goml serve on a ScriptedModel, or the bare Starlette peer. Both
#: print "listening on URL" once uvicorn accepts connections.
LAUNCHER = textwrap.dedent(
    """
    import sys

    MODE, REPLY = sys.argv[1], sys.argv[2:]

    if MODE == "goml":
        from goml_async.cli import main
        from goml_async.registry import register_backend
        from goml_async.testing import ScriptedModel

        class Scripted:
            name = "scripted"

            def available(self):
                return True

            async def load_model(self, path, config, **options):
                return ScriptedModel(REPLY)

        register_backend(Scripted())
        sys.exit(main(["serve", "--backend", "scripted", "--model", "bench", "--port", "0",
                       "--max-concurrency", "256"]))

    import json, socket, time, uuid
    import anyio, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request):
        await request.body()
        reply = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion",
            "created": int(time.time()), "model": "bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(REPLY)},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
        }
        body = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode()
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    # The TCP protocol number, as goml serve's socket: asyncio then sets TCP_NODELAY.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", http="h11", ws="none", log_config=None,
                            log_level="warning", access_log=False, proxy_headers=False)
    server = uvicorn.Server(config)

    async def announce():
        while not server.started:
            await anyio.sleep(0.02)
        print(f"listening on http://127.0.0.1:{port}", flush=True)

    async def run():
        async with anyio.create_task_group() as group:
            group.start_soon(announce)
            await server.serve(sockets=[sock])

    anyio.run(run)
    """
)


def machine_line() -> str:
    return _report.machine_line(("anyio", "httpx", "starlette", "uvicorn", "goml_async"))


# -- subprocess servers ---------------------------------------------------------------------------


@contextmanager
def served_process(
    command: Sequence[str], *, start_timeout: float = 60.0
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run a server that prints "listening on URL"; yield the URL and the process (for its
    children, say); SIGINT it afterwards, and kill it if it has not ended 30 s later."""
    env = {**os.environ, "NO_PROXY": "127.0.0.1"}
    env.pop("GOML_SERVER_API_KEY", None)
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + start_timeout
        while not (found := LISTENING.search(process.stdout.readline())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not start (exit {process.returncode})")
        yield found.group(1), process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@contextmanager
def subprocess_server(command: Sequence[str]) -> Iterator[str]:
    """:func:`served_process` for a caller that needs only the URL."""
    with served_process(command) as (url, _process):
        yield url


def goml_serve_command(model: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "goml_async",
        "serve",
        "--model",
        model,
        "--port",
        "0",
        "--max-concurrency",
        "256",
        "--model-name",
        "bench",
    ]


def launcher_command(mode: str) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, mode, *REPLY]


# -- streaming ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRun:
    tokens: int  # the server's own count (usage.completion_tokens)
    seconds: float  # request start to the last token
    ttft: float
    text: str

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / self.seconds


#: llama-server may close a kept-alive connection after a streamed reply; like goml's own client,
#: the raw loop retries a request that failed before any response arrived.
RETRIES = 2


async def post(client: httpx.AsyncClient, url: str, payload: bytes) -> httpx.Response:
    """POST (not streamed), retrying connection failures before a response."""
    for attempt in range(RETRIES + 1):
        try:
            return await client.post(url, content=payload, headers=JSON)
        except httpx.TransportError:
            if attempt == RETRIES:
                raise
    raise AssertionError("unreachable")


@asynccontextmanager
async def post_streaming(
    client: httpx.AsyncClient, url: str, payload: bytes
) -> AsyncIterator[httpx.Response]:
    """POST with a streamed response, retrying connection failures before a response."""
    for attempt in range(RETRIES + 1):
        try:
            response = await client.send(
                client.build_request("POST", url, content=payload, headers=JSON), stream=True
            )
        except httpx.TransportError:
            if attempt == RETRIES:
                raise
            continue
        try:
            response.raise_for_status()
            yield response
        finally:
            await response.aclose()
        return


def stream_body(count: int) -> dict[str, Any]:
    return {
        "prompt": PROMPT,
        "max_tokens": count,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def stream_once(client: httpx.AsyncClient, url: str, count: int) -> StreamRun:
    first = last = 0.0
    delivered = generated = 0
    text: list[str] = []
    payload = json.dumps(stream_body(count)).encode()
    start = time.perf_counter()
    async with post_streaming(client, url, payload) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if payload.get("usage"):
                generated = int(payload["usage"]["completion_tokens"])
            choices = payload.get("choices")
            if choices and choices[0].get("text"):
                last = time.perf_counter()
                delivered += 1
                text.append(choices[0]["text"])
                if delivered == 1:
                    first = last
    if not generated or not delivered:
        raise RuntimeError(f"{url}: no tokens or no usage in the reply")
    return StreamRun(generated, last - start, first - start, "".join(text))


@dataclass(frozen=True, slots=True)
class StreamSummary:
    name: str
    runs: list[StreamRun]

    @property
    def median(self) -> float:
        return statistics.median(run.tokens_per_sec for run in self.runs)

    def cells(self, peer: StreamSummary) -> tuple[str, ...]:
        return (
            self.name,
            f"{max(run.tokens_per_sec for run in self.runs):,.1f}",
            f"{self.median:,.1f}",
            f"{statistics.median(run.ttft for run in self.runs) * 1000:,.1f}",
            f"{self.median / peer.median:.3f}x",
        )


# -- requests per second --------------------------------------------------------------------------


def chat_body(max_tokens: int) -> dict[str, Any]:
    return {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0.0}


async def requests_per_sec(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], total: int, concurrency: int
) -> float:
    """``total`` POSTs from ``concurrency`` workers; every one must answer 200."""
    payload = json.dumps(body).encode()
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            response = await post(client, url, payload)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:200]}")

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)
    return total / (time.perf_counter() - start)


@dataclass(frozen=True, slots=True)
class RateSummary:
    name: str
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def cells(self, peer: RateSummary) -> tuple[str, ...]:
        return (
            self.name,
            f"{max(self.rates):,.1f}",
            f"{self.median:,.1f}",
            f"{1000 / self.median:,.2f}",
            f"{self.median / peer.median:.3f}x",
        )


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Results:
    server: str
    direct: StreamSummary
    served: StreamSummary
    bare: RateSummary
    scripted: RateSummary
    real_direct: RateSummary
    real_served: RateSummary


async def measure_rates(
    client: httpx.AsyncClient,
    urls: dict[str, str],
    max_tokens: int,
    args: argparse.Namespace,
) -> dict[str, RateSummary]:
    body = chat_body(max_tokens)
    cases = {
        name: (lambda url=url: requests_per_sec(client, url, body, args.requests, args.concurrency))
        for name, url in urls.items()
    }
    samples = await _report.round_robin(cases, args.repeat)
    return {name: RateSummary(name, rates) for name, rates in samples.items()}


async def run_all(args: argparse.Namespace, choice: ServerChoice, console: Console) -> Results:
    timeout = httpx.Timeout(120.0, connect=10.0)
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        console.print("requests/s: goml serve on a ScriptedModel against a bare Starlette app ...")
        with (
            subprocess_server(launcher_command("bare")) as bare_url,
            subprocess_server(launcher_command("goml")) as goml_url,
        ):
            floor = await measure_rates(
                client,
                {
                    BARE: f"{bare_url}/v1/chat/completions",
                    SCRIPTED: f"{goml_url}/v1/chat/completions",
                },
                0,
                args,
            )
        config = LoadConfig(context_len=CONTEXT_LEN)
        async with await start_llama_model(
            bundled_model_path(), config, threads=THREADS, **choice.options()
        ) as model:
            llama = model.server.base_url
            server = server_line(choice, await build_info(model))
            console.print(f"llama-server: {server} at {llama}")
            with subprocess_server(goml_serve_command(f"{llama}/v1")) as served_url:
                console.print(f"streaming: {args.repeat} round(s) of {args.tokens} tokens ...")
                samples = await _report.round_robin(
                    {
                        DIRECT: lambda: stream_once(client, f"{llama}/v1/completions", args.tokens),
                        SERVED: lambda: stream_once(
                            client, f"{served_url}/v1/completions", args.tokens
                        ),
                    },
                    args.repeat,
                )
                for direct_run, served_run in zip(samples[DIRECT], samples[SERVED], strict=True):
                    if (direct_run.tokens, direct_run.text) != (served_run.tokens, served_run.text):
                        raise RuntimeError(
                            f"greedy runs differ: {direct_run.tokens} tokens direct, "
                            f"{served_run.tokens} served, or their texts"
                        )
                console.print("requests/s: the real model, max_tokens 1 ...")
                real = await measure_rates(
                    client,
                    {
                        DIRECT: f"{llama}/v1/chat/completions",
                        SERVED: f"{served_url}/v1/chat/completions",
                    },
                    1,
                    args,
                )
    return Results(
        server,
        StreamSummary(DIRECT, samples[DIRECT]),
        StreamSummary(SERVED, samples[SERVED]),
        floor[BARE],
        floor[SCRIPTED],
        real[DIRECT],
        real[SERVED],
    )


# -- reporting ------------------------------------------------------------------------------------


def stream_rows(results: Results) -> list[tuple[str, ...]]:
    return [results.direct.cells(results.direct), results.served.cells(results.direct)]


def rate_rows(results: Results) -> list[tuple[str, ...]]:
    return [
        results.bare.cells(results.bare),
        results.scripted.cells(results.bare),
        results.real_direct.cells(results.real_direct),
        results.real_served.cells(results.real_direct),
    ]


def ratio_lines(results: Results) -> list[str]:
    tokens = results.direct.runs[0].tokens
    return [
        f"streaming {tokens} tokens: through goml serve / llama-server direct = "
        f"{results.served.median / results.direct.median:.3f}x median tokens/s",
        f"short requests, no model: goml serve (ScriptedModel) / bare Starlette = "
        f"{results.scripted.median / results.bare.median:.3f}x median requests/s",
        f"short requests, real model (max_tokens 1): through goml serve / llama-server direct = "
        f"{results.real_served.median / results.real_direct.median:.3f}x median requests/s",
    ]


def stream_title(args: argparse.Namespace) -> str:
    return f"streaming {args.tokens} tokens, greedy; median of {args.repeat} round-robin runs"


def rate_title(args: argparse.Namespace) -> str:
    return (
        f"short non-streamed chat requests: {args.requests} per round, {args.concurrency} "
        f"concurrent clients; median of {args.repeat} rounds"
    )


def markdown_section(results: Results, args: argparse.Namespace) -> str:
    parts = [
        HEADING,
        "",
        f"- Machine: {machine_line()}",
        f"- llama-server: {results.server}; bundled SmolLM2-135M-Instruct Q4_1, "
        f"-c {CONTEXT_LEN}, -t {THREADS}; goml serve runs as a subprocess in front of it "
        "(`--model <llama-server>/v1`)",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command_line()}`",
        "- One client for both sides of each ratio: a raw httpx loop. tok/s = tokens / time "
        "from request start to the last token; ratio = this row / the first row of its pair.",
        "",
        f"### {stream_title(args)}",
        "",
        markdown_table(STREAM_COLUMNS, stream_rows(results)),
        "",
        f"### {rate_title(args)}",
        "",
        markdown_table(RPS_COLUMNS, rate_rows(results)),
        "",
    ]
    parts += [f"- **{line}**" for line in ratio_lines(results)]
    return "\n".join(parts).rstrip()


def write_results(results: Results, args: argparse.Namespace) -> Path:
    """The three ratios of the section (no target is set for them), and the streaming rates."""

    def measure(name: str, unit: str, mine: float, theirs: float, peer: str) -> _report.Measure:
        return _report.Measure(name, unit, mine, theirs, peer, mine / theirs)

    measures = [
        measure(
            f"streaming {args.tokens} tokens through goml serve",
            "tokens/s",
            results.served.median,
            results.direct.median,
            DIRECT,
        ),
        measure(
            "short requests, no model (ScriptedModel)",
            "requests/s",
            results.scripted.median,
            results.bare.median,
            BARE,
        ),
        measure(
            "short requests, real model (max_tokens 1)",
            "requests/s",
            results.real_served.median,
            results.real_direct.median,
            DIRECT,
        ),
    ]
    throughput = [
        _report.Throughput(
            f"goml serve: streaming {args.tokens} tokens from llama-server",
            SERVED,
            {SERVED: results.served.median, DIRECT: results.direct.median},
        )
    ]
    return _report.write_results(
        "bench_server",
        title="OpenAI-compatible server",
        heading=HEADING.removeprefix("## "),
        machine=machine_line(),
        measures=measures,
        throughput=throughput,
    )


def print_results(console: Console, results: Results, args: argparse.Namespace) -> None:
    console.print(rich_table(stream_title(args), STREAM_COLUMNS, stream_rows(results)))
    console.print(rich_table(rate_title(args), RPS_COLUMNS, rate_rows(results)))
    for line in ratio_lines(results):
        console.print(line)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=positive_int, default=128, help="tokens per stream")
    parser.add_argument("--repeat", type=positive_int, default=5, help="rounds per measurement")
    parser.add_argument("--requests", type=positive_int, default=200, help="requests per round")
    parser.add_argument("--concurrency", type=positive_int, default=4, help="concurrent clients")
    parser.add_argument(
        "--server",
        choices=("binary", "launcher"),
        help="llama-server binary or xllamacpp launcher (default: the binary if one is built)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write/replace the results section in this file, and the key numbers in "
        "benchmarks/results/bench_server.json",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"Machine: {machine_line()}")
    choice = choose_server(args.server)
    missing = missing_prerequisite(choice)
    if missing is not None:
        console.print(f"[yellow]skipped: {escape(missing)}[/]")
        return 0
    results = anyio.run(run_all, args, choice, console)
    print_results(console, results, args)
    if args.markdown is not None:
        _report.write_markdown(
            args.markdown, "bench_server", markdown_section(results, args), INTRO
        )
        console.print(f"wrote the results section of {args.markdown}")
        console.print(f"wrote {write_results(results, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
