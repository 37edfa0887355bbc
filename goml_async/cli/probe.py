"""``goml probe``: run the 23 capability probes against a model and print a table per category."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

from goml_async._validate import integer
from goml_async.errors import ConfigError
from goml_async.model import TextModel, parallel_slots
from goml_async.scoring.judge import DEFAULT_JUDGE_MAX_TOKENS, Judge
from goml_async.scoring.types import ContentOutcome, ContentProbeResult, ProbeOutcome, ProbeResult
from goml_async.types import GenerateConfig

from ._common import add_model_arguments, describe_target, load_target, progress_bar
from ._judging import (
    Stop,
    check_judge,
    check_judge_max_tokens,
    judge_label,
    judge_warning,
    say,
    stop_on_signals,
)

__all__ = ["add_parser", "probe_report", "run"]

_DESCRIPTION = f"""\
Ask a model the 23 capability probes (arithmetic, algebra, logic, code, ...) and grade each
answer locally with the probe's own check. Prints passed/total per category and overall.

--model takes the bundled default ("default", the default), a .gguf file, an MLX folder or the
base URL of an OpenAI-compatible server. With --judge, every answer is also scored 0-10 for
reasoning, correctness and clarity by a judge model; "--judge same" uses the model under test.
Each judge reply is capped at --judge-max-tokens (default {DEFAULT_JUDGE_MAX_TOKENS}).
When most judge replies are not valid JSON for the rubric, a closing line says so: the judge
is too small to follow it, use a larger one.
With --content, the 6 content probes run too (scored only when a judge is given).
Probes run as many at once as the model decodes together (its parallel slots: 4 on a managed
llama-server, 8 on MLX); -c sets another count, -c 1 runs them in turn. The last line gives
the wall time.

