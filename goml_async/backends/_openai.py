"""OpenAI wire format, sans-I/O: request bodies, stream chunks, usage and timings.

Pure functions over dicts, shared by the HTTP client (and, later, the server), tested without a
network or an event loop.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import APIStatusError, GenerationError, NotSupported
from ..types import FinishReason, GenerateConfig, GenerateMetrics, Message, Token

__all__ = [
    "StreamState",
    "chat_body",
    "completion_body",
    "error_message",
    "finish_reason",
    "metrics_from",
    "parse_event",
    "sampling_fields",
    "stream_error",
]


def sampling_fields(config: GenerateConfig) -> dict[str, Any]:
    """Every sampling field the config sets, under the names OpenAI-compatible servers read.

    ``temperature`` is always sent (0 = greedy); the others only when set, so a strict server
    (OpenAI itself) never sees a field the caller did not ask for. ``top_k`` and
    ``repeat_penalty`` are the llama.cpp/vLLM extensions of the protocol.

    Raises:
        NotSupported: ``stop_tokens`` was set: the protocol streams text, not token IDs.
    """
    if config.stop_tokens:
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
    if config.stop_sequences:
        fields["stop"] = list(config.stop_sequences)
    if config.seed is not None:
        fields["seed"] = config.seed
    return fields


def _body(
    model: str, config: GenerateConfig, extra_body: Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model} if model else {}
    body.update(sampling_fields(config))
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
    """The streaming ``/chat/completions`` request body."""
    body = _body(model, config, extra_body)
    body["messages"] = [message.to_dict() for message in messages]
    return body


def completion_body(
    model: str, prompt: str, config: GenerateConfig, extra_body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The streaming ``/completions`` request body."""
    body = _body(model, config, extra_body)
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
    """What one streamed reply said besides its tokens."""

    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    done: bool = False


def parse_event(data: str, state: StreamState) -> Token | None:
    """One SSE ``data`` payload: the token it carries (None if none); the rest goes to ``state``.

    Chat chunks carry ``choices[0].delta.content``, completion chunks ``choices[0].text``; usage,
    llama.cpp's timings and the finish reason are recorded; ``[DONE]`` sets ``state.done``.

    Raises:
        GenerationError: malformed JSON, a non-object chunk, or an ``{"error": ...}`` payload.
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
    usage = payload.get("usage")
    if usage:
        state.usage = usage
    timings = payload.get("timings")
    if timings:
        state.timings = timings
    choices = payload.get("choices")
    if not choices:
        return None
    choice = choices[0]
    if choice.get("finish_reason"):
        state.finish_reason = choice["finish_reason"]
    delta = choice.get("delta")
    text = delta.get("content") if delta is not None else choice.get("text")
    return Token(-1, text) if text else None
