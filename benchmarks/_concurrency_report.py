"""The tables, JSON record and plot of ``bench_concurrency.py`` (which documents the run)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _report
from _concurrency_serve import SLOT_CONTEXT, SLOTS
from _report import command_line, markdown_table

SIZES = (1, 2, 4, 8)
THREADS = 2
GOAL_RATIO, GOAL_SCALING, GOAL_FAIRNESS, GOAL_TTFT = 0.85, 2.0, 0.8, 0.25
GOAL_SERVE_ONE, GOAL_SERVE_MANY = 0.98, 0.95
GOML, RAW = "goml LlamaModel", "raw httpx SSE"
HEADING = "## Concurrent streams on llama.cpp slots (bench_concurrency.py)"
RESULTS = Path(__file__).resolve().parent / "results"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "concurrency-llama.png"


@dataclass(frozen=True, slots=True)
class Burst:
    """N concurrent streams: aggregate tokens/s and each stream's own rate."""

    tokens: int
    seconds: float
    rates: tuple[float, ...]

    @property
    def aggregate(self) -> float:
        return self.tokens / self.seconds

    @property
    def fairness(self) -> float:
        low, high = min(self.rates, default=0.0), max(self.rates, default=0.0)
        return low / high if high else 0.0


# -- reporting ------------------------------------------------------------------------------------

COLUMNS = ("measure", "goml", "peer", "ratio", "goal", "")


def paired(goml: Sequence[float], peer: Sequence[float]) -> tuple[float, float, float]:
    """Both sides' medians and the median of the round-by-round ratios (each goml run over the
    peer's run beside it), which cancels the machine's speed drifting from round to round."""
    ratios = [g / p for g, p in zip(goml, peer, strict=True) if p]
    return statistics.median(goml), statistics.median(peer), statistics.median(ratios or [0.0])


def medians(results: dict[str, Any]) -> dict[int, tuple[float, float, float]]:
    bursts: dict[int, dict[str, list[Burst]]] = results["bursts"]
    return {
        n: paired([b.aggregate for b in runs[GOML]], [b.aggregate for b in runs[RAW]])
        for n, runs in bursts.items()
    }


def serve_medians(results: dict[str, Any]) -> dict[int, tuple[float, float, float]]:
    serve: dict[int, dict[str, list[float]]] = results["serve"]
    return {n: paired(sides["served"], sides["direct"]) for n, sides in serve.items()}


@dataclass(frozen=True, slots=True)
class Line:
    """One measure of the run: a row of the printed and Markdown tables and, when it has a
    ``summary`` name, a measure of the results JSON (and so of the summary table)."""

    label: str
    goml: float
    peer: float
    ratio: float
    goal: str
    met: bool
    #: How the table shows ``goml`` and ``peer`` (a format spec, then a suffix).
    spec: str = ".1f"
    suffix: str = ""
    summary: str = ""
    unit: str = ""
    peer_name: str = ""

    def cells(self) -> tuple[str, ...]:
        shown = (f"{value:{self.spec}}{self.suffix}" for value in (self.goml, self.peer))
        return (self.label, *shown, f"{self.ratio:.2f}x", self.goal, "PASS" if self.met else "FAIL")

    def measure(self) -> _report.Measure:
        return _report.Measure(
            self.summary,
            self.unit,
            self.goml,
            self.peer,
            self.peer_name,
            self.ratio,
            self.goal,
            self.met,
        )


def lines(results: dict[str, Any]) -> list[Line]:
    rates = medians(results)
    out = [
        Line(
            f"{n} stream(s), aggregate tok/s",
            g,
            r,
            ratio,
            f">= {GOAL_RATIO}x",
            ratio >= GOAL_RATIO,
            summary=f"{n} concurrent stream(s), aggregate",
            unit="tokens/s",
            peer_name=RAW,
        )
        for n, (g, r, ratio) in rates.items()
    ]
    (g1, r1, _), (g8, r8, _) = rates[SIZES[0]], rates[SIZES[-1]]
    scaling = g8 / g1
    out.append(
        Line(
            "8 streams / 1 stream (goml | raw)",
            scaling,
            r8 / r1,
            scaling,
            f">= {GOAL_SCALING}x",
            scaling >= GOAL_SCALING,
            spec=".2f",
            suffix="x",
        )
    )
    eight = results["bursts"][SIZES[-1]]
    fair = statistics.median(b.fairness for b in eight[GOML])
    raw_fair = statistics.median(b.fairness for b in eight[RAW])
    out.append(
        Line(
            "fairness at 8 (slowest/fastest)",
            fair,
            raw_fair,
            fair,
            f">= {GOAL_FAIRNESS}",
            fair >= GOAL_FAIRNESS,
            spec=".2f",
        )
    )
    cache = results["ttft"]
    ratio = cache["warm"] / cache["cold"]
    out.append(
        Line(
            f"2nd-turn TTFT ms, {cache['prefix_tokens']}-token prefix (warm | cold)",
            cache["warm"] * 1000,
            cache["cold"] * 1000,
            ratio,
            f"<= {GOAL_TTFT}x",
            ratio <= GOAL_TTFT,
            spec=".0f",
            summary="2nd-turn TTFT, warm vs cold",
            unit="ms",
            peer_name="cold (no prompt cache)",
        )
    )
    for n, (served, direct, ratio) in serve_medians(results).items():
        goal = GOAL_SERVE_ONE if n == 1 else GOAL_SERVE_MANY
        out.append(
            Line(
                f"goml serve, {n} client(s), tok/s (served | direct)",
                served,
                direct,
                ratio,
                f">= {goal}x",
                ratio >= goal,
                summary=f"goml serve, {n} concurrent client(s)",
                unit="tokens/s",
                peer_name="llama-server direct",
            )
        )
    return out


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    return [line.cells() for line in lines(results)]


