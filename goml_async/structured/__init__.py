"""Structured output: ``response_format`` shapes, llguidance grammars and the stream checker.

- :func:`normalize_response_format` validates what ``response_format=`` accepts (OpenAI's
  ``json_object`` and ``json_schema`` shapes, goml's ``regex`` and ``choice``, a pydantic model
  class) into a hashable :class:`ResponseFormat`.
- :func:`grammar_for` builds its llguidance grammar and :func:`new_matcher` a matcher over any
  llguidance tokenizer: what a constrained decoder's logits processor needs.
- :class:`StreamChecker` checks streamed text as it arrives; every TokenStream with a
  ``response_format`` runs one, whatever the backend.
"""

from __future__ import annotations

from ._checker import StreamChecker, validate_document
from ._format import (
    MAX_CHOICE_CHARS,
    MAX_CHOICES,
    MAX_PATTERN_CHARS,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    FormatType,
    ResponseFormat,
    ResponseFormatLike,
    normalize_response_format,
)
from ._grammar import BYTE_EOS, byte_tokenizer, grammar_for, new_matcher, parser_limits

__all__ = [
    "BYTE_EOS",
    "FormatType",
    "MAX_CHOICES",
    "MAX_CHOICE_CHARS",
    "MAX_PATTERN_CHARS",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "ResponseFormat",
    "ResponseFormatLike",
    "StreamChecker",
    "byte_tokenizer",
    "grammar_for",
    "new_matcher",
    "normalize_response_format",
    "parser_limits",
    "validate_document",
]
