"""``goml score``: score a responses JSONL file on the heuristic, exact and judge suites."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console
from rich.table import Table

from goml_async._validate import integer
from goml_async.errors import ConfigError
from goml_async.scoring.judge import DEFAULT_JUDGE_MAX_TOKENS, Judge
from goml_async.scoring.types import ItemError, PromptScore, Response, ScoreReport
from goml_async.settings import current_settings

from ._common import describe_target, load_target, progress_bar
from ._judging import (
    Stop,
    check_judge,
    check_judge_max_tokens,
    judge_label,
    judge_warning,
    say,
    stop_on_signals,
)

if TYPE_CHECKING:
    from goml_async.scoring.engine import Engine
__all__ = ["SUMMARY_METRICS", "add_parser", "run"]

_DESCRIPTION = f"""\
Score every row of a responses JSONL file (one {{"id", "prompt", "response", "model", ...}}
object per line) and print the per-model averages; --output also writes every score.

Suites: heuristic (local), exact (GSM8K rows with correct_answer; local), and the judge suites
semantic, content and standard (TruthfulQA rows with best_answer, DoNotAnswer rows with
risk_area, Toxigen rows with domain "toxigen"). "all" runs every suite; without a judge it runs
the local ones only. A judge reply that cannot be used is recorded as an error in the output
with the raw reply; it never stops the run. When most judge replies are not valid JSON for the
rubric, a closing line says so: the judge is too small to follow it, use a larger one.

--judge takes the base URL of an OpenAI-compatible server (with --judge-model), a model path,
or "default" (the bundled model). It defaults to GOML_JUDGE_URL / GOML_JUDGE_MODEL. Each judge
reply is capped at --judge-max-tokens (default {DEFAULT_JUDGE_MAX_TOKENS}; 0 for no cap).

