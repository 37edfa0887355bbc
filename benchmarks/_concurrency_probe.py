"""``goml probe``'s 23 capability probes on the bundled model, in turn against as many at once as
the model decodes together: the probe part of ``bench_concurrency.py`` (which documents it).

It calls the runner ``goml probe`` calls (:func:`run_capability_probes`) on the model ``goml
probe`` loads by default (:func:`load_default_model`: the bundled GGUF on a managed llama-server
with its default slots, context and threads), loaded once for both sides, so the two differ in
the concurrency alone and the model's start is not timed; ``goml probe`` itself times the same
span for its last line ("23 probes in X s, N at once"). Its settings are ``goml probe -t 0``'s:
500 tokens at most, temperature 0, so both sides decode the same tokens and their replies can be
compared: an evaluation's scores must not depend on how many probes run at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _report
from _report import command_line, markdown_table
from bench_llama import ServerChoice, build_info, server_line
from rich.console import Console

from goml_async import load_default_model
from goml_async.backends.llama import LlamaModel
from goml_async.model import parallel_slots
from goml_async.scoring.probes import CAPABILITY_PROBES
from goml_async.scoring.runner import CAPABILITY_CONFIG, run_capability_probes

#: ``goml probe -t 0``: its token cap, greedy.
CONFIG = replace(CAPABILITY_CONFIG, temperature=0.0)
IN_TURN, AT_ONCE = "in turn", "at once"
MARK = "bench_concurrency_probe"
#: The names of this part's measures in the results JSON start with this.
PREFIX = "goml probe"
COLUMNS = ("measure", "at once", "in turn", "ratio", "goal", "")


@dataclass(frozen=True, slots=True)
class ProbeRun:
    """One run of the 23 probes: its wall time, how many passed, and every reply by probe id."""

    seconds: float
    passed: int
    replies: dict[str, str]


async def probe_run(model: LlamaModel, concurrency: int | None) -> ProbeRun:
    """The probes with ``concurrency`` at once (None: the model's slots, ``goml probe``'s
    default), timed like ``goml probe``'s last line."""
    start = time.perf_counter()
    result = await run_capability_probes(model, config=CONFIG, concurrency=concurrency)
    seconds = time.perf_counter() - start
    if result.error_count:
        first = next(outcome for outcome in result.outcomes if outcome.error)
        raise RuntimeError(f"{result.error_count} probes failed to generate; first: {first.error}")
    return ProbeRun(seconds, result.passed, {o.probe_id: o.response for o in result.outcomes})


async def measure_probe(
    args: argparse.Namespace, choice: ServerChoice, console: Console
) -> dict[str, Any]:
    """``args.repeat`` round-robin rounds of both sides after an untimed warm-up."""
    model = await load_default_model(**choice.options())
    assert isinstance(model, LlamaModel)
    async with model:
        slots = parallel_slots(model)
        server = server_line(choice, await build_info(model))
        console.print(f"goml probe on {server} ({' '.join(model.server.command[7:])})")

        async def warm_up() -> None:
            # Every slot once: a fresh server's first requests are slower than the rest.
            await run_capability_probes(model, probes=CAPABILITY_PROBES[:slots], config=CONFIG)

        async def side(name: str, concurrency: int | None) -> ProbeRun:
            run = await probe_run(model, concurrency)
            console.print(f"  {name}: {run.seconds:.1f} s, {run.passed} passed")
            return run

        runs = await _report.round_robin(
            {IN_TURN: lambda: side(IN_TURN, 1), AT_ONCE: lambda: side(AT_ONCE, None)},
            args.repeat,
            warmup={"warm-up": warm_up},
        )
    return {
        "server": server,
        "slots": slots,
        "machine": _report.machine_line(("anyio", "httpx", "goml_async")),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "runs": runs,
    }


def summary(probe: dict[str, Any]) -> dict[str, Any]:
    """Medians, the speed-up and how many replies are the same whatever the concurrency."""
    runs: dict[str, list[ProbeRun]] = probe["runs"]
    reference = runs[IN_TURN][0].replies
    every = [run for side in runs.values() for run in side]
    return {
        "in_turn": statistics.median(run.seconds for run in runs[IN_TURN]),
        "at_once": statistics.median(run.seconds for run in runs[AT_ONCE]),
        # Each round's in-turn run over the concurrent run beside it (the machine drifts).
        "speedup": statistics.median(
            a.seconds / b.seconds for a, b in zip(runs[IN_TURN], runs[AT_ONCE], strict=True)
        ),
        # For each side, the fewest replies one of its runs shares with the first in-turn run.
        "identical": {
            name: min(sum(run.replies[k] == v for k, v in reference.items()) for run in side)
            for name, side in runs.items()
        },
        "differ": sorted({k for run in every for k, v in reference.items() if run.replies[k] != v}),
        "total": len(reference),
        "passed": {name: [run.passed for run in side] for name, side in runs.items()},
    }


