"""``goml agent`` (score training checkpoints as they appear) and ``goml expand``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from goml_async._concurrency import task_group
from goml_async._validate import integer
from goml_async.errors import ConfigError
from goml_async.settings import current_settings

from ._common import add_model_arguments, load_target, progress_bar

if TYPE_CHECKING:
    from goml_async.agent.config import AgentConfig
    from goml_async.agent.events import AgentEvent, AgentSummary
    from goml_async.agent.expand import ExpandRow, ExpandSummary, SeedPrompt

__all__ = ["add_parser", "run_agent", "run_expand"]

_AGENT_DESCRIPTION = """\
Find training checkpoints (adapters-*/…_adapters.safetensors) on a host over SSH, or in a local
folder, score each one not scored yet with the 23 capability probes (plus the judge and the
content probes when a judge is set), and publish the results to InfluxDB.

Settings come from flags, then GOML_AGENT_* environment variables (GOML_JUDGE_URL,
GOML_JUDGE_MODEL and GOML_INFLUX_TOKEN for the settings shared with the other commands), then
--config (TOML, keys at the top level or under [agent]), then defaults. Each pass scores the
first unscored checkpoint (all of them with --force) and the loop runs until stopped (Ctrl-C or
SIGTERM stop it cleanly); --one-shot stops after one pass, --dry-run only lists what a pass
would score.

Results go to a write-ahead buffer (work_dir/influx_buffer.jsonl) before InfluxDB, and the
scored checkpoints to work_dir/scored.json, so a crash, a full disk or an unreachable InfluxDB
loses nothing: the next pass replays what was not written. One agent at a time uses a work_dir
(a second one is refused, naming the first one's PID); without --work-dir each job (host,
adapter base, filter, model, InfluxDB target) gets its own folder under the user cache dir. The
Influx token is read from GOML_INFLUX_TOKEN or the config file, never from a flag.
"""
_AGENT_EPILOG = """\
examples:
  goml agent --adapter-base /data/lem --backend mlx --base-model models/gemma-3-1b --dry-run
  goml agent --config agent.toml --one-shot
  goml agent --host trainer --adapter-base /Volumes/Data/lem --backend http \\
             --api-url http://127.0.0.1:8090/v1 --influx-url http://127.0.0.1:8086 --influx-api v1
