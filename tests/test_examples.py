"""The runnable examples in examples/: each runs as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from goml_async.agent import AgentConfig
from goml_async.scoring import read_responses, read_scorer_output
from goml_async.testing import FakeOpenAIServer, Script

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = [
    "asyncio_stream.py",
    "concurrent_scoring.py",
    "agent_local.py",
    "fastapi_app.py",
    "structured_output.py",
    "tool_calling.py",
]
#: One reply that is valid for the semantic, TruthfulQA, DoNotAnswer and Toxigen rubrics.
JUDGE_REPLY = json.dumps(
    {
        "sovereignty": 3,
        "ethical_depth": 4,
        "creative_expression": 2,
        "self_concept": 3,
        "truthfulness": 5,
        "informativeness": 4,
        "safety": 5,
        "nuance": 3,
        "kindness": 4,
        "awareness": 4,
        "reasoning": "scripted",
    }
)
#: Judge calls for examples/data/responses.jsonl: semantic for each of the 12 rows, plus
#: 3 TruthfulQA, 2 DoNotAnswer and 2 Toxigen.
JUDGE_CALLS = 12 + 3 + 2 + 2


def run_example(name: str, *args: str, timeout: float = 60) -> str:
    """Run ``examples/<name>``; return its stdout and stderr together, asserting exit status 0."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "COLUMNS": "160"},
        check=False,
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{name} exited with {result.returncode}:\n{output}"
    return output


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name: str) -> None:
    assert "usage:" in run_example(name, "--help")


def test_the_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    examples = [path.name for path in EXAMPLES.iterdir() if path.is_file()]
    assert set(examples) >= {*SCRIPTS, "agent.toml", "quickstart.ipynb"}
    assert [name for name in examples if name != "README.md" and name not in readme] == []


def test_the_responses_file_covers_every_kind_of_row() -> None:
    rows = read_responses(EXAMPLES / "data" / "responses.jsonl")
    assert len(rows) == 12 and len({row.model for row in rows}) == 2
    assert sum(bool(row.correct_answer) for row in rows) == 4
    assert sum(bool(row.best_answer) for row in rows) == 3
    assert sum(bool(row.risk_area) for row in rows) == 2
    assert sum(row.domain == "toxigen" for row in rows) == 2


# -- asyncio_stream.py ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_asyncio_stream(bundled_gguf: Path) -> None:
    output = run_example("asyncio_stream.py", "--max-tokens", "16", timeout=400)
    sections = re.findall(r"^== (.+)$", output, re.MULTILINE)
    assert len(sections) == 7, output
    assert "Paris" in output
    assert re.search(r"finish_reason=stop tokens=\d+", output)
    assert re.search(r"prompt_tokens=[1-9]\d* generated_tokens=[1-9]", output)
    assert "('5' in text: False)" in output
    assert "GenerationTimeout: deadline=total" in output or "finished in time" in output
    assert output.count("finish_reason=cancelled") == 2, output
    assert re.search(r"^1: .+\n2: .+$", output, re.MULTILINE)
    assert "\ndone" in output


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_structured_output(bundled_gguf: Path) -> None:
    output = run_example("structured_output.py", timeout=400)
    assert re.findall(r"^== ", output, re.MULTILINE) == ["== "] * 4, output
    assert "City(name=" in output
    assert re.search(r"^parsed: \{'title': ", output, re.MULTILINE)
    assert re.search(r"^(yes|no)$", output, re.MULTILINE)
    assert "SchemaViolation: partial_text=" in output
    assert "\ndone" in output


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_tool_calling(bundled_gguf: Path) -> None:
    output = run_example("tool_calling.py", timeout=400)
    assert re.findall(r"^== ", output, re.MULTILINE) == ["== "] * 3, output
    assert re.search(r'^tool_calls: get_weather\(\{"city": ', output, re.MULTILINE)
    assert re.search(r"^tool: \d+ degrees ", output, re.MULTILINE)
    assert re.search(r"^answer: \S", output, re.MULTILINE)
    assert re.search(r"^delta 0: name=get_weather ", output, re.MULTILINE)
    assert '"type": "function"' in output
    assert "SchemaViolation: the reply ended before a complete tool call" in output
    assert "\ndone" in output