Ctrl-C (SIGINT) or SIGTERM stops the run: the probes that finished are still printed and
written to --output, marked "partial" with the ids of the missing ones; the exit status is
130 (SIGINT) or 143 (SIGTERM).
"""
_EPILOG = """\
examples:
  goml probe                                              the bundled model, graded locally
  goml probe --model http://127.0.0.1:8080/v1 --output probes.json
  goml probe --system "You are a helpful assistant." --judge same --content
  goml probe --model models/m.gguf --judge http://127.0.0.1:11434/v1 --judge-model qwen3:8b
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "probe",
        help="run the capability probes against a model",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, server_model="--model-name")
    parser.add_argument("--judge", help="judge: 'same', 'default', a path or a server URL")
    parser.add_argument("--judge-model", default="", help="model name sent to a judge URL")
    parser.add_argument(
        "--judge-max-tokens",
        type=int,
        help=f"cap each judge reply (default: {DEFAULT_JUDGE_MAX_TOKENS}; 0 for no cap)",
    )
    parser.add_argument("--system", default="", help="system message sent before each probe")
    parser.add_argument("--content", action="store_true", help="also run the 6 content probes")
    parser.add_argument("-n", "--max-tokens", type=int, default=500, help="default: 500")
    parser.add_argument("-t", "--temperature", type=float, default=0.1, help="default: 0.1")
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        help="probes at once (default: as many as the model decodes together; 1 = in turn)",
    )
    parser.add_argument("-o", "--output", type=Path, help="write every answer and grade as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Everything that can be checked without a model is checked before one loads.
    if args.concurrency is not None:
        integer("--concurrency", args.concurrency, minimum=1)
    check_judge(args.judge, allow_same=True)
    check_judge_max_tokens(args.judge_max_tokens)
    # Every prompt afresh, as CAPABILITY_CONFIG: a score must not depend on the probes' order.
    config = GenerateConfig(
        max_tokens=args.max_tokens, temperature=args.temperature, prompt_cache=False
    )
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError("--output", f"folder {args.output.parent} does not exist")
    status: int = anyio.run(_probe, args, config)
    return status


@dataclass(slots=True)
class _Finished:
    """The probes that have finished so far, whether or not the run gets to the end."""

    capability: dict[str, ProbeOutcome] = field(default_factory=dict)
    content: dict[str, ContentOutcome] = field(default_factory=dict)
    #: How many probes ran at once, and since when (for the wall time printed at the end).
    concurrency: int = 1
    started: float = 0.0


async def _probe(args: argparse.Namespace, config: GenerateConfig) -> int:
    err = Console(stderr=True)
    finished = _Finished()
    judge: Judge | None = None
    async with stop_on_signals() as stop:
        async with contextlib.AsyncExitStack() as models:
            with stop.scope:
                model = await load_target(
                    args.model, backend=args.backend, http_model=args.model_name, console=err
                )
                models.push_async_callback(model.aclose)
                judge_model: TextModel | None = None
                if args.judge == "same":
                    judge_model = model
                elif args.judge:
                    judge_model = await load_target(
                        args.judge, http_model=args.judge_model, console=err
                    )
                    models.push_async_callback(judge_model.aclose)
                if judge_model is not None:
                    judge = Judge(judge_model, max_tokens=args.judge_max_tokens)
                await _run_probes(model, judge, args, config, finished, err)
        # The models are closed; a second signal is ignored until this block ends.
        return _report(args, finished, judge, stop, err)


async def _run_probes(
    model: TextModel,
    judge: Judge | None,
    args: argparse.Namespace,
    config: GenerateConfig,
    finished: _Finished,
    err: Console,
) -> None:
    """Run the probes, filling ``finished`` as each one ends (a signal may stop it early)."""
    from goml_async.scoring.probes import CAPABILITY_PROBES
    from goml_async.scoring.runner import CONTENT_CONFIG, run_capability_probes, run_content_probes

    concurrency = args.concurrency if args.concurrency is not None else parallel_slots(model)
    finished.concurrency, finished.started = concurrency, time.perf_counter()
    with progress_bar(err) as progress:
        task = progress.add_task("probes", total=len(CAPABILITY_PROBES))

        def advance(outcome: ProbeOutcome, passed: int, done: int) -> None:
            finished.capability[outcome.probe_id] = outcome
            mark = "pass" if outcome.passed else ("error" if outcome.error else "fail")
            progress.update(task, completed=done, description=f"{outcome.probe_id} {mark}")
            if not err.is_terminal:
                err.print(f"{outcome.probe_id}: {mark} ({passed}/{done})", highlight=False)

        await run_capability_probes(
            model,
            judge=judge,
            config=config,
            system=args.system or None,
            concurrency=concurrency,
            on_probe=advance,
        )
    if args.content:

        def keep(outcome: ContentOutcome) -> None:
            finished.content[outcome.probe_id] = outcome
            if not err.is_terminal:
                err.print(f"{outcome.probe_id}: done", highlight=False)

        await run_content_probes(
            model,
            judge=judge,
            config=CONTENT_CONFIG,
            system=args.system or None,
            concurrency=concurrency,
            on_probe=keep,
        )


def _report(
    args: argparse.Namespace, finished: _Finished, judge: Judge | None, stop: Stop, err: Console
) -> int:
    """Print the tables and write --output for what finished; the exit status."""
    from goml_async.scoring.io import write_text_atomic
    from goml_async.scoring.probes import CAPABILITY_PROBES, CONTENT_PROBES
    from goml_async.scoring.runner import probe_result

    result = probe_result(
        finished.capability[p.id] for p in CAPABILITY_PROBES if p.id in finished.capability
    )
    content: ContentProbeResult | None = None
    missing = [p.id for p in CAPABILITY_PROBES if p.id not in finished.capability]
    if args.content:
        content = ContentProbeResult(
            [finished.content[p.id] for p in CONTENT_PROBES if p.id in finished.content]
        )
        missing += [p.id for p in CONTENT_PROBES if p.id not in finished.content]
    label = describe_target(args.model)
    if result.outcomes:
        Console().print(_category_table(result, label, partial=bool(stop.signal)))
    if content is not None and content.outcomes:
        Console().print(_content_table(content))
    if finished.started:
        done = len(result.outcomes) + (len(content.outcomes) if content is not None else 0)
        seconds = time.perf_counter() - finished.started
        err.print(
            f"{done} probes in {seconds:.1f} s, {finished.concurrency} at once", highlight=False
        )
    judge_spec = args.model if args.judge == "same" else args.judge
    if judge is not None and (warning := judge_warning(judge, judge_label(judge_spec, judge))):
        say(err, f"goml probe: {warning}", style="yellow")
    if stop.signal is not None:
        done = len(result.outcomes) + (len(content.outcomes) if content is not None else 0)
        what = f"{done} of {done + len(missing)} probes finished, {len(missing)} missing"
        if args.output is None:
            say(err, f"goml probe: stopped by {stop.signal.name}: {what}")
        elif not done:
            say(
                err,
                f"goml probe: stopped by {stop.signal.name} before any probe finished; "
                f"{args.output} not written",
            )
        else:
            partial = {
                "interrupted_by": stop.signal.name,
                "finished": done,
                "total": done + len(missing),
                "missing": missing,
            }
            report = probe_report(result, content, model=label, judge=judge, partial=partial)
            write_text_atomic(args.output, json.dumps(report, indent=2) + "\n")
            say(
                err,
                f"goml probe: stopped by {stop.signal.name}: wrote a PARTIAL {args.output} "
                f"({what})",
            )
        return stop.exit_status
    if args.output is not None:
        report = probe_report(result, content, model=label, judge=judge)
        write_text_atomic(args.output, json.dumps(report, indent=2) + "\n")
        err.print(f"wrote {args.output}", highlight=False)
    if result.error_count:
        first = next(outcome for outcome in result.outcomes if outcome.error)
        err.print(f"[yellow]{result.error_count} probes failed to generate; first: {first.error}")
    # Every probe failing to generate means the model could not be used at all.
    return 1 if result.error_count == result.total else 0


def _category_table(result: ProbeResult, label: str, *, partial: bool = False) -> Table:
    title = f"capability probes: {label}"
    table = Table(title=f"{title} (partial: {result.total} finished)" if partial else title)
    table.add_column("category")
    table.add_column("passed", justify="right")
    table.add_column("total", justify="right")
    table.add_column("accuracy", justify="right")
    for category, (passed, total) in result.by_category.items():
        table.add_row(category, str(passed), str(total), f"{100 * passed / total:.0f}%")
    table.add_section()
    table.add_row("all", str(result.passed), str(result.total), f"{100 * result.accuracy:.1f}%")
    return table


def _content_table(content: ContentProbeResult) -> Table:
    table = Table(title="content probes")
    table.add_column("probe")
    table.add_column("scores (1-5)")
    table.add_column("answer", overflow="ellipsis", max_width=60, no_wrap=True)
    for outcome in content.outcomes:
        if outcome.scores is not None:
            scores = outcome.scores.model_dump(exclude={"notes"})
            shown = " ".join(f"{name[:5]}={value}" for name, value in scores.items())
        else:
            shown = outcome.error or outcome.judge_error or "not judged"
        table.add_row(outcome.probe_id, shown, outcome.response.replace("\n", " "))
    return table


def probe_report(
    result: ProbeResult,
    content: ContentProbeResult | None = None,
    *,
    model: str = "",
    judge: Judge | None = None,
    partial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON written by ``--output``: totals, per-category counts and every answer.

    ``judge`` adds what the judge saw (its cap and how many replies could not be used);
    ``partial`` (for a run a signal stopped) says so, with what is missing.
    """
    report: dict[str, Any] = {
        "model": model,
        "accuracy": round(100 * result.accuracy, 2),
        "passed": result.passed,
        "total": result.total,
        "errors": result.error_count,
        "by_category": {
            category: {"passed": passed, "total": total}
            for category, (passed, total) in result.by_category.items()
        },
        "probes": [
            {
                "id": o.probe_id,
                "domain": o.domain,
                "category": o.category,
                "answer": o.answer,
                "response": o.response,
                "passed": o.passed,
                "error": o.error,
                "judged": o.judged.model_dump() if o.judged is not None else None,
                "judge_error": o.judge_error,
                "judge_reply": o.judge_reply,
            }
            for o in result.outcomes
        ],
    }
    if judge is not None:
        stats = judge.stats
        report["judge"] = {
            "model": judge.model_name,
            "max_tokens": judge.max_tokens,
            "replies": stats.replies,
            "unusable": stats.unusable,
            "capped": stats.capped,
            "failed": stats.failed,
        }
    if partial is not None:
        report["partial"] = partial
    if content is not None:
        report["content"] = [
            {
                "id": o.probe_id,
                "response": o.response,
                "error": o.error,
                "scores": o.scores.model_dump() if o.scores is not None else None,
                "judge_error": o.judge_error,
                "judge_reply": o.judge_reply,
            }
            for o in content.outcomes
        ]
    return report
