"""``goml probe``: run the 23 capability probes against a model and print a table per category."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from goml_async.errors import ConfigError
from goml_async.model import TextModel
from goml_async.scoring.types import ContentProbeResult, ProbeOutcome, ProbeResult
from goml_async.types import GenerateConfig

from ._common import describe_target, load_target

__all__ = ["add_parser", "probe_report", "run"]

_DESCRIPTION = """\
Ask a model the 23 capability probes (arithmetic, algebra, logic, code, ...) and grade each
answer locally with the probe's own check. Prints passed/total per category and overall.

--model takes the bundled default ("default", the default), a .gguf file, an MLX folder or the
base URL of an OpenAI-compatible server. With --judge, every answer is also scored 0-10 for
reasoning, correctness and clarity by a judge model; "--judge same" uses the model under test.
With --content, the 6 content probes run too (scored only when a judge is given).
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
    parser.add_argument("-m", "--model", default="default", help="model path, URL or 'default'")
    parser.add_argument("--backend", help="force a backend: mlx, llama or http")
    parser.add_argument("--model-name", default="", help="model name sent to a server URL")
    parser.add_argument("--judge", help="judge: 'same', 'default', a path or a server URL")
    parser.add_argument("--judge-model", default="", help="model name sent to a judge URL")
    parser.add_argument("--judge-max-tokens", type=int, help="cap each judge reply (default: none)")
    parser.add_argument("--system", default="", help="system message sent before each probe")
    parser.add_argument("--content", action="store_true", help="also run the 6 content probes")
    parser.add_argument("-n", "--max-tokens", type=int, default=500, help="default: 500")
    parser.add_argument("-t", "--temperature", type=float, default=0.1, help="default: 0.1")
    parser.add_argument("-c", "--concurrency", type=int, default=1, help="probes at once")
    parser.add_argument("-o", "--output", type=Path, help="write every answer and grade as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ConfigError("--concurrency", f"must be >= 1, got {args.concurrency}")
    config = GenerateConfig(max_tokens=args.max_tokens, temperature=args.temperature)
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError("--output", f"folder {args.output.parent} does not exist")
    status: int = anyio.run(_probe, args, config)
    return status


async def _probe(args: argparse.Namespace, config: GenerateConfig) -> int:
    from goml_async.scoring.judge import Judge
    from goml_async.scoring.probes import CAPABILITY_PROBES
    from goml_async.scoring.runner import CONTENT_CONFIG, run_capability_probes, run_content_probes

    err = Console(stderr=True)
    model = await load_target(
        args.model, backend=args.backend, http_model=args.model_name, console=err
    )
    async with model:
        judge_model: TextModel | None = None
        if args.judge == "same":
            judge_model = model
        elif args.judge:
            judge_model = await load_target(args.judge, http_model=args.judge_model, console=err)
        try:
            judge = (
                (Judge(judge_model, max_tokens=args.judge_max_tokens))
                if judge_model is not None
                else None
            )
            with _progress(err) as progress:
                task = progress.add_task("probes", total=len(CAPABILITY_PROBES))

                def advance(outcome: ProbeOutcome, passed: int, done: int) -> None:
                    mark = "pass" if outcome.passed else ("error" if outcome.error else "fail")
                    progress.update(task, completed=done, description=f"{outcome.probe_id} {mark}")
                    if not err.is_terminal:
                        err.print(f"{outcome.probe_id}: {mark} ({passed}/{done})", highlight=False)

                system = args.system or None
                result = await run_capability_probes(
                    model,
                    judge=judge,
                    config=config,
                    system=system,
                    concurrency=args.concurrency,
                    on_probe=advance,
                )
            content: ContentProbeResult | None = None
            if args.content:
                content = await run_content_probes(
                    model,
                    judge=judge,
                    config=CONTENT_CONFIG,
                    system=system,
                    concurrency=args.concurrency,
                )
        finally:
            if judge_model is not None and judge_model is not model:
                await judge_model.aclose()

    console = Console()
    console.print(_category_table(result, describe_target(args.model)))
    if content is not None:
        console.print(_content_table(content))
    if args.output is not None:
        report = probe_report(result, content, model=describe_target(args.model))
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        err.print(f"wrote {args.output}", highlight=False)
    if result.error_count:
        first = next(outcome for outcome in result.outcomes if outcome.error)
        err.print(f"[yellow]{result.error_count} probes failed to generate; first: {first.error}")
    # Every probe failing to generate means the model could not be used at all.
    return 1 if result.error_count == result.total else 0


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def _category_table(result: ProbeResult, label: str) -> Table:
    table = Table(title=f"capability probes: {label}")
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
    result: ProbeResult, content: ContentProbeResult | None = None, *, model: str = ""
) -> dict[str, Any]:
    """The JSON written by ``--output``: totals, per-category counts and every answer."""
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
