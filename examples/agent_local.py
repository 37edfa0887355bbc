"""Run the checkpoint-scoring agent with examples/agent.toml on a temporary checkpoint tree.

    python examples/agent_local.py                          # a stand-in server answers the probes
    python examples/agent_local.py --api-url http://127.0.0.1:8080/v1 --model my-model

What it does:

1. builds ``adapters-1b-demo/`` with two checkpoint files (0000100 and 0000200) in a temporary
   folder, where a training run would write its LoRA checkpoints;
2. loads ``examples/agent.toml`` and overrides only what differs here: ``adapter_base`` (the
   temporary tree), ``api_url`` and ``work_dir`` (a temporary folder, so nothing is written to
   ``~/.cache``);
3. runs a dry-run pass (lists what would be scored), a one-shot pass (scores the first
   unscored checkpoint with the 23 capability probes and publishes its points), and a second
   dry run, which shows that the scored checkpoint is now skipped.

The ``http`` backend sends the probes to ``api_url`` and does not load the adapter file, so the
checkpoint files here are placeholders. Without ``--api-url`` a
:class:`~goml_async.testing.FakeOpenAIServer` on a loopback port answers every probe with the
same sentence, so about one probe passes. In a real setup ``api_url`` is a server that serves
each checkpoint (or ``backend = "mlx"``/``"llama"`` with ``base_model`` loads the adapters
directly), and ``influx_url`` sends the points to InfluxDB instead of leaving them in the
write-ahead buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from goml_async.agent import Agent, AgentConfig, AgentEvent, AgentSummary
from goml_async.testing import FakeOpenAIServer, Script

CONFIG = Path(__file__).parent / "agent.toml"
#: Checkpoint files (relative to the adapter base) and their modification times: a point's
#: timestamp is its checkpoint's mtime, so fixed times give the same points on every run.
CHECKPOINTS = {
    "adapters-1b-demo/0000100_adapters.safetensors": 1_750_000_100,
    "adapters-1b-demo/0000200_adapters.safetensors": 1_750_000_200,
}
STAND_IN_REPLY = ["The", " answer", " is", " 21", "."]


def build_tree(root: Path) -> None:
    """A training run's output folder: checkpoint files and the adapter config beside them."""
    for relative, mtime in CHECKPOINTS.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder: the http backend does not read the adapter\n")
        os.utime(path, (mtime, mtime))
    (root / "adapters-1b-demo" / "adapter_config.json").write_text('{"rank": 8}\n')


@contextlib.contextmanager
def probe_server(api_url: str | None) -> Iterator[str]:
    """``api_url`` when given, else the base URL of a stand-in server started for this run."""
    if api_url is not None:
        yield api_url
        return
    with FakeOpenAIServer(Script(tokens=STAND_IN_REPLY, model="gemma-3-1b")) as server:
        yield server.base_url


def show(event: AgentEvent) -> None:
    """Print the agent's events, one line each (the probes as one line per 8)."""
    label = event.checkpoint.label if event.checkpoint is not None else ""
    if event.kind == "probe":
        if event.done % 8 == 0 or event.done == event.total:
            print(f"  probes {event.done}/{event.total}, {event.passed} passed")
    elif event.kind == "discovered":
        print(f"  discovered {event.total} checkpoints, {event.done} unscored")
    elif event.kind == "would_process":
        print(f"  would process {label}")
    elif event.kind in ("evaluating", "evaluated", "published", "failed", "warning"):
        print(f"  {event.kind} {label} {event.message}".rstrip())


async def one_pass(title: str, overrides: dict[str, object]) -> AgentSummary:
    print(f"== {title}")
    config = AgentConfig.load(CONFIG, **overrides)
    async with Agent(config, on_event=show) as agent:
        summary = await agent.run()
    print(
        f"  summary: {summary.evaluated} evaluated, {summary.buffered} buffered, "
        f"{summary.written} written, {len(summary.failed)} failed"
    )
    return summary


async def run(api_url: str, folder: Path, args: argparse.Namespace) -> int:
    work = folder / "work"
    overrides: dict[str, object] = {
        "adapter_base": str(folder / "checkpoints"),
        "api_url": api_url,
        "model": args.model,
        "work_dir": str(work),
        "inter_checkpoint_delay": 0,
        "capability_max_tokens": args.max_tokens,
    }
    await one_pass("dry run: what would be scored", {**overrides, "dry_run": True})
    scored = await one_pass("one-shot pass: score one checkpoint", {**overrides, "one_shot": True})
    await one_pass(
        "dry run again: the scored checkpoint is skipped", {**overrides, "dry_run": True}
    )

    # What InfluxDB would have received: line protocol, waiting in the write-ahead buffer.
    records = [json.loads(line) for line in (work / "influx_buffer.jsonl").read_text().splitlines()]
    lines = [line for record in records if "lines" in record for line in record["lines"]]
    print(f"write-ahead buffer: {len(records)} record(s), {len(lines)} points, e.g.")
    print(f"  {lines[0]}")
    return 1 if scored.failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", help="a real OpenAI-compatible server (default: a stand-in)")
    parser.add_argument("--model", default=None, help="model name sent to --api-url")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens per probe answer")
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="goml-agent-example-") as tmp:
        folder = Path(tmp)
        build_tree(folder / "checkpoints")
        with probe_server(args.api_url) as api_url:
            return asyncio.run(run(api_url, folder, args))


if __name__ == "__main__":
    raise SystemExit(main())
