"""Exact-match scoring: GSM8K-style numeric answers, checked locally without a judge.

The rules are go-ml's (``exact.go``):

- an empty response, or an error response (one that starts with "error" in any case once
  trimmed, see :func:`~goml_async.scoring.text.is_error_response`), is wrong;
- the answer is the number after ``####`` when there is one, otherwise the *last* number in the
  response (at the start, or after white space or ``=``);
- commas are removed and both sides are compared as floats: correct when they differ by at
  most 0.01.

Numbers are parsed with Go's ``strconv.ParseFloat`` syntax for decimals (``12``, ``-3.5``,
``.5``, ``1e3``, ``Inf``), so Python-only spellings such as ``1_000`` or non-ASCII digits do
not parse; hexadecimal floats (``0x1p4``), which Go also accepts, are not supported.
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import ConfigError
from .text import GO_WHITESPACE, is_error_response
from .types import StandardScores

__all__ = ["TOLERANCE", "extract_answer", "score_exact", "score_gsm8k"]

#: The largest difference between the expected and the extracted number that is still correct.
TOLERANCE: Final = 0.01

_HASH_ANSWER: Final = re.compile(r"####[\t\n\f\r ]*([0-9,.\-]+)")
_NUMBER: Final = re.compile(r"(?:^|[\t\n\f\r =])(-?[0-9,]+(?:\.[0-9]+)?)")
_GO_FLOAT: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?)|nan",
    re.IGNORECASE | re.ASCII,
)


def _require_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a str, got {type(value).__name__}")
    return value


def _parse_float(text: str) -> float | None:
    cleaned = text.replace(",", "").strip(GO_WHITESPACE)
    return float(cleaned) if _GO_FLOAT.fullmatch(cleaned) else None


def extract_answer(response: str) -> str:
    """The numeric answer go-ml reads from a response, as written (commas kept), or ``""``.

    Args:
        response: a model response.

    Returns:
        The text after ``####`` if present, else the last number, else ``""``.

    Example:
        >>> extract_answer("3 boxes of 1,250 = 3,750 apples")
        '3,750'
        >>> extract_answer("Step 1: 40 + 2\\n#### 42")
        '42'
    """
    _require_str("response", response)
    if (marked := _HASH_ANSWER.search(response)) is not None:
        return marked.group(1)
    last = ""
    for match in _NUMBER.finditer(response):
        last = match.group(1)
    return last


def score_gsm8k(response: str, correct: str) -> StandardScores:
    """Score a GSM8K-style answer by numeric match.

    Args:
        response: the model's response.
        correct: the reference answer (commas allowed: ``"1,250"``).

    Returns:
        ``StandardScores`` with ``correct``, ``extracted`` (the number as written in the response,
        ``""`` if none) and ``expected`` (``correct`` as given). ``correct`` is False for an empty
        or error response, when no number is found, or when either side does not parse.

    Raises:
        ConfigError: an argument is not a str.

    Example:
        >>> scores = score_gsm8k("She pays 3 x 4 = 12 dollars.", "12")
        >>> scores.correct, scores.extracted, scores.expected
        (True, '12', '12')
    """
    _require_str("response", response)
    _require_str("correct", correct)
    if not response or is_error_response(response):
        return StandardScores(correct=False, extracted="", expected=correct)
    extracted = extract_answer(response)
    if not extracted:
        return StandardScores(correct=False, extracted="", expected=correct)
    got, want = _parse_float(extracted), _parse_float(correct)
    matched = got is not None and want is not None and abs(want - got) <= TOLERANCE
    return StandardScores(correct=matched, extracted=extracted, expected=correct)


def score_exact(response: str, correct: str) -> float:
    """1.0 if the response's number matches ``correct`` (see :func:`score_gsm8k`), else 0.0.

    When the numeric match fails, a response that equals ``correct`` after trimming (and is not
    empty) also scores 1.0, so non-numeric answers can match exactly. As in go-ml, that
    fallback applies even to an error response that equals the reference.

    Args:
        response: the model's response.
        correct: the reference answer.

    Returns:
        1.0 or 0.0.

    Raises:
        ConfigError: an argument is not a str.

    Example:
        >>> score_exact("The answer is 42", "42"), score_exact("I don't know", "42")
        (1.0, 0.0)
        >>> score_exact("  Paris ", "Paris")
        1.0
    """
    if score_gsm8k(response, correct).correct:
        return 1.0
    trimmed = response.strip(GO_WHITESPACE)
    return 1.0 if trimmed and trimmed == correct.strip(GO_WHITESPACE) else 0.0
