"""StreamChecker: checks streamed text against a response format as it arrives.

Two checks, so that no text that breaks the format is ever returned as a success:

1. as the text arrives, an llguidance matcher over single bytes: the first chunk holding a
   byte that can no longer lead to a valid document raises
   :class:`~goml_async.errors.SchemaViolation`; the end of the stream needs the matcher to
   accept (an unfinished document is a violation too);
2. at the end, the whole document is parsed and validated again: with ``jsonschema`` for a
   JSON schema (or the pydantic model when one was given), as a JSON object for
   ``json_object``, as one of the alternatives for ``choice``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ..errors import SchemaViolation
from ._format import ResponseFormat
from ._grammar import new_matcher

__all__ = ["StreamChecker", "validate_document"]


class StreamChecker:
    """Feed it the output chunk by chunk; :meth:`finish` returns the parsed document.

    Example:
        >>> from goml_async.structured import StreamChecker, normalize_response_format
        >>> checker = StreamChecker(normalize_response_format({"type": "json_object"}))
        >>> checker.feed('{"a": ')
        >>> checker.feed("1}")
        >>> checker.finish()
        {'a': 1}
    """

    __slots__ = ("_accepted", "_format", "_matcher", "_parsed")

    def __init__(self, fmt: ResponseFormat) -> None:
        self._format = fmt
        self._matcher = new_matcher(fmt, surrounding_whitespace=fmt.is_json)
        self._accepted = bytearray()
        self._parsed: Any = None

    @property
    def format(self) -> ResponseFormat:
        """The format checked against."""
        return self._format

    @property
    def text(self) -> str:
        """The output accepted so far (an incomplete UTF-8 sequence at its end left out)."""
        return self._accepted.decode("utf-8", errors="ignore")

    @property
    def parsed(self) -> Any:
        """The parsed document once :meth:`finish` succeeded, else None."""
        return self._parsed

    def feed(self, chunk: str | bytes) -> None:
        """Check the next chunk of output (text, or raw bytes that may split a character).

        Raises:
            SchemaViolation: a byte of ``chunk`` cannot continue a valid document; nothing of
                ``chunk`` counts as accepted and ``partial_text`` is the output before it.
        """
        data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        if not data:
            return
        consumed = self._matcher.try_consume_tokens(list(data))
        if consumed == len(data):
            self._accepted += data
            return
        offset = len(self._accepted) + consumed
        bad = data[consumed : consumed + 1]
        where = "after the complete document" if self._matcher.is_stopped() else ""
        prefix = (self._accepted + data[:consumed]).decode("utf-8", errors="replace")[-40:]
        raise SchemaViolation(
            f"the output left its {self._format.describe()} at byte {offset} ({bad!r}"
            f"{' ' + where if where else ''}, after {prefix!r})",
            format_type=self._format.type,
            offset=offset,
            partial_text=self.text,
        )

    def finish(self) -> Any:
        """Check the end of the output; return the parsed document.

        Returns:
            the pydantic instance (a model class was given), the JSON value (JSON formats) or
            the text (``regex``, ``choice``).

        Raises:
            SchemaViolation: the document is incomplete or fails validation.
        """
        text = self._accepted.decode("utf-8", errors="replace")
        if not self._matcher.is_accepting():
            raise SchemaViolation(
                f"the output ended before a complete {self._format.describe()} document "
                f"({len(self._accepted)} byte(s): {text[-60:]!r})",
                format_type=self._format.type,
                partial_text=text,
            )
        self._parsed = validate_document(self._format, text)
        return self._parsed


def validate_document(fmt: ResponseFormat, text: str) -> Any:
    """Parse and validate a whole document against ``fmt``; return the parsed value.

    Raises:
        SchemaViolation: ``text`` is not a valid document of ``fmt``.
    """
    if fmt.type == "regex":
        return text
    if fmt.type == "choice":
        if text not in fmt.choices:
            raise _invalid(fmt, text, "it is not one of the choices")
        return text
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _invalid(fmt, text, f"not JSON: {exc}") from None
    if fmt.type == "json_object":
        if not isinstance(value, dict):
            raise _invalid(fmt, text, f"a JSON {type(value).__name__}, not an object")
        return value
    error = _validator(fmt).best_match_error(value)
    if error is not None:
        raise _invalid(fmt, text, error)
    if fmt.model is not None:
        try:
            return fmt.model.model_validate(value)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise _invalid(fmt, text, f"the model rejects it: {exc}") from None
    return value


class _SchemaValidator:
    __slots__ = ("_validator",)

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def best_match_error(self, value: Any) -> str | None:
        import jsonschema

        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = "".join(f"[{part!r}]" for part in error.absolute_path)
        return f"{error.message} (at {where or 'the top level'})"


@functools.lru_cache(maxsize=128)
def _validator(fmt: ResponseFormat) -> _SchemaValidator:
    return _SchemaValidator(fmt.schema)


def _invalid(fmt: ResponseFormat, text: str, reason: str) -> SchemaViolation:
    return SchemaViolation(
        f"the output is not a valid {fmt.describe()} document: {reason}"[:800],
        format_type=fmt.type,
        partial_text=text,
    )
