"""Cached prompt tokens on the wire: read from OpenAI's usage and llama.cpp's timings, written
back as OpenAI's ``prompt_tokens_details``; a hostile server's shapes read as 0, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from goml_async._openai_wire.usage import metrics_from, usage_from_metrics
from goml_async.types import GenerateMetrics

# What llama-server sent for a 27-token chat prompt whose first 26 tokens were in its cache.
LLAMA_USAGE = {
    "completion_tokens": 8,
    "prompt_tokens": 27,
    "total_tokens": 35,
    "prompt_tokens_details": {"cached_tokens": 26},
}
LLAMA_TIMINGS = {"cache_n": 26, "prompt_n": 1, "prompt_ms": 5.4, "predicted_n": 8}


def test_openai_usage_names_the_cached_tokens_and_the_whole_prompt() -> None:
    metrics = metrics_from(LLAMA_USAGE, LLAMA_TIMINGS)
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.cached_tokens, metrics.generated_tokens) == (27, 26, 8)


def test_without_usage_the_prompt_is_evaluated_plus_cached() -> None:
    # timings.prompt_n counts only the tokens llama.cpp evaluated, not those it reused.
    metrics = metrics_from(None, LLAMA_TIMINGS)
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.cached_tokens) == (27, 26)


def test_the_native_route_counts_come_with_cache_n() -> None:
    # llama.cpp's /completion: tokens_evaluated (the whole prompt) becomes usage by the parser.
    metrics = metrics_from({"prompt_tokens": 8, "completion_tokens": 4}, {"cache_n": 7})
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.cached_tokens) == (8, 7)


def test_no_cache_reads_as_zero() -> None:
    metrics = metrics_from({"prompt_tokens": 5, "completion_tokens": 2}, None)
    assert metrics is not None and metrics.cached_tokens == 0


@pytest.mark.parametrize(
    ("usage", "timings"),
    [
        ({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": "3"}}, None),
        ({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": -3}}, {"cache_n": -1}),
        ({"prompt_tokens": 5, "prompt_tokens_details": "lots"}, {"cache_n": [1]}),
        ({"prompt_tokens": 5, "prompt_tokens_details": [{"cached_tokens": 3}]}, {"cache_n": {}}),
        ({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": True}}, None),
        ({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": None}}, None),
        ({"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": float("nan")}}, None),
        ({"prompt_tokens": 5}, {"cache_n": float("inf")}),
        ({"prompt_tokens": 5, "prompt_tokens_details": {"x": {"cached_tokens": 3}}}, None),
    ],
)
def test_hostile_cached_counts_read_as_zero(usage: Any, timings: Any) -> None:
    metrics = metrics_from(usage, timings)
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.cached_tokens) == (5, 0)


@pytest.mark.parametrize(
    ("usage", "timings"),
    [
        ({"prompt_tokens": "12", "completion_tokens": -4}, {"prompt_n": float("-inf")}),
        ({"prompt_tokens": float("nan"), "completion_tokens": 1e400}, {"predicted_n": "x"}),
        ("not a mapping", ["nor", "this"]),
        ({"prompt_tokens": None, "completion_tokens": {}}, {"prompt_ms": "slow", "cache_n": None}),
    ],
)
def test_hostile_counts_never_crash(usage: Any, timings: Any) -> None:
    metrics = metrics_from(usage, timings)
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.generated_tokens, metrics.cached_tokens) == (0, 0, 0)
    assert metrics.prefill_seconds == 0.0


def test_cached_tokens_never_exceed_the_prompt() -> None:
    metrics = metrics_from(
        {"prompt_tokens": 4, "prompt_tokens_details": {"cached_tokens": 9}}, None
    )
    assert metrics is not None and metrics.cached_tokens == 4


def test_usage_names_cached_tokens_only_when_there_were_some() -> None:
    assert usage_from_metrics(GenerateMetrics(prompt_tokens=27, generated_tokens=8)) == {
        "prompt_tokens": 27,
        "completion_tokens": 8,
        "total_tokens": 35,
    }
    cached = usage_from_metrics(
        GenerateMetrics(prompt_tokens=27, generated_tokens=8, cached_tokens=26)
    )
    assert cached == LLAMA_USAGE
    assert metrics_from(cached, None) == GenerateMetrics(
        prompt_tokens=27, generated_tokens=8, cached_tokens=26
    )
    assert usage_from_metrics(None) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
