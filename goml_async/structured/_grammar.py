"""llguidance grammars for a :class:`ResponseFormat`, and matchers over them.

llguidance compiles JSON schemas, regular expressions and Lark grammars into one kind of
matcher that checks a byte (or token) sequence exactly, with no torch dependency. The same
grammar serves two users:

- the stream checker (:mod:`goml_async.structured._checker`), over a byte-level tokenizer
  (:func:`byte_tokenizer`), on every backend's text;
- a logits processor that constrains decoding: it calls :func:`new_matcher` with its model's
  ``llguidance.LLTokenizer`` and asks the matcher for a token bitmask each step.

Grammars are cached per format: a ResponseFormat is hashable and immutable.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError
from ._format import ResponseFormat

if TYPE_CHECKING:
    import llguidance

__all__ = ["BYTE_EOS", "byte_tokenizer", "grammar_for", "new_matcher", "parser_limits"]

#: The end-of-sequence token of :func:`byte_tokenizer` (tokens 0-255 are the bytes).
BYTE_EOS = 256

_FIELD = "response_format"
_SCHEMA_FIELD = "response_format.json_schema.schema"
# The checker sees text from servers that may pad a JSON document with whitespace, which JSON
# allows around a value; a constrained decoder gets the exact grammar instead.
_WS = r"/[ \t\n\r]*/"
# Options of llguidance's JSON compiler: any JSON whitespace between tokens, and \uXXXX
# escapes in strings (servers and llama.cpp's grammar emit them).
_JSON_OPTIONS = {"whitespace_flexible": True, "json_allow_general_unicode_escapes": True}
# A constrained decoder gets bounded whitespace between tokens instead: enough for indented
# output, but a weak model cannot spend its whole budget on newlines.
_DECODER_JSON_OPTIONS = {
    "whitespace_pattern": r"( ?|\n {0,20})",
    "json_allow_general_unicode_escapes": True,
}
_LOCATION = re.compile(r"^at \d+\(\d+\): ")
_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[([^\]]*)\]")


class _ByteVocabulary:
    """The tokenizer interface llguidance's TokenizerWrapper reads: one token per byte + EOS."""

    eos_token_id = BYTE_EOS
    bos_token_id = None
    tokens: ClassVar[list[bytes]] = [bytes([value]) for value in range(256)] + [b"<eos>"]
    special_token_ids: ClassVar[list[int]] = [BYTE_EOS]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


@functools.cache
def byte_tokenizer() -> llguidance.LLTokenizer:
    """A byte-level llguidance tokenizer: token ``b`` is the byte ``b``; 256 is EOS."""
    import llguidance

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteVocabulary()))


def parser_limits() -> llguidance.LLParserLimits:
    """The parser limits every goml matcher runs under (errors keep the schema out)."""
    import llguidance

    return llguidance.LLParserLimits(verbose_errors=False)


@functools.lru_cache(maxsize=256)
def grammar_for(fmt: ResponseFormat, *, surrounding_whitespace: bool = False) -> str:
    """The llguidance grammar of ``fmt``, checked (a matcher built on it starts clean).

    Args:
        fmt: the response format.
        surrounding_whitespace: allow any JSON whitespace, before and after the document too
            (what the stream checker accepts from servers); a constrained decoder leaves it
            False and gets at most one space, or a newline and up to 20 spaces, between two
            tokens (as llama.cpp's grammars allow).

    Raises:
        ConfigError: the format cannot be enforced: a schema keyword llguidance does not
            implement (named), an unsatisfiable schema, or an invalid regular expression.
    """
    import llguidance

    if fmt.type == "regex":
        grammar = llguidance.LLMatcher.grammar_from_regex(fmt.pattern)
        field = f"{_FIELD}.pattern"
    elif fmt.type == "choice":
        alternatives = " | ".join(json.dumps(choice, ensure_ascii=False) for choice in fmt.choices)
        grammar = llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}")
        field = f"{_FIELD}.choices"
    else:
        options = _JSON_OPTIONS if surrounding_whitespace else _DECODER_JSON_OPTIONS
        schema = {**fmt.schema, "x-guidance": options}
        field = _SCHEMA_FIELD if fmt.type == "json_schema" else _FIELD
        if surrounding_whitespace:
            lark = f"start: {_WS} doc {_WS}\ndoc: %json {json.dumps(schema)}"
            grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        else:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, byte_tokenizer(), limits=parser_limits()
    )
    if failed or messages:
        raise _unenforceable(fmt, field, messages)
    return grammar


def new_matcher(
    fmt: ResponseFormat,
    tokenizer: llguidance.LLTokenizer | None = None,
    *,
    surrounding_whitespace: bool = False,
) -> llguidance.LLMatcher:
    """A fresh llguidance matcher for ``fmt`` over ``tokenizer`` (default: bytes).

    A logits processor passes its model's tokenizer and keeps ``surrounding_whitespace``
    False; each matcher holds one sequence's state, so build one per sequence.

    Raises:
        ConfigError: as :func:`grammar_for`.
    """
    import llguidance

    grammar = grammar_for(fmt, surrounding_whitespace=surrounding_whitespace)
    matcher = llguidance.LLMatcher(
        tokenizer if tokenizer is not None else byte_tokenizer(),
        grammar,
        log_level=0,
        limits=parser_limits(),
    )
    if matcher.is_error():
        raise _unenforceable(fmt, _FIELD, [matcher.get_error()])
    return matcher


def _unenforceable(fmt: ResponseFormat, field: str, messages: list[str]) -> ConfigError:
    # llguidance's messages go on to quote the grammar (the whole schema): keep the first line.
    lines = [_LOCATION.sub("", message.strip().splitlines()[0]) for message in messages if message]
    text = "; ".join(lines) or "rejected by the grammar compiler"
    found = _UNIMPLEMENTED.search(text)
    if found and fmt.type == "json_schema":
        keywords = [word.strip().strip('"') for word in found.group(1).split(",")]
        where = _keyword_path(fmt.schema, keywords[0])
        return ConfigError(
            f"{_SCHEMA_FIELD}{where}",
            f"the JSON schema keyword {keywords[0]!r} cannot be enforced "
            f"(unsupported keyword(s): {', '.join(keywords)})",
        )
    what = {"regex": "the regular expression", "choice": "the choices"}.get(fmt.type, "the schema")
    return ConfigError(field, f"{what} cannot be enforced: {text[:500]}")


def _keyword_path(schema: Any, keyword: str) -> str:
    """The dotted path of the first place ``keyword`` is a key of ``schema`` ('' if none)."""
    pending: list[tuple[Any, str]] = [(schema, "")]
    while pending:
        node, path = pending.pop(0)
        if isinstance(node, dict):
            if keyword in node:
                return f"{path}.{keyword}"
            pending.extend((value, f"{path}.{key}") for key, value in node.items())
        elif isinstance(node, list):
            pending.extend((value, f"{path}[{index}]") for index, value in enumerate(node))
    return ""
