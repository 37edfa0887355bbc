"""Tests for goml_async.errors: the exception tree and what each error carries."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import goml_async
from goml_async import errors
from goml_async.errors import (
    BackendUnavailable,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    GomlError,
    JudgeError,
    ModelLoadError,
    NotSupported,
    StreamInterrupted,
)

_ERROR_CLASSES = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("cls", _ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_derives_from_goml_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, GomlError)
    assert issubclass(cls, Exception)


def test_errors_module_exports_every_exception_class_it_defines() -> None:
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)


def test_config_error_is_a_value_error_with_field() -> None:
    exc = ConfigError("max_tokens", "must be >= 0, got -1")
    assert isinstance(exc, ValueError)
    assert isinstance(exc, GomlError)
    assert exc.field == "max_tokens"
    assert exc.problem == "must be >= 0, got -1"
    assert str(exc) == "max_tokens: must be >= 0, got -1"
    with pytest.raises(ValueError, match="max_tokens"):
        raise exc


def test_backend_unavailable_message_includes_the_install_hint() -> None:
    hint = "pip install 'goml_async[llama]'"
    exc = BackendUnavailable(
        "the 'llama' backend needs xllamacpp", backend="llama", install_hint=hint
    )
    assert exc.install_hint == hint
    assert exc.backend == "llama"
    assert hint in str(exc)
    assert str(exc).startswith("the 'llama' backend needs xllamacpp")


def test_backend_unavailable_without_hint_keeps_the_message() -> None:
    exc = BackendUnavailable("unknown backend 'x'")
    assert str(exc) == "unknown backend 'x'"
    assert exc.install_hint is None
    assert exc.backend is None


def test_model_load_error_names_the_path() -> None:
    exc = ModelLoadError("/models/missing.gguf", "no such file or directory")
    assert exc.path == "/models/missing.gguf"
    assert exc.problem == "no such file or directory"
    assert "/models/missing.gguf" in str(exc)
    assert "no such file or directory" in str(exc)


def test_generation_error_defaults() -> None:
    exc = GenerationError("failed")
    assert exc.partial_text == ""
    assert exc.tokens_generated == 0
    assert str(exc) == "failed"


def test_generation_timeout_is_a_generation_error_with_partial_output() -> None:
    exc = GenerationTimeout(
        "idle deadline of 1.5 s passed",
        deadline="idle",
        seconds=1.5,
        partial_text="Once upon",
        tokens_generated=2,
    )
    assert isinstance(exc, GenerationError)
    assert exc.deadline == "idle"
    assert exc.seconds == 1.5
    assert exc.partial_text == "Once upon"
    assert exc.tokens_generated == 2
    assert str(exc) == "idle deadline of 1.5 s passed"


def test_stream_interrupted_is_a_generation_error_with_partial_output() -> None:
    exc = StreamInterrupted("connection reset", partial_text="Hel", tokens_generated=1)
    assert isinstance(exc, GenerationError)
    assert exc.partial_text == "Hel"
    assert exc.tokens_generated == 1


def test_judge_error_keeps_the_raw_reply() -> None:
    exc = JudgeError("score out of range", raw_reply='{"score": 11}')
    assert exc.raw_reply == '{"score": 11}'
    assert str(exc) == "score out of range"
    assert JudgeError("no reply").raw_reply == ""


def test_not_supported_is_a_plain_goml_error() -> None:
    exc = NotSupported("classify is not supported over HTTP")
    assert isinstance(exc, GomlError)
    assert not isinstance(exc, GenerationError)


def test_translated_errors_keep_their_cause() -> None:
    original = OSError("disk gone")
    with pytest.raises(ModelLoadError) as info:
        try:
            raise original
        except OSError as exc:
            raise ModelLoadError("/m", "unreadable") from exc
    assert info.value.__cause__ is original


# -- the drawing in the module docstring ----------------------------------------------------------

_TREE_LINE = re.compile(r"^(?P<indent>[\s│├└─]*)(?P<name>[A-Z]\w*)\b")


def _drawn_tree(text: str | None = None) -> dict[str, str | None]:
    """Parse the class tree in ``text`` (errors.__doc__) into {class name: drawn parent name}."""
    if text is None:
        blocks = re.findall(r"```\n(.*?)```", errors.__doc__ or "", flags=re.DOTALL)
        assert len(blocks) == 1, "the errors docstring should hold exactly one fenced tree"
    else:  # a docs page: the one fenced block that draws the tree
        fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
        blocks = [block for block in fenced if block.startswith("GomlError\n")]
        assert len(blocks) == 1, "the page should draw the tree in one fenced block"
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in blocks[0].splitlines():
        if not line.strip():
            continue
        match = _TREE_LINE.match(line)
        assert match is not None, f"unreadable tree line: {line!r}"
        indent = len(match.group("indent"))
        assert indent % 4 == 0, f"tree branches are 4 columns wide: {line!r}"
        depth = indent // 4
        assert depth <= len(stack), f"a branch skips a level: {line!r}"
        del stack[depth:]
        name = match.group("name")
        parents[name] = stack[-1] if stack else None
        stack.append(name)
    return parents


def test_docstring_tree_draws_every_exported_error_once() -> None:
    drawn = _drawn_tree()
    assert set(drawn) == set(errors.__all__)
    assert len(drawn) == len(errors.__all__)


def test_docstring_tree_has_goml_error_as_its_only_root() -> None:
    drawn = _drawn_tree()
    assert [name for name, parent in drawn.items() if parent is None] == ["GomlError"]


@pytest.mark.parametrize("name", sorted(_drawn_tree()))
def test_docstring_tree_matches_the_real_bases(name: str) -> None:
    parent = _drawn_tree()[name]
    cls = getattr(errors, name)
    goml_bases = [base for base in cls.__bases__ if issubclass(base, GomlError)]
    if parent is None:
        assert cls is GomlError
        assert goml_bases == []
    else:
        assert goml_bases == [getattr(errors, parent)]


# -- the docs page draws the same tree ------------------------------------------------------------

ROOT = Path(goml_async.__file__).resolve().parent.parent
DOCS_WITH_THE_TREE = ROOT / "docs" / "concepts" / "deadlines-and-retries.md"


def test_the_docs_page_draws_the_same_tree() -> None:
    drawn = _drawn_tree(DOCS_WITH_THE_TREE.read_text(encoding="utf-8"))
    assert drawn == _drawn_tree()


# -- every error of the SDK is defined in errors.py ------------------------------------------------

#: Exceptions of public modules that never reach a caller of the SDK: the server and the CLI
#: catch them and answer (an HTTP status, an exit code), so they are not part of the tree.
INTERNAL_SIGNALS = {
    "goml_async.cli.Terminated": "a SystemExit for SIGTERM/SIGHUP: the CLI exits with its code",
    "goml_async.server.admission.QueueClosed": "answered with 503 while the server stops",
    "goml_async.server.admission.QueueFull": "answered with 429 (the line is full)",
    "goml_async.server.admission.QueueTimeout": "answered with 503 (waited too long in line)",
    "goml_async.server.limits.BodyTooLarge": "answered with 413",
}


def _importable_modules() -> list[ModuleType]:
    modules = []
    for info in pkgutil.walk_packages(goml_async.__path__, "goml_async."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI on import
        try:
            modules.append(importlib.import_module(info.name))
        except ModuleNotFoundError as exc:  # a leaf module whose optional extra is missing
            if not (exc.name or "").startswith(("mlx", "xllamacpp", "asyncssh", "influxdb")):
                raise
    return modules


def test_every_goml_error_is_defined_in_errors_and_exported() -> None:
    elsewhere = set()
    for module in _importable_modules():
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, errors.GomlError):
                if obj.__module__ != errors.__name__:
                    elsewhere.add(f"{obj.__module__}.{obj.__qualname__}")
                else:
                    assert obj.__name__ in errors.__all__, obj
    assert elsewhere == set()


def test_exceptions_exported_by_public_modules_are_the_errors_ones() -> None:
    stray = set()
    for module in _importable_modules():
        name = module.__name__
        if any(part.startswith("_") for part in name.split(".")):
            continue
        for export in getattr(module, "__all__", []):
            obj = getattr(module, export)
            if not (inspect.isclass(obj) and issubclass(obj, BaseException)):
                continue
            if obj.__module__.startswith("goml_async") and obj is not getattr(errors, export, 0):
                stray.add(f"{obj.__module__}.{obj.__qualname__}")
    assert stray == set(INTERNAL_SIGNALS)


def test_errors_keep_their_old_import_paths() -> None:
    from goml_async import _service_parts, service
    from goml_async.scoring import UnknownProbeError as from_scoring
    from goml_async.scoring import probes

    for name in ("ServiceCloseError", "ServiceUnavailable", "UnknownBackendError"):
        assert getattr(service, name) is getattr(errors, name)
        assert getattr(_service_parts, name) is getattr(errors, name)
        assert name in service.__all__
    assert probes.UnknownProbeError is from_scoring is errors.UnknownProbeError


def test_no_bare_goml_error_is_raised() -> None:
    # Every raise names the precise subclass, so callers can tell the failures apart.
    bare = []
    for path in sorted((ROOT / "goml_async").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = raised.attr if isinstance(raised, ast.Attribute) else getattr(raised, "id", "")
            if name == "GomlError":
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bare == []


# -- what the errors carry ------------------------------------------------------------------------


def test_config_error_is_also_a_type_error() -> None:
    # Bad input of every kind is a ConfigError; callers that caught TypeError still catch it.
    with pytest.raises(TypeError, match="stream: must be"):
        raise ConfigError("stream", "must be a TokenStream, got str")


def test_unknown_probe_error_is_a_config_error_and_a_key_error() -> None:
    exc = errors.UnknownProbeError("probe_id", "unknown 'x'; known: a, b")
    assert isinstance(exc, ConfigError) and isinstance(exc, KeyError)
    assert str(exc) == "probe_id: unknown 'x'; known: a, b"  # not KeyError's repr()


def test_unknown_backend_error_lists_the_known_names() -> None:
    exc = errors.UnknownBackendError("vllm", ["http", "llama"], configured="GOML_DEFAULT_BACKEND")
    assert isinstance(exc, BackendUnavailable)
    assert exc.backend == "vllm" and exc.known == ("http", "llama")
    assert str(exc) == "unknown backend 'vllm' (GOML_DEFAULT_BACKEND); registered: http, llama"
    assert str(errors.UnknownBackendError("x", [])) == "unknown backend 'x'; registered: none"
    worded = errors.UnknownBackendError("mlx", ["llama"], message="no backend installed: mlx")
    assert str(worded) == "no backend installed: mlx" and worded.known == ("llama",)


def test_service_errors_say_what_happened() -> None:
    assert "not started" in str(errors.ServiceUnavailable("new"))
    assert errors.ServiceUnavailable("closed").state == "closed"
    failure = OSError("gone")
    closing = errors.ServiceCloseError([("a", failure)])
    assert closing.failures == (("a", failure),)
    assert str(closing) == "closing 1 backend(s) failed: a: OSError: gone"


# -- the precise error at each place that used to raise a built-in or a bare GomlError -----------


def test_bad_arguments_are_config_errors() -> None:
    from goml_async._sse import SSEDecoder
    from goml_async.stream import StopSequenceCutter

    with pytest.raises(ConfigError, match="max_event_chars: must be >= 1"):
        SSEDecoder(max_event_chars=0)
    with pytest.raises(ConfigError, match="max_event_chars: must be an int"):
        SSEDecoder(max_event_chars="8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stops: stop sequences must be non-empty"):
        StopSequenceCutter(["\nUser:", ""])


def test_a_text_response_takes_only_token_streams() -> None:
    pytest.importorskip("starlette")
    from goml_async.integrations.fastapi import text_sse_response

    with pytest.raises(ConfigError, match="stream: must be a TokenStream, got str"):
        text_sse_response("text")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_agents_files_refuse_bad_arguments(tmp_path: Path) -> None:
    from goml_async.agent.state import ScoredState
    from goml_async.agent.wal import WriteAheadBuffer

    with pytest.raises(ConfigError, match="lines: must be a sequence"):
        await WriteAheadBuffer(tmp_path / "buffer.jsonl").append("a", "m v=1i 1")
    with pytest.raises(ConfigError, match="seconds: a time base is whole Unix seconds"):
        await ScoredState(tmp_path / "scored.json").set_time_base("run", "a", 1.5)  # type: ignore[arg-type]


def test_using_a_fake_server_out_of_order_is_a_lifecycle_error() -> None:
    from goml_async.testing import FakeOpenAIServer

    server = FakeOpenAIServer()
    with pytest.raises(errors.LifecycleError, match="not running"):
        _ = server.port
    with server, pytest.raises(errors.LifecycleError, match="already running"):
        server.start()


def test_a_closed_mlx_worker_refuses_work_as_a_closed_model_does() -> None:
    from goml_async.backends._mlx_worker import MLXWorker

    worker = MLXWorker("goml-test-worker")
    worker.close()
    assert worker.wait_stopped(10)
    with pytest.raises(GenerationError, match="the MLX model is closed"):
        worker.submit(lambda: None)
