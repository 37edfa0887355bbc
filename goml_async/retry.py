"""Retry and backoff decisions for HTTP backends (sans-I/O): :class:`RetryPolicy`.

The HTTP shell asks :meth:`RetryPolicy.should_retry` after a failed attempt (before the first
token only; after it a failure is a ``StreamInterrupted`` and is never replayed), then sleeps
for :meth:`RetryPolicy.delay`, feeding it what :func:`parse_retry_after` read from the
response headers.

Example:
    >>> policy = RetryPolicy(max_retries=3, backoff_initial=0.5, jitter=0.0)
    >>> policy.should_retry(0, 503), policy.should_retry(0, 404), policy.should_retry(3, 503)
    (True, False, False)
    >>> tuple(policy.delay(attempt) for attempt in range(3))
    (0.5, 1.0, 2.0)
    >>> policy.delay(0, parse_retry_after({"Retry-After": "120"}))
    30.0
"""

from __future__ import annotations

import math
import random as _random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from ._validate import integer, is_number
from .errors import ConfigError

__all__ = ["RETRYABLE_STATUS", "RetryPolicy", "parse_retry_after"]

#: Statuses worth another attempt: timeout, conflict (servers use it for transient lock
#: contention), rate limit, and every server error.
RETRYABLE_STATUS: frozenset[int] = frozenset({408, 409, 429, *range(500, 600)})

# Non-negative decimal seconds. float() alone would also take "nan", "inf", "-1", "1_0" and
# non-ASCII digits, none of which a server means as a delay.
_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)

# 2.0 ** 1024 overflows a float; far beyond any cap, so clamping the exponent changes nothing.
_MAX_EXPONENT = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before retrying a failed HTTP request.

    Attributes:
        max_retries: retries after the first attempt (0 disables retrying).
        backoff_initial: the delay in seconds before the first retry; it doubles each retry.
        backoff_max: the longest backoff delay in seconds.
        retry_after_cap: the longest server-requested (Retry-After) delay honoured, in seconds.
        jitter: the fraction, in [0, 1], by which a backoff delay is randomly shortened, so
            that many clients failing together do not retry in lockstep.

    Raises:
        ConfigError: a value is out of range; ``field`` names it.
    """

    max_retries: int = 2
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        integer("max_retries", self.max_retries, minimum=0)
        for name in ("backoff_initial", "backoff_max", "retry_after_cap", "jitter"):
            value = getattr(self, name)
            if not is_number(value):
                raise ConfigError(name, f"must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(name, f"must be finite and >= 0, got {value!r}")
        if self.jitter > 1:
            raise ConfigError("jitter", f"must be between 0 and 1, got {self.jitter!r}")

    def should_retry(self, attempt: int, status: int | None) -> bool:
        """Decide whether a failed attempt is worth another try.

        Args:
            attempt: how many retries have already been made (0 after the first failure).
            status: the HTTP status of the failed response, or ``None`` for a connection
                error (which is always retryable).

        Returns:
            True if the retry budget allows it and the failure is transient.
        """
        if attempt >= self.max_retries:
            return False
        return status is None or status in RETRYABLE_STATUS

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        random: Callable[[], float] = _random.random,
    ) -> float:
        """Seconds to wait before the next retry.

        Without a server hint this is exponential backoff, ``backoff_initial * 2**attempt``
        capped at ``backoff_max``, shortened by up to ``jitter`` of itself (jitter only ever
        shortens, so the cap holds). A server's Retry-After wins, capped at
        ``retry_after_cap`` and without jitter: the server said when it will be ready.

        Args:
            attempt: how many retries have already been made (0 before the first retry).
            retry_after: the server-requested delay from :func:`parse_retry_after`, if any.
            random: returns a float in [0, 1); injectable for deterministic tests.

        Returns:
            The delay in seconds, >= 0.
        """
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_cap))
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        backoff = min(self.backoff_initial * 2.0**exponent, self.backoff_max)
        return backoff * (1.0 - self.jitter * random())


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Read the server-requested retry delay from response headers.

    ``retry-after-ms`` (milliseconds, as OpenAI and others send) is tried first, then
    ``retry-after`` as delta-seconds (an integer or, leniently, a decimal) or as an HTTP-date.
    Header names are matched case-insensitively.

    Args:
        headers: the response headers; any mapping of str to str.
        now: the current POSIX time for HTTP-dates; ``time.time()`` when omitted.

    Returns:
        The delay in seconds (0.0 for a date already past), or ``None`` when neither header
        is present or valid.

    Example:
        >>> parse_retry_after({"Retry-After": "1.5"})
        1.5
        >>> parse_retry_after({"retry-after-ms": "250", "retry-after": "3"})
        0.25
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None and _SECONDS.fullmatch(millis.strip()):
        return float(millis) / 1000.0
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 5322's "-0000" zone means "UTC, source unknown"; HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
