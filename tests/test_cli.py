"""Tests for the ``goml`` command line: help, version, errors, generate and models list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import goml_async
from goml_async import registry
from goml_async.cli import main
from goml_async.model import TextModel
from goml_async.registry import register_backend
from goml_async.testing import ScriptedModel
from goml_async.types import LoadConfig

REPO_ROOT = Path(goml_async.__file__).resolve().parent.parent


class FakeBackend:
    """A ModelBackend that returns one ScriptedModel and remembers it."""

    def __init__(self, name: str, reply: list[str]) -> None:
        self._name = name
        self._reply = reply
        self.models: list[ScriptedModel] = []
        self.loads: list[tuple[str, LoadConfig, dict[str, Any]]] = []

    @property
    def name(self) -> str:
        return self._name

    def available(self) -> bool:
        return True

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> TextModel:
        self.loads.append((path, config, options))
        model = ScriptedModel(self._reply)
        self.models.append(model)
        return model


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test against an empty registry and restore the real one afterwards."""
    saved = dict(registry._backends)
    registry._backends.clear()
    monkeypatch.delenv("GOML_DEFAULT_BACKEND", raising=False)
    monkeypatch.delenv("GOML_BASE_URL", raising=False)  # commands would use that server
    monkeypatch.setenv("COLUMNS", "100")  # argparse and rich size their output from COLUMNS
    try:
        yield
    finally:
        registry._backends.clear()
        registry._backends.update(saved)


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line; only a progress line ("loading ...") may come before it."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert 1 <= len(lines) <= 2, captured.err
    assert all(line.startswith("loading ") for line in lines[:-1]), captured.err
    return lines[-1]


def _gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    return path


# -- help and version -----------------------------------------------------------------------------


def test_top_level_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help([], capsys)
    assert out.startswith("usage: goml")
    assert "generate" in out
    assert "models" in out
    assert "examples:" in out
    assert 'goml generate "What is the capital of France?"' in out
    assert "bundled default model" in out
    assert "goml models list" in out
    assert "GOML_" in out


def test_generate_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["generate"], capsys)
    assert out.startswith("usage: goml generate")
    assert "bundled default model" in out
    assert "SmolLM2-135M-Instruct" in out
    for option in ("--model", "--max-tokens", "--temperature", "--stop", "--raw", "--system"):
        assert option in out
    assert ".gguf" in out


def test_models_list_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["models", "list"], capsys)
    assert out.startswith("usage: goml models list")
    assert "DIR" in out
    assert "config.json" in out
    assert "safetensors" in out


@pytest.mark.parametrize(
    ("argv", "example"),
    [(["generate"], "goml generate "), (["models", "list"], "goml models list ")],
)
def test_subcommand_help_shows_an_example(
    argv: list[str], example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _help(argv, capsys)
    usage_free = out.split("\n\n", 1)[1]  # past the usage block, which always names the command
    assert example in usage_free


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"goml {goml_async.__version__}\n"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "goml: error: the following arguments are required: COMMAND (see: goml --help)\n"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["generate", "--bogus", "hi"],
            "goml generate: error: unrecognized arguments: --bogus (see: goml generate --help)",
        ),
        (
            ["serve", "--port", "x"],
            "goml serve: error: argument --port: invalid int value: 'x' (see: goml serve --help)",
        ),
        (
            ["models", "list", "d", "--extra"],
            "goml models list: error: unrecognized arguments: --extra "
            "(see: goml models list --help)",
        ),
    ],
)
def test_usage_errors_are_one_line_naming_the_command(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == line + "\n"


# -- generate -------------------------------------------------------------------------------------


def test_generate_without_backend_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "hi"]) == 2
    assert _error_line(capsys).startswith("goml: error: no backend installed")


# A Python that cannot import xllamacpp, as on a machine without the llama extra.
_WITHOUT_LLAMA = """
import sys
sys.modules["xllamacpp"] = None  # importlib.util.find_spec now reports it missing
from goml_async.cli import main
sys.exit(main(["generate", "hi"]))
"""


