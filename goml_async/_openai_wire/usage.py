"""How a reply ended: ``usage``, llama.cpp's ``timings`` and ``finish_reason``, both ways.

The server writes them from a stream's :class:`~goml_async.types.GenerateMetrics` and finish
reason; the client reads them back into the same, from OpenAI's shape and llama.cpp's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from ..types import FinishReason, GenerateMetrics

__all__ = [
    "NATIVE_STOPS",
    "finish_reason",
    "metrics_from",
    "timings_from_metrics",
    "timings_object",
    "usage_from_metrics",
    "usage_object",
    "wire_finish_reason",
]

#: llama.cpp's native ``stop_type`` as an OpenAI finish_reason ("word" is a stop sequence).
NATIVE_STOPS: Final = {"limit": "length", "eos": "stop", "word": "stop"}

#: The finish reasons servers send that mean the model stopped by itself (not at a limit). A
#: tuple, not a set: a hostile server's finish_reason may be a list, which a set cannot hash.
_STOPPED: Final = ("stop", "eos", "stop_sequence", "tool_calls", "content_filter")


def wire_finish_reason(reason: str | None) -> str:
    """OpenAI's finish_reason for a stream's: ``length`` and ``tool_calls`` stay, anything else
    is ``stop``."""
    return reason if reason in ("length", "tool_calls") else "stop"


def finish_reason(value: object) -> FinishReason | None:
    """A server's finish_reason as a stream's (``stop`` or ``length``); None when absent."""
    if value == "length":
        return "length"
    if value in _STOPPED:
        return "stop"
    return None


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage``: ``{"prompt_tokens", "completion_tokens", "total_tokens"}``."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def usage_from_metrics(metrics: GenerateMetrics | None) -> dict[str, Any]:
    """The ``usage`` of a stream's metrics (the backend's own token counts; zeros without).

    When part of the prompt came from a prompt cache it says how much, as OpenAI does:
    ``"prompt_tokens_details": {"cached_tokens": n}`` (``prompt_tokens`` is the whole prompt).
    """
    if metrics is None:
        return usage_object(0, 0)
    usage: dict[str, Any] = usage_object(metrics.prompt_tokens, metrics.generated_tokens)
    if metrics.cached_tokens > 0:
        usage["prompt_tokens_details"] = {"cached_tokens": metrics.cached_tokens}
    return usage


def timings_object(
    *,
    prompt_n: int,
    prompt_ms: float,
    predicted_n: int,
    predicted_ms: float,
    prompt_per_second: float | None = None,
    predicted_per_second: float | None = None,
    per_token: bool = False,
) -> dict[str, float]:
    """llama.cpp's ``timings`` object, an extension that OpenAI clients ignore.

    Times are rounded to the microsecond. A rate not given is the count over the time.
    ``per_token`` adds llama.cpp's ``prompt_per_token_ms`` and ``predicted_per_token_ms``.
    """
    if prompt_per_second is None:
        prompt_per_second = prompt_n / prompt_ms * 1e3 if prompt_ms > 0 else 0.0
    if predicted_per_second is None:
        predicted_per_second = predicted_n / predicted_ms * 1e3 if predicted_ms > 0 else 0.0
    timings: dict[str, float] = {"prompt_n": prompt_n, "prompt_ms": round(prompt_ms, 3)}
    if per_token:
        timings["prompt_per_token_ms"] = round(prompt_ms / prompt_n, 3) if prompt_n else 0.0
    timings["prompt_per_second"] = prompt_per_second
    timings["predicted_n"] = predicted_n
    timings["predicted_ms"] = round(predicted_ms, 3)
    if per_token:
        per_token_ms = round(predicted_ms / predicted_n, 3) if predicted_n else 0.0
        timings["predicted_per_token_ms"] = per_token_ms
    timings["predicted_per_second"] = predicted_per_second
    return timings


def timings_from_metrics(metrics: GenerateMetrics | None) -> dict[str, float] | None:
    """The ``timings`` of a stream's metrics, when the backend measured prefill or decode."""
    if metrics is None or not (metrics.prefill_seconds or metrics.decode_seconds):
        return None
    return timings_object(
        prompt_n=metrics.prompt_tokens,
        prompt_ms=metrics.prefill_seconds * 1000,
        prompt_per_second=metrics.prefill_tokens_per_sec,
        predicted_n=metrics.generated_tokens,
        predicted_ms=metrics.decode_seconds * 1000,
        predicted_per_second=metrics.decode_tokens_per_sec,
    )


def _number(mapping: object, key: str) -> float:
    """``mapping[key]`` when it is a finite number >= 0; else 0 (a server's garbage is no count)."""
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else 0.0


def _count(mapping: object, key: str) -> int:
    return int(_number(mapping, key))


def metrics_from(
    usage: Mapping[str, Any] | None, timings: Mapping[str, Any] | None
) -> GenerateMetrics | None:
    """GenerateMetrics from a server's ``usage`` and llama.cpp's ``timings``; None if neither.

    Counts come from ``usage`` first, else from ``timings``. ``prompt_tokens`` is the whole
    prompt: usage's ``prompt_tokens`` counts cached tokens too, where llama.cpp's
    ``timings.prompt_n`` counts only the tokens it evaluated, so without usage the prompt is
    ``prompt_n + cache_n``. ``cached_tokens`` is OpenAI's
    ``usage.prompt_tokens_details.cached_tokens``, else llama.cpp's ``timings.cache_n``. A
    count that is not a finite number >= 0 reads as 0.
    """
    if not usage and not timings:
        return None
    usage = usage if isinstance(usage, Mapping) else {}
    timings = timings if isinstance(timings, Mapping) else {}
    details = usage.get("prompt_tokens_details")
    cached = _count(details, "cached_tokens") or _count(timings, "cache_n")
    prompt_tokens = _count(usage, "prompt_tokens") or (
        _count(timings, "prompt_n") + _count(timings, "cache_n")
    )
    generated = _count(usage, "completion_tokens") or _count(timings, "predicted_n")
    return GenerateMetrics(
        prompt_tokens=prompt_tokens,
        generated_tokens=generated,
        cached_tokens=min(cached, prompt_tokens) if prompt_tokens else cached,
        prefill_seconds=_number(timings, "prompt_ms") / 1000,
        decode_seconds=_number(timings, "predicted_ms") / 1000,
        prefill_tokens_per_sec=_number(timings, "prompt_per_second"),
        decode_tokens_per_sec=_number(timings, "predicted_per_second"),
    )
