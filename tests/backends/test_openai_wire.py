"""The OpenAI wire format, sans-I/O: request bodies and stream chunks."""

from __future__ import annotations

import json

import pytest

from goml_async import (
    APIStatusError,
    GenerateConfig,
    GenerationError,
    Message,
    NotSupported,
    Token,
)
from goml_async.backends import _openai
from goml_async.backends.http import normalize_base_url


def test_only_temperature_is_sent_by_default() -> None:
    assert _openai.sampling_fields(GenerateConfig(max_tokens=0)) == {"temperature": 0.0}


def test_every_sampling_field_given_is_sent() -> None:
    config = GenerateConfig(
        max_tokens=12,
        temperature=0.7,
        top_k=40,
        top_p=0.9,
        repeat_penalty=1.1,
        stop_sequences=["\n\n", "User:"],
        seed=7,
    )
    assert _openai.sampling_fields(config) == {
        "temperature": 0.7,
        "max_tokens": 12,
        "top_k": 40,
        "top_p": 0.9,
        "repeat_penalty": 1.1,
        "stop": ["\n\n", "User:"],
        "seed": 7,
    }


def test_stop_tokens_cannot_travel_over_the_protocol() -> None:
    with pytest.raises(NotSupported, match="stop_sequences"):
        _openai.sampling_fields(GenerateConfig(stop_tokens=[2]))


def test_chat_body_streams_with_usage_and_merges_extra_fields() -> None:
    body = _openai.chat_body(
        "smol",
        [Message("system", "be brief"), Message("user", "hi")],
        GenerateConfig(max_tokens=5),
        {"cache_prompt": True, "temperature": 0.3},
    )
    assert body == {
        "model": "smol",
        "temperature": 0.3,  # extra_body wins: it is the caller's explicit override
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": True,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
    }
    json.dumps(body)  # serialisable as is


def test_completion_body_without_a_model_name() -> None:
    body = _openai.completion_body("", "Once upon", GenerateConfig(max_tokens=3))
    assert "model" not in body
    assert body["prompt"] == "Once upon"


def chunk(**fields: object) -> str:
    return json.dumps(fields)


def test_parse_chat_and_completion_chunks() -> None:
    state = _openai.StreamState()
    role = chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    assert _openai.parse_event(role, state) is None
    text = chunk(choices=[{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}])
    assert _openai.parse_event(text, state) == Token(-1, "Hi")
    legacy = chunk(choices=[{"index": 0, "text": " there", "finish_reason": "length"}])
    assert _openai.parse_event(legacy, state) == Token(-1, " there")
    assert state.finish_reason == "length"
    usage = chunk(choices=[], usage={"prompt_tokens": 9, "completion_tokens": 2})
    assert _openai.parse_event(usage, state) is None
    assert state.usage == {"prompt_tokens": 9, "completion_tokens": 2}
    assert not state.done
    assert _openai.parse_event("[DONE]", state) is None
    assert state.done


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", '"text"'])
def test_malformed_chunks_are_errors(data: str) -> None:
    with pytest.raises(GenerationError, match=r"malformed JSON|non-object"):
        _openai.parse_event(data, _openai.StreamState())


def test_an_error_payload_becomes_an_api_status_error() -> None:
    payload = chunk(error={"message": "context too long", "type": "server_error", "code": 500})
    with pytest.raises(APIStatusError, match="context too long") as caught:
        _openai.parse_event(payload, _openai.StreamState())
    assert caught.value.status_code == 500


def test_an_error_payload_without_a_code() -> None:
    with pytest.raises(GenerationError, match="boom"):
        _openai.parse_event(chunk(error="boom"), _openai.StreamState())


def test_metrics_from_usage_and_llama_timings() -> None:
    metrics = _openai.metrics_from(
        {"prompt_tokens": 42, "completion_tokens": 8},
        {
            "prompt_n": 40,
            "prompt_ms": 250.0,
            "prompt_per_second": 160.0,
            "predicted_n": 8,
            "predicted_ms": 50.0,
            "predicted_per_second": 160.0,
        },
    )
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.generated_tokens) == (42, 8)  # usage wins
    assert metrics.prefill_seconds == 0.25
    assert metrics.decode_seconds == 0.05
    assert metrics.decode_tokens_per_sec == 160.0


def test_metrics_from_timings_alone_and_from_nothing() -> None:
    metrics = _openai.metrics_from(None, {"prompt_n": 3, "predicted_n": 4})
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.generated_tokens) == (3, 4)
    assert _openai.metrics_from(None, None) is None


@pytest.mark.parametrize(
    ("server", "ours"),
    [("stop", "stop"), ("length", "length"), ("eos", "stop"), (None, None), ("weird", None)],
)
def test_finish_reasons(server: str | None, ours: str | None) -> None:
    assert _openai.finish_reason(server) == ours


def test_error_message_extraction() -> None:
    assert _openai.error_message({"error": {"message": "bad key"}}) == "bad key"
    assert _openai.error_message({"error": "plain"}) == "plain"
    assert _openai.error_message("  Service Unavailable \n") == "Service Unavailable"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"),
        ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1"),
        ("http://localhost:11434/v1?x=1", "http://localhost:11434/v1"),
    ],
)
def test_base_urls_are_normalised(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1:8080", "ftp://x", "", "http://"])
def test_bad_base_urls_name_the_field(bad: str) -> None:
    from goml_async import ConfigError

    with pytest.raises(ConfigError) as caught:
        normalize_base_url(bad)
    assert caught.value.field == "base_url"