def test_generate_without_backend_as_a_real_process(tmp_path: Path) -> None:
    env = {
        name: value for name, value in os.environ.items() if not name.upper().startswith("GOML_")
    }
    env["PATH"] = "/usr/bin:/bin"  # no llama-server on PATH
    env["GOML_CACHE_DIR"] = str(tmp_path)  # no cached llama-server either
    completed = subprocess.run(
        [sys.executable, "-c", _WITHOUT_LLAMA],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert len(lines) == 2, completed.stderr
    assert lines[0].startswith("loading the bundled default model")
    assert lines[1].startswith("goml: error: no backend installed")
    assert "pip install 'goml_async[llama]'" in lines[1]


@pytest.mark.slow
def test_generate_with_the_bundled_model_as_a_real_process() -> None:
    """The README's main job: the default model answers on the llama backend."""
    completed = subprocess.run(
        [sys.executable, "-m", "goml_async", "generate", "What is the capital of France?"],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Paris" in completed.stdout
    assert completed.stderr.startswith("loading the bundled default model")


def test_generate_negative_max_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--max-tokens", "-1", "hi"]) == 2
    line = _error_line(capsys)
    assert line.startswith("goml: error: max_tokens")
    assert "-1" in line


def test_generate_top_p_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--top-p", "1.5", "hi"]) == 2
    assert _error_line(capsys).startswith("goml: error: top_p")


def test_generate_raw_with_system_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--raw", "--system", "x", "hi"]) == 2
    line = _error_line(capsys)
    assert line.startswith("goml: error: ")
    assert "--system" in line
    assert "--raw" in line


def test_generate_missing_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    assert main(["generate", "--model", str(missing), "hi"]) == 2
    line = _error_line(capsys)
    assert line.startswith("goml: error: cannot load model")
    assert str(missing) in line


def test_generate_non_integer_max_tokens_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["generate", "--max-tokens", "many", "hi"])
    assert info.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_generate_streams_the_reply(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    backend = FakeBackend("llama", ["Par", "is"])
    register_backend(backend)
    model_file = _gguf(tmp_path / "tiny.gguf")
    assert main(["generate", "--model", str(model_file), "What?"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "Paris\n"
    assert [load[0] for load in backend.loads] == [str(model_file)]
    (model,) = backend.models
    ((messages, config),) = model.calls
    assert isinstance(messages, list)
    assert [(message.role, message.content) for message in messages] == [
        ("system", "You are a helpful assistant."),
        ("user", "What?"),
    ]
    assert config.max_tokens == 256
    assert model.closed


def test_generate_passes_options_and_system_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = FakeBackend("llama", ["ok"])
    register_backend(backend)
    model_file = _gguf(tmp_path / "tiny.gguf")
    argv = [
        "generate",
        "--model",
        str(model_file),
        "--system",
        "be brief",
        "--max-tokens",
        "8",
        "--temperature",
        "0.5",
        "--stop",
        "END",
        "--seed",
        "3",
        "Hi",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out == "ok\n"
    ((messages, config),) = backend.models[0].calls
    assert isinstance(messages, list)
    assert [message.role for message in messages] == ["system", "user"]
    assert (config.max_tokens, config.temperature, config.seed) == (8, 0.5, 3)
    assert config.stop_sequences == ("END",)


def test_generate_raw_sends_the_prompt_as_text(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backend = FakeBackend("llama", ["ok"])
    register_backend(backend)
    model_file = _gguf(tmp_path / "tiny.gguf")
    assert main(["generate", "--raw", "--model", str(model_file), "Once upon"]) == 0
    assert capsys.readouterr().out == "ok\n"
    ((prompt, _),) = backend.models[0].calls
    assert prompt == "Once upon"


# -- models list ----------------------------------------------------------------------------------


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    config = {"model_type": "qwen2", "quantization": {"bits": 4, "group_size": 64}}
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_models_list_prints_the_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # wide enough that rich prints the whole path
    folder = _model_folder(tmp_path / "my-model")
    assert main(["models", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(folder.resolve()) in out
    assert "qwen2" in out
    assert "4-bit/64" in out


def test_models_list_with_no_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["models", "list", str(tmp_path)]) == 0
    assert "no models found" in capsys.readouterr().out


def test_models_list_prints_long_paths_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # what piped output gets
    folder = _model_folder(tmp_path / ("a-model-folder-with-a-long-descriptive-name-" + "x" * 40))
    assert main(["models", "list", str(tmp_path)]) == 0
    assert str(folder.resolve()) in capsys.readouterr().out


def test_models_list_missing_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "/nonexistent"]) == 2
    line = _error_line(capsys)
    assert line.startswith("goml: error: ")
    assert "/nonexistent" in line


def test_models_list_with_no_dir_lists_model_dir_bundled_model_and_mlx_cache(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")
    mine = _model_folder(tmp_path / "models" / "mine")
    cached = _model_folder(tmp_path / "cache" / "mlx" / "SmolLM2-converted")
    monkeypatch.setenv("GOML_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("GOML_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert str(mine.resolve()) in out
    assert str(cached.resolve()) in out
    assert str(registry.bundled_model_path()) in out


def test_models_list_with_no_dir_names_an_unusable_model_dir(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOML_MODEL_DIR", "/nonexistent/models")
    assert main(["models", "list"]) == 2
    assert _error_line(capsys) == (
        "goml: error: GOML_MODEL_DIR: not a directory: '/nonexistent/models'"
    )


def test_generate_with_goml_base_url_talks_to_that_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from goml_async.testing import FakeOpenAIServer, Script

    registry._register_builtin_backends()  # the real http backend, nothing else
    with FakeOpenAIServer(Script(tokens=["From", " the", " server"])) as server:
        url = server.base_url
        monkeypatch.setenv("GOML_BASE_URL", url)
        assert main(["generate", "Who are you?"]) == 0
        [request] = [r for r in server.requests if r.method == "POST"]
    captured = capsys.readouterr()
    assert captured.out == "From the server\n"
    assert f"loading {url} ..." in captured.err
    assert request.path == "/v1/chat/completions"
    assert request.json is not None
    assert request.json["messages"][-1] == {"role": "user", "content": "Who are you?"}


def test_a_multi_line_error_is_one_line_ending_with_its_last_detail() -> None:
    from goml_async.cli import one_line

    message = "llama-server exited with exit code 1; last 3 log lines:\n    a\n\n    error: bad"
    assert one_line(message) == (
        "llama-server exited with exit code 1; last 3 log lines: ... error: bad"
    )
    assert one_line("plain") == "plain"
    assert len(one_line("first\n" + "x" * 500)) < 240
