"""Exact-match scoring: GSM8K-style numeric answers, checked locally without a judge.

The rules are kept identical to go-ml's scorer (``exact.go``) so scores compare:

- an empty response, or an error response (one that starts with "error" in any case once
  trimmed, see :func:`~goml_async.scoring.text.is_error_response`), is wrong;
- the answer is the number after ``####`` when there is one, otherwise the *last* number in the
  response (at the start, or after white space or ``=``);
- commas are removed and both sides are compared as floats: correct when they differ by at
  most 0.01.

Numbers are parsed as Go's ``strconv.ParseFloat`` parses them (:func:`parse_go_float`):
decimals (``12``, ``-3.5``, ``.5``, ``1e3``), hexadecimal floats with their mandatory ``p``
exponent (``0x1p4`` is 16), underscores between digits (``1_000``), and ``Inf``, ``Infinity``
and ``NaN`` in any case. Spellings Go refuses do not parse: ``0x10`` (no exponent), ``1__0``,
non-ASCII digits, surrounding space, and numbers too large for a float64 (``1e400``).
"""

from __future__ import annotations

import math
import re
from typing import Final

from .._validate import string
from .text import GO_WHITESPACE, is_error_response
from .types import StandardScores

__all__ = ["TOLERANCE", "extract_answer", "parse_go_float", "score_exact", "score_gsm8k"]

#: The largest difference between the expected and the extracted number that is still correct.
TOLERANCE: Final = 0.01

_HASH_ANSWER: Final = re.compile(r"####[\t\n\f\r ]*([0-9,.\-]+)")
_NUMBER: Final = re.compile(r"(?:^|[\t\n\f\r =])(-?[0-9,]+(?:\.[0-9]+)?)")
# strconv.ParseFloat's syntax. Digits may be separated by underscores; where they may stand
# is checked by _underscores_ok, as Go checks it after the number was read.
_GO_SPECIAL: Final = re.compile(r"[+-]?inf(?:inity)?|nan", re.IGNORECASE | re.ASCII)
_GO_DECIMAL: Final = re.compile(
    r"[+-]?(?=\.?[0-9_]*[0-9])[0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9][0-9_]*)?", re.ASCII
)
_GO_HEX: Final = re.compile(
    r"[+-]?0[xX](?=\.?[0-9a-fA-F_]*[0-9a-fA-F])[0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?"
    r"[pP][+-]?[0-9][0-9_]*",
    re.ASCII,
)
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def _underscores_ok(text: str) -> bool:
    """Go's ``underscoreOK``: each ``_`` stands between digits, or after the base prefix."""
    body = text[1:] if text[:1] in "+-" else text
    hexadecimal = body[:2] in ("0x", "0X")
    last = "0" if hexadecimal else "^"  # the base prefix counts as a digit
    for char in body[2:] if hexadecimal else body:
        if "0" <= char <= "9" or (hexadecimal and char in _HEX_DIGITS):
            last = "0"
        elif char == "_":
            if last != "0":
                return False
            last = "_"
        elif last == "_":
            return False
        else:
            last = "!"
    return last != "_"


def parse_go_float(text: str) -> float | None:
    """Parse ``text`` as Go's ``strconv.ParseFloat(text, 64)`` does, or None where Go errs.

    Accepted: decimal numbers (``-3.5``, ``.5``, ``5.``, ``1e3``), hexadecimal ones with a
    ``p`` exponent (``0x1p4``, ``0x1.8p1``), underscores between digits or after ``0x``
    (``1_000``, ``0x_1p4``), and ``inf``, ``infinity`` (signed) and ``nan`` in any case. A
    number too large for a float64 is Go's range error (None); one too small becomes 0, as in
    Go. Nothing around the number is allowed, not even white space.

    Example:
        >>> parse_go_float("0x1p4"), parse_go_float("1_000.5"), parse_go_float("-Infinity")
        (16.0, 1000.5, -inf)
        >>> parse_go_float("0x10"), parse_go_float("1e400"), parse_go_float(" 1")
        (None, None, None)
    """
    string("text", text)
    if _GO_SPECIAL.fullmatch(text):
        return float(text)
    hexadecimal = _GO_HEX.fullmatch(text) is not None
    if not hexadecimal and _GO_DECIMAL.fullmatch(text) is None:
        return None
    if "_" in text:
        if not _underscores_ok(text):
            return None
        text = text.replace("_", "")
    try:
        value = float.fromhex(text) if hexadecimal else float(text)
    except OverflowError:
        return None
    return None if math.isinf(value) else value


def _parse_float(text: str) -> float | None:
    # Commas are removed and the text trimmed before parsing.
    return parse_go_float(text.replace(",", "").strip(GO_WHITESPACE))


def extract_answer(response: str) -> str:
    """The numeric answer read from a response, as written (commas kept), or ``""``.

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
    string("response", response)
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
    string("response", response)
    string("correct", correct)
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
    empty) also scores 1.0, so non-numeric answers can match exactly. That fallback applies even
    to an error response that equals the reference (kept from go-ml's scorer so scores compare).

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
