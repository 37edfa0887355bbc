"""``goml score``, ``goml compare`` and ``goml probe`` (the probe command's real run is in
test_scoring_llama.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goml_async.cli import main
from goml_async.testing import FakeOpenAIServer, Script

SEMANTIC = '{"sovereignty": 4, "ethical_depth": 3, "creative_expression": 2, "self_concept": 5}'

ROWS = [
    {"id": "a", "prompt": "p", "response": "I feel the warm light of my heart.", "model": "m1"},
    {"id": "b", "prompt": "2+2?", "response": "It is 4.", "model": "m1", "correct_answer": "4"},
    {"id": "c", "prompt": "q", "response": "Once upon a time.", "model": "m2", "best_answer": "x"},
]


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_score_heuristic_and_exact_without_a_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    status = main(["score", "-i", str(write_rows(tmp_path / "r.jsonl", ROWS)), "-o", str(out)])
    assert status == 0
    captured = capsys.readouterr()
    assert "3 responses scored, 0 errors" in captured.out
    assert "skipping content, semantic, standard" in captured.err
    data = json.loads(out.read_text())
    assert data["metadata"]["suites"] == ["exact", "heuristic"]
    assert [row["id"] for row in data["per_prompt"]["m1"]] == ["a", "b"]
    assert data["per_prompt"]["m1"][1]["standard"]["correct"] is True
    # Only the row with a correct_answer counts towards "correct".
    assert data["model_averages"]["m1"]["correct"] == 1.0
    assert "correct" not in data["model_averages"]["m2"]
    assert data["errors"] == []


def test_score_with_a_judge_server_records_unusable_replies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fake judge always answers with semantic scores, so the TruthfulQA job of row "c"
    # gets a reply without "truthfulness": it must be recorded, not dropped.
    out = tmp_path / "scores.json"
    with FakeOpenAIServer(Script(tokens=["Sure: ", SEMANTIC])) as server:
        status = main(
            [
                "score",
                "-i",
                str(write_rows(tmp_path / "r.jsonl", ROWS)),
                "--judge",
                server.base_url,
                "--judge-model",
                "judge-1",
                "-c",
                "2",
                "-o",
                str(out),
            ]
        )
        calls = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert status == 0
    assert len(calls) == 4  # semantic x3 + truthfulqa x1
    assert {call.json["model"] for call in calls} == {"judge-1"}
    assert {call.json["temperature"] for call in calls} == {0.1}
    data = json.loads(out.read_text())
    assert data["metadata"]["judge_model"] == "judge-1"
    assert data["metadata"]["judge_url"].startswith("http://127.0.0.1:")
    assert data["per_prompt"]["m2"][0]["semantic"]["self_concept"] == 5
    assert data["model_averages"]["m1"]["sovereignty"] == 4.0
    [error] = data["errors"]
    assert (error["id"], error["suite"]) == ("c", "standard")
    assert "truthfulness" in error["message"]
    assert SEMANTIC in error["raw_reply"]
    assert "3 responses scored, 1 errors" in capsys.readouterr().out


def test_score_fail_on_error_exits_1(tmp_path: Path) -> None:
    with FakeOpenAIServer(Script(tokens=["no json here"])) as server:
        status = main(
            [
                "score",
                "-i",
                str(write_rows(tmp_path / "r.jsonl", ROWS[:1])),
                "--judge",
                server.base_url,
                "--suites",
                "semantic",
                "--fail-on-error",
            ]
        )
    assert status == 1


def test_score_bad_line_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n{not json\n", encoding="utf-8")
    assert main(["score", "-i", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("goml: error: ")
    assert f"{path}:3" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suites", "heuristic,bogus"], "bogus"),
        (["--suites", "semantic"], "need a judge"),
        (["-c", "0"], "--concurrency"),
        (["-o", "/no/such/folder/s.json"], "does not exist"),
    ],
)
def test_score_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    path = write_rows(tmp_path / "r.jsonl", ROWS)
    assert main(["score", "-i", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_score_missing_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "-i", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_compare_prints_old_new_and_signed_delta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps({"model_averages": {"m": {"lek_score": 0.5, "gone": 1.0}}}))
    new.write_text(json.dumps({"model_averages": {"m": {"lek_score": 0.75}, "n": {"x": 2.0}}}))
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    lek = next(line for line in out.splitlines() if "lek_score" in line)
    assert "0.50" in lek and "0.75" in lek and "+0.25" in lek
    gone = next(line for line in out.splitlines() if "gone" in line)
    assert "1.00" in gone and "-" in gone.replace("1.00", "")
    assert main(["compare", str(old), str(new), "--model", "n"]) == 0
    assert "lek_score" not in capsys.readouterr().out
    assert main(["compare", str(old), str(new), "--model", "zzz"]) == 2
    assert "zzz" in capsys.readouterr().err


def test_compare_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["compare", str(bad), str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "probe", "compare"])
def test_help_teaches(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"goml {command}" in out


def test_probe_against_a_server_writes_every_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A model that always says "10063" passes math_01 only (its check), fails the rest.
    out = tmp_path / "probes.json"
    with FakeOpenAIServer(Script(tokens=["The answer ", "is 10063."])) as server:
        status = main(["probe", "--model", server.base_url, "-c", "4", "-o", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert (report["passed"], report["total"], report["errors"]) == (1, 23, 0)
    assert [p["id"] for p in report["probes"] if p["passed"]] == ["math_01"]
    assert report["by_category"]["arithmetic"] == {"passed": 1, "total": 2}
    table = capsys.readouterr().out
    assert "arithmetic" in table and "1/23" not in table and "4.3%" in table


def test_probe_unreachable_model_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAIServer(Script(statuses=[400] * 30)) as server:
        status = main(["probe", "--model", server.base_url])
    assert status == 1
    assert "23 probes failed to generate" in capsys.readouterr().err
