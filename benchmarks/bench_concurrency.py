"""Concurrent streams on llama.cpp's slots: goml_async against the same llama-server read directly.

Everything is measured in one run, against llama-servers started here on the bundled model
(SmolLM2-135M-Instruct Q4_1, ``--parallel 8``, ``-t 2``, 2048 tokens of context per slot):

1. Aggregate decode tokens/s of N concurrent greedy streams (N = 1, 2, 4, 8; each its own
   prompt, exactly ``--tokens`` tokens with ``ignore_eos``): N ``LlamaModel.generate`` streams
   against N raw ``httpx`` SSE loops posting the same body to the same native ``/completions``
   route. Aggregate = all tokens over the wall time from the first request to the last token;
   medians of ``--repeat`` round-robin rounds, and the median of the round-by-round ratios
   (a run over the peer's run beside it, which cancels the machine's drift). Goals: goml/raw
   >= 0.85x at each N, goml at 8 streams >= 2x goml's single stream (where the machine caps
   both lower, the raw peer's own 8/1 ratio shows the cap).
2. Fairness at 8 streams: each stream's rate (its tokens after the first over the time from its
   first to its last token), slowest/fastest, median over the rounds. Goal >= 0.8.
3. The prompt cache: the time to first token of a chat's second turn whose first 1,000+ tokens
   (a long system prompt, the first question and its reply) were the first turn's, warm (the
   first turn ran just before) against cold (the same request with ``cache_prompt: false``).
   Goal: warm <= 0.25x cold. ``cached_tokens`` of the warm turn is checked.
4. ``goml serve --max-concurrency 8`` on the bundled model (its own llama-server, ``--parallel
   8``): C concurrent clients (1, 4, 8) streaming ``/v1/completions`` through it against the
   same clients on that llama-server directly. Goals: >= 0.98x for one client, >= 0.95x at 4
   and 8.

5. ``goml probe`` (``_concurrency_probe.py``): the 23 capability probes on the model ``goml
   probe`` loads by default (the bundled model, 4 slots), greedy, in turn (``-c 1``) against
   the model's slots at once: the wall times, the speed-up, and how many greedy replies are the
   same both ways (all 23 must be).

When ``benchmarks/_concurrency_mlx.py`` exists and mlx is installed it runs too (its table is
printed and recorded); otherwise the reason is printed. A report, not a test: it exits 0.

The parts are ``llama`` (1-4), ``mlx`` and ``probe`` (5); ``--only PART`` (repeatable) runs
those alone, ``--no-mlx`` skips MLX. With ``--markdown``, ``llama`` writes the section (with the
MLX table where MLX ran) and ``probe`` its own block after it; the results JSON keeps the
probe's numbers from an earlier run when this one has no probe part, and the rest when it has
no llama part.

Run: ``python benchmarks/bench_concurrency.py [--tokens N] [--repeat R] [--server
binary|launcher] [--backend asyncio|trio] [--only llama|mlx|probe] [--no-mlx] [--markdown
docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _concurrency_probe
import _report
import anyio
import httpx
from _concurrency_report import (
    COLUMNS,
    GOML,
    HEADING,
    PLOT,
    RAW,
    RESULTS,
    SIZES,
    THREADS,
    Burst,
    markdown_section,
    plot,
    rows,
    title,
    write_results,
)
from _concurrency_serve import PROMPTS, SLOT_CONTEXT, SLOTS, measure_serve
from _report import positive_int, rich_table
from bench_llama import (
    INTRO,
    RawReply,
    ServerChoice,
    build_info,
    choose_server,
    missing_prerequisite,
    raw_post,
    server_line,
)
from rich.console import Console

from goml_async import LoadConfig, bundled_model_path
from goml_async.backends._llama_wire import COMPLETION_PATH, completion_body
from goml_async.backends.llama import LlamaModel, start_llama_model
from goml_async.types import GenerateConfig


def stream_rate(first: float, last: float, count: int) -> float:
    return (count - 1) / (last - first) if count > 1 and last > first else 0.0


EXTRA: dict[str, Any] = {"ignore_eos": True}
#: What ``--only`` selects: the llama.cpp measures (1-4), the MLX half, goml probe (5).
PARTS = ("llama", "mlx", "probe")


async def goml_burst(model: LlamaModel, count: int, tokens: int) -> Burst:
    rates = [0.0] * count

    async def one(index: int) -> None:
        first = last = 0.0
        seen = 0
        stream = model.generate(PROMPTS[index], max_tokens=tokens, temperature=0, extra_body=EXTRA)
        async with stream:
            async for _token in stream:
                last = time.perf_counter()
                seen += 1
                first = first or last
        if seen != tokens:
            raise RuntimeError(f"goml stream {index}: {seen} of {tokens} tokens")
        rates[index] = stream_rate(first, last, seen)

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)
    return Burst(count * tokens, time.perf_counter() - start, tuple(rates))


def raw_body(prompt: str, tokens: int) -> dict[str, Any]:
    """goml's own body for ``generate(prompt, max_tokens=tokens, temperature=0)`` + ignore_eos,
    built here by hand (and checked against goml's once per run)."""
    return {
        "temperature": 0.0,
        "max_tokens": tokens,
        "return_tokens": True,
        "response_fields": ["stop", "stop_type", "timings", "tokens_predicted", "tokens_evaluated"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "prompt": prompt,
    }


async def raw_burst(client: httpx.AsyncClient, url: str, count: int, tokens: int) -> Burst:
    rates = [0.0] * count

    async def one(index: int) -> None:
        reply = RawReply()
        async with raw_post(client, url, raw_body(PROMPTS[index], tokens)) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    reply.take(json.loads(line[6:]))
        if reply.delivered != tokens:
            raise RuntimeError(f"raw stream {index}: {reply.delivered} of {tokens} tokens")
        rates[index] = stream_rate(reply.first, reply.last, reply.delivered)

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)
    return Burst(count * tokens, time.perf_counter() - start, tuple(rates))


# -- the prompt cache -----------------------------------------------------------------------------


def long_chat(salt: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A first turn with a 1,000+-token system prompt, and the second turn's messages before
    the first turn's reply (the caller inserts it)."""
    rules = "\n".join(
        f"Rule {n}: when a visitor asks about topic {n}, answer politely, briefly and in English."
        for n in range(1, 61)
    )
    system = {"role": "system", "content": f"Session {salt}. You are a helpful guide.\n{rules}"}
    first = [system, {"role": "user", "content": "What is the capital of France?"}]
    return first, [{"role": "user", "content": "And what is the capital of Germany?"}]


async def ttft(
    model: LlamaModel, messages: list[dict[str, str]], **options: Any
) -> tuple[float, Any]:
    start = time.perf_counter()
    stream = model.chat(messages, max_tokens=4, temperature=0, **options)
    async with stream:
        async for _token in stream:
            break
        first = time.perf_counter() - start
        async for _token in stream:
            pass
    return first, stream.metrics


async def measure_ttft(model: LlamaModel, repeat: int) -> dict[str, Any]:
    warm: list[float] = []
    cold: list[float] = []
    prefix = cached = 0
    for salt in range(repeat):
        first, follow = long_chat(salt)
        reply = await model.chat(first, max_tokens=16, temperature=0).collect()
        if reply.metrics is not None:
            prefix = reply.metrics.prompt_tokens
        turn = [*first, {"role": "assistant", "content": reply.text}, *follow]
        seconds, metrics = await ttft(model, turn)
        warm.append(seconds)
        cached = metrics.cached_tokens if metrics is not None else 0
        seconds, _ = await ttft(model, turn, extra_body={"cache_prompt": False})
        cold.append(seconds)
    if prefix < 1000 or cached < prefix:
        raise RuntimeError(f"the shared prefix is {prefix} tokens, {cached} of them cached")
    return {
        "prefix_tokens": prefix,
        "cached_tokens": cached,
        "warm": statistics.median(warm),
        "cold": statistics.median(cold),
    }


# -- the run --------------------------------------------------------------------------------------


def check_same_body(tokens: int) -> None:
    """The comparison is void if goml's request body differs from the peer's."""
    goml = completion_body("", PROMPTS[0], GenerateConfig(max_tokens=tokens, temperature=0), EXTRA)
    if goml != raw_body(PROMPTS[0], tokens):
        raise RuntimeError(f"goml sends {goml!r}, the raw peer {raw_body(PROMPTS[0], tokens)!r}")


async def run_llama(
    args: argparse.Namespace, choice: ServerChoice, console: Console
) -> dict[str, Any]:
    check_same_body(args.tokens)
    config = LoadConfig(context_len=SLOT_CONTEXT, parallel_slots=SLOTS)
    timeout = httpx.Timeout(300.0, connect=10.0)
    limits = httpx.Limits(max_connections=SLOTS + 2)
    async with (
        await start_llama_model(
            bundled_model_path(), config, threads=THREADS, **choice.options()
        ) as model,
        httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client,
    ):
        server = server_line(choice, await build_info(model))
        console.print(f"llama-server: {server} ({' '.join(model.server.command[7:])})")
        url = model.server.base_url + COMPLETION_PATH
        # Every slot once from each client before timing: the first requests on a fresh
        # server (connections, the slots' first prompts) are much slower than the rest.
        await goml_burst(model, SLOTS, args.tokens)
        await raw_burst(client, url, SLOTS, args.tokens)
        bursts: dict[int, dict[str, list[Burst]]] = {}
        for count in SIZES:
            console.print(f"{count} concurrent stream(s), {args.repeat} round(s) ...")

            def goml(n: int = count) -> Any:
                return goml_burst(model, n, args.tokens)

            def raw(n: int = count) -> Any:
                return raw_burst(client, url, n, args.tokens)

            bursts[count] = await _report.round_robin({GOML: goml, RAW: raw}, args.repeat)
        console.print("second-turn TTFT, warm and cold ...")
        cache = await measure_ttft(model, args.repeat)
        console.print("goml serve against its llama-server ...")
        serve = await measure_serve(client, args, console)
    return {"server": server, "bursts": bursts, "ttft": cache, "serve": serve}


def run_mlx(
    args: argparse.Namespace, parts: set[str], console: Console
) -> tuple[dict[str, Any] | None, str]:
    """The MLX half (``_concurrency_mlx.py``), or None and why it did not run."""
    if args.no_mlx:
        return None, "--no-mlx"
    if "mlx" not in parts:
        return None, "not selected with --only"
    if not (Path(__file__).parent / "_concurrency_mlx.py").exists():
        return None, "benchmarks/_concurrency_mlx.py is not there"
    if importlib.util.find_spec("mlx") is None or importlib.util.find_spec("mlx_lm") is None:
        return None, "mlx / mlx-lm are not installed"
    import _concurrency_mlx
    import bench_mlx

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    missing = bench_mlx.missing_mlx() or bench_mlx.missing_tiny()
    if missing is not None:
        return None, str(missing)
    console.print("MLX: concurrent streams on the tiny llama ...")
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-mlx-") as workdir:
        folder = bench_mlx.build_tiny(Path(workdir))
        results = anyio.run(
            _concurrency_mlx.run_all, folder, 128, args.repeat, backend=args.backend
        )
    return results, ""


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=positive_int, default=64, help="tokens per stream")
    parser.add_argument("--repeat", type=positive_int, default=3, help="rounds per measure")
    parser.add_argument("--server", choices=("binary", "launcher"), help="default: the binary")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run this part alone (repeatable; default: all of them)",
    )
    parser.add_argument("--no-mlx", action="store_true", help="skip the MLX half")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write this section of the file, benchmarks/results/bench_concurrency.json "
        "and docs/img/concurrency-llama.png",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or PARTS)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"Machine: {_report.machine_line(('anyio', 'httpx', 'goml_async'))}")
    choice = choose_server(args.server)
    missing = missing_prerequisite(choice)
    if missing is not None:
        console.print(f"[yellow]skipped: {missing}[/]")
        return 0
    results = None
    if "llama" in parts:
        results = anyio.run(run_llama, args, choice, console, backend=args.backend)
        console.print(rich_table(title(args), COLUMNS, rows(results)))
    mlx, why = run_mlx(args, parts, console)
    if mlx is None:
        console.print(f"MLX: skipped ({why})")
    else:
        import _concurrency_mlx

        console.print(
            rich_table("MLX: tiny llama", _concurrency_mlx.COLUMNS, _concurrency_mlx.rows(mlx))
        )
    probe = None
    if "probe" in parts:
        console.print(f"goml probe: {args.repeat} round(s) in turn and at once ...")
        probe = anyio.run(
            _concurrency_probe.measure_probe, args, choice, console, backend=args.backend
        )
        heading = _concurrency_probe.title(probe, args)
        table = _concurrency_probe.rows(probe)
        console.print(rich_table(heading, _concurrency_probe.COLUMNS, table))
    if args.markdown is not None:
        write(args, results, mlx, why, probe, console)
    return 0