def title(args: argparse.Namespace) -> str:
    return (
        f"{args.backend}: greedy streams of {args.tokens} tokens (ignore_eos) on --parallel "
        f"{SLOTS}, medians of {args.repeat} round-robin rounds"
    )


def plot(results: dict[str, Any], mlx: dict[str, Any] | None, path: Path) -> Path | None:
    """Aggregate tokens/s against concurrency (matplotlib; None when it is not installed)."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = medians(results)
    panels = 2 if mlx else 1
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    left = axes[0][0]
    left.plot(
        list(rates), [g for g, _, _ in rates.values()], "o-", color=_report_colour(True), label=GOML
    )
    left.plot(
        list(rates),
        [r for _, r, _ in rates.values()],
        "s--",
        color=_report_colour(False),
        label=RAW,
    )
    left.set_title("llama-server, SmolLM2-135M Q4_1, --parallel 8")
    if mlx:
        right = axes[0][1]
        sizes = [t.streams for t in mlx["throughput"]]
        right.plot(
            sizes,
            [t.goml for t in mlx["throughput"]],
            "o-",
            color=_report_colour(True),
            label="goml MLXModel",
        )
        right.plot(
            sizes,
            [t.raw for t in mlx["throughput"]],
            "s--",
            color=_report_colour(False),
            label="mlx_lm.batch_generate",
        )
        right.set_title("MLX, tiny llama")
    for axis in axes[0]:
        axis.set_xlabel("concurrent streams")
        axis.set_ylabel("aggregate tokens/s")
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(SIZES), [str(n) for n in SIZES])
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _report_colour(goml: bool) -> str:
    return "#3f51b5" if goml else "#9e9e9e"


def escaped(table: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """Cells with their ``|`` escaped, which would otherwise end a Markdown table cell."""
    return [tuple(cell.replace("|", "\\|") for cell in line) for line in table]


def markdown_section(
    results: dict[str, Any], mlx: dict[str, Any] | None, why: str, args: argparse.Namespace
) -> str:
    parts = [
        HEADING,
        "",
        f"- Machine: {_report.machine_line(('anyio', 'httpx', 'goml_async'))}",
        f"- Server: {results['server']}; bundled SmolLM2-135M-Instruct Q4_1, --parallel {SLOTS}, "
        f"{SLOT_CONTEXT} tokens per slot, -t {THREADS}",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command_line()}`",
        "- aggregate = all tokens of the N streams over the wall time from the first request to "
        "the last token; fairness = slowest/fastest stream rate at 8; TTFT warm = second turn "
        "after the first, cold = the same request with `cache_prompt: false`; goml serve = "
        "C clients streaming `/v1/completions` through `goml serve --max-concurrency 8` against "
        "the same clients on its llama-server directly. Rates are medians; ratio = the median "
        "of the round-by-round ratios (each goml run over the peer's run beside it), which "
        "cancels this shared machine's speed drifting between rounds.",
        "",
        f"### {title(args)}",
        "",
        markdown_table(COLUMNS, escaped(rows(results))),
        "",
        "![aggregate tokens/s against concurrent streams](img/concurrency-llama.png)",
    ]
    if mlx is not None:
        import _concurrency_mlx

        parts += [
            "",
            "### MLX (tiny llama)",
            "",
            markdown_table(_concurrency_mlx.COLUMNS, escaped(_concurrency_mlx.rows(mlx))),
        ]
    else:
        parts += ["", f"MLX: not run ({why})."]
    return "\n".join(parts)


def write_results(results: dict[str, Any], mlx: dict[str, Any] | None) -> Path:
    rates = medians(results)
    measures = [line.measure() for line in lines(results) if line.summary]
    g8, r8, _ = rates[SIZES[-1]]
    throughput = [
        _report.Throughput(f"llama.cpp: {SIZES[-1]} concurrent streams", GOML, {GOML: g8, RAW: r8})
    ]
    path = _report.write_results(
        "bench_concurrency",
        title="concurrent streams",
        heading=HEADING.removeprefix("## "),
        machine=_report.machine_line(("anyio", "httpx", "goml_async")),
        measures=measures,
        throughput=throughput,
    )
    record = json.loads(path.read_text())
    record["samples"] = {
        "bursts": {
            str(n): {name: [asdict(b) for b in runs] for name, runs in by_name.items()}
            for n, by_name in results["bursts"].items()
        },
        "ttft": results["ttft"],
        "serve": {str(n): sides for n, sides in results["serve"].items()},
        "mlx": None if mlx is None else {key: _plain(value) for key, value in mlx.items()},
    }
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value
