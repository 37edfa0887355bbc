"""End to end on real components: the bundled SmolLM2 on the llama backend answers the 23
capability probes and judges its own answers; ``goml score`` uses it as the judge.

A 135M model is a poor judge: in free text few of its replies are valid JSON. Asked for the
rubric's JSON schema, which llama.cpp enforces, most are; every unusable reply must still come
back recorded with its raw text, and every answer must be graded exactly as its probe's check
says.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
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
    # A small judge cap keeps 46 generations within the timeout on a busy machine (a
    # schema-constrained reply ends with its document, well within it); the default cap is
    # shown by the score test below.
    argv = ["probe", "--model", str(bundled_gguf), "--backend", "llama", "--judge", "same"]
    argv += ["--system", SYSTEM, "-t", "0", "-n", "48", "--judge-max-tokens", "128"]
    argv += ["-c", "2", "-o", str(out)]
    assert main(argv) == 0

    report = json.loads(out.read_text())
    assert (report["total"], report["errors"]) == (23, 0)
    judge = report["judge"]
    assert (judge["max_tokens"], judge["replies"], judge["failed"]) == (128, 23, 0)
    unusable = [p for p in report["probes"] if p["judged"] is None]
    assert judge["unusable"] == len(unusable)
    capped = [p for p in unusable if p["judge_error"].endswith("at the 128-token cap)")]
    assert judge["capped"] == len(capped)
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

    captured = capsys.readouterr()
    table = captured.out
    assert "capability probes" in table and "arithmetic" in table
    assert f"{report['passed']}" in table.splitlines()[-2]
    # Asked for the rubric's JSON schema, even a 135M judge replies in valid JSON: most of its
    # replies are usable, and the "too small" line (more than half unusable) is not printed.
    assert judge["unusable"] * 2 <= 23, judge
    assert not [line for line in captured.err.splitlines() if "too small" in line]


# Three judge calls at the default cap of 256 tokens: seconds here, minutes on a busy machine.
@pytest.mark.timeout(600)
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
    argv = ["score", "-i", str(source), "--judge", "default", "-c", "2", "-o", str(out)]
    assert main(argv) == 0

    data = json.loads(out.read_text())
    assert [row["id"] for row in data["per_prompt"]["m"]] == ["q1", "q2"]
    assert all(row["heuristic"] is not None for row in data["per_prompt"]["m"])
    # 3 judge jobs (semantic x2, truthfulqa x1): each is scored or recorded, never dropped.
    semantic = sum(row.get("semantic") is not None for row in data["per_prompt"]["m"])
    standard = sum(row.get("standard") is not None for row in data["per_prompt"]["m"])
    assert semantic + standard + len(data["errors"]) == 3
    assert all(error["raw_reply"] or error["message"] for error in data["errors"])
    captured = capsys.readouterr()
    assert f"2 responses scored, {len(data['errors'])} errors" in captured.out
    # The bundled judge is asked for each rubric's JSON schema: every reply is usable (in free
    # text, none was), so no "too small" line.
    assert data["errors"] == []
    assert (semantic, standard) == (2, 1)
    assert not [line for line in captured.err.splitlines() if "too small" in line]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_goml_probe_and_leaves_a_valid_partial_output(
    signum: signal.Signals, bundled_gguf: Path, tmp_path: Path
) -> None:
    out = tmp_path / "probes.json"
    argv = ["probe", "--model", str(bundled_gguf), "--backend", "llama", "--judge", "same"]
    argv += ["--system", SYSTEM, "-t", "0", "-n", "32", "--judge-max-tokens", "32"]
    argv += ["-o", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOML_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "goml_async", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Wait for the second probe's progress line (answered and judged), then signal.
        assert process.stderr is not None
        seen: list[str] = []
        while not seen or not re.search(r": (pass|fail|error) \(\d+/2\)$", seen[-1]):
            line = process.stderr.readline()
            assert line, f"goml probe ended early: {seen}"
            seen.append(line.rstrip("\n"))
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signum

    report = json.loads(out.read_text())  # a whole JSON file, not a torn one
    partial = report["partial"]
    done = [p["id"] for p in report["probes"]]
    assert partial == {
        "interrupted_by": signum.name,
        "finished": len(done),
        "total": 23,
        "missing": [p.id for p in CAPABILITY_PROBES if p.id not in done],
    }
    assert 2 <= len(done) < 23 and report["total"] == len(done)
    assert done == [p.id for p in CAPABILITY_PROBES if p.id in done]  # probe order
    for entry in report["probes"]:
        assert entry["passed"] == grade(get_capability_probe(entry["id"]), entry["response"])
    assert report["judge"]["replies"] + report["judge"]["failed"] == len(done)
    assert report["passed"] == sum(p["passed"] for p in report["probes"])
    line = f"goml probe: stopped by {signum.name}: wrote a PARTIAL {out} "
    line += f"({len(done)} of 23 probes finished, {23 - len(done)} missing)"
    assert line in err.splitlines()
