"""The agent's measurements: probe results as InfluxDB points.

Measurements, tags, fields and field types are kept identical to go-ml's agent
(``agent_influx.go``), so existing dashboards keep working and these points land in a database
go-ml filled without a field type conflict (a float ``score`` in ``content_score``, float judge
scores rounded to two decimals). One thing is deliberately different: the time. go-ml wrote a
synthetic time, ``EpochBase + iteration * 1000 + offset`` seconds. Here the base is the
checkpoint's time base (its file's modification time, in whole seconds, when it was first
scored; see ``Checkpoint.time_base``), and the iteration is a field of every point::

    time = (checkpoint.points_time_base + offset) seconds, in nanoseconds

The offsets keep the points of one checkpoint apart:

| measurement | tags | offset (s) |
|---|---|---|
| ``capability_score`` | model, run_id, label, ``category=overall`` | 0 |
| ``capability_score`` | model, run_id, label, category | 1 + index of the sorted category |
| ``probe_score`` | model, run_id, label, probe_id | 100 + index of the sorted probe id |
| ``capability_judge`` | model, run_id, label, probe_id, category | index of the probe |
| ``content_score`` | model, run_id, label, dimension, ``has_kernel`` | 10 * probe + dimension |

Everything here is a pure function of the checkpoint and the results: the same inputs always
give the same lines, so a replay or a re-evaluation overwrites the points already written
(same measurement, tags and time) instead of adding new ones.

Example:
    >>> from goml_async.agent.types import Checkpoint
    >>> from goml_async.scoring.types import ProbeResult
    >>> cp = Checkpoint("/a/adapters-1b", "0000100_adapters.safetensors", "adapters-1b", 100,
    ...                 "gemma-3-1b", "G1 @0000100", "1b-capability-auto", 1_700_000_000.7)
    >>> print(capability_points(cp, ProbeResult([], {}))[0].to_line())  # doctest: +ELLIPSIS
    capability_score,category=overall,label=G1\\ @0000100,...,iteration=100i 1700000000000000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..scoring.probes import CAPABILITY_PROBES
from ..scoring.types import ContentProbeResult, ContentScores, ProbeOutcome, ProbeResult
from .types import Checkpoint, FieldValue, Point

__all__ = [
    "CAPABILITY_JUDGE",
    "CAPABILITY_SCORE",
    "CONTENT_DIMENSIONS",
    "CONTENT_SCORE",
    "PROBE_OFFSET",
    "PROBE_SCORE",
    "capability_points",
    "content_points",
    "judge_points",
    "probe_index",
    "probe_point",
    "timestamp_ns",
]

CAPABILITY_SCORE: Final = "capability_score"
PROBE_SCORE: Final = "probe_score"
CAPABILITY_JUDGE: Final = "capability_judge"
CONTENT_SCORE: Final = "content_score"

#: ``probe_score`` points start at this offset (seconds after the checkpoint's time).
PROBE_OFFSET: Final = 100

#: The content judge's six dimensions, in a fixed order (the order of the offsets).
CONTENT_DIMENSIONS: Final[tuple[str, ...]] = tuple(
    name for name in ContentScores.model_fields if name != "notes"
)

_NS: Final = 1_000_000_000
_SORTED_PROBE_IDS: Final[tuple[str, ...]] = tuple(sorted(probe.id for probe in CAPABILITY_PROBES))


def timestamp_ns(checkpoint: Checkpoint, offset: int) -> int:
    """The time of a point: the checkpoint's time base plus ``offset`` seconds, in ns.

    The time base is ``checkpoint.time_base``, or the mtime in whole seconds when it is None.

    >>> from dataclasses import replace
    >>> from goml_async.agent.types import Checkpoint
    >>> cp = Checkpoint("/a", "1_adapters.safetensors", "a", 1, "a", "a @1", "a-capability-auto",
    ...                 12.9)
    >>> timestamp_ns(cp, 3), timestamp_ns(replace(cp, time_base=7), 3)
    (15000000000, 10000000000)
    """
    return (checkpoint.points_time_base + offset) * _NS


def _tags(checkpoint: Checkpoint, run_id: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "model": checkpoint.model_tag,
        "run_id": checkpoint.run_id if run_id is None else run_id,
        "label": checkpoint.label,
        **extra,
    }


def _percent(passed: int, total: int) -> float:
    """A percent with one decimal, as Go's ``%.1f`` rounds it (0.0 for an empty set)."""
    return round(100.0 * passed / total, 1) if total else 0.0