def write(
    args: argparse.Namespace,
    results: dict[str, Any] | None,
    mlx: dict[str, Any] | None,
    why: str,
    probe: dict[str, Any] | None,
    console: Console,
) -> None:
    """The parts that ran into ``--markdown``, the results JSON and the plot."""
    path = RESULTS / "bench_concurrency.json"
    earlier = _concurrency_probe.saved(path)
    if results is not None:
        section = markdown_section(results, mlx, why, args)
        _report.write_markdown(args.markdown, "bench_concurrency", section, INTRO)
        console.print(f"wrote the results section of {args.markdown}")
        write_results(results, mlx)
        drawn = plot(results, mlx, PLOT)
        console.print(f"wrote {drawn}" if drawn else "no plot: matplotlib is not installed")
    elif mlx is not None:
        console.print("the MLX table goes into the llama part's section: printed only")
    if probe is not None:
        section = _concurrency_probe.markdown_section(probe, args)
        _report.write_markdown(args.markdown, _concurrency_probe.MARK, section, INTRO)
        console.print(f"wrote the goml probe block of {args.markdown}")
    if not path.exists():  # a first run with no llama part: a record of the probe alone
        _report.write_results(
            "bench_concurrency",
            title="concurrent streams",
            heading=HEADING.removeprefix("## "),
            machine=_report.machine_line(("anyio", "httpx", "goml_async")),
            measures=[],
        )
    _concurrency_probe.record(
        path, _concurrency_probe.recorded(probe) if probe is not None else earlier
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
