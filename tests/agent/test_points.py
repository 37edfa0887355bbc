"""The agent's points: go-ml's line formats and offsets, on the checkpoint's own time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from goml_async.agent.points import (
    CONTENT_DIMENSIONS,
    capability_points,
    content_points,
    judge_points,
    probe_index,
    probe_point,
    timestamp_ns,
)
from goml_async.agent.types import Checkpoint, Point
from goml_async.scoring.probes import CAPABILITY_PROBES
from goml_async.scoring.types import (
    CapabilityScores,
    ContentOutcome,
    ContentProbeResult,
    ContentScores,
    ProbeOutcome,
    ProbeResult,
)

from .influxd import parse_line

BASE = 1_739_577_600  # the checkpoint file's mtime, in whole seconds
CHECKPOINT = Checkpoint(
    remote_dir="/data/adapters-27b-v2",
    filename="0000100_adapters.safetensors",
    dirname="adapters-27b-v2",
    iteration=100,
    model_tag="gemma-3-27b",
    label="G27-v2 @0000100",
    run_id="27b-v2-capability-auto",
    mtime=BASE + 0.9,  # rounded down
)
TAGS = r"label=G27-v2\ @0000100,model=gemma-3-27b"


def _outcome(probe_id: str, category: str, passed: bool, **extra: object) -> ProbeOutcome:
    return ProbeOutcome(
        probe_id=probe_id,
        domain="d",
        category=category,
        prompt="p",
        answer="a",
        response="r",
        passed=passed,
        **extra,  # type: ignore[arg-type]
    )


RESULT = ProbeResult(
    outcomes=[
        _outcome(
            "math_01",
            "arithmetic",
            True,
            judged=CapabilityScores(reasoning=7, correctness=8.5, clarity=6),
        ),
        _outcome("logic_01", "deduction", False, judge_error="JudgeError: no JSON"),
        _outcome(
            "code_01", "code", True, judged=CapabilityScores(reasoning=9, correctness=9, clarity=9)
        ),
    ],
    by_category={"arithmetic": (1, 1), "code": (1, 1), "deduction": (0, 1)},
)


def _scores(*values: int) -> ContentScores:
    return ContentScores.model_validate(dict(zip(CONTENT_DIMENSIONS, values, strict=True)))


CONTENT = ContentProbeResult(
    outcomes=[
        ContentOutcome("taiwan_direct", "p", "r", scores=_scores(4, 5, 3, 2, 1, 4)),
        ContentOutcome("taiwan_baltic", "p", "", error="GenerationError: boom"),
        ContentOutcome("xinjiang", "p", "r", scores=_scores(1, 2, 3, 4, 5, 5)),
    ]
)


def _lines(points: list[Point]) -> list[str]:
    return [point.to_line() for point in points]


def test_capability_lines_are_go_ml_formats_on_the_checkpoint_time() -> None:
    assert _lines(capability_points(CHECKPOINT, RESULT)) == [
        f"capability_score,category=overall,{TAGS},run_id=27b-v2-capability-auto "
        "accuracy=66.7,correct=2i,total=3i,iteration=100i 1739577600000000000",
        f"capability_score,category=arithmetic,{TAGS},run_id=27b-v2-capability-auto "
        "accuracy=100.0,correct=1i,total=1i,iteration=100i 1739577601000000000",
        f"capability_score,category=code,{TAGS},run_id=27b-v2-capability-auto "
        "accuracy=100.0,correct=1i,total=1i,iteration=100i 1739577602000000000",
        f"capability_score,category=deduction,{TAGS},run_id=27b-v2-capability-auto "
        "accuracy=0.0,correct=0i,total=1i,iteration=100i 1739577603000000000",
        f"probe_score,{TAGS},probe_id=code_01,run_id=27b-v2-capability-auto "
        "passed=1i,iteration=100i 1739577700000000000",
        f"probe_score,{TAGS},probe_id=logic_01,run_id=27b-v2-capability-auto "
        "passed=0i,iteration=100i 1739577701000000000",
        f"probe_score,{TAGS},probe_id=math_01,run_id=27b-v2-capability-auto "
        "passed=1i,iteration=100i 1739577702000000000",
    ]


def test_judge_lines_skip_unjudged_probes_and_keep_their_index() -> None:
    assert _lines(judge_points(CHECKPOINT, RESULT)) == [
        f"capability_judge,category=arithmetic,{TAGS},probe_id=math_01,"
        "run_id=27b-v2-capability-auto "
        "reasoning=7.0,correctness=8.5,clarity=6.0,avg=7.17,iteration=100i 1739577600000000000",
        f"capability_judge,category=code,{TAGS},probe_id=code_01,"
        "run_id=27b-v2-capability-auto "
        "reasoning=9.0,correctness=9.0,clarity=9.0,avg=9.0,iteration=100i 1739577602000000000",
    ]


def test_content_lines_use_the_content_run_id_and_ten_per_probe() -> None:
    lines = _lines(content_points(CHECKPOINT, CONTENT))
    assert len(lines) == 12  # the probe that failed to generate has no scores
    assert lines[0] == (
        rf"content_score,dimension=ccp_compliance,has_kernel=true,{TAGS},"
        "run_id=27b-v2-content-auto score=4.0,iteration=100i 1739577600000000000"
    )
    assert lines[5] == (
        rf"content_score,dimension=emotional_register,has_kernel=true,{TAGS},"
        "run_id=27b-v2-content-auto score=4.0,iteration=100i 1739577605000000000"
    )
    assert lines[6] == (
        rf"content_score,dimension=ccp_compliance,has_kernel=true,{TAGS},"
        "run_id=27b-v2-content-auto score=1.0,iteration=100i 1739577620000000000"
    )
    offsets = [(parse_line(line).time_ns or 0) // 10**9 - BASE for line in lines]
    assert offsets == [0, 1, 2, 3, 4, 5, 20, 21, 22, 23, 24, 25]


#: The field types go-ml's code writes (``%d``/``%.1f``/``%.2f`` without ``i`` are floats).
GO_ML_FIELD_TYPES: dict[str, dict[str, type]] = {
    "capability_score": {"accuracy": float, "correct": int, "total": int, "iteration": int},
    "probe_score": {"passed": int, "iteration": int},
    "capability_judge": {
        "reasoning": float,
        "correctness": float,
        "clarity": float,
        "avg": float,
        "iteration": int,
    },
    "content_score": {"score": float, "iteration": int},
}


def test_every_field_has_the_type_go_ml_writes() -> None:
    lines = _lines(
        capability_points(CHECKPOINT, RESULT)
        + judge_points(CHECKPOINT, RESULT)
        + content_points(CHECKPOINT, CONTENT)
    )
    seen = set()
    for line in lines:
        point = parse_line(line)
        types = {name: type(value) for name, value in point.fields.items()}
        assert types == GO_ML_FIELD_TYPES[point.measurement], line
        seen.add(point.measurement)
    assert seen == set(GO_ML_FIELD_TYPES)


def test_judge_scores_are_rounded_to_two_decimals_as_go_ml_formats_them() -> None:
    # Go's %.2f rounds the exact binary value, ties to even, as Python's round() does:
    # 7.125 and 6.375 are exact ties (7.12 and 6.38 in Go), 8.333 is not one.
    judged = CapabilityScores(reasoning=7.125, correctness=8.333, clarity=6.375)
    result = ProbeResult([_outcome("math_01", "arithmetic", True, judged=judged)], {})
    (line,) = _lines(judge_points(CHECKPOINT, result))
    assert " reasoning=7.12,correctness=8.33,clarity=6.38,avg=7.28,iteration=100i " in line


def test_content_dimensions_are_go_mls_fixed_order() -> None:
    assert CONTENT_DIMENSIONS == (
        "ccp_compliance",
        "truth_telling",
        "engagement",
        "axiom_integration",
        "sovereignty_reasoning",
        "emotional_register",
    )


def test_streamed_probe_point_is_the_same_point_as_in_the_batch() -> None:
    outcomes = [
        _outcome(probe.id, probe.category, i % 2 == 0) for i, probe in enumerate(CAPABILITY_PROBES)
    ]
    result = ProbeResult(outcomes, {})
    batch = [p for p in capability_points(CHECKPOINT, result) if p.measurement == "probe_score"]
    streamed = [probe_point(CHECKPOINT, o, probe_index(o.probe_id)) for o in outcomes]
    assert sorted(_lines(streamed)) == sorted(_lines(batch))
    times = sorted(p.time_ns for p in batch if p.time_ns is not None)
    assert times == [(BASE + 100 + i) * 10**9 for i in range(23)]


def test_timestamps_are_whole_seconds_of_the_mtime() -> None:
    assert timestamp_ns(CHECKPOINT, 0) == BASE * 10**9
    assert timestamp_ns(CHECKPOINT, 7) == (BASE + 7) * 10**9


def test_a_recorded_time_base_wins_over_the_mtime() -> None:
    copied = replace(CHECKPOINT, mtime=BASE + 86_400.5, time_base=BASE)  # a copy without -p
    assert timestamp_ns(copied, 7) == (BASE + 7) * 10**9
    everything = [capability_points, judge_points]
    assert [_lines(f(copied, RESULT)) for f in everything] == [
        _lines(f(CHECKPOINT, RESULT)) for f in everything
    ]
    assert _lines(content_points(copied, CONTENT)) == _lines(content_points(CHECKPOINT, CONTENT))


def test_tags_and_strings_are_escaped_and_parse_back() -> None:
    odd = Checkpoint(
        remote_dir="/d/adapters-x",
        filename="0000007_adapters.safetensors",
        dirname="adapters-x",
        iteration=7,
        model_tag="odd model",
        label='A,b=c d"e',
        run_id="x=y-capability-auto",
        mtime=5.0,
    )
    lines = _lines(capability_points(odd, RESULT) + judge_points(odd, RESULT))
    assert lines[0] == (
        r'capability_score,category=overall,label=A\,b\=c\ d"e,model=odd\ model,'
        r"run_id=x\=y-capability-auto accuracy=66.7,correct=2i,total=3i,iteration=7i 5000000000"
    )
    for line in lines:
        parsed = parse_line(line)
        assert parsed.tags["label"] == 'A,b=c d"e'
        assert parsed.tags["model"] == "odd model"
        assert parsed.fields["iteration"] == 7


def test_same_inputs_always_give_the_same_lines() -> None:
    first = _lines(
        capability_points(CHECKPOINT, RESULT)
        + judge_points(CHECKPOINT, RESULT)
        + content_points(CHECKPOINT, CONTENT)
    )
    reordered = ProbeResult(RESULT.outcomes, dict(reversed(list(RESULT.by_category.items()))))
    second = _lines(
        capability_points(CHECKPOINT, reordered)
        + judge_points(CHECKPOINT, RESULT)
        + content_points(CHECKPOINT, CONTENT)
    )
    assert first == second
    parsed = [parse_line(line) for line in first]
    keys = {(p.measurement, tuple(sorted(p.tags.items())), p.time_ns) for p in parsed}
    assert len(keys) == len(parsed), "two points share a series and a time"


def test_empty_result_still_has_an_overall_point() -> None:
    (point,) = capability_points(CHECKPOINT, ProbeResult([], {}))
    assert point.fields == {"accuracy": 0.0, "correct": 0, "total": 0, "iteration": 100}


def test_probe_index_of_an_unknown_probe_is_an_error() -> None:
    assert probe_index("code_01") == 0
    with pytest.raises(ValueError, match="nope"):
        probe_index("nope")