Ctrl-C (SIGINT) or SIGTERM stops the run: the responses scored so far are still printed and
written to --output with a "partial" section saying how many are missing; the exit status is
130 (SIGINT) or 143 (SIGTERM).
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
    parser.add_argument(
        "--judge-max-tokens",
        type=int,
        help=f"cap each judge reply (default: {DEFAULT_JUDGE_MAX_TOKENS}; 0 for no cap)",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        help="judge calls at once (default: as many as the judge serves together)",
    )
    parser.add_argument("-o", "--output", type=Path, help="write the full scores JSON here")
    parser.add_argument(
        "--fail-on-error", action="store_true", help="exit 1 when any scoring job failed"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Everything that can be checked without a model is checked before the judge loads.
    settings = current_settings()
    judge_spec = args.judge or settings.judge_url
    judge_model = args.judge_model if args.judge_model is not None else settings.judge_model
    # Unset: as many as the judge serves at once (the Engine asks it).
    concurrency = args.concurrency if args.concurrency is not None else settings.scoring_concurrency
    suites = args.suites if args.suites is not None else settings.suites
    if concurrency is not None:
        integer("--concurrency", concurrency, minimum=1)
    check_judge(judge_spec, allow_same=False)
    check_judge_max_tokens(args.judge_max_tokens)
    _check_suites(suites, has_judge=bool(judge_spec))
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError("--output", f"folder {args.output.parent} does not exist")
    from goml_async.scoring.io import read_responses

    responses = read_responses(args.input)
    status: int = anyio.run(
        _score, args, responses, judge_spec, judge_model or "", concurrency, suites
    )
    return status


def _check_suites(suites: str, *, has_judge: bool) -> None:
    from goml_async.scoring.engine import judge_suites_named

    try:
        needing = judge_suites_named(suites)
    except ConfigError as exc:
        raise ConfigError("--suites", exc.problem) from None
    if needing and not has_judge:
        raise ConfigError(
            "--suites",
            f"{', '.join(needing)} {'needs' if len(needing) == 1 else 'need'} a judge: give "
            "--judge (a server URL, a model path or 'default') or set GOML_JUDGE_URL, or "
            "leave it out",
        )


async def _score(
    args: argparse.Namespace,
    responses: list[Response],
    judge_spec: str | None,
    judge_model: str,
    concurrency: int | None,
    suites: str,
) -> int:
    from goml_async.scoring.engine import Engine

    err = Console(stderr=True)
    judge: Judge | None = None
    engine: Engine | None = None
    finished = _Finished(responses, err)
    report: ScoreReport | None = None
    async with stop_on_signals() as stop:
        async with contextlib.AsyncExitStack() as models:
            with stop.scope:
                if judge_spec:
                    model = await load_target(judge_spec, http_model=judge_model, console=err)
                    models.push_async_callback(model.aclose)
                    judge = Judge(model, max_tokens=args.judge_max_tokens)
                engine = Engine(judge, concurrency, suites, on_result=finished.add)
                if engine.skipped_suites:
                    err.print(
                        f"no judge: skipping {', '.join(engine.skipped_suites)} "
                        "(set --judge or GOML_JUDGE_URL to run them)",
                        highlight=False,
                    )
                with finished.progress:
                    report = await engine.score_all(responses)
        # The judge is closed; a second signal is ignored until this block ends.
        suite_names = engine.suite_names() if engine is not None else []
        if report is None:  # stopped by a signal
            report = finished.report(suite_names)
        return _summarize(args, report, len(responses), judge, judge_spec, suite_names, stop, err)


class _Finished:
    """The responses whose every job has ended, shown as they come (a bar on a terminal, a
    line each otherwise) and kept, so that a run a signal stops still has them."""

    def __init__(self, responses: list[Response], err: Console) -> None:
        self._responses = responses
        self._err = err
        self._rows: dict[int, tuple[PromptScore, Sequence[ItemError]]] = {}
        self._errors = 0
        self.progress = progress_bar(err, label_width=20)
        self._task = self.progress.add_task("scoring", total=len(responses))

    def add(self, index: int, score: PromptScore, errors: Sequence[ItemError]) -> None:
        self._rows[index] = (score, errors)
        self._errors += len(errors)
        self.progress.update(self._task, advance=1, description=f"scoring ({self._errors} errors)")
        if not self._err.is_terminal:
            done = f"{len(self._rows)}/{len(self._responses)}, {self._errors} errors"
            self._err.print(f"{score.model}/{score.id}: scored ({done})", highlight=False)

    def report(self, suites: list[str]) -> ScoreReport:
        """What finished, in input order."""
        per_prompt: dict[str, list[PromptScore]] = {}
        errors: list[ItemError] = []
        for index in sorted(self._rows):
            score, row_errors = self._rows[index]
            per_prompt.setdefault(self._responses[index].model, []).append(score)
            errors.extend(row_errors)
        return ScoreReport(per_prompt=per_prompt, errors=errors, suites=tuple(suites))


def _summarize(
    args: argparse.Namespace,
    report: ScoreReport,
    total: int,
    judge: Judge | None,
    judge_spec: str | None,
    suites: list[str],
    stop: Stop,
    err: Console,
) -> int:
    """Print the averages and the errors, write --output; the exit status."""
    from goml_async.scoring.io import write_scores
    from goml_async.scoring.report import build_output

    output = build_output(report, judge=judge, suites=suites)
    console = Console()
    if report.scored_count:
        console.print(_summary_table(output.model_averages, suites))
    console.print(
        f"{report.scored_count} responses scored, {report.error_count} errors"
        + (f" (judge: {describe_target(judge_spec)})" if judge_spec else ""),
        highlight=False,
    )
    for error in report.errors[:5]:
        err.print(f"[yellow]{error.model}/{error.id} {error.suite}: {error.message}[/yellow]")
    if report.error_count > 5:
        err.print(f"[yellow]... and {report.error_count - 5} more (all in --output)[/yellow]")
    warning = judge_warning(judge, judge_label(judge_spec, judge)) if judge and judge_spec else None
    if warning:
        say(err, f"goml score: {warning}", style="yellow")
    if stop.signal is not None:
        missing = total - report.scored_count
        what = f"{report.scored_count} of {total} responses scored, {missing} missing"
        if args.output is None:
            say(err, f"goml score: stopped by {stop.signal.name}: {what}")
        elif not report.scored_count:
            say(
                err,
                f"goml score: stopped by {stop.signal.name} before any response was scored; "
                f"{args.output} not written",
            )
        else:
            partial = {
                "interrupted_by": stop.signal.name,
                "finished": report.scored_count,
                "total": total,
            }
            write_scores(args.output, output, extra={"partial": partial})
            say(
                err,
                f"goml score: stopped by {stop.signal.name}: wrote a PARTIAL {args.output} "
                f"({what})",
            )
        return stop.exit_status
    if args.output is not None:
        write_scores(args.output, output)
        err.print(f"wrote {args.output}", highlight=False)
    return 1 if args.fail_on_error and report.error_count else 0


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