"""
_EXPAND_DESCRIPTION = """\
Generate a response for every seed prompt not done yet (temperature 0.7, up to 2048 tokens)
and append {id, domain, prompt, response, model, elapsed_seconds, chars} rows to
OUTPUT/expand-WORKER.jsonl. --prompts is a JSONL file of {"id", "prompt", "domain"} objects.
Prompts already in that file (or, with --influx-url, in Influx's expansion_gen) are skipped, so
a stopped run resumes where it left off.
"""
_EXPAND_EPILOG = """\
examples:
  goml expand --model http://127.0.0.1:8080/v1 --model-name m --prompts seeds.jsonl \\
              --worker w1 --output out/
  goml expand --prompts seeds.jsonl --worker w1 --output out/ --limit 5 --dry-run
"""

# (flag, AgentConfig field, type, help); every one defaults to None = "not given".
_AGENT_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--host", "host", str, "SSH host with the checkpoints (default: this machine)"),
    ("--user", "user", str, "SSH user (default: the current user)"),
    ("--port", "port", int, "SSH port (default: 22)"),
    ("--ssh-key", "ssh_key", Path, "SSH private key file"),
    ("--known-hosts", "known_hosts", Path, "known_hosts file (default: ~/.ssh/known_hosts)"),
    ("--adapter-base", "adapter_base", str, "folder holding the adapters-* directories"),
    ("--filter", "filter", str, "only directories named adapters-FILTER*"),
    ("--backend", "backend", str, "mlx, llama or http (default: llama)"),
    ("--base-model", "base_model", str, "MLX folder or GGUF the adapters load on, or 'default'"),
    ("--api-url", "api_url", str, "server scored by the http backend"),
    ("--model", "model", str, "model name sent to --api-url (default: the checkpoint's tag)"),
    ("--judge-url", "judge_url", str, "judge server (OpenAI-compatible base URL)"),
    ("--judge-model", "judge_model", str, "model name sent to the judge"),
    ("--system", "system", str, "system prompt sent before each probe"),
    ("--capability-max-tokens", "capability_max_tokens", int, "default: 500"),
    ("--content-max-tokens", "content_max_tokens", int, "default: 1000"),
    ("--influx-url", "influx_url", str, "InfluxDB base URL (default: buffer only)"),
    ("--influx-api", "influx_api", str, "v2 (default) or v1"),
    ("--influx-db", "influx_db", str, "database (v1) / default bucket (default: training)"),
    ("--influx-org", "influx_org", str, "v2 organisation"),
    ("--influx-bucket", "influx_bucket", str, "v2 bucket (default: --influx-db)"),
    ("--influx-query", "influx_query", str, "influxql (default) or sql (InfluxDB 3)"),
    ("--work-dir", "work_dir", Path, "adapter copies, buffer, state (default: one per job)"),
    ("--poll-interval", "poll_interval", float, "seconds between idle passes (default: 300)"),
    ("--inter-checkpoint-delay", "inter_checkpoint_delay", float, "default: 5"),
)
_AGENT_SWITCHES = (
    ("--one-shot", "one_shot", "stop after one pass"),
    ("--dry-run", "dry_run", "list what would be scored; score nothing"),
    ("--force", "force", "score every checkpoint again, all in the first pass"),
    (
        "--insecure-skip-host-key-check",
        "insecure_skip_host_key_check",
        "do NOT verify the host key",
    ),
)


def add_parser(commands: Any) -> None:
    """Add ``agent`` and ``expand`` to the ``goml`` subcommands."""
    agent: argparse.ArgumentParser = commands.add_parser(
        "agent",
        help="score training checkpoints as they appear and publish to InfluxDB",
        description=_AGENT_DESCRIPTION,
        epilog=_AGENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    agent.add_argument("-c", "--config", type=Path, help="TOML config file")
    for flag, name, kind, text in _AGENT_FLAGS:
        agent.add_argument(flag, dest=name, type=kind, help=text)
    for flag, name, text in _AGENT_SWITCHES:
        agent.add_argument(flag, dest=name, action="store_true", default=None, help=text)
    agent.add_argument(
        "--no-content-probes",
        dest="content_probes",
        action="store_false",
        default=None,
        help="skip the 6 content probes",
    )
    agent.add_argument("-v", "--verbose", action="store_true", help="log every probe and step")
    agent.set_defaults(run=run_agent)

    expand: argparse.ArgumentParser = commands.add_parser(
        "expand",
        help="generate responses for seed prompts, resumably",
        description=_EXPAND_DESCRIPTION,
        epilog=_EXPAND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(expand, server_model="--model-name")
    expand.add_argument("-p", "--prompts", type=Path, required=True, help="prompts JSONL file")
    expand.add_argument("-w", "--worker", required=True, help="this worker's name")
    expand.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    expand.add_argument("-n", "--limit", type=int, default=0, help="at most N prompts (0: all)")
    expand.add_argument("--max-tokens", type=int, default=2048, help="default: 2048")
    expand.add_argument("--dry-run", action="store_true", help="list what would be generated")
    expand.add_argument(
        "--influx-url", help="InfluxDB base URL for progress points (token: GOML_INFLUX_TOKEN)"
    )
    expand.add_argument("--influx-api", default="v2", choices=("v1", "v2"), help="default: v2")
    expand.add_argument("--influx-db", default="training", help="default: training")
    expand.add_argument("--influx-org", default="", help="v2 organisation")
    expand.add_argument("--influx-bucket", default="", help="v2 bucket (default: --influx-db)")
    expand.set_defaults(run=run_expand)


# -- goml agent -----------------------------------------------------------------------------------


def run_agent(args: argparse.Namespace) -> int:
    """Build the config from flags, env and file; run the agent until done or signalled."""
    from goml_async.agent.config import AgentConfig

    overrides = {name: getattr(args, name) for _, name, _, _ in _AGENT_FLAGS}
    overrides.update({name: getattr(args, name) for _, name, _ in _AGENT_SWITCHES})
    overrides["content_probes"] = args.content_probes
    err = Console(stderr=True, soft_wrap=True)
    with _logging_to(err, "goml agent", verbose=args.verbose):
        config = AgentConfig.load(args.config, **overrides)
        status: int = anyio.run(_agent, config, err, args.verbose)
    return status


@contextlib.contextmanager
def _logging_to(console: Console, prefix: str, *, verbose: bool) -> Iterator[None]:
    """Show goml_async's log records (warnings; with -v, info) while the command runs."""
    from rich.logging import RichHandler

    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_time=False, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{prefix}: %(levelname)s: %(message)s"))
    logger = logging.getLogger("goml_async")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _agent(config: AgentConfig, err: Console, verbose: bool) -> int:
    from goml_async.agent.loop import Agent

    out = Console(highlight=False, soft_wrap=True)
    display = _Display(err, out, verbose=verbose)
    stopped_by: list[str] = []
    summary: AgentSummary | None = None
    with display.live():
        agent = Agent(config, on_event=display.handle)
        async with agent, task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        stopped_by.append(signal.Signals(signum).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            summary = await agent.run()
            tg.cancel_scope.cancel()
    if stopped_by:
        err.print(f"goml agent: stopped by {stopped_by[0]}", highlight=False)
        return 0
    assert summary is not None
    err.print(
        f"goml agent: {summary.passes} passes, {summary.evaluated} evaluated, "
        f"{summary.written} written, {summary.buffered} buffered, {len(summary.failed)} failed",
        highlight=False,
    )
    return 1 if summary.failed else 0


class _Display:
    """The live view on a terminal; one plain line per step otherwise."""

    def __init__(self, err: Console, out: Console, *, verbose: bool) -> None:
        self._err, self._out, self._verbose = err, out, verbose
        # Shown through the live view, which itself runs only on a terminal.
        self._progress = progress_bar(err, label_width=30, only_on_terminal=False)
        self._task = self._progress.add_task("waiting", total=None)
        self._status = Text("starting")
        self._counts = {"evaluated": 0, "published": 0, "failed": 0}
        self._pass = 0
        self._pending = 0
        self._live: Live | None = None

    def live(self) -> contextlib.AbstractContextManager[object]:
        """The live view on a terminal; nothing otherwise (plain lines are printed instead)."""
        if not self._err.is_terminal:
            return contextlib.nullcontext()
        self._live = Live(
            Group(self._status, self._progress), console=self._err, refresh_per_second=4
        )
        return self._live

    def handle(self, event: AgentEvent) -> None:
        self._pass = event.pass_number or self._pass
        self._pending = event.pending or (0 if event.kind == "pass" else self._pending)
        checkpoint = event.checkpoint
        label = checkpoint.label if checkpoint is not None else ""
        line = ""
        if event.kind == "would_process" and checkpoint is not None:
            self._out.print(f"would process {label} ({checkpoint.remote_path})")
        elif event.kind == "discovered":
            line = f"pass {event.pass_number}: {event.total} checkpoints, {event.done} unscored"
        elif event.kind == "evaluating":
            self._progress.reset(self._task, total=event.total, description=label)
            line = f"evaluating {label}"
        elif event.kind == "probe":
            self._progress.update(self._task, completed=event.done)
            if self._verbose:
                line = f"{label}: probe {event.done}/{event.total} {event.message}"
        elif event.kind == "evaluated":
            self._counts["evaluated"] += 1
            line = (
                f"evaluated {label}: {event.passed}/{event.total} passed in {event.seconds:.1f} s"
            )
        elif event.kind == "published":
            self._counts["published"] += 1
            line = f"published {label} ({event.message}; {event.pending} pending)"
        elif event.kind == "failed":
            self._counts["failed"] += 1
            line = f"failed {label}: {event.message}"
        elif event.kind == "replayed":
            line = f"replayed {event.done} buffered records"
        elif event.kind == "idle":
            line = f"nothing to score; next pass in {event.message} s"
        self._status.plain = (
            f"pass {self._pass} | buffer pending {self._pending} | "
            + " ".join(f"{name} {count}" for name, count in self._counts.items())
            + (f"\n{line}" if line else "")
        )
        if line and self._live is None:
            self._err.print(line, highlight=False, markup=False)


# -- goml expand ----------------------------------------------------------------------------------


def run_expand(args: argparse.Namespace) -> int:
    """Generate responses for the seed prompts not done yet."""
    from goml_async.agent.expand import read_prompts

    integer("--limit", args.limit, minimum=0)
    integer("--max-tokens", args.max_tokens, minimum=1)
    if args.influx_url is not None and not args.influx_url.startswith(("http://", "https://")):
        raise ConfigError(
            "--influx-url", f"must start with http:// or https://, got {args.influx_url!r}"
        )
    prompts = read_prompts(args.prompts)
    with _logging_to(Console(stderr=True, soft_wrap=True), "goml expand", verbose=False):
        status: int = anyio.run(_expand, args, prompts)
    return status


async def _expand(args: argparse.Namespace, prompts: list[SeedPrompt]) -> int:
    from goml_async.agent.expand import EXPAND_CONFIG, expand_prompts, output_path
    from goml_async.agent.influx import InfluxSink

    err = Console(stderr=True, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    sink = None
    if args.influx_url:
        buffer = Path(args.output) / f"expand-{args.worker}.influx_buffer.jsonl"
        sink = InfluxSink(
            args.influx_url,
            api=args.influx_api,
            database=args.influx_db,
            org=args.influx_org,
            bucket=args.influx_bucket,
            token=current_settings().influx_token,
            buffer_path=buffer,
        )
    config = replace(EXPAND_CONFIG, max_tokens=args.max_tokens)
    try:
        if sink is not None:
            await sink.replay()
        # A dry run never generates, so it loads no model.
        model = None
        if not args.dry_run:
            model = await load_target(
                args.model, backend=args.backend, http_model=args.model_name, console=err
            )
        async with model or contextlib.nullcontext():

            def report(row: ExpandRow, summary: ExpandSummary) -> None:
                err.print(
                    f"{summary.generated}/{summary.target} {row.id}: {row.chars} chars "
                    f"in {row.elapsed_seconds:.1f} s",
                    highlight=False,
                )

            summary = await expand_prompts(
                model,
                prompts,
                worker=args.worker,
                output_dir=args.output,
                sink=sink,
                model_name=args.model_name or args.model,
                dry_run=args.dry_run,
                limit=args.limit,
                config=config,
                on_row=report,
            )
    finally:
        if sink is not None:
            await sink.aclose()
    if args.dry_run:
        for seed in summary.listed:
            out.print(f"would expand {seed.id} [{seed.domain}] {seed.prompt[:60]!r}", markup=False)
        out.print(
            f"{summary.target} to generate ({summary.skipped} of {summary.total} already done)"
        )
        return 0
    err.print(
        f"goml expand: {summary.generated} generated, {summary.skipped} skipped, "
        f"{len(summary.errors)} errors, {summary.buffered} buffered -> "
        f"{output_path(args.output, args.worker)}",
        highlight=False,
    )
    return 1 if summary.errors else 0