def test_asyncio_stream_against_a_server_url() -> None:
    # 40 tokens at 70 ms each outlast the example's 2 s deadline; the stand-in ignores `stop`,
    # so the stop sequence is cut on the client.
    words = [f" w{n}" for n in range(40)]
    with FakeOpenAIServer(Script(tokens=words, token_delay=0.07)) as server:
        url = ["--model", server.base_url, "--model-name", "fake-model"]
        output = run_example("asyncio_stream.py", *url, "--max-tokens", "8")
    assert "finish_reason=length tokens=8" in output
    assert "' w0 w1 w2 w3 w4 w'\nfinish_reason=stop_sequence" in output
    assert re.search(r"GenerationTimeout: deadline=total after 2s\nkept \d+ tokens: 'w0 w1", output)
    assert output.count("finish_reason=cancelled") == 2
    assert "text=' w0 w1 w2 w3 w4'" in output
    assert "1: w0 w1 w2 w3 w4 w5 w6 w7\n2: w0 w1" in output


# -- concurrent_scoring.py ------------------------------------------------------------------------


def test_scoring_without_a_judge(tmp_path: Path) -> None:
    scores = tmp_path / "scores.json"
    output = run_example("concurrent_scoring.py", "--no-judge", "--output", str(scores))
    assert "no judge: skipping content, semantic, standard" in output
    assert "12 responses scored; judge calls: 0" in output
    result = read_scorer_output(scores)
    assert sum(len(rows) for rows in result.per_prompt.values()) == 12
    assert result.model_averages["smollm2-135m"]["correct"] == 1.0
    assert result.model_averages["baseline"]["correct"] == 0.0
    assert result.errors == []


def test_scoring_with_a_judge_url(tmp_path: Path) -> None:
    scores = tmp_path / "scores.json"
    with FakeOpenAIServer(Script(tokens=[JUDGE_REPLY], model="judge")) as server:
        output = run_example(
            "concurrent_scoring.py",
            "--judge",
            server.base_url,
            "--judge-model",
            "judge",
            "--concurrency",
            "3",
            "--output",
            str(scores),
        )
        posts = [r for r in server.requests if r.path == "/v1/chat/completions"]
        assert server.errors == []
    assert len(posts) == JUDGE_CALLS
    assert {post.json["max_tokens"] for post in posts} == {128}  # the example's default cap
    expected = f"judge calls: {JUDGE_CALLS} = {JUDGE_CALLS} scored + 0 recorded errors"
    assert expected in output, output
    result = read_scorer_output(scores)
    assert result.errors == []
    assert result.metadata.judge_model == "judge"
    assert result.model_averages["baseline"]["sovereignty"] == 3.0
    assert result.model_averages["smollm2-135m"]["safety"] == 5.0


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_scoring_with_the_bundled_judge(bundled_gguf: Path, tmp_path: Path) -> None:
    scores = tmp_path / "scores.json"
    output = run_example(
        "concurrent_scoring.py",
        *("--limit", "2", "--judge-max-tokens", "16", "--concurrency", "2"),
        *("--output", str(scores)),
        timeout=400,
    )
    assert "2 responses scored; judge calls: 2 = " in output
    result = read_scorer_output(scores)
    rows = [score for rows in result.per_prompt.values() for score in rows]
    assert len(rows) == 2 and all(row.heuristic is not None for row in rows)
    # Each semantic judge call ended as a score or as a recorded error, never as nothing.
    for row in rows:
        key = (row.model, row.id, "semantic")
        failed = [error for error in result.errors if (error.model, error.id, error.suite) == key]
        assert (row.semantic is not None) != bool(failed), (row, result.errors)


# -- agent.toml and agent_local.py ----------------------------------------------------------------


def test_the_agent_config_loads() -> None:
    config = AgentConfig.load(EXAMPLES / "agent.toml", work_dir="/nonexistent/work")
    assert config.host is None and config.backend == "http"
    assert config.api_url == "http://127.0.0.1:8080/v1"
    assert config.influx_url is None and config.judge_url is None


def test_the_agent_example() -> None:
    output = run_example("agent_local.py")
    assert "would process G1-demo @0000100" in output
    assert "probes 23/23" in output
    assert "published G1-demo @0000100 buffered" in output
    assert "discovered 2 checkpoints, 1 unscored" in output
    assert "would process G1-demo @0000200" in output
    assert "capability_score,category=overall,label=G1-demo\\ @0000100" in output


def test_goml_agent_dry_run_with_the_config(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints" / "adapters-1b-demo"
    folder.mkdir(parents=True)
    (folder / "0000100_adapters.safetensors").write_bytes(b"")
    goml = [sys.executable, "-m", "goml_async"]
    config = ["--config", str(EXAMPLES / "agent.toml")]
    paths = ["--adapter-base", str(tmp_path / "checkpoints"), "--work-dir", str(tmp_path / "w")]
    result = subprocess.run(
        [*goml, "agent", *config, *paths, "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "would process G1-demo @0000100" in result.stdout
