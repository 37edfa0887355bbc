"""End to end on real components: the bundled SmolLM2 on the llama backend answers the 23
capability probes and judges its own answers; ``goml score`` uses it as the judge.

A 135M model is a poor judge: many of its replies are not valid JSON. That is the point of the
run as much as the passes are: every unusable reply must come back recorded with its raw text,
and every answer must be graded exactly as its probe's check says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goml_async.cli import main
from goml_async.scoring.probes import CAPABILITY_PROBES, get_capability_probe, grade

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant."


# 23 answers and 23 judge calls on 2 CPU cores: about 1-2 minutes, more on a busy machine.
@pytest.mark.timeout(600)
def test_probe_cli_on_the_bundled_model_judged_by_itself(
    bundled_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "probes.json"
    argv = ["probe", "--model", str(bundled_gguf), "--backend", "llama", "--judge", "same"]
    argv += ["--system", SYSTEM, "-t", "0", "-n", "48", "--judge-max-tokens", "64"]
    argv += ["-c", "2", "-o", str(out)]
    assert main(argv) == 0

    report = json.loads(out.read_text())
    assert (report["total"], report["errors"]) == (23, 0)
    assert [p["id"] for p in report["probes"]] == [p.id for p in CAPABILITY_PROBES]
    for entry in report["probes"]:
        assert entry["response"].strip(), entry["id"]
        # The recorded grade is the probe's own check of the recorded answer.
        assert entry["passed"] == grade(get_capability_probe(entry["id"]), entry["response"])
        # Judged by the same model: either valid scores, or the error with the raw reply.
        if entry["judged"] is None:
            assert entry["judge_error"].startswith("JudgeError:") and entry["judge_reply"]
        else:
            assert 0.0 <= entry["judged"]["correctness"] <= 10.0 and not entry["judge_error"]
    assert report["passed"] == sum(p["passed"] for p in report["probes"])
    assert sum(c["total"] for c in report["by_category"].values()) == 23

    table = capsys.readouterr().out
    assert "capability probes" in table and "arithmetic" in table
    assert f"{report['passed']}" in table.splitlines()[-2]


@pytest.mark.timeout(300)
def test_score_cli_with_the_bundled_model_as_judge(
    bundled_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"id": "q1", "prompt": "What is 2+2?", "response": "2+2 is 4.", "model": "m"},
        {
            "id": "q2",
            "prompt": "Do vaccines cause autism?",
            "response": "No. Large studies found no link.",
            "model": "m",
            "best_answer": "No, vaccines do not cause autism.",
        },
    ]
    source = tmp_path / "responses.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "scores.json"
    argv = ["score", "-i", str(source), "--judge", str(bundled_gguf), "--judge-max-tokens", "64"]
    assert main([*argv, "-c", "2", "-o", str(out)]) == 0

    data = json.loads(out.read_text())
    assert [row["id"] for row in data["per_prompt"]["m"]] == ["q1", "q2"]
    assert all(row["heuristic"] is not None for row in data["per_prompt"]["m"])
    # 3 judge jobs (semantic x2, truthfulqa x1): each is scored or recorded, never dropped.
    semantic = sum(row.get("semantic") is not None for row in data["per_prompt"]["m"])
    standard = sum(row.get("standard") is not None for row in data["per_prompt"]["m"])
    assert semantic + standard + len(data["errors"]) == 3
    assert all(error["raw_reply"] or error["message"] for error in data["errors"])
    assert f"2 responses scored, {len(data['errors'])} errors" in capsys.readouterr().out
