"""Checks for the values a caller hands in: each raises :class:`~goml_async.errors.ConfigError`
naming the field, or returns the value (a number as a float where a float is meant).

``bool`` is an ``int`` subclass in Python, but ``max_tokens=True`` is surely a mistake: here a
bool is never an int and never a number.

Two wordings are in use and both are kept, since callers match on them: :func:`int_at_least`
says the whole rule at once (``must be an int >= 1, got 0``), :func:`integer` says which half
failed (``must be an int, got str 'x'`` or ``must be >= 1, got 0``).

Example:
    >>> int_at_least("max_tokens", 0, 1)
    Traceback (most recent call last):
    ...
    goml_async.errors.ConfigError: max_tokens: must be an int >= 1, got 0
    >>> seconds("timeout", 2)
    2.0
"""

from __future__ import annotations

import math
from typing import Literal, TypeGuard, overload

from .errors import ConfigError

__all__ = [
    "int_at_least",
    "integer",
    "is_int",
    "is_number",
    "non_empty_str",
    "number_between",
    "seconds",
    "string",
]


def is_int(value: object) -> TypeGuard[int]:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """True for an int or a float that is not a bool (NaN and infinities included)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@overload
def int_at_least(
    name: str, value: object, minimum: int, *, allow_none: Literal[False] = False
) -> int: ...
@overload
def int_at_least(
    name: str, value: object, minimum: int, *, allow_none: Literal[True]
) -> int | None: ...
def int_at_least(name: str, value: object, minimum: int, *, allow_none: bool = False) -> int | None:
    """``value`` if it is an int >= ``minimum`` (or None, when allowed).

    Raises:
        ConfigError: ``must be an int >= {minimum}[ or None], got {value!r}``.
    """
    if value is None and allow_none:
        return None
    if not is_int(value) or value < minimum:
        or_none = " or None" if allow_none else ""
        raise ConfigError(name, f"must be an int >= {minimum}{or_none}, got {value!r}")
    return value


@overload
def integer(
    name: str, value: object, *, minimum: int | None = None, allow_none: Literal[False] = False
) -> int: ...
@overload
def integer(
    name: str, value: object, *, minimum: int | None = None, allow_none: Literal[True]
) -> int | None: ...
def integer(
    name: str, value: object, *, minimum: int | None = None, allow_none: bool = False
) -> int | None:
    """``value`` if it is an int (>= ``minimum`` when given), or None when allowed.

    Raises:
        ConfigError: ``must be an int[ or None], got {type} {value!r}`` for another type,
            ``must be >= {minimum}, got {value}`` for an int below the minimum.
    """
    if value is None and allow_none:
        return None
    if not is_int(value):
        or_none = " or None" if allow_none else ""
        raise ConfigError(name, f"must be an int{or_none}, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


def number_between(name: str, value: object, low: float, high: float = math.inf) -> float:
    """``value`` as a float if it is a finite number from ``low`` to ``high`` (both included).

    Raises:
        ConfigError: ``must be a number, got {type} {value!r}`` for another type, else
            ``must be between {low} and {high}, got {value!r}`` (``must be >= {low}`` when
            there is no upper bound) for a value outside, NaN or an infinity.
    """
    if not is_number(value):
        raise ConfigError(name, f"must be a number, got {type(value).__name__} {value!r}")
    number = _float(value)
    if not math.isfinite(number) or not low <= number <= high:
        bound = f">= {low}" if high == math.inf else f"between {low} and {high}"
        raise ConfigError(name, f"must be {bound}, got {value!r}")
    return number


@overload
def seconds(name: str, value: object, *, allow_none: Literal[False] = False) -> float: ...
@overload
def seconds(name: str, value: object, *, allow_none: Literal[True]) -> float | None: ...
def seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a finite number of seconds > 0 (or None, when allowed).

    Raises:
        ConfigError: ``must be > 0 seconds[ or None], got {value!r}``.
    """
    if value is None and allow_none:
        return None
    number = _float(value) if is_number(value) else math.nan
    if not 0 < number < math.inf:  # NaN fails the comparison too
        or_none = " or None" if allow_none else ""
        raise ConfigError(name, f"must be > 0 seconds{or_none}, got {value!r}")
    return number


def _float(value: int | float) -> float:
    """``value`` as a float; an int too large for one counts as infinite (not OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def string(name: str, value: object) -> str:
    """``value`` if it is a str (empty allowed).

    Raises:
        ConfigError: ``must be a str, got {type}``; the value itself is not repeated, since
            it may be long.
    """
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a str, got {type(value).__name__}")
    return value


@overload
def non_empty_str(name: str, value: object, *, allow_none: Literal[False] = False) -> str: ...
@overload
def non_empty_str(name: str, value: object, *, allow_none: Literal[True]) -> str | None: ...
def non_empty_str(name: str, value: object, *, allow_none: bool = False) -> str | None:
    """``value`` if it is a str of at least one character (or None, when allowed).

    Raises:
        ConfigError: ``must be a non-empty str[ or None], got {value!r}``.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        or_none = " or None" if allow_none else ""
        raise ConfigError(name, f"must be a non-empty str{or_none}, got {value!r}")
    return value
