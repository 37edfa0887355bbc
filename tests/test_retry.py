"""The sans-I/O retry policy: which failures retry, how long to wait, and Retry-After parsing."""

from __future__ import annotations

import math
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from goml_async._retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after
from goml_async.errors import ConfigError

NOW = 1_760_000_000.0  # a fixed "current time" so HTTP-date tests do not race the clock


def zero() -> float:
    return 0.0


def one() -> float:
    return 1.0


# --- RETRYABLE_STATUS / should_retry --------------------------------------------------------


def test_retryable_status_set() -> None:
    assert {408, 409, 429} <= RETRYABLE_STATUS
    assert set(range(500, 600)) <= RETRYABLE_STATUS
    assert len(RETRYABLE_STATUS) == 3 + 100


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_retry(status: int) -> None:
    assert RetryPolicy().should_retry(0, status)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 413, 422, 600])
def test_client_errors_do_not_retry(status: int) -> None:
    assert not RetryPolicy().should_retry(0, status)


def test_connection_error_retries() -> None:
    assert RetryPolicy().should_retry(0, None)


def test_attempt_limit() -> None:
    policy = RetryPolicy(max_retries=2)
    assert [policy.should_retry(attempt, 503) for attempt in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert [policy.should_retry(attempt, None) for attempt in range(4)] == [
        True,
        True,
        False,
        False,
    ]


def test_zero_retries_never_retries() -> None:
    policy = RetryPolicy(max_retries=0)
    assert not policy.should_retry(0, None)
    assert not policy.should_retry(0, 503)


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (
        policy.max_retries,
        policy.backoff_initial,
        policy.backoff_max,
        policy.retry_after_cap,
        policy.jitter,
    ) == (2, 0.5, 8.0, 30.0, 0.25)


# --- delay -----------------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_caps_without_jitter_draw() -> None:
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=8.0, jitter=0.25)
    assert [policy.delay(attempt, random=zero) for attempt in range(7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
        8.0,
    ]


def test_full_jitter_draw_shortens_by_the_jitter_fraction() -> None:
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=8.0, jitter=0.25)
    assert [policy.delay(attempt, random=one) for attempt in range(6)] == [
        0.375,
        0.75,
        1.5,
        3.0,
        6.0,
        6.0,
    ]


def test_no_jitter_ignores_random() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay(2, random=one) == policy.delay(2, random=zero) == 2.0


def test_full_jitter_can_reach_zero() -> None:
    assert RetryPolicy(jitter=1.0).delay(3, random=one) == 0.0


def test_default_random_stays_in_range() -> None:
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=100.0, jitter=0.5)
    for _ in range(200):
        assert 2.0 < policy.delay(2) <= 4.0


def test_huge_attempt_does_not_overflow() -> None:
    assert RetryPolicy().delay(10_000, random=zero) == 8.0


def test_negative_attempt_treated_as_first() -> None:
    assert RetryPolicy().delay(-3, random=zero) == 0.5


def test_retry_after_used_instead_of_backoff_without_jitter() -> None:
    policy = RetryPolicy(jitter=1.0)
    assert policy.delay(0, 3.0, random=one) == 3.0
    assert policy.delay(5, 0.25, random=one) == 0.25
    assert policy.delay(5, 0.0, random=one) == 0.0


def test_retry_after_capped() -> None:
    policy = RetryPolicy(retry_after_cap=30.0)
    assert policy.delay(0, 120.0) == 30.0
    assert policy.delay(0, math.inf) == 30.0
    assert RetryPolicy(retry_after_cap=0.0).delay(0, 5.0) == 0.0


def test_negative_retry_after_floored() -> None:
    assert RetryPolicy().delay(0, -5.0) == 0.0


