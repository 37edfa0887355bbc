"""``goml agent`` and ``goml expand`` on the command line."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from goml_async.cli import main
from goml_async.testing import FakeOpenAIServer, Script

from .conftest import CheckpointTree, SmallDisk


@pytest.fixture(autouse=True)
def _no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GOML_AGENT_"):
            monkeypatch.delenv(name)


def test_agent_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["agent", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for expected in (
        "GOML_AGENT_",
        "--config",
        "--one-shot",
        "--dry-run",
        "--force",
        "--filter",
        "--insecure-skip-host-key-check",
        "write-ahead buffer",
        "SIGTERM",
        "examples:",
    ):
        assert expected in text


def test_expand_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["expand", "--help"])
    text = capsys.readouterr().out
    assert '{"id", "prompt", "domain"}' in text and "expand-WORKER.jsonl" in text


def test_top_level_help_lists_agent_and_expand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "goml agent --config" in text and "goml expand --prompts" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "http"], "api_url: required with backend 'http'"),
        (["--backend", "mlx"], "base_model: required with backend 'mlx'"),
        (["--backend", "vllm"], "backend: "),
        (["--port", "70000", "--host", "h", "--backend", "http", "--api-url", "http://x"], "port"),
        (["--config", "/nonexistent/agent.toml"], "no such config file"),
    ],
)
def test_bad_config_is_a_one_line_error(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "--adapter-base", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("goml: error: ") and message in err
    assert len(err.splitlines()) == 1


def test_missing_adapter_base_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "--backend", "http", "--api-url", "http://127.0.0.1:9/v1"]) == 2
    assert "adapter_base: required" in capsys.readouterr().err


def test_dry_run_prints_what_it_would_process(
    checkpoint_tree: CheckpointTree, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nadapter_base = "{checkpoint_tree.root}"\nbackend = "http"\n'
        'api_url = "http://127.0.0.1:9/v1"\nwork_dir = "work"\n'
    )
    argv = ["agent", "--config", str(config), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    path = checkpoint_tree.path("adapters-15k/gemma-3-12b/0000050_adapters.safetensors")
    assert out == f"would process G12 @0000050 ({path})\n"
    assert main([*argv, "--force", "--filter", "27b"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"would process G27-v2 @0000100 ({checkpoint_tree.path('adapters-27b-v2')}"
        "/0000100_adapters.safetensors)",
        f"would process G27-v2 @0000200 ({checkpoint_tree.path('adapters-27b-v2')}"
        "/0000200_adapters.safetensors)",
    ]
    assert not (tmp_path / "work" / "scored.json").exists()


@pytest.mark.slow
def test_one_shot_scores_into_the_buffer(
    checkpoint_tree: CheckpointTree, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAIServer(Script(tokens=["10063"])) as server:
        status = main(
            [
                "agent", "--adapter-base", str(checkpoint_tree.root), "--backend", "http",
                "--api-url", server.base_url, "--capability-max-tokens", "4",
                "--work-dir", str(tmp_path / "work"), "--one-shot", "--filter", "vi",
            ]
        )  # fmt: skip
    assert status == 0
    err = capsys.readouterr().err
    assert "evaluating Vi1 @0000300" in err
    assert re.search(r"evaluated Vi1 @0000300: \d+/23 passed in \d+\.\d s", err)
    assert "published Vi1 @0000300 (buffered; 1 pending)" in err
    assert "1 evaluated, 0 written, 1 buffered, 0 failed" in err
    assert (tmp_path / "work" / "influx_buffer.jsonl").exists()


def test_expand_dry_run_and_a_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "seeds.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "prompt": f"p{i}", "domain": "d"}) + "\n" for i in range(3)
        )
    )
    base = ["expand", "--prompts", str(prompts), "--worker", "w1", "--output", str(tmp_path / "o")]
    assert main([*base, "--dry-run", "--limit", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "would expand s0 [d] 'p0'",
        "would expand s1 [d] 'p1'",
        "2 to generate (0 of 3 already done)",
    ]
    with FakeOpenAIServer(Script(tokens=["a", "b"])) as server:
        assert main([*base, "--model", server.base_url, "--model-name", "m1"]) == 0
    rows = [
        json.loads(line) for line in (tmp_path / "o" / "expand-w1.jsonl").read_text().splitlines()
    ]
    assert [(r["id"], r["response"], r["model"]) for r in rows] == [
        ("s0", "ab", "m1"),
        ("s1", "ab", "m1"),
        ("s2", "ab", "m1"),
    ]
    assert "3 generated, 0 skipped, 0 errors" in capsys.readouterr().err


def test_expand_bad_input_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "seeds.jsonl"
    prompts.write_text('{"id": "a"}\n')
    argv = ["expand", "--prompts", str(prompts), "--worker", "w", "--output", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("goml: error: prompts: ") and "seeds.jsonl:1" in err
    assert main([*argv, "--limit", "-1"]) == 2
    assert "--limit: must be >= 0" in capsys.readouterr().err


def _unusable_work_dir_error(
    work_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> str:
    argv = ["agent", "--adapter-base", str(tmp_path), "--backend", "http"]
    argv += ["--api-url", "http://127.0.0.1:9/v1", "--work-dir", str(work_dir), *extra]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # not a traceback
    assert lines[0].startswith("goml: error: work_dir: ")
    assert "--work-dir (GOML_AGENT_WORK_DIR, or work_dir in the config file)" in lines[0]
    return lines[0]


@pytest.mark.parametrize("mode", ["--one-shot", "--dry-run"])
def test_a_work_dir_that_is_a_file_is_a_one_line_error(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    error = _unusable_work_dir_error(file, tmp_path, capsys, mode)
    assert f"{str(file)!r} is a file, not a folder" in error
    error = _unusable_work_dir_error(file / "sub", tmp_path, capsys, mode)
    assert f"cannot create {str(file / 'sub')!r}: Not a directory" in error


def test_a_read_only_work_dir_is_a_one_line_error(
    small_disk: SmallDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (small_disk.path / "work").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk.path)], check=True)
    error = _unusable_work_dir_error(small_disk.path / "work", tmp_path, capsys, "--one-shot")
    assert "cannot write in" in error and "Read-only file system" in error
    error = _unusable_work_dir_error(small_disk.path / "new", tmp_path, capsys, "--one-shot")
    assert "cannot create" in error and "Read-only file system" in error


def test_a_failing_discovery_ends_a_one_shot_run_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["agent", "--adapter-base", str(tmp_path / "missing"), "--backend", "http"]
    argv += ["--api-url", "http://127.0.0.1:9/v1", "--work-dir", str(tmp_path / "w"), "--one-shot"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("goml: error: ") and "missing" in lines[-1]
    assert "Traceback" not in "\n".join(lines)
