"""``goml bench``: rounds against a scripted server (exact counts) and a real llama.cpp model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goml_async.cli import main
from goml_async.testing import FakeOpenAIServer, Script


def test_rounds_report_the_servers_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(Script(tokens=["a"] * 6, token_delay=0.01)) as server:
        status = main(["bench", "--model", server.base_url, "-n", "6", "-r", "2", "--json"])
        completions = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert status == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 2 and len(completions) == 3  # one warm-up round, not reported
    for run in runs:
        assert run["tokens"] == 6
        # Six tokens 10 ms apart: the first arrives after >= 10 ms, the rest at about 100 tok/s.
        assert run["time_to_first_token"] >= 0.01
        assert 40 <= run["decode_tokens_per_sec"] <= 150
        assert run["total_seconds"] >= 0.06
    assert {c.json["max_tokens"] for c in completions} == {6}
    assert {c.json["temperature"] for c in completions} == {0.0}


@pytest.mark.parametrize(("argv", "field"), [(["-n", "0"], "--tokens"), (["-r", "0"], "--rounds")])
def test_bad_arguments(argv: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *argv]) == 2
    assert field in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_model_table(tiny_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", str(tiny_gguf), "-n", "16", "-r", "2"]) == 0
    out = capsys.readouterr().out
    assert "goml bench" in out and "median" in out and "decode tok/s" in out
