"""Reading responses files and writing and reading scores files (the formats go-ml reads).

- A responses file is JSONL: one :class:`~goml_async.scoring.types.Response` object per line,
  blank lines skipped. A bad line is an error naming the file, the line number and the problem;
  there is no line-length limit.
- A scores file is one :class:`~goml_async.scoring.types.ScorerOutput` as JSON with a 2-space
  indent. Fields that are ``None`` are left out, so go-ml can read the file too (it ignores
  the extra ``errors`` and ``lek_score_legacy`` keys); it is written to a temporary file and then
  renamed, so a reader never sees half a file.
- go-ml's scores files are read too: a 0 in a standard score means "not scored" there (it
  had no null), so it becomes ``None``.

Every problem is a :class:`~goml_async.errors.ConfigError` whose message starts with the path
(and ``:LINE`` for a responses line).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeAlias

import anyio
from pydantic import ValidationError

from ..errors import ConfigError
from .types import Response, ScorerOutput

__all__ = [
    "StrPath",
    "aread_responses",
    "read_responses",
    "read_scorer_output",
    "write_scores",
    "write_text_atomic",
]

#: A file path.
StrPath: TypeAlias = str | os.PathLike[str]

_STANDARD_INTS: Final = (
    "truthfulness",
    "informativeness",
    "safety",
    "nuance",
    "kindness",
    "awareness",
)
_REPR_LIMIT: Final = 60


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            problems.append(f"missing field {where!r}")
            continue
        got = repr(error.get("input"))
        if len(got) > _REPR_LIMIT:
            got = got[: _REPR_LIMIT - 3] + "..."
        prefix = f"field {where!r}: " if where else ""
        problems.append(f"{prefix}{error['msg']} (got {got})")
    return "; ".join(problems)


def _unreadable(path: StrPath, exc: OSError) -> ConfigError:
    return ConfigError(os.fspath(path), f"cannot read the file: {exc.strerror or exc}")


# -- responses ------------------------------------------------------------------------------------


def _parse_responses(data: bytes, source: str) -> list[Response]:
    """Parse JSONL bytes; ``source`` names the file in error messages."""
    responses: list[Response] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{source}:{number}"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ConfigError(where, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(where, f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise ConfigError(where, f"expected a JSON object, got {type(row).__name__}")
        try:
            responses.append(Response.model_validate(row, strict=True))
        except ValidationError as exc:
            raise ConfigError(where, _describe(exc)) from exc
    return responses


def read_responses(path: StrPath) -> list[Response]:
    """Read a responses JSONL file.

    Raises:
        ConfigError: the file cannot be read, or a line is not valid JSON, not an object, or
            lacks or mistypes a field; the message starts with ``PATH:LINE``.

    Example:
        ```python
        responses = read_responses("responses.jsonl")
        report = await Engine(judge).score_all(responses)
        ```
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return _parse_responses(data, os.fspath(path))


async def aread_responses(path: StrPath) -> list[Response]:
    """:func:`read_responses` without blocking the event loop while the file is read."""
    try:
        data = await anyio.Path(path).read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    return _parse_responses(data, os.fspath(path))


# -- scores ---------------------------------------------------------------------------------------


def _scores_json(output: ScorerOutput, extra: Mapping[str, Any] | None = None) -> str:
    data = output.model_dump(mode="json", exclude_none=True)
    if not data["metadata"].get("scored_at"):
        del data["metadata"]["scored_at"]  # go-ml's time.Time cannot read ""; absent is fine
    for key, value in (extra or {}).items():
        if key in data:
            raise ConfigError("extra", f"key {key!r} is a ScorerOutput field")
        data[key] = value
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_scores(
    path: StrPath, output: ScorerOutput, *, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``output`` as JSON (2-space indent, ``None`` fields left out), atomically.

    The text goes to a temporary file beside ``path``, which then replaces ``path``; an
    existing file keeps its permissions.

    Args:
        path: the file.
        output: the scores.
        extra: more top-level keys, e.g. ``{"partial": {...}}`` for an interrupted run;
            :func:`read_scorer_output` (and go-ml) ignore them.

    Raises:
        ConfigError: ``output`` is not a ScorerOutput, an ``extra`` key is one of its
            fields, or the file cannot be written.
    """
    if not isinstance(output, ScorerOutput):
        raise ConfigError("output", f"must be a ScorerOutput, got {type(output).__name__}")
    write_text_atomic(path, _scores_json(output, extra))


def write_text_atomic(path: StrPath, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader sees the old file or the whole new
    one, never a part: through a temporary file beside it, synced, then renamed over it. An
    existing file keeps its permissions.

    Raises:
        ConfigError: the file cannot be written (the message starts with the path).
    """
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        fd, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise ConfigError(os.fspath(path), f"cannot write the file: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ConfigError(
                os.fspath(path), f"cannot write the file: {exc.strerror or exc}"
            ) from exc
        raise


def _from_go(data: dict[str, Any], include_per_prompt: bool) -> dict[str, Any]:
    """Adapt a go-ml scores file (nulls for empty maps, zeros for unscored) in place."""
    for key in ("metadata", "model_averages", "per_prompt", "errors"):
        if key in data and data[key] is None:
            del data[key]
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and metadata.get("suites", []) is None:
        del metadata["suites"]
    if not include_per_prompt:
        data.pop("per_prompt", None)
        return data
    per_prompt = data.get("per_prompt")
    if not isinstance(per_prompt, dict):
        return data  # validation reports it
    for model, rows in list(per_prompt.items()):
        if rows is None:
            per_prompt[model] = []
            continue
        if not isinstance(rows, list):
            continue
        for row in rows:
            standard = row.get("standard") if isinstance(row, dict) else None
            if isinstance(standard, dict):
                for name in _STANDARD_INTS:
                    # Exactly the int 0 ("not scored" there), never False or 0.0.
                    if type(standard.get(name)) is int and standard[name] == 0:
                        del standard[name]
    return data


def read_scorer_output(path: StrPath, *, include_per_prompt: bool = True) -> ScorerOutput:
    """Read a scores file written by goml_async or by go-ml.

    In a go-ml file, ``null`` maps and lists read as empty and a standard score of 0 reads as
    ``None`` (0 meant "not scored" there; the judge's scale starts at 1).

    Args:
        path: the file.
        include_per_prompt: False skips the per-prompt section (it is not validated and the
            result's ``per_prompt`` is empty). ``goml compare`` needs only the averages, and
            this reads files whose rows use go-ml's older scales (1-10), which are rejected
            otherwise.

    Raises:
        ConfigError: the file cannot be read, is not JSON, or does not match the format; the
            message starts with the path and names the offending field.
    """
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(source, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            source, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, f"expected a JSON object, got {type(data).__name__}")
    try:
        return ScorerOutput.model_validate(_from_go(data, include_per_prompt))
    except ValidationError as exc:
        raise ConfigError(source, _describe(exc)) from exc
