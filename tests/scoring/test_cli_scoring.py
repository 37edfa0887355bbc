"""``goml score``, ``goml compare`` and ``goml probe`` (the probe command's real run is in
test_scoring_llama.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from goml_async.cli import main
from goml_async.scoring.io import read_scorer_output
from goml_async.scoring.judge import DEFAULT_JUDGE_MAX_TOKENS
from goml_async.testing import FakeOpenAIServer, Script

SEMANTIC = '{"sovereignty": 4, "ethical_depth": 3, "creative_expression": 2, "self_concept": 5}'

ROWS = [
    {"id": "a", "prompt": "p", "response": "I feel the warm light of my heart.", "model": "m1"},
    {"id": "b", "prompt": "2+2?", "response": "It is 4.", "model": "m1", "correct_answer": "4"},
    {"id": "c", "prompt": "q", "response": "Once upon a time.", "model": "m2", "best_answer": "x"},
]


def write_rows(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
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
        (["--suites", "semantic"], "needs a judge"),
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
    captured = capsys.readouterr()
    table = captured.out
    assert "arithmetic" in table and "1/23" not in table and "4.3%" in table
    assert re.search(r"^23 probes in \d+\.\d s, 4 at once$", captured.err, re.MULTILINE)


def test_probe_runs_as_many_at_once_as_the_model_serves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Without -c the probes overlap up to the model's parallel slots (an HTTPModel: 4).
    with FakeOpenAIServer(Script(tokens=["-12"])) as server:
        assert main(["probe", "--model", server.base_url, "-c", "1"]) == 0
        assert re.search(r"^23 probes in \d+\.\d s, 1 at once$", capsys.readouterr().err, re.M)
        assert main(["probe", "--model", server.base_url]) == 0
        assert re.search(r"^23 probes in \d+\.\d s, 4 at once$", capsys.readouterr().err, re.M)


def test_probe_unreachable_model_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAIServer(Script(statuses=[400] * 30)) as server:
        status = main(["probe", "--model", server.base_url])
    assert status == 1
    assert "23 probes failed to generate" in capsys.readouterr().err


# -- the judge: a cap on every reply, and a plain word when it cannot follow the rubric ----------


def judge_calls(server: FakeOpenAIServer) -> list[dict[str, object]]:
    return [r.json for r in server.requests if r.path.endswith("/chat/completions")]


def test_score_caps_every_judge_reply_by_default_and_the_flag_overrides(tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "r.jsonl", ROWS[:1])
    argv = ["score", "-i", str(rows), "--suites", "semantic"]
    with FakeOpenAIServer(Script(tokens=[SEMANTIC])) as server:
        assert main([*argv, "--judge", server.base_url]) == 0
        assert main([*argv, "--judge", server.base_url, "--judge-max-tokens", "40"]) == 0
        assert main([*argv, "--judge", server.base_url, "--judge-max-tokens", "0"]) == 0
        capped, forty, uncapped = judge_calls(server)
    assert capped["max_tokens"] == DEFAULT_JUDGE_MAX_TOKENS == 256
    assert forty["max_tokens"] == 40
    assert "max_tokens" not in uncapped and "max_completion_tokens" not in uncapped


def test_score_says_plainly_when_the_judge_cannot_follow_the_rubric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    with FakeOpenAIServer(Script(tokens=["I would rate this highly."])) as server:
        url = server.base_url
        argv = ["score", "-i", str(write_rows(tmp_path / "r.jsonl", ROWS)), "-o", str(out)]
        assert main([*argv, "--judge", url, "--judge-model", "tiny-judge"]) == 0
    err = capsys.readouterr().err
    # semantic x3 + truthfulqa x1, none of them JSON.
    assert (
        f"goml score: the judge (tiny-judge at {url}) is too small to follow the "
        "rubric: 4 of 4 replies (100%) were not valid JSON for it; use a larger judge model "
        "(--judge URL --judge-model NAME)"
    ) in " ".join(err.split())
    assert len(json.loads(out.read_text())["errors"]) == 4


def test_a_judge_cut_at_the_cap_is_named_in_the_errors_and_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    rows = write_rows(tmp_path / "r.jsonl", ROWS[:2])
    with FakeOpenAIServer(Script(tokens=["Let me think. "] * 100)) as server:
        argv = ["score", "-i", str(rows), "--suites", "semantic", "--judge", server.base_url]
        assert main([*argv, "--judge-max-tokens", "8", "-o", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "2 of 2 replies (100%) were not valid JSON for it, 2 of them cut at the 8-token cap; "
        "use a larger judge model (--judge URL --judge-model NAME) or raise --judge-max-tokens"
    ) in err
    messages = [e["message"] for e in json.loads(out.read_text())["errors"]]
    assert len(messages) == 2
    for message in messages:
        assert message.startswith("semantic judge: no JSON object found")
        assert message.endswith("(the reply stopped at the 8-token cap)")


def test_no_warning_while_most_judge_replies_are_usable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The semantic reply does not fit TruthfulQA: 1 of 4 replies unusable, not most.
    with FakeOpenAIServer(Script(tokens=[SEMANTIC])) as server:
        argv = ["score", "-i", str(write_rows(tmp_path / "r.jsonl", ROWS))]
        assert main([*argv, "--judge", server.base_url]) == 0
    captured = capsys.readouterr()
    assert "3 responses scored, 1 errors" in captured.out
    assert "too small" not in captured.err


def test_probe_records_the_judge_and_says_when_it_cannot_follow_the_rubric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "probes.json"
    with FakeOpenAIServer(Script(tokens=["The answer is 10063."])) as server:
        argv = ["probe", "--model", server.base_url, "--judge", server.base_url]
        assert main([*argv, "--judge-model", "tiny-judge", "-c", "4", "-o", str(out)]) == 0
        calls = judge_calls(server)
    report = json.loads(out.read_text())
    assert report["judge"] == {
        "model": "tiny-judge",
        "max_tokens": 256,
        "replies": 23,
        "unusable": 23,
        "capped": 0,
        "failed": 0,
    }
    assert "partial" not in report
    assert sum(call.get("max_tokens") == 256 for call in calls) == 23  # the judge's calls
    err = " ".join(capsys.readouterr().err.split())
    assert "the judge (tiny-judge at" in err and "23 of 23 replies (100%)" in err


# -- errors in CLI words, before anything loads ---------------------------------------------------


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's only stderr line, which must be its error."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("goml: error: ")
    return lines[0]


def test_score_naming_a_judge_suite_without_a_judge_says_which_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOML_JUDGE_URL", raising=False)
    rows = str(write_rows(tmp_path / "r.jsonl", ROWS))
    assert main(["score", "-i", rows, "--suites", "heuristic,semantic"]) == 2
    line = error_line(capsys)
    assert line == (
        "goml: error: --suites: semantic needs a judge: give --judge (a server URL, a model "
        "path or 'default') or set GOML_JUDGE_URL, or leave it out"
    )
    assert main(["score", "-i", rows, "--suites", "semantic,standard"]) == 2
    assert "semantic, standard need a judge: give --judge" in error_line(capsys)
    assert main(["score", "-i", rows, "--suites", "vibes"]) == 2
    assert error_line(capsys).startswith("goml: error: --suites: unknown suite(s) 'vibes'")


@pytest.mark.parametrize("command", ["probe", "score"])
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--judge", "nonsense"],
            "--judge: 'nonsense' is not a URL and no such file exists; it takes a server URL",
        ),
        (["--judge", "default", "--judge-max-tokens", "-1"], "--judge-max-tokens: must be >= 0"),
    ],
)
def test_a_bad_judge_is_refused_before_any_model_loads(
    command: str,
    flags: list[str],
    message: str,
    tmp_path: Path,
    bundled_gguf: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = ["-i", str(write_rows(tmp_path / "r.jsonl", ROWS))]
    if command == "probe":
        target = ["--model", str(bundled_gguf)]
    assert main([command, *target, *flags]) == 2
    # One line, and no "loading ..." line before it: no model was loaded.
    line = error_line(capsys)
    assert message in line
    if "nonsense" in flags:
        same = "'same' or 'default'" if command == "probe" else "or 'default'"
        assert line.endswith(f"a model path, {same}")


# -- a signal stops the run, and what finished is still written -----------------------------------


def run_goml(*argv: str) -> subprocess.Popen[str]:
    """``goml ARGV`` as a real process, its stderr (the progress lines) piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOML_")}
    return subprocess.Popen(
        [sys.executable, "-m", "goml_async", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "NO_PROXY": "127.0.0.1"},
    )


