"""Expand seed prompts into responses with one model, resumably.

Each worker appends its rows to ``{output_dir}/expand-{worker}.jsonl``, one JSON object per
generated response::

    {"id": "seed-17", "domain": "ethics", "prompt": "...", "response": "...",
     "model": "gemma-3-12b", "elapsed_seconds": 4.21, "chars": 1834}

Input: a JSONL file of ``{"id": str, "prompt": str, "domain": str}`` objects (``domain`` may
be left out). Seeds are not read from DuckDB (as go-ml read them): export the seeds table to
JSONL first (``COPY seeds TO 'seeds.jsonl'`` in DuckDB, renaming ``seed_id`` to ``id``, or
just keep ``seed_id``: it is accepted too).

Generation uses temperature 0.7 and 2048 max tokens, one prompt at a time.
A prompt is skipped when its id is already done: in this worker's JSONL file, in
``completed_ids``, or (with a sink) in Influx's ``SELECT DISTINCT seed_id FROM expansion_gen``.
A query failure is a recorded warning, not fatal: the JSONL file still prevents repeats.

After each success two points go to the sink with the real time of the generation (not a time
the server stamps, so a replay overwrites them instead of writing them twice):

- ``expansion_gen,d={domain},i={index},w={worker}`` with ``seed_id`` (string), ``gen_time``
  (seconds), ``chars`` (int) and ``model`` (string); ``index`` is the prompt's position in the
  input, so it stays the same across restarts;
- ``expansion_progress,worker={worker}`` with ``completed`` and ``target`` (ints, this run) and
  ``pct``.

A generation or publish failure is recorded in :attr:`ExpandSummary.errors` and counted; the
run goes on with the next prompt.

Example:
    ```python
    prompts = read_prompts("seeds.jsonl")
    async with await goml_async.load_model("http://127.0.0.1:8080/v1", model="m") as model:
        summary = await expand_prompts(model, prompts, worker="w1", output_dir="out")
    print(summary.generated, "generated,", len(summary.errors), "errors")
    ```
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio

from .._validate import int_at_least, is_int
from ..errors import ConfigError, GenerationError, GomlError, SinkError
from ..model import TextModel
from ..types import GenerateConfig, Message
from .types import Point

if TYPE_CHECKING:
    from .influx import InfluxSink

__all__ = [
    "DRY_RUN_LISTED",
    "EXPAND_CONFIG",
    "ExpandRow",
    "ExpandSummary",
    "SeedPrompt",
    "expand_prompts",
    "output_path",
    "read_completed_ids",
    "read_prompts",
    "seed_ids_in_influx",
]

logger = logging.getLogger(__name__)

#: The expansion settings.
EXPAND_CONFIG: Final = GenerateConfig(temperature=0.7, max_tokens=2048)
#: How many prompts a dry run lists.
DRY_RUN_LISTED: Final = 10

_NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class SeedPrompt:
    """One input prompt; ``index`` is its position in the input file (from 0)."""

    id: str
    prompt: str
    domain: str = ""
    index: int = 0


@dataclass(frozen=True, slots=True)
class ExpandRow:
    """One output row."""

    id: str
    domain: str
    prompt: str
    response: str
    model: str
    elapsed_seconds: float
    chars: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "domain": self.domain,
                "prompt": self.prompt,
                "response": self.response,
                "model": self.model,
                "elapsed_seconds": self.elapsed_seconds,
                "chars": self.chars,
            },
            ensure_ascii=False,
        )


@dataclass(slots=True)
class ExpandSummary:
    """What :func:`expand_prompts` did.

    Attributes:
        total: prompts in the input.
        skipped: prompts already completed.
        target: prompts this run set out to generate (after skipping and ``limit``).
        generated: rows written.
        buffered: rows whose points wait in the sink's buffer (Influx unreachable).
        listed: in a dry run, the first prompts that would be generated.
        errors: ``(id, message)`` for each failed generation or publish, in order.
        warnings: recoverable problems (e.g. the completed-ids query failed).
        output: the JSONL file written.
    """

    total: int = 0
    skipped: int = 0
    target: int = 0
    generated: int = 0
    buffered: int = 0
    listed: list[SeedPrompt] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: Path | None = None


def read_prompts(path: str | os.PathLike[str]) -> list[SeedPrompt]:
    """Read a prompts JSONL file: one ``{"id", "prompt", "domain"}`` object per line.

    ``seed_id`` is accepted for ``id``; blank lines are ignored.

    Raises:
        ConfigError: the file is missing, or a line is not such an object (names the line).
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("prompts", f"cannot read {str(source)!r}: {exc}") from exc
    prompts: list[SeedPrompt] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError("prompts", f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise ConfigError("prompts", f"{where}: expected an object, got {row!r:.60}")
        seed_id = row.get("id", row.get("seed_id"))
        prompt, domain = row.get("prompt"), row.get("domain", "")
        if is_int(seed_id):
            seed_id = str(seed_id)
        if not isinstance(seed_id, str) or not seed_id:
            raise ConfigError("prompts", f'{where}: "id" must be a non-empty string')
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("prompts", f'{where}: "prompt" must be a non-empty string')
        if not isinstance(domain, str):
            raise ConfigError("prompts", f'{where}: "domain" must be a string')
        if seed_id in seen:
            raise ConfigError("prompts", f"{where}: duplicate id {seed_id!r}")
        seen.add(seed_id)
        prompts.append(SeedPrompt(seed_id, prompt, domain, len(prompts)))
    return prompts


def output_path(output_dir: str | os.PathLike[str], worker: str) -> Path:
    """``{output_dir}/expand-{worker}.jsonl``."""
    return Path(output_dir) / f"expand-{worker}.jsonl"


def read_completed_ids(path: str | os.PathLike[str]) -> set[str]:
    """The ids in an existing output file (a torn last line from a crash is ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    ids = set()
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the torn tail of an interrupted append
        if isinstance(row, dict) and isinstance(row.get("id"), str):
            ids.add(row["id"])
    return ids


async def expand_prompts(
    model: TextModel | None,
    prompts: Sequence[SeedPrompt],
    *,
    worker: str,
    output_dir: str | os.PathLike[str],
    sink: InfluxSink | None = None,
    model_name: str = "",
    dry_run: bool = False,
    limit: int = 0,
    completed_ids: Collection[str] = (),
    config: GenerateConfig = EXPAND_CONFIG,
    on_row: Callable[[ExpandRow, ExpandSummary], object] | None = None,
) -> ExpandSummary:
    """Generate a response for every prompt not done yet, appending rows to the worker's file.

    Args:
        model: the model that writes the responses (may be None for a dry run).
        prompts: the seed prompts (see :func:`read_prompts`).
        worker: this worker's name (the file name and the ``w`` tag).
        output_dir: where ``expand-{worker}.jsonl`` is appended (created if needed).
        sink: where the ``expansion_gen``/``expansion_progress`` points go, and which
            ``seed_id``\\ s Influx already has; None: no points.
        model_name: the ``model`` of each row (default: the model's ``model_type``).
        dry_run: only list the first :data:`DRY_RUN_LISTED` prompts that would be generated.
        limit: generate at most this many (0: no limit).
        completed_ids: ids to skip besides those found in the file and in Influx.
        config: generation settings (default: temperature 0.7, 2048 tokens).
        on_row: called after each row is written, with the row and the summary so far.

    Returns:
        An :class:`ExpandSummary`; failures are in its ``errors``, never raised.

    Raises:
        ConfigError: ``worker`` is empty or has a path separator, ``limit`` < 0, or no
            model was given for a real run.
    """
    if not worker or any(sep in worker for sep in ("/", "\\", "\0")):
        raise ConfigError("worker", f"must be a non-empty name without '/', got {worker!r}")
    int_at_least("limit", limit, 0)
    output = output_path(output_dir, worker)
    summary = ExpandSummary(total=len(prompts), output=output)
    done = set(completed_ids) | await anyio.to_thread.run_sync(read_completed_ids, output)
    if sink is not None:
        done |= await _influx_completed(sink, summary)
    remaining = [prompt for prompt in prompts if prompt.id not in done]
    summary.skipped = len(prompts) - len(remaining)
    if limit:
        remaining = remaining[:limit]
    summary.target = len(remaining)
    if dry_run:
        summary.listed = remaining[:DRY_RUN_LISTED]
        return summary
    if not remaining:
        return summary
    if model is None:
        raise ConfigError("model", "a model is needed unless dry_run is set")
    name = model_name or model.model_type
    await anyio.Path(output.parent).mkdir(parents=True, exist_ok=True)
    await anyio.to_thread.run_sync(_drop_torn_tail, output)
    for seed in remaining:
        row = await _generate(model, seed, name, config, summary)
        if row is None:
            continue
        await anyio.to_thread.run_sync(_append, output, row.to_json())
        summary.generated += 1
        if sink is not None:
            await _publish(sink, seed, row, worker, summary)
        if on_row is not None:
            on_row(row, summary)
    return summary


async def seed_ids_in_influx(sink: InfluxSink) -> set[str]:
    """The ``seed_id``\\ s already in ``expansion_gen``.

    InfluxQL ``SELECT DISTINCT("seed_id") FROM "expansion_gen"``, or with ``query="sql"`` the
    SQL ``SELECT DISTINCT seed_id FROM expansion_gen``. A sink without a URL has none.

    Raises:
        SinkError: the server is unreachable or refused the query.
    """
    if sink.url is None:
        return set()
    if sink.query == "sql":
        rows = await sink.query_sql("SELECT DISTINCT seed_id FROM expansion_gen")
        values = [row.get("seed_id") for row in rows if isinstance(row, dict)]
        return {value for value in values if isinstance(value, str)}
    data = await sink.query_influxql('SELECT DISTINCT("seed_id") FROM "expansion_gen"')
    ids: set[str] = set()
    for result in data.get("results") or []:
        if result.get("error") and "not found" not in str(result["error"]):
            raise SinkError(f"InfluxQL query failed: {result['error']}")
        for series in result.get("series") or []:
            ids.update(row[-1] for row in series.get("values") or [] if isinstance(row[-1], str))
    return ids


async def _influx_completed(sink: InfluxSink, summary: ExpandSummary) -> set[str]:
    try:
        return await seed_ids_in_influx(sink)
    except SinkError as exc:
        message = f"cannot read completed ids from Influx ({exc}); using the output file only"
        logger.warning("%s", message)
        summary.warnings.append(message)
        return set()


async def _generate(
    model: TextModel, seed: SeedPrompt, name: str, config: GenerateConfig, summary: ExpandSummary
) -> ExpandRow | None:
    started = time.perf_counter()
    try:
        async with model.chat([Message("user", seed.prompt)], config) as stream:
            result = await stream.collect()
    except GomlError as exc:
        kept = f" (after {exc.tokens_generated} tokens)" if isinstance(exc, GenerationError) else ""
        message = f"{type(exc).__name__}: {exc}{kept}"
        logger.error("expand %s failed: %s", seed.id, message)
        summary.errors.append((seed.id, message))
        return None
    elapsed = round(time.perf_counter() - started, 3)
    return ExpandRow(
        seed.id, seed.domain, seed.prompt, result.text, name, elapsed, len(result.text)
    )


async def _publish(
    sink: InfluxSink, seed: SeedPrompt, row: ExpandRow, worker: str, summary: ExpandSummary
) -> None:
    now = time.time_ns()
    completed, target = summary.generated, summary.target
    points = [
        Point(
            "expansion_gen",
            {"i": str(seed.index), "w": worker, "d": seed.domain},
            {
                "seed_id": seed.id,
                "gen_time": row.elapsed_seconds,
                "chars": row.chars,
                "model": row.model,
            },
            now,
        ),
        Point(
            "expansion_progress",
            {"worker": worker},
            {
                "completed": completed,
                "target": target,
                "pct": round(100.0 * completed / target, 1) if target else 0.0,
            },
            now,
        ),
    ]
    try:
        written = await sink.publish(points, key=f"expand|{worker}|{seed.id}")
    except GomlError as exc:
        message = f"publishing failed: {type(exc).__name__}: {exc}"
        logger.error("expand %s: %s", seed.id, message)
        summary.errors.append((seed.id, message))
        return
    if not written:
        summary.buffered += 1


def _drop_torn_tail(path: Path) -> None:
    """Cut a half-written last line (a killed run) so the next row starts on its own line."""
    try:
        with path.open("r+b") as file:
            data = file.read()
            complete = data.rfind(b"\n") + 1
            if complete < len(data):
                logger.warning(
                    "%s: dropped a torn last line (%d bytes)", path, len(data) - complete
                )
                file.truncate(complete)
    except FileNotFoundError:
        return


def _append(path: Path, line: str) -> None:
    """Append one row and fsync it, so a crash never loses a row it reported."""
    with path.open("a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())
