"""Tests for goml_async.errors: the exception tree and what each error carries."""

from __future__ import annotations

import inspect
import re

import pytest

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


def _drawn_tree() -> dict[str, str | None]:
    """Parse the class tree in errors.__doc__ into {class name: drawn parent name}."""
    doc = errors.__doc__ or ""
    blocks = re.findall(r"```\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 1, "the errors docstring should hold exactly one fenced tree"
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
