"""Moved to :mod:`goml_async.retry`; this old path still imports it (the same module object)."""

from __future__ import annotations

import sys

from . import retry as _moved
from .retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after

__all__ = ["RETRYABLE_STATUS", "RetryPolicy", "parse_retry_after"]

sys.modules[__name__] = _moved