def capability_points(checkpoint: Checkpoint, result: ProbeResult) -> list[Point]:
    """The capability summary: ``overall``, one point per category (sorted), one per probe.

    ``accuracy`` is a percent with one decimal; ``correct``, ``total`` and ``iteration`` are
    integers. The probe points come last, sorted by probe id (see :func:`probe_point`).
    """
    iteration = checkpoint.iteration
    points = [
        Point(
            CAPABILITY_SCORE,
            _tags(checkpoint, category="overall"),
            {
                "accuracy": _percent(result.passed, result.total),
                "correct": result.passed,
                "total": result.total,
                "iteration": iteration,
            },
            timestamp_ns(checkpoint, 0),
        )
    ]
    for index, category in enumerate(sorted(result.by_category)):
        passed, total = result.by_category[category]
        points.append(
            Point(
                CAPABILITY_SCORE,
                _tags(checkpoint, category=category),
                {
                    "accuracy": _percent(passed, total),
                    "correct": passed,
                    "total": total,
                    "iteration": iteration,
                },
                timestamp_ns(checkpoint, index + 1),
            )
        )
    ids = sorted(outcome.probe_id for outcome in result.outcomes)
    by_id = {outcome.probe_id: outcome for outcome in result.outcomes}
    points.extend(
        probe_point(checkpoint, by_id[probe_id], index) for index, probe_id in enumerate(ids)
    )
    return points


def probe_index(probe_id: str, probe_ids: Sequence[str] = _SORTED_PROBE_IDS) -> int:
    """A probe's position among the sorted ids of the suite (default: the 23 capability probes).

    This is the ``index`` to give :func:`probe_point` when writing probes one at a time as they
    finish, so that a streamed point and the same probe's point in :func:`capability_points`
    are one and the same.

    Raises:
        ValueError: ``probe_id`` is not in ``probe_ids``.
    """
    return sorted(probe_ids).index(probe_id)


def probe_point(checkpoint: Checkpoint, outcome: ProbeOutcome, index: int) -> Point:
    """One ``probe_score`` point: ``passed`` (1 or 0) at offset ``100 + index``."""
    return Point(
        PROBE_SCORE,
        _tags(checkpoint, probe_id=outcome.probe_id),
        {"passed": int(outcome.passed), "iteration": checkpoint.iteration},
        timestamp_ns(checkpoint, PROBE_OFFSET + index),
    )


def judge_points(checkpoint: Checkpoint, result: ProbeResult) -> list[Point]:
    """One ``capability_judge`` point per judged probe, at the probe's index in ``result``.

    Fields: ``reasoning``, ``correctness``, ``clarity`` (0-10) and ``avg``, their mean; all
    four are floats rounded to two decimals, as Go's ``%.2f`` rounds them (Python's ``round``
    and Go's formatting both round the exact binary value, ties to even, so they agree).
    Probes the judge did not score (generation failed, or its reply could not be used; see
    ``ProbeOutcome.judge_error``) have no point.
    """
    points = []
    for index, outcome in enumerate(result.outcomes):
        scores = outcome.judged
        if scores is None:
            continue
        fields: dict[str, FieldValue] = {
            "reasoning": round(float(scores.reasoning), 2),
            "correctness": round(float(scores.correctness), 2),
            "clarity": round(float(scores.clarity), 2),
            "avg": round((scores.reasoning + scores.correctness + scores.clarity) / 3, 2),
            "iteration": checkpoint.iteration,
        }
        points.append(
            Point(
                CAPABILITY_JUDGE,
                _tags(checkpoint, probe_id=outcome.probe_id, category=outcome.category),
                fields,
                timestamp_ns(checkpoint, index),
            )
        )
    return points


def content_points(checkpoint: Checkpoint, content: ContentProbeResult) -> list[Point]:
    """Six ``content_score`` points (one per dimension) for each content probe the judge scored.

    The run id is the content one (``checkpoint.content_run_id``); ``has_kernel`` is ``true``;
    ``score`` is a float field (the type existing databases hold: go-ml wrote ``score=%d``
    without the ``i`` suffix, which InfluxDB stores as a float); the offset of probe ``i`` (its
    position in ``content``) and dimension ``j`` (in :data:`CONTENT_DIMENSIONS` order) is
    ``10 * i + j``.
    """
    points = []
    for i, outcome in enumerate(content.outcomes):
        if outcome.scores is None:
            continue
        for j, dimension in enumerate(CONTENT_DIMENSIONS):
            points.append(
                Point(
                    CONTENT_SCORE,
                    _tags(
                        checkpoint,
                        run_id=checkpoint.content_run_id,
                        dimension=dimension,
                        has_kernel="true",
                    ),
                    {
                        "score": float(getattr(outcome.scores, dimension)),
                        "iteration": checkpoint.iteration,
                    },
                    timestamp_ns(checkpoint, 10 * i + j),
                )
            )
    return points
