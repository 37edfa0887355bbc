"""``goml score``: score a responses JSONL file on the heuristic, exact and judge suites."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from goml_async.errors import ConfigError
from goml_async.settings import GomlSettings

from ._common import describe_target, load_target

__all__ = ["SUMMARY_METRICS", "add_parser", "run"]

_DESCRIPTION = """\
Score every row of a responses JSONL file (one {"id", "prompt", "response", "model", ...}
object per line) and print the per-model averages; --output also writes every score.

Suites: heuristic (local), exact (GSM8K rows with correct_answer; local), and the judge suites
semantic, content and standard (TruthfulQA rows with best_answer, DoNotAnswer rows with
risk_area, Toxigen rows with domain "toxigen"). "all" runs every suite; without a judge it runs
the local ones only. A judge reply that cannot be used is recorded as an error in the output
with the raw reply; it never stops the run.

--judge takes the base URL of an OpenAI-compatible server (with --judge-model), a model path,
or "default" (the bundled model). It defaults to GOML_JUDGE_URL / GOML_JUDGE_MODEL.
"""
_EPILOG = """\
examples:
  goml score --input responses.jsonl --suites heuristic
  goml score --input responses.jsonl --judge http://127.0.0.1:8080/v1 --judge-model qwen3 \\
             --concurrency 8 --output scores.json
  goml compare scores-old.json scores.json
"""

#: The averages shown in the summary table, in order, when a model has them.
SUMMARY_METRICS = (
    "lek_score",
    "degeneration",
    "compliance_markers",
    "sovereignty",
    "ethical_depth",
    "creative_expression",
    "self_concept",
    "truthfulness",
    "safety",
    "kindness",
    "correct",
)


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "score",
        help="score a responses JSONL file (heuristics and an LLM judge)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-i", "--input", type=Path, required=True, help="responses JSONL file")
    parser.add_argument("-s", "--suites", help="'all' or a comma list (default: GOML_SUITES, all)")
    parser.add_argument("--judge", help="judge server URL, model path or 'default'")
    parser.add_argument("--judge-model", help="model name sent to a judge URL")
    parser.add_argument("--judge-max-tokens", type=int, help="cap each judge reply (default: none)")
    parser.add_argument("-c", "--concurrency", type=int, help="judge calls at once (default: 4)")
    parser.add_argument("-o", "--output", type=Path, help="write the full scores JSON here")
    parser.add_argument(
        "--fail-on-error", action="store_true", help="exit 1 when any scoring job failed"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = GomlSettings()
    judge_spec = args.judge or settings.judge_url
    judge_model = args.judge_model if args.judge_model is not None else settings.judge_model
    concurrency = args.concurrency if args.concurrency is not None else settings.concurrency
    suites = args.suites if args.suites is not None else settings.suites
    if concurrency < 1:
        raise ConfigError("--concurrency", f"must be >= 1, got {concurrency}")
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError("--output", f"folder {args.output.parent} does not exist")
    from goml_async.scoring.io import read_responses

    responses = read_responses(args.input)
    status: int = anyio.run(
        _score, args, responses, judge_spec, judge_model or "", concurrency, suites
    )
    return status


async def _score(
    args: argparse.Namespace,
    responses: list[Any],
    judge_spec: str | None,
    judge_model: str,
    concurrency: int,
    suites: str,
) -> int:
    from goml_async.scoring.engine import Engine
    from goml_async.scoring.io import write_scores
    from goml_async.scoring.judge import Judge
    from goml_async.scoring.report import build_output

    err = Console(stderr=True)
    model = None
    if judge_spec:
        model = await load_target(judge_spec, http_model=judge_model, console=err)
    try:
        judge = Judge(model, max_tokens=args.judge_max_tokens) if model is not None else None
        with _progress(err) as progress:
            task = progress.add_task("scoring", total=len(responses))
            failed = 0

            def advance(index: int, score: Any, errors: Any) -> None:
                nonlocal failed
                failed += len(errors)
                progress.update(task, advance=1, description=f"scoring ({failed} errors)")

            engine = Engine(judge, concurrency=concurrency, suites=suites, on_result=advance)
            if engine.skipped_suites:
                err.print(
                    f"no judge: skipping {', '.join(engine.skipped_suites)} "
                    "(set --judge or GOML_JUDGE_URL to run them)",
                    highlight=False,
                )
            report = await engine.score_all(responses)
    finally:
        if model is not None:
            await model.aclose()

    output = build_output(report, judge=judge, suites=engine.suite_names())
    console = Console()
    console.print(_summary_table(output.model_averages, engine.suite_names()))
    console.print(
        f"{report.scored_count} responses scored, {report.error_count} errors"
        + (f" (judge: {describe_target(judge_spec)})" if judge_spec else ""),
        highlight=False,
    )
    for error in report.errors[:5]:
        err.print(f"[yellow]{error.model}/{error.id} {error.suite}: {error.message}[/yellow]")
    if report.error_count > 5:
        err.print(f"[yellow]... and {report.error_count - 5} more (all in --output)[/yellow]")
    if args.output is not None:
        write_scores(args.output, output)
        err.print(f"wrote {args.output}", highlight=False)
    return 1 if args.fail_on_error and report.error_count else 0


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def _summary_table(averages: dict[str, dict[str, float]], suites: list[str]) -> Table:
    shown = [
        metric
        for metric in SUMMARY_METRICS
        if any(metric in metrics for metrics in averages.values())
    ]
    table = Table(title=f"averages ({', '.join(suites)})")
    table.add_column("model")
    for metric in shown:
        table.add_column(metric, justify="right")
    for model, metrics in averages.items():
        table.add_row(model, *(f"{metrics[m]:.2f}" if m in metrics else "-" for m in shown))
    return table
