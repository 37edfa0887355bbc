"""OpenAI wire format, sans-I/O: request bodies, stream chunks, log-probabilities, usage, timings.

Pure functions over dicts, shared by the HTTP client (and, later, the server), tested without a
network or an event loop. Besides OpenAI's own chunk shapes, :func:`parse_event` reads
llama.cpp's: its native ``/completion`` chunks (a token ID on every token) and its log-probability
entries, which carry token IDs too.
"""

from __future__ import annotations

import json
import json.scanner
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, cast

from ..errors import APIStatusError, GenerationError, NotSupported
from ..types import FinishReason, GenerateConfig, GenerateMetrics, Message, Token, TopLogprob

__all__ = [
    "StreamState",
    "chat_body",
    "checked_logprobs",
    "completion_body",
    "error_message",
    "finish_reason",
    "metrics_from",
    "parse_event",
    "parse_native_chunk",
    "sampling_fields",
    "stream_body",
    "stream_error",
]


def sampling_fields(config: GenerateConfig, *, stop_tokens: bool = False) -> dict[str, Any]:
    """Every sampling field the config sets, under the names OpenAI-compatible servers read.

    ``temperature`` is always sent (0 = greedy); the others only when set, so a strict server
    (OpenAI itself) never sees a field the caller did not ask for. ``top_k`` and
    ``repeat_penalty`` are the llama.cpp/vLLM extensions of the protocol. ``stop_tokens`` are
    never sent: the client stops at them, which needs a server that streams token IDs.

    Args:
        config: the generation's config.
        stop_tokens: True when the caller's server streams token IDs (llama.cpp).

    Raises:
        NotSupported: ``stop_tokens`` was set and ``stop_tokens`` is False: the protocol streams
            text, not token IDs.
    """
    if config.stop_tokens and not stop_tokens:
        raise NotSupported(
            "stop_tokens needs token IDs, which OpenAI-compatible servers do not stream; "
            "use stop_sequences (or pass the server's own field through extra_body)"
        )
    fields: dict[str, Any] = {"temperature": config.temperature}
    if config.max_tokens:
        fields["max_tokens"] = config.max_tokens
    if config.top_p:
        fields["top_p"] = config.top_p
    if config.top_k:
        fields["top_k"] = config.top_k
    if config.repeat_penalty:
        fields["repeat_penalty"] = config.repeat_penalty
    if config.presence_penalty:
        fields["presence_penalty"] = config.presence_penalty
    if config.frequency_penalty:
        fields["frequency_penalty"] = config.frequency_penalty
    if config.stop_sequences:
        fields["stop"] = list(config.stop_sequences)
    if config.seed is not None:
        fields["seed"] = config.seed
    return fields


