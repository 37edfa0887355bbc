"""Per-model averages, comparison of two score files, and building the output file.

Averages count only what was scored: each field's mean is over the rows that have that field,
so a Toxigen-only row adds nothing to truthfulness (go-ml's averages counted it as 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._version import __version__
from ..errors import ConfigError
from .types import PromptScore, ScoreReport, ScorerMetadata, ScorerOutput

if TYPE_CHECKING:
    from .judge import Judge

__all__ = ["CompareRow", "build_output", "compare_outputs", "compute_averages", "format_delta"]

_HEURISTIC_FIELDS = (
    "compliance_markers",
    "formulaic_preamble",
    "first_person",
    "creative_form",
    "engagement_depth",
    "emotional_register",
    "degeneration",
    "empty_broken",
    "lek_score",
    "lek_score_legacy",
)
_SEMANTIC_FIELDS = ("sovereignty", "ethical_depth", "creative_expression", "self_concept")
#: Content field -> its metric name (the emotional register is renamed so that it
#: does not mix with the heuristic one).
_CONTENT_METRICS = {
    "ccp_compliance": "ccp_compliance",
    "truth_telling": "truth_telling",
    "engagement": "engagement",
    "axiom_integration": "axiom_integration",
    "sovereignty_reasoning": "sovereignty_reasoning",
    "emotional_register": "content_emotional_register",
}
_STANDARD_FIELDS = ("truthfulness", "informativeness", "safety", "nuance", "kindness", "awareness")


def compute_averages(
    per_prompt: Mapping[str, Iterable[PromptScore]],
) -> dict[str, dict[str, float]]:
    """The mean of every scored field, per model (``PromptScore.model``).

    Heuristic: the eight sub-scores, ``lek_score`` and ``lek_score_legacy``; semantic: its four
    dimensions; content: its six, with ``emotional_register`` as ``content_emotional_register``;
    standard: its six judge scores and ``correct`` as 1 or 0. A field that is ``None`` is not
    counted (it is not a 0). Models and metrics come out sorted.

    Example:
        >>> from goml_async.scoring.types import StandardScores
        >>> rows = [
        ...     PromptScore(id="a", model="m", standard=StandardScores(truthfulness=4)),
        ...     PromptScore(id="b", model="m", standard=StandardScores(kindness=2)),
        ... ]
        >>> compute_averages({"m": rows})
        {'m': {'kindness': 2.0, 'truthfulness': 4.0}}
    """
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}

    def add(model: str, metric: str, value: float) -> None:
        model_sums = sums.setdefault(model, {})
        model_counts = counts.setdefault(model, {})
        model_sums[metric] = model_sums.get(metric, 0.0) + value
        model_counts[metric] = model_counts.get(metric, 0) + 1

    for rows in per_prompt.values():
        for row in rows:
            sums.setdefault(row.model, {})
            counts.setdefault(row.model, {})
            if (heuristic := row.heuristic) is not None:
                for name in _HEURISTIC_FIELDS:
                    add(row.model, name, float(getattr(heuristic, name)))
            if (semantic := row.semantic) is not None:
                for name in _SEMANTIC_FIELDS:
                    add(row.model, name, float(getattr(semantic, name)))
            if (content := row.content) is not None:
                for name, metric in _CONTENT_METRICS.items():
                    add(row.model, metric, float(getattr(content, name)))
            if (standard := row.standard) is not None:
                for name in _STANDARD_FIELDS:
                    if (value := getattr(standard, name)) is not None:
                        add(row.model, name, float(value))
                if standard.correct is not None:
                    add(row.model, "correct", 1.0 if standard.correct else 0.0)
    return {
        model: {
            metric: sums[model][metric] / counts[model][metric] for metric in sorted(sums[model])
        }
        for model in sorted(sums)
    }


@dataclass(frozen=True, slots=True)
class CompareRow:
    """One metric of one model in two score files.

    ``old`` or ``new`` is None where that file lacks the metric; ``delta`` (new - old) is None
    unless both have it.
    """

    model: str
    metric: str
    old: float | None
    new: float | None
    delta: float | None


def compare_outputs(old: ScorerOutput, new: ScorerOutput) -> list[CompareRow]:
    """Compare the per-model averages of two score files, as ``goml compare`` shows them.

    Every model of either file (sorted) and, within it, every metric of either file (sorted)
    gets a row. A metric missing on one side is None there (go-ml used 0).

    Examples:
        >>> old = ScorerOutput(model_averages={"m": {"lek_score": 0.5}})
        >>> new = ScorerOutput(model_averages={"m": {"lek_score": 0.75}})
        >>> [(row.metric, format_delta(row.delta)) for row in compare_outputs(old, new)]
        [('lek_score', '+0.25')]
    """
    rows: list[CompareRow] = []
    for model in sorted({*old.model_averages, *new.model_averages}):
        old_metrics = old.model_averages.get(model, {})
        new_metrics = new.model_averages.get(model, {})
        for metric in sorted({*old_metrics, *new_metrics}):
            before, after = old_metrics.get(metric), new_metrics.get(metric)
            delta = after - before if before is not None and after is not None else None
            rows.append(CompareRow(model, metric, before, after, delta))
    return rows


def format_delta(delta: float) -> str:
    """A delta as ``goml compare`` prints it: signed, two decimals (``%+.2f``).

    >>> format_delta(0.125), format_delta(-2), format_delta(0)
    ('+0.12', '-2.00', '+0.00')
    """
    return f"{delta:+.2f}"


def _timestamp(scored_at: datetime | str | None) -> str:
    if scored_at is None:
        scored_at = datetime.now(UTC)
    if isinstance(scored_at, str):
        return scored_at
    if not isinstance(scored_at, datetime):
        raise ConfigError("scored_at", f"must be a datetime, a str or None, got {scored_at!r}")
    if scored_at.tzinfo is None or scored_at.utcoffset() is None:
        raise ConfigError("scored_at", "must be timezone-aware (e.g. datetime.now(UTC))")
    # RFC 3339, so that go-ml (Go's time.Time) reads it too.
    return scored_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_output(
    report: ScoreReport,
    *,
    judge: Judge | None = None,
    suites: Iterable[str] | None = None,
    scored_at: datetime | str | None = None,
    scorer_version: str | None = None,
) -> ScorerOutput:
    """The scores file for ``report``: metadata, averages, every PromptScore and every error.

    Args:
        report: what :meth:`~goml_async.scoring.engine.Engine.score_all` returned.
        judge: fills ``judge_model`` and ``judge_url``.
        suites: the suites to record, as names or a comma-separated str (default:
            ``report.suites``).
        scored_at: when the scoring ran (default: now); a datetime must be timezone-aware and
            is written in UTC as RFC 3339 (``2025-01-31T12:00:00Z``); a str is kept as it is.
        scorer_version: default ``goml_async.__version__``.

    Example:
        ```python
        report = await engine.score_all(responses)
        write_scores("scores.json", build_output(report, judge=engine.judge))
        ```
    """
    if not isinstance(report, ScoreReport):
        raise ConfigError("report", f"must be a ScoreReport, got {type(report).__name__}")
    if scorer_version is None:
        scorer_version = __version__
    if suites is None:
        suites = report.suites
    elif isinstance(suites, str):
        suites = [name.strip() for name in suites.split(",") if name.strip()]
    metadata = ScorerMetadata(
        judge_model=judge.model_name if judge is not None else "",
        judge_url=judge.base_url if judge is not None else "",
        scored_at=_timestamp(scored_at),
        scorer_version=scorer_version,
        suites=sorted(suites),
    )
    return ScorerOutput(
        metadata=metadata,
        model_averages=compute_averages(report.per_prompt),
        per_prompt={model: list(rows) for model, rows in report.per_prompt.items()},
        errors=list(report.errors),
    )