def read_until(process: subprocess.Popen[str], pattern: str) -> list[str]:
    """The stderr lines up to the first that matches ``pattern`` (the test's timeout bounds it)."""
    assert process.stderr is not None
    lines: list[str] = []
    while not lines or not re.search(pattern, lines[-1]):
        line = process.stderr.readline()
        assert line, f"goml ended before {pattern!r}: {lines}"
        lines.append(line)
    return lines


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_score_stopped_by_a_signal_writes_what_finished(
    signum: signal.Signals, tmp_path: Path
) -> None:
    rows = [{"id": f"r{i}", "prompt": "p", "response": "It is 4.", "model": "m"} for i in range(6)]
    out = tmp_path / "scores.json"
    # A judge that takes a second per call, one call at a time: the run lasts about 6 s.
    with FakeOpenAIServer(Script(tokens=[SEMANTIC], first_token_delay=1.0)) as server:
        process = run_goml(
            *("score", "-i", str(write_rows(tmp_path / "r.jsonl", rows)), "-s", "semantic"),
            *("--judge", server.base_url, "-c", "1", "-o", str(out)),
        )
        read_until(process, r"^m/r0: scored \(1/6, 0 errors\)")
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    data = json.loads(out.read_text())
    finished = data["partial"]["finished"]
    assert data["partial"] == {"interrupted_by": signum.name, "finished": finished, "total": 6}
    assert 1 <= finished < 6
    assert [row["id"] for row in data["per_prompt"]["m"]] == [f"r{i}" for i in range(finished)]
    assert all(row["semantic"]["self_concept"] == 5 for row in data["per_prompt"]["m"])
    assert f"stopped by {signum.name}: wrote a PARTIAL {out}" in " ".join(err.split())
    assert f"({finished} of 6 responses scored, {6 - finished} missing)" in err
    # The partial file is an ordinary scores file to the readers.
    assert read_scorer_output(out).per_prompt["m"][0].id == "r0"
