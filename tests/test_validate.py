"""The argument checks: bools are never numbers, boundaries are exact, messages name the field."""

from __future__ import annotations

import math

import pytest

from goml_async._validate import (
    int_at_least,
    integer,
    is_int,
    is_number,
    non_empty_str,
    number_between,
    seconds,
    string,
)
from goml_async.errors import ConfigError


def problem(check: object, *args: object, **kwargs: object) -> str:
    """The message of the ConfigError that ``check(*args, **kwargs)`` raises."""
    assert callable(check)
    with pytest.raises(ConfigError) as info:
        check(*args, **kwargs)
    return str(info.value)


def test_predicates_refuse_bool() -> None:
    assert is_int(3) and is_int(-1) and not is_int(True) and not is_int(3.0)
    assert is_number(3) and is_number(2.5) and is_number(math.nan)
    assert not is_number(False) and not is_number("1") and not is_number(None)


# --- int_at_least -----------------------------------------------------------------------------


def test_int_at_least_keeps_the_minimum_and_refuses_one_below() -> None:
    assert int_at_least("limit", 1, 1) == 1
    assert int_at_least("limit", 0, 0) == 0
    assert problem(int_at_least, "limit", 0, 1) == "limit: must be an int >= 1, got 0"


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None])
def test_int_at_least_refuses_other_types(value: object) -> None:
    assert problem(int_at_least, "limit", value, 0) == f"limit: must be an int >= 0, got {value!r}"


def test_int_at_least_allow_none() -> None:
    assert int_at_least("max_tokens", None, 0, allow_none=True) is None
    assert problem(int_at_least, "max_tokens", -1, 0, allow_none=True) == (
        "max_tokens: must be an int >= 0 or None, got -1"
    )


def test_the_error_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        int_at_least("max_queue", -1, 0)
    assert info.value.field == "max_queue"
    assert info.value.problem == "must be an int >= 0, got -1"


# --- integer ----------------------------------------------------------------------------------


def test_integer_says_which_half_failed() -> None:
    assert integer("top_k", 5) == 5
    assert integer("gpu_layers", -1, minimum=-1) == -1
    assert problem(integer, "top_k", True, minimum=0) == "top_k: must be an int, got bool True"
    assert problem(integer, "top_k", "3") == "top_k: must be an int, got str '3'"
    assert problem(integer, "top_k", -1, minimum=0) == "top_k: must be >= 0, got -1"


def test_integer_allow_none() -> None:
    assert integer("threads", None, minimum=1, allow_none=True) is None
    assert problem(integer, "threads", 2.0, allow_none=True) == (
        "threads: must be an int or None, got float 2.0"
    )
    assert problem(integer, "threads", None) == "threads: must be an int, got NoneType None"


# --- number_between ---------------------------------------------------------------------------


def test_number_between_includes_both_bounds() -> None:
    assert number_between("top_p", 0, 0.0, 1.0) == 0.0
    assert number_between("top_p", 1, 0.0, 1.0) == 1.0
    assert isinstance(number_between("top_p", 1, 0.0, 1.0), float)
    assert problem(number_between, "top_p", 1.01, 0.0, 1.0) == (
        "top_p: must be between 0.0 and 1.0, got 1.01"
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_number_between_refuses_what_is_not_finite(value: object) -> None:
    assert problem(number_between, "temperature", value, 0.0) == (
        f"temperature: must be >= 0.0, got {value!r}"
    )


@pytest.mark.parametrize("value", [True, "0.5", None])
def test_number_between_refuses_other_types(value: object) -> None:
    message = problem(number_between, "top_p", value, 0.0, 1.0)
    assert message == f"top_p: must be a number, got {type(value).__name__} {value!r}"


# --- seconds ----------------------------------------------------------------------------------


def test_seconds_are_a_finite_float_above_zero() -> None:
    assert seconds("timeout", 2) == 2.0 and isinstance(seconds("timeout", 2), float)
    assert seconds("timeout", 5e-324) == 5e-324
    for value in (0, -1.0, math.nan, math.inf, 10**400, True, "1", None):
        assert problem(seconds, "timeout", value) == f"timeout: must be > 0 seconds, got {value!r}"


def test_seconds_allow_none() -> None:
    assert seconds("queue_timeout", None, allow_none=True) is None
    assert problem(seconds, "queue_timeout", 0, allow_none=True) == (
        "queue_timeout: must be > 0 seconds or None, got 0"
    )


# --- strings ----------------------------------------------------------------------------------


def test_string_allows_empty_and_names_the_type() -> None:
    assert string("text", "") == ""
    assert problem(string, "text", b"hi") == "text: must be a str, got bytes"


def test_non_empty_str() -> None:
    assert non_empty_str("host", "h") == "h"
    assert problem(non_empty_str, "host", "") == "host: must be a non-empty str, got ''"
    assert problem(non_empty_str, "host", 1) == "host: must be a non-empty str, got 1"
    assert non_empty_str("model_name", None, allow_none=True) is None
    assert problem(non_empty_str, "model_name", "", allow_none=True) == (
        "model_name: must be a non-empty str or None, got ''"
    )
