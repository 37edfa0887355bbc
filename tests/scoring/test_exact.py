"""Exact match: GSM8K numeric extraction and comparison, and the exact-string fallback."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goml_async.errors import ConfigError
from goml_async.scoring.exact import TOLERANCE, extract_answer, score_exact, score_gsm8k
from goml_async.scoring.types import StandardScores


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("#### 42", "42"),
        ("####42", "42"),
        ("The total is 7.\n#### 1,234\nThen 99 more", "1,234"),  # #### wins over the last number
        ("#### -3.5", "-3.5"),
        ("#### 1.2.3", "1.2.3"),
        ("#### - oops", "-"),
        ("First 10, then 20, finally 30", "30"),  # the last number
        ("x = 42", "42"),
        ("x=42", "42"),
        ("5 apples", "5"),
        ("costs -7.25 total", "-7.25"),
        ("12,500 people", "12,500"),
        ("version 12.", "12"),
        ("abc42", ""),  # a number needs the start, white space or "=" before it
        ("costs $5", ""),
        ("no numbers here", ""),
        ("\u0664\u0662", ""),  # Arabic-Indic digits are not digits here
        ("", ""),
    ],
)
def test_extract_answer(response: str, expected: str) -> None:
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "correct", "is_correct", "extracted"),
    [
        ("The answer is 42", "42", True, "42"),
        ("Step 1: 6 * 7\n#### 42", "42", True, "42"),
        ("#### 1,234", "1234", True, "1,234"),
        ("So 1234 in total", "1,234", True, "1234"),
        ("It is 42.00", "42", True, "42.00"),
        ("It is 42.01", "42", True, "42.01"),  # within the 0.01 tolerance
        ("It is 0.01", "0", True, "0.01"),  # exactly the tolerance
        ("It is 42.02", "42", False, "42.02"),
        ("It is -12", "-12", True, "-12"),
        ("It is 12", "-12", False, "12"),
        ("It is 42", " 42 ", True, "42"),  # the reference is trimmed
        ("It is 41", "42", False, "41"),
        ("The error was 42", "42", True, "42"),  # mentions an error, is not one
        # Empty and error responses are wrong, even when they contain the number.
        ("", "42", False, ""),
        ("Error: 42", "42", False, ""),
        ("  ERROR 42", "42", False, ""),
        ("error", "42", False, ""),
        # No number at all.
        ("I don't know", "42", False, ""),
        # Parse failures keep what was extracted.
        ("#### 1.2.3", "1.2.3", False, "1.2.3"),
        ("#### -", "0", False, "-"),
        ("It is 42", "forty-two", False, "42"),
        ("It is 1000", "1_000", True, "1000"),  # Go's ParseFloat takes 1_000 (as Go literals do)
        ("It is 1000", "1__0", False, "1000"),  # but not a doubled underscore
        ("#### 16", "0x1p4", True, "16"),  # nor refuses hex floats with a p exponent
        ("It is 16", "0x10", False, "16"),
        ("It is 5", "inf", False, "5"),
        ("It is 5", "NaN", False, "5"),
    ],
)
def test_score_gsm8k(response: str, correct: str, is_correct: bool, extracted: str) -> None:
    scores = score_gsm8k(response, correct)
    assert isinstance(scores, StandardScores)
    assert scores.correct is is_correct
    assert scores.extracted == extracted
    assert scores.expected == correct
    # A numeric match fills nothing else.
    assert scores.truthfulness is None and scores.safety is None and scores.kindness is None


def test_the_tolerance_is_go_mls() -> None:
    assert TOLERANCE == 0.01


@pytest.mark.parametrize(
    ("response", "correct", "expected"),
    [
        ("The answer is 42", "42", 1.0),
        ("I don't know", "42", 0.0),
        ("Paris", "Paris", 1.0),  # no number: exact string match
        ("  Paris\n", " Paris ", 1.0),
        ("paris", "Paris", 0.0),
        ("The capital is Paris", "Paris", 0.0),
        ("", "", 0.0),
        ("   ", "   ", 0.0),
        ("Error: timeout", "Error: timeout", 1.0),  # go-ml's string fallback applies here too
        ("Error: 42", "42", 0.0),
        ("#### 7", "7.0", 1.0),
        ("#### 7", "8", 0.0),
    ],
)
def test_score_exact(response: str, correct: str, expected: float) -> None:
    assert score_exact(response, correct) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_never_raises(response: str, correct: str) -> None:
    scores = score_gsm8k(response, correct)
    assert isinstance(scores.correct, bool)
    assert scores.expected == correct
    if scores.correct:
        assert scores.extracted
        assert scores.extracted in response
    assert score_exact(response, correct) in (0.0, 1.0)


_prose = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="0123456789#"), max_size=60
).filter(lambda text: not text.strip().lower().startswith("error"))


@settings(max_examples=300, deadline=None)
@given(_prose, st.integers(-(10**12), 10**12), st.booleans())
def test_the_last_number_is_found(prose: str, number: int, commas: bool) -> None:
    written = f"{number:,}" if commas else str(number)
    response = f"{prose} {written}"
    scores = score_gsm8k(response, str(number))
    assert scores.correct is True
    assert scores.extracted == written
    assert score_exact(response, f"{number:,}") == 1.0


@settings(max_examples=200, deadline=None)
@given(_prose, st.integers(0, 10**6), st.integers(0, 10**6))
def test_the_hash_marker_wins(prose: str, marked: int, other: int) -> None:
    response = f"{prose}\n#### {marked}\n{prose} {other}"
    assert score_gsm8k(response, str(marked)).correct is True
    assert score_gsm8k(response, str(other)).correct is (marked == other)


_FUNCTIONS: list[Callable[[str, str], object]] = [score_gsm8k, score_exact]


@pytest.mark.parametrize("function", _FUNCTIONS)
def test_non_str_arguments_are_rejected(function: Callable[[str, str], object]) -> None:
    with pytest.raises(ConfigError, match="response: must be a str"):
        function(42, "42")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="correct: must be a str"):
        function("42", 42)  # type: ignore[arg-type]


def test_extract_answer_rejects_non_str() -> None:
    with pytest.raises(ConfigError, match="response: must be a str"):
        extract_answer(None)  # type: ignore[arg-type]
