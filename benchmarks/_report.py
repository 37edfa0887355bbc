"""What every benchmark script shares: the machine line, rich tables and the recorded results.

Each ``bench_*.py`` script records its results in ``docs/benchmarks.md`` between its own
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers, leaving the rest of the file as it is,
and its key numbers in ``benchmarks/results/NAME.json`` (:func:`write_results`), from which
``benchmarks/report.py`` builds the summary table and the throughput plot at the top of the page.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = [
    "RESULTS_DIR",
    "Measure",
    "Throughput",
    "command_line",
    "cpu_count",
    "cpu_model",
    "machine_line",
    "positive_int",
    "rich_table",
    "write_markdown",
    "write_results",
]

#: Where each script's key numbers go, one ``NAME.json`` per script (``benchmarks/report.py``).
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_count() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_line(packages: Sequence[str], extra: str = "") -> str:
    """Platform, CPU, cores, ``extra`` and the versions of the installed ``packages``."""
    versions = [f"Python {platform.python_version()}"]
    for package in packages:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    middle = f"{extra}, " if extra else ""
    return (
        f"{platform.platform()}, {cpu_model()}, nproc {cpu_count()}, {middle}{', '.join(versions)}"
    )


def command_line() -> str:
    """How this script was run."""
    return shlex.join(["python", *sys.argv])


def positive_int(value: str) -> int:
    """argparse type: an int >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A table whose first column is left-aligned and the others right-aligned."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table in Markdown: first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path: Path, name: str, section: str, intro: str) -> None:
    """Create or replace the ``name`` section in ``path``; everything outside it is kept."""
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start_mark}\n{section}\n{end_mark}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Benchmarks\n\n{intro}\n\n{block}\n")
        return
    text = path.read_text()
    start = text.find(start_mark)
    end = text.find(end_mark, start) if start != -1 else -1
    if end != -1:
        path.write_text(text[:start] + block + text[end + len(end_mark) :])
        return
    separator = "" if not text or text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n"
    path.write_text(f"{text}{separator}{block}\n")


@dataclass(frozen=True, slots=True)
class Measure:
    """One row of the summary table: goml_async against its peer on one measure.

    ``ratio`` is the script's own ratio for this measure (goml/peer for rates, wall/ideal for
    score_all, ...); ``target`` is empty and ``passed`` None when no target is set for it.
    """

    measure: str
    unit: str
    goml: float
    peer: float | None
    peer_name: str
    ratio: float | None
    target: str = ""
    passed: bool | None = None


@dataclass(frozen=True, slots=True)
class Throughput:
    """Median tokens/s of goml_async and its peers in one scenario: one panel of the plot."""

    scenario: str
    goml: str  # which of ``rates`` is goml_async's
    rates: Mapping[str, float] = field(default_factory=dict)


def write_results(
    name: str,
    *,
    title: str,
    heading: str,
    machine: str,
    measures: Sequence[Measure],
    throughput: Sequence[Throughput] = (),
    directory: Path = RESULTS_DIR,
) -> Path:
    """Record a run's key numbers as ``directory/NAME.json`` (replacing the previous run's).

    ``heading`` is the run's heading in docs/benchmarks.md (the summary links to it) and
    ``machine`` the machine line printed in its section.
    """
    record = {
        "benchmark": name,
        "title": title,
        "heading": heading,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "machine": machine,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "python": platform.python_version(),
        "measures": [asdict(measure) for measure in measures],
        "throughput": [
            {"scenario": item.scenario, "goml": item.goml, "rates": dict(item.rates)}
            for item in throughput
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


# -- timing helpers shared by the benchmarks ----------------------------------------------------

#: One measured run of a case; it returns its sample.
Case = Callable[[], Awaitable[Any]]


async def round_robin(
    cases: Mapping[str, Case], rounds: int, warmup: Mapping[str, Case] | None = None
) -> dict[str, list[Any]]:
    """Untimed warm-ups (by default each case once), then ``rounds`` rounds of every case, the
    order flipping each round so neither side always runs first."""
    for case in (cases if warmup is None else warmup).values():
        await case()
    samples: dict[str, list[Any]] = {name: [] for name in cases}
    for index in range(rounds):
        order = list(cases) if index % 2 == 0 else list(reversed(list(cases)))
        for name in order:
            samples[name].append(await cases[name]())
    return samples


def percentile(values: Sequence[float], q: int) -> float:
    """The ``q``-th percentile (inclusive method); the value itself for fewer than two."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
