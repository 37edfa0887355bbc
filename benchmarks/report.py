"""The summary of docs/benchmarks.md and its throughput plot, built from the recorded results.

Every ``bench_*.py`` script, run with ``--markdown``, writes its own section of
docs/benchmarks.md and its key numbers to ``benchmarks/results/NAME.json``. This script reads
those JSON files (it runs no benchmark) and writes:

- the summary at the top of the page, between ``<!-- summary:start -->`` and
  ``<!-- summary:end -->``: one row per measure (benchmark, measure, goml_async, peer, ratio,
  target, result), each linked to its section, with the machine the numbers came from;
- ``docs/img/benchmarks-throughput.png``: goml_async's median tokens/s against each peer's, one
  panel per scenario (the HTTP client against openai-python and raw httpx, the llama backend
  against llama-server's SSE read directly, the MLX bridge against mlx_lm, goml serve against
  llama-server direct), embedded in the summary.

``nox -s bench`` runs it after the benchmarks. It can be run alone at any time, for example after
re-running one benchmark: ``python benchmarks/report.py [--results DIR] [--markdown PATH]
[--plot PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKDOWN = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "img" / "benchmarks-throughput.png"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
# Sections in page order; any other results file follows, by name.
ORDER = ("bench_stream", "bench_http", "bench_llama", "bench_mlx", "bench_scoring", "bench_server")
COLUMNS = ("benchmark", "measure", "goml_async", "peer", "ratio", "target", "result")
UNITS = {"tokens/s": "tok/s", "requests/s": "req/s", "errors": ""}
GOML_COLOUR, PEER_COLOUR = "#3f51b5", "#9e9e9e"

Record = dict[str, Any]


# -- reading ---------------------------------------------------------------------------------------


def load_results(directory: Path) -> list[Record]:
    """Every ``*.json`` record in ``directory``, in page order."""
    records = [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]

    def position(record: Record) -> tuple[int, str]:
        name = str(record["benchmark"])
        base = name.split("-", 1)[0]
        return (ORDER.index(base) if base in ORDER else len(ORDER), name)

    return sorted(records, key=position)


# -- the summary -----------------------------------------------------------------------------------


def slugify(text: str) -> str:
    """The anchor MkDocs gives a heading (Python-Markdown's ``toc`` slugify)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.1f}"


def amount(value: float | None, unit: str) -> str:
    """``value`` with its unit, as the summary shows it."""
    if value is None:
        return "-"
    if unit == "errors":
        return f"{value:,.0f}"
    return f"{number(value)} {UNITS.get(unit, unit)}"


def times(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 10:
        return f"{ratio:,.1f}x"
    return f"{ratio:.2f}x" if ratio >= 2 else f"{ratio:.3f}x"


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else "pass" if passed else "**FAIL**"


def summary_rows(records: Sequence[Record]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for record in records:
        link = f"[{record['title']}](#{slugify(record['heading'])})"
        for measure in record["measures"]:
            peer = amount(measure["peer"], measure["unit"])
            if measure["peer"] is not None and measure["peer_name"]:
                peer = f"{peer} ({measure['peer_name']})"
            rows.append(
                (
                    link,
                    measure["measure"],
                    amount(measure["goml"], measure["unit"]),
                    peer,
                    times(measure["ratio"]),
                    measure["target"] or "-",
                    verdict(measure["passed"]),
                )
            )
    return rows


def machine_lines(records: Sequence[Record], *, note: bool = True) -> list[str]:
    """Where the numbers come from: one line when every run shares the machine, else one each.

    ``note`` adds that each section has the package versions.
    """

    def machine(record: Record) -> str:
        return (
            f"{record['platform']}, {record['cpu']}, nproc {record['cores']}, "
            f"Python {record['python']}"
        )

    machines = {machine(record) for record in records}
    if len(machines) == 1:
        extra = " (every run; each section lists its package versions)" if note else ""
        return [f"Machine: {machines.pop()}{extra}"]
    return [f"Machine of {record['title']}: {machine(record)}" for record in records]


def render_summary(records: Sequence[Record], plot: str | None) -> str:
    """The summary block, markers included; ``plot`` is the image path relative to the page."""
    dates = sorted(record["date"] for record in records)
    lines = [
        START,
        "## Summary",
        "",
        "Each row is one benchmark's key measure against the peer measured in the same run; "
        "the sections below have every number, the method and the command that produced it.",
        "",
        *(f"- {line}" for line in machine_lines(records)),
        f"- Runs: {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else ""),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---", "---", "---:", "---:", "---:", "---", "---"]) + "|",
        *("| " + " | ".join(row) + " |" for row in summary_rows(records)),
    ]
    if plot is not None:
        lines += [
            "",
            f"![Median tokens/s of goml_async against each peer, one panel per scenario]({plot})",
        ]
    lines.append(END)
    return "\n".join(lines)


def replace_summary(text: str, block: str) -> str:
    """``text`` with its summary replaced, or inserted before the first benchmark section."""
    start = text.find(START)
    end = text.find(END, start) if start != -1 else -1
    if end != -1:
        return text[:start] + block + text[end + len(END) :]
    first = text.find("<!-- bench_")
    if first == -1:
        separator = "" if text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n"
        return f"{text}{separator}{block}\n"
    return f"{text[:first]}{block}\n\n{text[first:]}"


# -- the plot --------------------------------------------------------------------------------------


def throughput(records: Sequence[Record]) -> list[Record]:
    return [item for record in records for item in record.get("throughput", []) if item["rates"]]


def draw_plot(records: Sequence[Record], path: Path) -> bool:
    """Draw the tokens/s panels into ``path`` (PNG); False when no run recorded any."""
    panels = throughput(records)
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    from matplotlib import pyplot
    from matplotlib.ticker import StrMethodFormatter

    heights = [0.9 + 0.42 * len(panel["rates"]) for panel in panels]
    figure, axes = pyplot.subplots(
        len(panels),
        1,
        figsize=(9, sum(heights) + 1.3),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for axis, panel in zip(axes[:, 0], panels, strict=True):
        names = list(panel["rates"])
        rates = [float(panel["rates"][name]) for name in names]
        goml = float(panel["rates"][panel["goml"]])
        colours = [GOML_COLOUR if name == panel["goml"] else PEER_COLOUR for name in names]
        bars = axis.barh(names, rates, color=colours, height=0.6)
        axis.invert_yaxis()  # goml_async first, at the top
        axis.set_title(panel["scenario"], loc="left", fontsize=10)
        axis.set_xlim(0, max(rates) * 1.45)
        axis.tick_params(labelsize=9)
        axis.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        axis.spines[["top", "right"]].set_visible(False)
        labels = [
            number(rate)
            if name == panel["goml"]
            else f"{number(rate)}  (goml: {times(goml / rate)})"
            for name, rate in zip(names, rates, strict=True)
        ]
        axis.bar_label(bars, labels=labels, padding=4, fontsize=8.5)
    axes[-1, 0].set_xlabel("tokens/s, median of the runs (higher is better)", fontsize=9)
    figure.suptitle("goml_async against its peers, measured in the same runs", fontsize=12)
    footer = "; ".join(machine_lines(records, note=False))
    figure.text(0.01, 0.005, textwrap.fill(footer, 150), fontsize=7, color="#616161", va="bottom")
    figure.tight_layout(rect=(0, 0.04, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" entry: the file only changes when the numbers do.
    figure.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(figure)
    return True


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder")
    parser.add_argument("--markdown", type=Path, default=MARKDOWN, help="the page to update")
    parser.add_argument("--plot", type=Path, default=PLOT, help="the PNG to write")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    records = load_results(args.results)
    if not records:
        print(f"report.py: no results in {args.results}: run the benchmarks with --markdown")
        return 1
    drawn = draw_plot(records, args.plot)
    relative = Path(os.path.relpath(args.plot.resolve(), args.markdown.resolve().parent))
    block = render_summary(records, relative.as_posix() if drawn else None)
    text = args.markdown.read_text() if args.markdown.exists() else "# Benchmarks\n"
    args.markdown.write_text(replace_summary(text, block))
    print(f"wrote the summary of {args.markdown} from {len(records)} result file(s)")
    if drawn:
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
