"""llama.cpp's own request and reply shapes, sans-I/O: native completions, chat with IDs, classify.

llama.cpp's native ``/completion`` stream names the ID of every token it sends, at no cost to
the server, where its OpenAI routes name IDs only beside log-probabilities (``n_probs``), whose
softmax over the whole vocabulary costs the server about 0.3 ms a token for a 49k vocabulary.
So :class:`~goml_async.backends.llama.LlamaModel` completes prompts on the native route and
asks its chat route for ``n_probs`` only when a call needs IDs or log-probabilities.

Log-probabilities are llama.cpp's pre-sampling ones (``post_sampling_probs`` false, its
default): the log-softmax of the model's raw logits, before penalties, logit bias and
temperature, as on the MLX backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import GenerationError
from ..types import ClassifyResult, GenerateConfig, Message, Token
from . import _llama_grammar, _openai

__all__ = [
    "CHAT_PATH",
    "COMPLETION_PATH",
    "chat_body",
    "classify_body",
    "classify_results",
    "completion_body",
    "streamed_alternatives",
]

#: llama.cpp's native completion route, under the server's root (its OpenAI one is
#: ``/v1/completions``).
COMPLETION_PATH = "/completions"
#: llama.cpp's OpenAI chat route, under the server's root (the same handler as
#: ``/v1/chat/completions``).
CHAT_PATH = "/chat/completions"

#: What the native stream's last chunk keeps: without this list it echoes the prompt and every
#: sampling setting, a line as long as the prompt.
_FINAL_FIELDS = ("stop", "stop_type", "timings", "tokens_predicted", "tokens_evaluated")


def streamed_alternatives(config: GenerateConfig, *, for_ids: bool = False) -> int:
    """The ``n_probs`` a stream asks llama.cpp for: 0 for none.

    ``top_logprobs``, and at least 1 whenever log-probabilities are wanted (0 would send
    none), or, with ``for_ids``, whenever the stop tokens need IDs (the chat route names IDs
    only beside log-probabilities).
    """
    if config.logprobs or (for_ids and config.stop_tokens):
        return max(config.top_logprobs, 1)
    return 0


def completion_body(
    model: str, prompt: str, config: GenerateConfig, extra_body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The streaming body for llama.cpp's native ``/completion`` (every token with its ID).

    It reads the OpenAI field names (``max_tokens``, ``stop``, ``seed``, ...) too, so the body
    is the OpenAI one plus ``n_probs`` for log-probabilities and a short last chunk.
    """
    fields = _openai.sampling_fields(config, stop_tokens=True)
    alternatives = streamed_alternatives(config)
    if alternatives:
        fields["n_probs"] = alternatives
    fields["return_tokens"] = True
    fields["response_fields"] = list(_FINAL_FIELDS)
    if not config.prompt_cache:
        fields["cache_prompt"] = False
    if config.structured is not None:
        fields.update(_llama_grammar.constraint_fields(config.structured))
    body = _openai.stream_body(model, fields, extra_body)
    body["prompt"] = prompt
    return body


