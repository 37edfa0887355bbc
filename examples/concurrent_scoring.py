"""Score a responses JSONL file concurrently, with an LLM judge or with the local suites only.

    python examples/concurrent_scoring.py                        # judge: the bundled SmolLM2
    python examples/concurrent_scoring.py --no-judge             # heuristic + exact, no model
    python examples/concurrent_scoring.py --judge http://127.0.0.1:8080/v1 --judge-model qwen3 \\
        --concurrency 8 --output scores.json

The input (default ``examples/data/responses.jsonl``) holds two models' answers to GSM8K rows
(``correct_answer``: exact match, local), TruthfulQA rows (``best_answer``), DoNotAnswer rows
(``risk_area``), Toxigen rows (domain ``toxigen``) and an open question. Every row also gets the
heuristic suite (local) and the semantic judge suite.

At most ``--concurrency`` judge calls are in flight at once; the local suites run meanwhile.
The bundled judge has 135M parameters and often answers with something that is not the JSON
its rubric asks for: each such reply is recorded as an error that keeps the raw reply, next to
the scores that did work, and never stops the run. A real judge (a larger model behind an
OpenAI-compatible server) replaces it with ``--judge URL --judge-model NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import goml_async
from goml_async import TextModel
from goml_async.scoring import (
    Engine,
    ItemError,
    Judge,
    PromptScore,
    Response,
    ScoreReport,
    build_output,
    normalize_domain,
    read_responses,
    write_scores,
)

DATA = Path(__file__).parent / "data" / "responses.jsonl"
#: The averages shown in the table, when a model has them.
SHOWN = (
    "lek_score",
    "correct",
    "sovereignty",
    "ethical_depth",
    "truthfulness",
    "safety",
    "kindness",
)


async def load_judge(spec: str, model_name: str) -> TextModel:
    """``default`` (the bundled model), an OpenAI-compatible server URL, or a model file."""
    if spec == "default":
        return await goml_async.load_default_model()
    if spec.startswith(("http://", "https://")):
        return await goml_async.load_model(spec, model=model_name)
    return await goml_async.load_model(spec)


def judge_jobs(row: Response, suites: Sequence[str]) -> list[tuple[str, str]]:
    """``(suite, field)`` of each judge call the engine makes for ``row`` (content aside)."""
    jobs = [("semantic", "sovereignty")] if "semantic" in suites else []
    if "standard" in suites:
        if row.best_answer:
            jobs.append(("standard", "truthfulness"))
        if row.risk_area:
            jobs.append(("standard", "safety"))
        if normalize_domain(row.domain) == "toxigen":
            jobs.append(("standard", "kindness"))
    return jobs


def judged_fields(score: PromptScore) -> set[tuple[str, str]]:
    """The judge results that ``score`` holds, as ``(suite, field)``."""
    found = set()
    if score.semantic is not None:
        found.add(("semantic", "sovereignty"))
    if score.standard is not None:
        for name in ("truthfulness", "safety", "kindness"):
            if getattr(score.standard, name) is not None:
                found.add(("standard", name))
    return found


def averages_table(averages: dict[str, dict[str, float]]) -> Table:
    shown = [name for name in SHOWN if any(name in metrics for metrics in averages.values())]
    table = Table(title="per-model averages (over the rows that have each score)")
    table.add_column("model")
    for name in shown:
        table.add_column(name, justify="right")
    for model, metrics in averages.items():
        table.add_row(model, *(f"{metrics[n]:.2f}" if n in metrics else "-" for n in shown))
    return table


def print_errors(console: Console, errors: list[ItemError], shown: int = 5) -> None:
    by_suite = Counter(error.suite for error in errors)
    summary = ", ".join(f"{suite} {count}" for suite, count in sorted(by_suite.items()))
    console.print(f"recorded errors: {len(errors)} ({summary or 'none'})")
    for error in errors[:shown]:
        message = error.message.replace("\n", " ")
        message = message if len(message) <= 100 else message[:97] + "..."
        console.print(f"  {error.model}/{error.id} {error.suite}: {message}")
        if error.raw_reply:
            console.print(f"    (the judge's whole reply is kept: {len(error.raw_reply)} chars)")
    if len(errors) > shown:
        console.print(f"  ... and {len(errors) - shown} more (every one is in --output)")


async def score(args: argparse.Namespace, rows: list[Response], console: Console) -> None:
    judge_model = None
    if not args.no_judge:
        console.print(f"loading the judge: {args.judge} ...")
        judge_model = await load_judge(args.judge, args.judge_model)
    try:
        # A cap on each judge reply: a confused small judge could otherwise ramble for long.
        judge = None
        if judge_model is not None:
            judge = Judge(judge_model, max_tokens=args.judge_max_tokens)
        with Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("scoring", total=len(rows))

            def on_result(index: int, score: PromptScore, errors: Sequence[ItemError]) -> None:
                # Called once per response when all of its jobs are done (completion order).
                progress.advance(task)
                sections = [
                    name
                    for name in ("heuristic", "semantic", "standard")
                    if getattr(score, name) is not None
                ]
                progress.console.print(
                    f"[{index + 1:2}] {score.model}/{score.id}: {', '.join(sections)}"
                    + (f"; {len(errors)} error(s)" if errors else "")
                )

            engine = Engine(
                judge, concurrency=args.concurrency, suites=args.suites, on_result=on_result
            )
            if engine.skipped_suites:
                console.print(f"no judge: skipping {', '.join(engine.skipped_suites)}")
            report = await engine.score_all(rows)
    finally:
        if judge_model is not None:
            await judge_model.aclose()
    report_results(args, rows, engine, report, console)


def report_results(
    args: argparse.Namespace,
    rows: list[Response],
    engine: Engine,
    report: ScoreReport,
    console: Console,
) -> None:
    output = build_output(report, judge=engine.judge)
    console.print(averages_table(output.model_averages))
    print_errors(console, report.errors)

    # Nothing is dropped: every judge call ended either as a score or as a recorded error.
    calls = sum(len(judge_jobs(row, engine.suite_names())) for row in rows)
    judged = sum(
        len(judged_fields(score)) for scores in report.per_prompt.values() for score in scores
    )
    console.print(
        f"{report.scored_count} responses scored; judge calls: {calls} = {judged} scored "
        f"+ {report.error_count} recorded errors"
    )
    if args.output is not None:
        write_scores(args.output, output)
        console.print(f"wrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DATA, help="responses JSONL file")
    judges = parser.add_mutually_exclusive_group()
    judges.add_argument(
        "--judge", default="default", help="'default' (bundled model), a server URL or a file"
    )
    judges.add_argument("--no-judge", action="store_true", help="heuristic and exact only")
    parser.add_argument("--judge-model", default="", help="model name sent to a judge URL")
    parser.add_argument("--judge-max-tokens", type=int, default=128, help="per reply (128)")
    parser.add_argument("--concurrency", type=int, default=4, help="judge calls at once (4)")
    parser.add_argument("--suites", default="all", help="'all' or a comma list")
    parser.add_argument("--limit", type=int, default=0, help="score the first N rows (0: all)")
    parser.add_argument("--output", type=Path, help="write every score and error as JSON")
    args = parser.parse_args()

    rows = read_responses(args.input)
    if args.limit > 0:
        rows = rows[: args.limit]
    # markup=False: replies and ids are printed as they are, brackets included.
    asyncio.run(score(args, rows, Console(highlight=False, markup=False, soft_wrap=True)))


if __name__ == "__main__":
    main()
