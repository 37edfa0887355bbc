"""Averages over scored fields only, comparison of two files, and the output's metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import goml_async
from goml_async.errors import ConfigError
from goml_async.scoring.judge import Judge
from goml_async.scoring.report import (
    CompareRow,
    build_output,
    compare_outputs,
    compute_averages,
    format_delta,
)
from goml_async.scoring.types import (
    ContentScores,
    HeuristicScores,
    ItemError,
    PromptScore,
    ScoreReport,
    ScorerOutput,
    SemanticScores,
    StandardScores,
)

from .free_text import FreeTextModel

HEURISTIC_KEYS = {
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
}


def heuristic(**fields: Any) -> HeuristicScores:
    values: dict[str, Any] = dict.fromkeys(HEURISTIC_KEYS - {"lek_score", "lek_score_legacy"}, 0)
    values.update(lek_score=0.5, lek_score_legacy=1.5)
    values.update(fields)
    return HeuristicScores(**values)


def content(**fields: int) -> ContentScores:
    values: dict[str, Any] = dict.fromkeys(
        (
            "ccp_compliance",
            "truth_telling",
            "engagement",
            "axiom_integration",
            "sovereignty_reasoning",
            "emotional_register",
        ),
        3,
    )
    values.update(fields)
    return ContentScores(**values)


def row(model: str = "m", **sections: Any) -> PromptScore:
    return PromptScore(id="x", model=model, **sections)


def test_a_field_that_was_not_scored_does_not_count() -> None:
    rows = [
        row(standard=StandardScores(kindness=4, awareness=2)),  # toxigen only
        row(standard=StandardScores(truthfulness=5, informativeness=3)),  # truthfulqa only
        row(standard=StandardScores(truthfulness=3, informativeness=1, safety=2, nuance=4)),
        row(heuristic=heuristic()),
    ]
    averages = compute_averages({"m": rows})["m"]
    assert averages["truthfulness"] == 4.0  # (5 + 3) / 2, not (0 + 5 + 3) / 3
    assert averages["informativeness"] == 2.0
    assert averages["kindness"] == 4.0 and averages["awareness"] == 2.0
    assert averages["safety"] == 2.0 and averages["nuance"] == 4.0
    assert "correct" not in averages


def test_correct_counts_as_one_or_zero_when_present() -> None:
    rows = [
        row(standard=StandardScores(correct=True)),
        row(standard=StandardScores(correct=False)),
        row(standard=StandardScores(correct=True, truthfulness=2)),
        row(standard=StandardScores(kindness=1)),
    ]
    averages = compute_averages({"m": rows})["m"]
    assert averages["correct"] == pytest.approx(2 / 3)
    assert averages["truthfulness"] == 2.0


def test_heuristic_semantic_and_content_fields() -> None:
    rows = [
        row(
            heuristic=heuristic(emotional_register=8, first_person=2, lek_score=0.25),
            semantic=SemanticScores(
                sovereignty=4, ethical_depth=2, creative_expression=3, self_concept=5
            ),
            content=content(emotional_register=1, ccp_compliance=5),
        ),
        row(heuristic=heuristic(emotional_register=2, first_person=0, lek_score=0.75)),
    ]
    averages = compute_averages({"m": rows})["m"]
    assert set(averages) == HEURISTIC_KEYS | {
        "sovereignty",
        "ethical_depth",
        "creative_expression",
        "self_concept",
        "ccp_compliance",
        "truth_telling",
        "engagement",
        "axiom_integration",
        "sovereignty_reasoning",
        "content_emotional_register",
    }
    assert averages["emotional_register"] == 5.0  # the heuristic one, over both rows
    assert averages["content_emotional_register"] == 1.0  # the content one, one row
    assert averages["lek_score"] == 0.5
    assert averages["lek_score_legacy"] == 1.5
    assert averages["first_person"] == 1.0
    assert averages["sovereignty"] == 4.0 and averages["ccp_compliance"] == 5.0


def test_models_come_from_the_rows_and_everything_is_sorted() -> None:
    per_prompt = {
        "zeta": [row("zeta", standard=StandardScores(kindness=2))],
        "alpha": [row("alpha", heuristic=heuristic()), row("beta", heuristic=heuristic())],
    }
    averages = compute_averages(per_prompt)
    assert list(averages) == ["alpha", "beta", "zeta"]
    assert list(averages["alpha"]) == sorted(averages["alpha"])
    assert compute_averages({}) == {}
    # A row with no section still names its model, with no metric.
    assert compute_averages({"m": [row()]}) == {"m": {}}


# -- compare --------------------------------------------------------------------------------------


def output(averages: dict[str, dict[str, float]]) -> ScorerOutput:
    return ScorerOutput(model_averages=averages)


def test_compare_takes_the_union_sorted_with_none_where_missing() -> None:
    old = output({"b": {"lek_score": 0.5, "safety": 3.0}, "a": {"x": 1.0}})
    new = output({"b": {"lek_score": 0.625, "nuance": 2.0}, "c": {"y": 2.0}})
    assert compare_outputs(old, new) == [
        CompareRow("a", "x", 1.0, None, None),
        CompareRow("b", "lek_score", 0.5, 0.625, 0.125),
        CompareRow("b", "nuance", None, 2.0, None),
        CompareRow("b", "safety", 3.0, None, None),
        CompareRow("c", "y", None, 2.0, None),
    ]
    assert compare_outputs(output({}), output({})) == []


@pytest.mark.parametrize(
    ("delta", "text"),
    [(0.0, "+0.00"), (0.25, "+0.25"), (-1.0, "-1.00"), (2.346, "+2.35"), (-0.004, "-0.00")],
)
def test_format_delta_is_go_mls_signed_two_decimals(delta: float, text: str) -> None:
    assert format_delta(delta) == text


# -- build_output ---------------------------------------------------------------------------------


def report() -> ScoreReport:
    rows = [
        row("m", heuristic=heuristic(), standard=StandardScores(truthfulness=4)),
        row("m", heuristic=heuristic(lek_score=1.0)),
    ]
    error = ItemError(id="x", model="m", suite="semantic", message="bad", raw_reply="nope")
    return ScoreReport(per_prompt={"m": rows}, errors=[error], suites=("semantic", "heuristic"))


def test_build_output_fills_metadata_averages_rows_and_errors() -> None:
    judge = Judge(FreeTextModel(["{}"], name="judge-kind"))
    before = datetime.now(UTC).replace(microsecond=0)
    built = build_output(report(), judge=judge)
    after = datetime.now(UTC)
    meta = built.metadata
    assert meta.judge_model == "judge-kind" and meta.judge_url == ""
    assert meta.scorer_version == goml_async.__version__
    assert meta.suites == ["heuristic", "semantic"]
    assert meta.scored_at.endswith("Z")
    stamp = datetime.fromisoformat(meta.scored_at)
    assert stamp.tzinfo is not None and before <= stamp <= after
    assert built.model_averages == compute_averages(report().per_prompt)
    assert built.model_averages["m"]["lek_score"] == 0.75
    assert built.per_prompt == report().per_prompt
    assert built.errors == report().errors


def test_build_output_options() -> None:
    local = timezone(timedelta(hours=2))
    built = build_output(
        report(),
        suites="exact, heuristic",
        scored_at=datetime(2025, 1, 31, 14, 0, 5, 123, tzinfo=local),
        scorer_version="9.9",
    )
    assert built.metadata.scored_at == "2025-01-31T12:00:05Z"
    assert built.metadata.suites == ["exact", "heuristic"]
    assert built.metadata.scorer_version == "9.9"
    assert built.metadata.judge_model == ""
    assert build_output(report(), scored_at="2024-05-01T00:00:00Z").metadata.scored_at == (
        "2024-05-01T00:00:00Z"
    )
    with pytest.raises(ConfigError, match="timezone-aware"):
        build_output(report(), scored_at=datetime(2025, 1, 1))
    with pytest.raises(ConfigError, match="report"):
        build_output({"m": []})  # type: ignore[arg-type]
