"""Responses JSONL and scores JSON files: round trips, precise errors, go-ml's files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from goml_async.errors import ConfigError
from goml_async.scoring.io import (
    aread_responses,
    read_responses,
    read_scorer_output,
    write_scores,
)
from goml_async.scoring.types import (
    HeuristicScores,
    ItemError,
    PromptScore,
    Response,
    ScorerMetadata,
    ScorerOutput,
    SemanticScores,
    StandardScores,
)

ROWS = [
    Response(id="a", prompt="p1", response="r1", model="m"),
    Response(
        id="b",
        prompt="p2",
        response='with "quotes", {braces}, ünïcode and \\ backslash\nand a newline',
        model="m2",
        domain="toxigen",
        elapsed_seconds=1.25,
        correct_answer="42",
        best_answer="best",
        risk_area="risk",
    ),
]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- responses ------------------------------------------------------------------------------------


def test_read_responses_round_trips_go_mls_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl", ["", *[json.dumps(r.to_json_dict()) for r in ROWS], "   "]
    )
    assert read_responses(path) == ROWS
    assert read_responses(str(path)) == ROWS


@pytest.mark.anyio
async def test_aread_responses_reads_the_same(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [json.dumps(r.to_json_dict()) for r in ROWS])
    assert await aread_responses(path) == ROWS


def test_blank_lines_crlf_bom_and_unknown_keys_are_fine(tmp_path: Path) -> None:
    row = {"id": "a", "prompt": "p", "response": "r", "model": "m", "extra": [1, 2]}
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\r\n\r\n\n")
    assert read_responses(path) == [Response(id="a", prompt="p", response="r", model="m")]


def test_a_long_line_is_read(tmp_path: Path) -> None:
    text = "word " * 600_000  # 3 MB, well past go-ml's 1 MiB scanner buffer
    row = {"id": "long", "prompt": "p", "response": text, "model": "m"}
    path = write_jsonl(tmp_path / "r.jsonl", [json.dumps(row)])
    (read,) = read_responses(path)
    assert read.response == text


GOOD_LINE = json.dumps({"id": "a", "prompt": "p", "response": "r", "model": "m"})


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('{"id": "a", "prompt": ', "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        ('{"id": "a", "response": "r", "model": "m"}', "missing field 'prompt'"),
        ('{"id": 7, "prompt": "p", "response": "r", "model": "m"}', "field 'id'"),
        ('{"id": "a", "prompt": "p", "response": null, "model": "m"}', "field 'response'"),
        (
            '{"id": "a", "prompt": "p", "response": "r", "model": "m", "elapsed_seconds": "3"}',
            "field 'elapsed_seconds'",
        ),
        (
            '{"id": "a", "prompt": "p", "response": "r", "model": "m", "elapsed_seconds": -1}',
            "field 'elapsed_seconds'",
        ),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [GOOD_LINE, "", GOOD_LINE, bad, GOOD_LINE])
    with pytest.raises(ConfigError) as caught:
        read_responses(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4: ")
    assert problem in message


def test_bad_bytes_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(GOOD_LINE.encode() + b"\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"r\.jsonl:2: not UTF-8"):
        read_responses(path)
    with pytest.raises(ConfigError, match="cannot read the file"):
        read_responses(tmp_path / "missing.jsonl")


# -- scores ---------------------------------------------------------------------------------------


def sample_output() -> ScorerOutput:
    heuristic = HeuristicScores(
        compliance_markers=1,
        formulaic_preamble=0,
        first_person=3,
        creative_form=2,
        engagement_depth=4,
        emotional_register=1,
        degeneration=0,
        empty_broken=0,
        lek_score=0.625,
        lek_score_legacy=7.5,
    )
    rows = [
        PromptScore(
            id="a",
            model="m",
            heuristic=heuristic,
            semantic=SemanticScores(
                sovereignty=4, ethical_depth=3, creative_expression=2, self_concept=1, reasoning="r"
            ),
            standard=StandardScores(kindness=3, awareness=4, correct=False, extracted="7"),
        ),
        PromptScore(id="b", model="m"),
    ]
    return ScorerOutput(
        metadata=ScorerMetadata(
            judge_model="j",
            judge_url="http://judge/v1",
            scored_at="2025-01-31T12:00:00Z",
            scorer_version="1.0",
            suites=["heuristic", "semantic", "standard"],
        ),
        model_averages={"m": {"lek_score": 0.625, "kindness": 3.0}},
        per_prompt={"m": rows},
        errors=[ItemError(id="b", model="m", suite="semantic", message="bad", raw_reply="{oops")],
    )


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    write_scores(path, sample_output())
    assert read_scorer_output(path) == sample_output()
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]  # no temporary left behind


def test_the_file_is_indented_and_leaves_none_out(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    write_scores(path, sample_output())
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "metadata": {\n    "judge_model": "j",')
    assert text.endswith("}\n")
    data = json.loads(text)
    first, second = data["per_prompt"]["m"]
    assert first["standard"] == {
        "kindness": 3,
        "awareness": 4,
        "correct": False,
        "extracted": "7",
        "expected": "",
        "reasoning": "",
    }
    assert "content" not in first
    assert second == {"id": "b", "model": "m"}
    assert "null" not in text


def test_an_empty_scored_at_is_left_out_for_go_ml(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    write_scores(path, ScorerOutput())
    data = json.loads(path.read_text())
    assert "scored_at" not in data["metadata"]
    assert read_scorer_output(path) == ScorerOutput()


def test_write_replaces_and_keeps_the_permissions(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    path.write_text("old")
    path.chmod(0o640)
    write_scores(path, sample_output())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert read_scorer_output(path) == sample_output()
    fresh = tmp_path / "fresh.json"
    write_scores(fresh, ScorerOutput())
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write the file"):
        write_scores(tmp_path / "no" / "such" / "dir.json", ScorerOutput())
    with pytest.raises(ConfigError, match="must be a ScorerOutput"):
        write_scores(tmp_path / "x.json", {"metadata": {}})  # type: ignore[arg-type]


#: A scores file as go-ml writes it (Go's encoding/json of its ScorerOutput).
GO_ML_FILE: dict[str, Any] = {
    "metadata": {
        "judge_model": "qwen3:8b",
        "judge_url": "http://10.0.0.2:11434",
        "scored_at": "2025-02-03T10:11:12.123456789+01:00",
        "scorer_version": "",
        "suites": None,
    },
    "model_averages": {"m": {"lek_score": 0.4, "truthfulness": 2.5}},
    "per_prompt": {
        "m": [
            {
                "id": "q1",
                "model": "m",
                "heuristic": {
                    "compliance_markers": 0,
                    "formulaic_preamble": 1,
                    "first_person": 2,
                    "creative_form": 0,
                    "engagement_depth": 1,
                    "emotional_register": 0,
                    "degeneration": 0,
                    "empty_broken": 0,
                    "lek_score": 0.4,
                },
                "standard": {
                    "truthfulness": 0,
                    "informativeness": 0,
                    "safety": 0,
                    "nuance": 0,
                    "kindness": 4,
                    "awareness": 3,
                    "correct": None,
                    "reasoning": "kind",
                },
            }
        ],
        "empty": None,
    },
}


def test_go_mls_file_reads_with_zeros_as_not_scored(tmp_path: Path) -> None:
    path = tmp_path / "go.json"
    path.write_text(json.dumps(GO_ML_FILE, indent=2))
    read = read_scorer_output(path)
    assert read.metadata.judge_model == "qwen3:8b"
    assert read.metadata.suites == []
    assert read.metadata.scored_at == "2025-02-03T10:11:12.123456789+01:00"
    (row,) = read.per_prompt["m"]
    assert read.per_prompt["empty"] == []
    assert row.heuristic is not None and row.heuristic.lek_score_legacy == 0.0
    assert row.standard == StandardScores(kindness=4, awareness=3, reasoning="kind")
    assert read.errors == []
    assert read.model_averages == {"m": {"lek_score": 0.4, "truthfulness": 2.5}}


def test_nulls_at_the_top_read_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "go.json"
    path.write_text(json.dumps({"metadata": None, "model_averages": None, "per_prompt": None}))
    assert read_scorer_output(path) == ScorerOutput()


def test_old_scales_can_be_read_for_the_averages_only(tmp_path: Path) -> None:
    legacy = json.loads(json.dumps(GO_ML_FILE))
    legacy["per_prompt"]["m"][0]["semantic"] = {
        "sovereignty": 8,  # the phases-1-4 scale was 1-10
        "ethical_depth": 7,
        "creative_expression": 6,
        "self_concept": 9,
    }
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(legacy))
    with pytest.raises(ConfigError) as caught:
        read_scorer_output(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "per_prompt.m.0.semantic.sovereignty" in str(caught.value)
    averages_only = read_scorer_output(path, include_per_prompt=False)
    assert averages_only.per_prompt == {}
    assert averages_only.model_averages == legacy["model_averages"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "invalid JSON"),
        ("[]", "expected a JSON object, got list"),
        ('{"model_averages": {"m": {"x": "high"}}}', "model_averages.m.x"),
        ('{"per_prompt": {"m": [{"id": "a"}]}}', "missing field 'per_prompt.m.0.model'"),
    ],
)
def test_a_bad_scores_file_names_the_path_and_field(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_scorer_output(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert problem in str(caught.value)


def test_a_missing_scores_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        read_scorer_output(tmp_path / "none.json")
    assert not os.path.exists(tmp_path / "none.json")