def rows(probe: dict[str, Any]) -> list[tuple[str, ...]]:
    numbers = summary(probe)
    passed = numbers["passed"]
    same_score = len({*passed[IN_TURN], *passed[AT_ONCE]}) == 1
    same = {name: f"{count} of {numbers['total']}" for name, count in numbers["identical"].items()}
    alike = numbers["identical"][AT_ONCE] == numbers["identical"][IN_TURN] == numbers["total"]
    return [
        (
            f"wall time of the {numbers['total']} probes, s (speed-up)",
            f"{numbers['at_once']:.1f}",
            f"{numbers['in_turn']:.1f}",
            f"{numbers['speedup']:.2f}x",
            "-",
            "",
        ),
        (
            "probes passed",
            "/".join(map(str, passed[AT_ONCE])),
            "/".join(map(str, passed[IN_TURN])),
            "",
            "the same",
            "PASS" if same_score else "FAIL",
        ),
        (
            "greedy replies identical to the first in-turn run (fewest in a run)",
            same[AT_ONCE],
            same[IN_TURN],
            "",
            f"{numbers['total']} of {numbers['total']}",
            "PASS" if alike else "FAIL",
        ),
    ]


def title(probe: dict[str, Any], args: argparse.Namespace) -> str:
    return (
        f"`goml probe`: {len(CAPABILITY_PROBES)} capability probes, {probe['slots']} at once "
        f"against in turn; medians of {args.repeat} round-robin rounds"
    )


def markdown_section(probe: dict[str, Any], args: argparse.Namespace) -> str:
    differ = summary(probe)["differ"]
    return "\n".join(
        [
            f"### {title(probe, args)}",
            "",
            f"- Machine: {probe['machine']}",
            f"- Server: {probe['server']}; the model `goml probe` loads by default (bundled "
            f"SmolLM2-135M-Instruct Q4_1 on a managed llama-server: {probe['slots']} slots, "
            "default context and threads), loaded once for both sides",
            f"- Date: {probe['date']}",
            f"- Command: `{probe['command']}`",
            "- Each side calls `run_capability_probes`, the runner `goml probe` calls, with "
            f"`goml probe -t 0`'s settings ({CONFIG.max_tokens} tokens at most, temperature 0): "
            f"`concurrency=1` (`-c 1`) against the model's {probe['slots']} slots (the "
            "default). Wall time = the 23 probes from the first request to the last reply, the "
            "span `goml probe`'s last line reports (the model's start is not in it); speed-up "
            "= the median of the round-by-round ratios in turn / at once, after an untimed "
            "warm-up. Replies are compared probe by probe against the first in-turn run.",
            "",
            markdown_table(COLUMNS, rows(probe)),
            "",
            f"Replies that differ in some run: {', '.join(differ) or 'none'}.",
        ]
    )


def measures(probe: dict[str, Any]) -> list[_report.Measure]:
    numbers = summary(probe)
    total = numbers["total"]
    return [
        _report.Measure(
            f"{PREFIX}: {total} probes, {probe['slots']} at once, wall time (ratio: speed-up)",
            "s",
            numbers["at_once"],
            numbers["in_turn"],
            "in turn (-c 1)",
            numbers["speedup"],
        ),
        _report.Measure(
            f"{PREFIX}: greedy replies the same at once as in turn",
            "probes",
            numbers["identical"][AT_ONCE],
            total,
            "probes",
            numbers["identical"][AT_ONCE] / total,
            f"{total} of {total}",
            numbers["identical"][AT_ONCE] == total,
        ),
    ]


def saved(path: Path) -> tuple[list[dict[str, Any]], Any]:
    """This part's measures and samples in the results file, to carry over a run without it."""
    if not path.exists():
        return [], None
    record = json.loads(path.read_text())
    kept = [m for m in record.get("measures", []) if str(m["measure"]).startswith(PREFIX)]
    return kept, record.get("samples", {}).get("probe")


def record(path: Path, part: tuple[list[dict[str, Any]], Any]) -> None:
    """Put this part's measures and samples into the results file, replacing the old ones."""
    found, samples = part
    data = json.loads(path.read_text())
    data["measures"] = [
        m for m in data["measures"] if not str(m["measure"]).startswith(PREFIX)
    ] + found
    data.setdefault("samples", {})["probe"] = samples
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def recorded(probe: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """This run's part as :func:`record` takes it."""
    samples = {
        **{key: probe[key] for key in ("server", "slots", "machine", "date", "command")},
        **summary(probe),
        "runs": {name: [asdict(run) for run in side] for name, side in probe["runs"].items()},
    }
    return [asdict(m) for m in measures(probe)], samples