def chat_body(
    model: str,
    messages: Sequence[Message],
    config: GenerateConfig,
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The streaming body for llama.cpp's chat route, with ``n_probs`` when IDs are needed.

    ``n_probs`` rather than OpenAI's ``logprobs``/``top_logprobs``: llama.cpp turns
    ``logprobs: true`` into ``n_probs`` itself and would then ignore ours.
    """
    fields = _openai.sampling_fields(config, stop_tokens=True)
    alternatives = streamed_alternatives(config, for_ids=True)
    if alternatives:
        fields["n_probs"] = alternatives
    if not config.prompt_cache:
        fields["cache_prompt"] = False
    if config.structured is not None:
        # The chat route reads the native json_schema and grammar fields too.
        fields.update(_llama_grammar.constraint_fields(config.structured))
    body = _openai.stream_body(model, fields, extra_body)
    body["messages"] = [message.to_dict() for message in messages]
    return body


# -- classify -------------------------------------------------------------------------------------


def classify_body(
    prompts: Sequence[str], config: GenerateConfig, vocab_size: int
) -> dict[str, Any]:
    """One non-streamed native request that prefills every prompt and samples one token each.

    Only the sampler's own settings apply (temperature, top-k, top-p, seed), as on MLX:
    penalties would count the prompt's tokens. With ``return_logits`` it asks for the whole
    vocabulary's log-probabilities (``n_probs`` = the vocabulary size).
    """
    fields: dict[str, Any] = {"temperature": config.temperature}
    if config.top_k:
        fields["top_k"] = config.top_k
    if config.top_p:
        fields["top_p"] = config.top_p
    if config.seed is not None:
        fields["seed"] = config.seed
    alternatives = vocab_size if config.return_logits else config.top_logprobs
    return {
        **fields,
        "prompt": list(prompts),
        "n_predict": 1,
        "n_probs": max(alternatives, 1),
        "return_tokens": True,
        "stream": False,
        "response_fields": ["index", "content", "tokens", "completion_probabilities"],
    }


def classify_results(
    reply: object, prompts: Sequence[str], config: GenerateConfig, vocab_size: int
) -> list[ClassifyResult]:
    """The ClassifyResults of :func:`classify_body`'s reply, in the prompts' order.

    ``logits`` (with ``return_logits``) are llama.cpp's log-probabilities of the whole
    vocabulary by token ID: the raw logits minus their log-sum-exp, so softmax, argmax and
    differences are the raw logits' own; a probability that is 0 in float32 is ``-inf``.

    Raises:
        GenerationError: a prompt encodes to no tokens, or the reply is not what was asked.
    """
    results = [reply] if isinstance(reply, Mapping) else reply
    if not isinstance(results, list) or len(results) != len(prompts):
        raise GenerationError(
            f"llama.cpp answered {len(prompts)} classify prompt(s) with {str(reply)[:200]!r}"
        )
    by_index = sorted(results, key=lambda result: _index(result, len(prompts)))
    return [
        _classify_one(result, prompt, config, vocab_size)
        for result, prompt in zip(by_index, prompts, strict=True)
    ]


def _index(result: object, count: int) -> int:
    index = result.get("index") if isinstance(result, Mapping) else None
    if type(index) is not int or not 0 <= index < count:
        raise GenerationError(f"llama.cpp's classify reply has no valid index: {result!r}"[:300])
    return index


def _classify_one(
    result: Mapping[str, Any], prompt: str, config: GenerateConfig, vocab_size: int
) -> ClassifyResult:
    ids = result.get("tokens")
    if not ids:
        raise GenerationError(f"prompt {prompt!r} encodes to no tokens: nothing to classify")
    probabilities = result.get("completion_probabilities")
    if not isinstance(ids, list) or not isinstance(probabilities, list | None):
        raise GenerationError(f"llama.cpp's classify reply is malformed: {result!r}"[:300])
    state = _openai.StreamState()
    if probabilities:
        token = _openai.parse_native_chunk(
            {"content": result.get("content"), "completion_probabilities": probabilities[:1]},
            state,
        )
    else:
        # llama.cpp sends no probabilities for a token that ends mid-character.
        token = _openai.parse_native_chunk({"content": result.get("content"), "tokens": ids}, state)
    if token is None or token.id != ids[0]:
        raise GenerationError(f"llama.cpp's classify reply is inconsistent: {result!r}"[:300])
    logits = None
    if config.return_logits:
        logits = _logits(token, vocab_size, prompt)
    if len(token.top_logprobs) > config.top_logprobs:
        token = Token(
            token.id, token.text, token.logprob, token.top_logprobs[: config.top_logprobs]
        )
    return ClassifyResult(token=token, logits=logits)


def _logits(token: Token, vocab_size: int, prompt: str) -> list[float]:
    values = [-math.inf] * vocab_size
    seen = 0
    for alternative in token.top_logprobs:
        if 0 <= alternative.id < vocab_size:
            values[alternative.id] = alternative.logprob
            seen += 1
    if seen != vocab_size:
        raise GenerationError(
            f"llama.cpp returned {seen} of {vocab_size} log-probabilities for prompt "
            f"{prompt!r}: cannot return the logits"
        )
    return values
