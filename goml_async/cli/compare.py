"""``goml compare``: per-model averages of two scores files, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Compare two scores files written by `goml score --output` (or by go-ml): for every model and
every metric in either file, print the old average, the new one and the change.
A metric only one file has shows "-" on the other side.
"""
_EPILOG = """\
examples:
  goml compare scores-before.json scores-after.json
  goml compare old.json new.json --model smollm2     only the rows of one model
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "compare",
        help="compare two scores files (old against new)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("old", type=Path, help="the earlier scores JSON")
    parser.add_argument("new", type=Path, help="the later scores JSON")
    parser.add_argument("--model", help="show only this model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from goml_async.errors import ConfigError
    from goml_async.scoring.io import read_scorer_output
    from goml_async.scoring.report import compare_outputs, format_delta

    old = read_scorer_output(args.old)
    new = read_scorer_output(args.new)
    rows = compare_outputs(old, new)
    if args.model is not None:
        known = sorted({row.model for row in rows})
        rows = [row for row in rows if row.model == args.model]
        if not rows:
            raise ConfigError("--model", f"{args.model!r} is in neither file; models: {known}")
    table = Table(title=f"{args.old} -> {args.new}")
    table.add_column("model")
    table.add_column("metric")
    for name in ("old", "new", "delta"):
        table.add_column(name, justify="right")
    previous = None
    for row in rows:
        if previous is not None and row.model != previous:
            table.add_section()
        previous = row.model
        # No colours: whether up is better depends on the metric (degeneration vs lek_score).
        delta = format_delta(row.delta) if row.delta is not None else "-"
        table.add_row(row.model, row.metric, _number(row.old), _number(row.new), delta)
    Console().print(table)
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
