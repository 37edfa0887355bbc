"""``goml serve`` on the bundled model against its own llama-server read directly, with C
concurrent clients: the goml serve part of ``bench_concurrency.py`` (which documents it)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _report
import anyio
import httpx
from bench_llama import raw_post
from bench_server import served_process
from rich.console import Console

from goml_async import bundled_model_path

SERVE_SIZES = (1, 4, 8)
SLOTS = 8
SLOT_CONTEXT = 2048
PROMPTS = tuple(
    f"Once upon a time, in {place}, there lived"
    for place in (
        "a small village by the sea",
        "a city of glass",
        "the mountains of the north",
        "a forest of silver trees",
        "a desert of red sand",
        "a castle on a cloud",
        "a harbour full of ships",
        "a valley of rivers",
    )
)


def serve_command(model: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "goml_async", "serve", "--model", str(model), "--port", "0"),
        *("--max-concurrency", str(SLOTS), "--context-len", str(SLOT_CONTEXT)),
        "--model-name",
        "bench",
    ]


def child_llama_url(parent: int) -> str:
    """The address of the llama-server that the process ``parent`` started."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"--port" in argv:
            port = argv[argv.index(b"--port") + 1].decode()
            return f"http://127.0.0.1:{port}"
    raise RuntimeError(f"no llama-server child of pid {parent}")


async def serve_burst(client: httpx.AsyncClient, url: str, count: int, tokens: int) -> float:
    """Aggregate tokens/s of ``count`` concurrent OpenAI ``/v1/completions`` streams.

    ``goml serve`` takes OpenAI's fields only (no ``ignore_eos``): the story openings run past
    ``tokens`` tokens at temperature 0, which is checked (the server's own count).
    """
    total = 0

    async def one(index: int) -> None:
        nonlocal total
        body = {"prompt": PROMPTS[index], "max_tokens": tokens, "temperature": 0.0}
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        async with raw_post(client, url, body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        total += int(usage["completion_tokens"])

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)
    seconds = time.perf_counter() - start
    if total != count * tokens:
        raise RuntimeError(f"{url}: {total} tokens from {count} stream(s) of {tokens}")
    return total / seconds


@contextmanager
def goml_serve() -> Iterator[tuple[str, str]]:
    """Run ``goml serve`` on the bundled model; yield its URL and its llama-server's."""
    # Its start includes the llama-server's: longer than bench_server's default.
    with served_process(serve_command(bundled_model_path()), start_timeout=120) as (url, process):
        yield url, child_llama_url(process.pid)


async def measure_serve(
    client: httpx.AsyncClient, args: argparse.Namespace, console: Console
) -> dict[int, dict[str, list[float]]]:
    """Aggregate tokens/s of each round by client count, through goml serve and direct."""
    results: dict[int, dict[str, list[float]]] = {}
    with goml_serve() as (served, direct):
        console.print(f"goml serve at {served}, its llama-server at {direct}")
        for count in SERVE_SIZES:

            def case(url: str, clients: int = count) -> Any:
                return lambda: serve_burst(client, f"{url}/v1/completions", clients, args.tokens)

            samples = await _report.round_robin(
                {"direct": case(direct), "served": case(served)}, args.repeat
            )
            results[count] = {name: list(values) for name, values in samples.items()}
    return results