@given(
    attempt=st.integers(min_value=0, max_value=200),
    draw=st.floats(min_value=0.0, max_value=1.0),
    backoff_initial=st.floats(min_value=0.0, max_value=1e6),
    backoff_max=st.floats(min_value=0.0, max_value=1e6),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_delay_never_exceeds_cap(
    attempt: int, draw: float, backoff_initial: float, backoff_max: float, jitter: float
) -> None:
    policy = RetryPolicy(backoff_initial=backoff_initial, backoff_max=backoff_max, jitter=jitter)
    delay = policy.delay(attempt, random=lambda: draw)
    assert 0.0 <= delay <= backoff_max


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": "2"}, "max_retries"),
        ({"backoff_initial": -0.1}, "backoff_initial"),
        ({"backoff_initial": math.nan}, "backoff_initial"),
        ({"backoff_initial": math.inf}, "backoff_initial"),
        ({"backoff_initial": "0.5"}, "backoff_initial"),
        ({"backoff_max": -1.0}, "backoff_max"),
        ({"backoff_max": math.inf}, "backoff_max"),
        ({"backoff_max": None}, "backoff_max"),
        ({"retry_after_cap": -1.0}, "retry_after_cap"),
        ({"retry_after_cap": math.nan}, "retry_after_cap"),
        ({"retry_after_cap": False}, "retry_after_cap"),
        ({"jitter": -0.01}, "jitter"),
        ({"jitter": 1.01}, "jitter"),
        ({"jitter": math.nan}, "jitter"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"{field}: ")


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2.0)


def test_boundary_values_accepted() -> None:
    policy = RetryPolicy(
        max_retries=0, backoff_initial=0, backoff_max=0.0, retry_after_cap=0, jitter=1
    )
    assert policy.delay(3, random=one) == 0.0
    RetryPolicy(jitter=0.0)


# --- parse_retry_after -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("1.5", 1.5), ("0", 0.0), (" 7 ", 7.0), ("120", 120.0), ("2.", 2.0), (".5", 0.5)],
)
def test_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after({"retry-after": value}) == expected


def test_header_names_case_insensitive() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"RETRY-AFTER": "3"}) == 3.0
    assert parse_retry_after({"Retry-After-Ms": "250"}) == 0.25


def test_http_date_in_the_future() -> None:
    header = formatdate(NOW + 10, usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=NOW) == 10.0


def test_http_date_in_the_past_is_zero() -> None:
    header = formatdate(NOW - 60, usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=NOW) == 0.0


def test_http_date_with_unknown_zone_is_utc() -> None:
    # RFC 5322 "-0000" parses to a naive datetime; it must still be read as UTC.
    header = formatdate(NOW + 5).replace("+0000", "-0000")
    assert header.endswith("-0000")
    assert parse_retry_after({"retry-after": header}, now=NOW) == 5.0


def test_http_date_uses_the_clock_by_default() -> None:
    header = formatdate(4_000_000_000, usegmt=True)  # in 2096
    delay = parse_retry_after({"retry-after": header})
    assert delay is not None and delay > 0


def test_retry_after_ms() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500.5"}) == 1.5005


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after({"retry-after": "3", "retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"Retry-After": "3", "retry-after-ms": "250"}) == 0.25


def test_invalid_retry_after_ms_falls_back_to_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "3"}) == 3.0


def test_no_header() -> None:
    assert parse_retry_after({}) is None
    assert parse_retry_after({"content-type": "text/event-stream"}) is None


@pytest.mark.parametrize(
    "value",
    ["", "soon", "-1", "nan", "inf", "1e3", "1_0", "٣", "0x10", "3 seconds", "Fri, 99 Foo"],
)
def test_garbage_is_none(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


def test_accepts_any_mapping() -> None:
    class Headers(dict[str, str]):
        pass

    assert parse_retry_after(Headers({"Retry-After": "4"})) == 4.0


def test_parsed_value_feeds_delay() -> None:
    policy = RetryPolicy(retry_after_cap=30.0)
    assert policy.delay(0, parse_retry_after({"retry-after": "600"})) == 30.0
    assert policy.delay(0, parse_retry_after({}), random=zero) == 0.5


def test_accepts_httpx_headers() -> None:
    headers = httpx.Headers([("Retry-After", "3"), ("Retry-After-Ms", "250")])
    assert parse_retry_after(headers) == 0.25
