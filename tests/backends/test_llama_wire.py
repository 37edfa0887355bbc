"""llama.cpp's own request bodies and classify replies, sans-I/O."""

from __future__ import annotations

import json
import math

import pytest

from goml_async import GenerateConfig, GenerationError, Message, Token, TopLogprob
from goml_async.backends import _llama_wire


def test_the_native_completion_body() -> None:
    config = GenerateConfig(max_tokens=8, stop_tokens=[2], presence_penalty=1.0)
    body = _llama_wire.completion_body("", "Once", config, {"ignore_eos": True})
    assert body == {
        "temperature": 0.0,
        "max_tokens": 8,
        "presence_penalty": 1.0,
        "return_tokens": True,
        "response_fields": ["stop", "stop_type", "timings", "tokens_predicted", "tokens_evaluated"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "prompt": "Once",
    }  # IDs come with every native chunk: no n_probs for stop_tokens
    assert _llama_wire.completion_body("", "x", GenerateConfig(logprobs=True), None)["n_probs"] == 1
    assert (
        _llama_wire.completion_body("", "x", GenerateConfig(top_logprobs=7), None)["n_probs"] == 7
    )


def test_the_chat_body_asks_for_ids_only_when_needed() -> None:
    messages = [Message("user", "hi")]
    assert "n_probs" not in _llama_wire.chat_body("", messages, GenerateConfig(), None)
    for config, wanted in [
        (GenerateConfig(stop_tokens=[5]), 1),
        (GenerateConfig(logprobs=True), 1),
        (GenerateConfig(top_logprobs=3, stop_tokens=[5]), 3),
    ]:
        body = _llama_wire.chat_body("", messages, config, None)
        assert body["n_probs"] == wanted
        assert "logprobs" not in body  # llama.cpp would replace n_probs with its own default


def test_the_classify_body_uses_only_the_samplers_settings() -> None:
    config = GenerateConfig(temperature=0.5, top_k=3, seed=1, repeat_penalty=1.3, max_tokens=9)
    body = _llama_wire.classify_body(["a", "b"], config, 512)
    assert body["prompt"] == ["a", "b"]
    assert (body["n_predict"], body["n_probs"], body["stream"]) == (1, 1, False)
    assert (body["temperature"], body["top_k"], body["seed"]) == (0.5, 3, 1)
    assert "repeat_penalty" not in body and "max_tokens" not in body
    logits = _llama_wire.classify_body(["a"], GenerateConfig(return_logits=True), 512)
    assert logits["n_probs"] == 512


# Recorded from llama-server on the tiny test model (n_probs 2).
REPLY = json.loads(
    '[{"index":0,"content":"):","tokens":[411],"completion_probabilities":[{"id":411,'
    '"token":"):","bytes":[41,58],"logprob":-5.40988826751709,"top_logprobs":[{"id":411,'
    '"token":"):","bytes":[41,58],"logprob":-5.40988826751709},{"id":80,"token":"n",'
    '"bytes":[110],"logprob":-5.706404685974121}]}]},{"index":1,"content":" os","tokens":[428],'
    '"completion_probabilities":[{"id":428,"token":" os","bytes":[32,111,115],'
    '"logprob":-5.577470302581787,"top_logprobs":[{"id":428,"token":" os","bytes":[32,111,115],'
    '"logprob":-5.577470302581787},{"id":494,"token":"(\'","bytes":[40,39],'
    '"logprob":-5.849262714385986}]}]}]'
)


def test_classify_results_in_prompt_order() -> None:
    prompts = ["def f(x):", "import os"]
    results = _llama_wire.classify_results(
        list(reversed(REPLY)), prompts, GenerateConfig(top_logprobs=1), 512
    )
    assert [result.token for result in results] == [
        Token(411, "):", -5.40988826751709, (TopLogprob("):", -5.40988826751709, 411),)),
        Token(428, " os", -5.577470302581787, (TopLogprob(" os", -5.577470302581787, 428),)),
    ]
    assert all(result.logits is None for result in results)


def test_classify_logits_by_token_id() -> None:
    alternatives = [{"id": i, "token": f"t{i}", "logprob": math.log(0.25)} for i in (3, 1, 0, 2)]
    reply = {
        "index": 0,
        "content": "t3",
        "tokens": [3],
        "completion_probabilities": [
            {"id": 3, "token": "t3", "logprob": math.log(0.25), "top_logprobs": alternatives}
        ],
    }
    [result] = _llama_wire.classify_results(reply, ["p"], GenerateConfig(return_logits=True), 4)
    assert result.logits == [math.log(0.25)] * 4
    assert result.token.top_logprobs == ()
    with pytest.raises(GenerationError, match="4 of 5 log-probabilities"):
        _llama_wire.classify_results(reply, ["p"], GenerateConfig(return_logits=True), 5)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ({"index": 0, "content": "", "tokens": []}, "encodes to no tokens"),
        (REPLY, "answered 1 classify prompt"),
        ([{"index": 3, "tokens": [1]}], "no valid index"),
        ([{"index": 0, "tokens": 7}], "malformed"),
        ([{"index": 0, "tokens": ["7"]}], "malformed token IDs"),
    ],
)
def test_bad_classify_replies(reply: object, match: str) -> None:
    with pytest.raises(GenerationError, match=match):
        _llama_wire.classify_results(reply, ["p"], GenerateConfig(), 512)


def test_prompt_cache_false_asks_llama_server_to_compute_the_prompt_afresh() -> None:
    messages = [Message("user", "hi")]
    assert "cache_prompt" not in _llama_wire.chat_body("", messages, GenerateConfig(), None)
    assert "cache_prompt" not in _llama_wire.completion_body("", "hi", GenerateConfig(), None)
    off = GenerateConfig(prompt_cache=False)
    assert _llama_wire.chat_body("", messages, off, None)["cache_prompt"] is False
    assert _llama_wire.completion_body("", "hi", off, None)["cache_prompt"] is False