def stream_body(
    model: str, fields: Mapping[str, Any], extra_body: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A streaming request body: ``fields``, then ``extra_body`` (the caller's overrides win)."""
    body: dict[str, Any] = {"model": model} if model else {}
    body.update(fields)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if extra_body:
        body.update(extra_body)
    return body


def chat_body(
    model: str,
    messages: Sequence[Message],
    config: GenerateConfig,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The streaming ``/chat/completions`` request body.

    ``logprobs`` asks with ``logprobs: true`` and, when ``top_logprobs`` is set,
    ``top_logprobs: N``; left out for 0 because llama.cpp then sends none at all.
    """
    fields = sampling_fields(config)
    if config.logprobs:
        fields["logprobs"] = True
        if config.top_logprobs:
            fields["top_logprobs"] = config.top_logprobs
    body = stream_body(model, fields, extra_body)
    body["messages"] = [message.to_dict() for message in messages]
    return body


def completion_body(
    model: str, prompt: str, config: GenerateConfig, extra_body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The streaming ``/completions`` request body.

    ``logprobs`` travels as the legacy ``logprobs: N`` (alternatives per token), at least 1:
    llama.cpp reads 0 as "none"; the extra alternative is dropped again by
    :func:`checked_logprobs`.
    """
    fields = sampling_fields(config)
    if config.logprobs:
        fields["logprobs"] = max(config.top_logprobs, 1)
    body = stream_body(model, fields, extra_body)
    body["prompt"] = prompt
    return body


def _number(mapping: Mapping[str, Any], key: str) -> float:
    value = mapping.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def metrics_from(
    usage: Mapping[str, Any] | None, timings: Mapping[str, Any] | None
) -> GenerateMetrics | None:
    """GenerateMetrics from the server's ``usage`` and llama.cpp's ``timings``; None if neither."""
    if not usage and not timings:
        return None
    usage = usage or {}
    timings = timings or {}
    prompt_tokens = int(_number(usage, "prompt_tokens") or _number(timings, "prompt_n"))
    generated = int(_number(usage, "completion_tokens") or _number(timings, "predicted_n"))
    return GenerateMetrics(
        prompt_tokens=prompt_tokens,
        generated_tokens=generated,
        prefill_seconds=_number(timings, "prompt_ms") / 1000,
        decode_seconds=_number(timings, "predicted_ms") / 1000,
        prefill_tokens_per_sec=_number(timings, "prompt_per_second"),
        decode_tokens_per_sec=_number(timings, "predicted_per_second"),
    )


def finish_reason(value: object) -> FinishReason | None:
    """The server's finish_reason as ours (``stop`` or ``length``), None when absent."""
    if value == "length":
        return "length"
    if value in ("stop", "eos", "stop_sequence", "tool_calls", "content_filter"):
        return "stop"
    return None


def error_message(body: str | Mapping[str, Any]) -> str:
    """The human part of an OpenAI-style error body, or the body itself."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            return str(error.get("message") or error)
        return str(error)
    return body.strip()[:500]


def stream_error(payload: Mapping[str, Any]) -> GenerationError:
    """The error carried by an SSE ``{"error": {...}}`` payload."""
    error = payload.get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    message = f"the server reported an error mid-stream: {error_message(payload)}"
    if isinstance(code, int) and not isinstance(code, bool):
        return APIStatusError(message, status_code=code, body=str(payload))
    return GenerationError(message)


_scan: Any = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


@dataclass(slots=True)
class StreamState:
    """What one streamed reply said besides its tokens.

    ``pending`` holds the tokens after the first of a chunk that carried several (OpenAI and
    vLLM may batch tokens with their log-probabilities); the reader takes them right after the
    token :func:`parse_event` returned.
    """

    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    done: bool = False
    pending: deque[Token] = field(default_factory=deque)


def parse_event(data: str, state: StreamState) -> Token | None:
    """One SSE ``data`` payload: the token it carries (None if none); the rest goes to ``state``.

    Chat chunks carry ``choices[0].delta.content``, completion chunks ``choices[0].text``, and
    llama.cpp's native ``/completion`` chunks ``content`` with the token's ID in ``tokens``.
    A chunk with log-probabilities gives one token per entry, each with its ID where the server
    sends one (llama.cpp does), even when its text is empty (text the server holds back, an
    end-of-generation token); further tokens of the same chunk go to ``state.pending``.
    Usage, llama.cpp's timings and the finish reason are recorded; ``[DONE]`` (or the native
    ``stop: true``) sets ``state.done``.

    Raises:
        GenerationError: malformed JSON or log-probabilities, a non-object chunk, or an
            ``{"error": ...}`` payload.
    """
    if data == "[DONE]":
        state.done = True
        return None
    try:
        # The C scanner directly: json.loads adds a Python-level layer that costs about a
        # quarter of the per-token time. Anything it does not fully consume goes the long way.
        payload, end = _scan(data, 0)
        if end != len(data):
            payload = json.loads(data)
    except (StopIteration, ValueError):
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:
            raise GenerationError(f"the server sent malformed JSON: {data[:200]!r}") from exc
    if not isinstance(payload, dict):
        raise GenerationError(f"the server sent a non-object chunk: {data[:200]!r}")
    if "error" in payload:
        raise stream_error(payload)
    # Fields of the wrong type ("choices": "abc", a delta that is a list) end in a clear error
    # naming the chunk, never a bare AttributeError from deep inside the client.
    try:
        usage = payload.get("usage")
        if usage:
            if not isinstance(usage, dict):
                raise TypeError("usage is not an object")
            state.usage = usage
        timings = payload.get("timings")
        if timings:
            if not isinstance(timings, dict):
                raise TypeError("timings is not an object")
            state.timings = timings
        choices = payload.get("choices")
        if not choices:
            # Only llama.cpp's native chunks have a top-level "stop" (and no "choices").
            native = choices is None and "stop" in payload
            return parse_native_chunk(payload, state) if native else None
        choice = choices[0]
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        text = delta.get("content") if delta is not None else choice.get("text")
        if text is not None and not isinstance(text, str):
            raise TypeError("the text is not a string")
        logprobs = choice.get("logprobs")
        if logprobs:
            return _logprob_tokens(text or "", logprobs, state)
        return Token(-1, text) if text else None
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        raise GenerationError(f"the server sent a malformed chunk: {data[:200]!r}") from exc


# -- llama.cpp's native /completion chunks ---------------------------------------------------------

#: llama.cpp's ``stop_type`` as an OpenAI finish_reason ("word" is a stop sequence).
_NATIVE_STOPS = {"limit": "length", "eos": "stop", "word": "stop"}


def parse_native_chunk(payload: Mapping[str, Any], state: StreamState) -> Token | None:
    """A chunk of llama.cpp's native ``/completion`` stream (``{"content", "tokens", ...}``).

    Its first token is returned, any further ones go to ``state.pending``. The last chunk has
    ``stop: true``: it ends the stream (there is no ``[DONE]``) and carries the counts, which
    become ``usage`` so that the prompt count includes cached tokens.
    """
    if payload.get("stop") is True:
        state.done = True
        state.finish_reason = _NATIVE_STOPS.get(str(payload.get("stop_type")))
        evaluated, predicted = payload.get("tokens_evaluated"), payload.get("tokens_predicted")
        if isinstance(evaluated, int) and isinstance(predicted, int):
            state.usage = {"prompt_tokens": evaluated, "completion_tokens": predicted}
    text = payload.get("content") or ""
    if not isinstance(text, str):
        raise GenerationError(f"the server sent a non-text content: {text!r}"[:300])
    probabilities = payload.get("completion_probabilities")
    if probabilities:
        return _logprob_tokens(text, {"content": probabilities}, state)
    ids = payload.get("tokens")
    if not ids:
        return Token(-1, text) if text else None
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise GenerationError(f"the server sent malformed token IDs: {ids!r}"[:300])
    first, *rest = ids
    state.pending.extend(Token(i, "") for i in rest)
    return Token(first, text)


# -- log-probabilities ----------------------------------------------------------------------------

#: llama.cpp writes log(0) as the lowest float32 (JSON has no -inf); anything below is log(0).
_LOG_ZERO = -3.0e38


def _logprob(entry: Mapping[str, Any]) -> float | None:
    """An entry's log-probability: ``logprob``, or llama.cpp's ``prob`` (post_sampling_probs)."""
    value = entry.get("logprob")
    if value is None:
        prob = entry.get("prob")
        if prob is None:
            return None
        prob = _real(prob)
        return math.log(prob) if prob > 0 else -math.inf
    value = _real(value)
    return -math.inf if value <= _LOG_ZERO else value


def _real(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _token_id(entry: Mapping[str, Any]) -> int:
    value = entry.get("id", -1)
    if type(value) is not int:
        raise TypeError(f"not a token ID: {value!r}")
    return value


def _alternatives(entries: Sequence[Mapping[str, Any]]) -> tuple[TopLogprob, ...]:
    """Chat (and llama.cpp) ``top_logprobs``: a list of ``{token, logprob, id?}``."""
    tops = []
    for entry in entries:
        logprob = _logprob(entry)
        if logprob is not None:
            tops.append(TopLogprob(str(entry.get("token", "")), logprob, _token_id(entry)))
    return tuple(tops)


def _legacy_alternatives(alternatives: Mapping[str, Any] | None) -> tuple[TopLogprob, ...]:
    """Legacy completions' ``top_logprobs``: one ``{text: logprob}`` dict, most likely first."""
    if not alternatives:
        return ()
    tops = [TopLogprob(str(text), _real(lp)) for text, lp in alternatives.items()]
    return tuple(sorted(tops, key=lambda top: -top.logprob))


def _entries(logprobs: Mapping[str, Any]) -> list[tuple[str, int, float | None, Any]]:
    """(token text, ID, logprob, alternatives) for each token of a chunk's ``logprobs``."""
    if "content" in logprobs:  # chat, and llama.cpp's own completions shape
        return [
            (
                str(entry.get("token", "")),
                _token_id(entry),
                _logprob(entry),
                _alternatives(entry.get("top_logprobs") or entry.get("top_probs") or ()),
            )
            for entry in logprobs["content"] or ()
        ]
    texts = logprobs.get("tokens") or ()  # OpenAI's legacy completions shape
    values = logprobs.get("token_logprobs") or ()
    tops = logprobs.get("top_logprobs") or ()
    return [
        (
            str(text),
            -1,
            None if i >= len(values) or values[i] is None else _real(values[i]),
            _legacy_alternatives(tops[i] if i < len(tops) else None),
        )
        for i, text in enumerate(texts)
    ]


def _logprob_tokens(text: str, logprobs: Any, state: StreamState) -> Token | None:
    """The tokens of a chunk with log-probabilities: the first returned, the rest pending."""
    try:
        entries = _entries(logprobs)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        message = f"the server sent malformed logprobs ({exc}): {logprobs!r}"
        raise GenerationError(message[:400]) from exc
    if not entries:
        return Token(-1, text) if text else None
    pieces = [entry[0] for entry in entries]
    # Each token gets its own text when the pieces spell the chunk's text; otherwise (a token
    # whose bytes end mid-character, a reasoning delta) the first token carries all of it, so
    # no text is ever lost or delivered late.
    if len(entries) > 1 and "".join(pieces) == text:
        texts = pieces
    else:
        texts = [text] + [""] * (len(entries) - 1)
    tokens = [
        Token(token_id, piece, logprob, tops)
        for piece, (_, token_id, logprob, tops) in zip(texts, entries, strict=True)
    ]
    state.pending.extend(tokens[1:])
    return tokens[0]


async def checked_logprobs(
    source: AsyncIterator[Token], config: GenerateConfig, server: str
) -> AsyncIterator[Token]:
    """``source`` with each token's alternatives cut to ``config.top_logprobs``.

    Servers may send more alternatives than asked for (llama.cpp sends 20 for a bare
    ``logprobs: true``, and at least 1 on the legacy endpoint). When ``config.logprobs`` is
    set, the first token must carry its log-probability: a server that ignores the request
    fails here rather than streaming tokens without them.

    Raises:
        NotSupported: logprobs were asked for and the first token came without one.
    """
    top = config.top_logprobs
    first = config.logprobs
    async with aclosing(cast("AsyncGenerator[Token]", source)) as tokens:
        async for token in tokens:
            if first and token.logprob is None:
                raise NotSupported(
                    f"{server} streamed tokens without log-probabilities although logprobs "
                    "were asked for: the server does not support them"
                )
            first = False
            if len(token.top_logprobs) > top:
                token = replace(token, top_logprobs=token.top_logprobs[:top])
            yield token
