"""Request bodies a client sends: ``/chat/completions`` and ``/completions``, streamed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..errors import NotSupported
from ..types import GenerateConfig, Message
from .tool_calls import tools_fields

__all__ = ["chat_body", "completion_body", "sampling_fields", "stream_body"]

#: The GenerateConfig fields sent under their own name, in this order, when not zero.
_OPTIONAL_FIELDS: Final = (
    "max_tokens",
    "top_p",
    "top_k",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)


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
    # Sent only when set: zero is each field's "off" (and a strict server's default).
    for name in _OPTIONAL_FIELDS:
        if value := getattr(config, name):
            fields[name] = value
    if config.stop_sequences:
        fields["stop"] = list(config.stop_sequences)
    if config.seed is not None:
        fields["seed"] = config.seed
    return fields


def _response_format(config: GenerateConfig, fields: dict[str, Any]) -> None:
    """Add OpenAI's ``response_format`` field for a JSON format (sent as OpenAI defines it).

    goml's own ``regex`` and ``choice`` formats have no OpenAI field: the HTTP backend refuses
    them before a request is made.
    """
    if config.structured is not None and config.structured.is_json:
        fields["response_format"] = config.structured.to_openai()


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
    _response_format(config, fields)
    fields.update(tools_fields(config))
    body = stream_body(model, fields, extra_body)
    body["messages"] = [message.to_dict() for message in messages]
    return body


def completion_body(
    model: str, prompt: str, config: GenerateConfig, extra_body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The streaming ``/completions`` request body.

    ``logprobs`` travels as the legacy ``logprobs: N`` (alternatives per token), at least 1:
    llama.cpp reads 0 as "none"; the extra alternative is dropped again by the client, which
    keeps the alternatives it asked for.
    """
    fields = sampling_fields(config)
    if config.logprobs:
        fields["logprobs"] = max(config.top_logprobs, 1)
    _response_format(config, fields)
    body = stream_body(model, fields, extra_body)
    body["prompt"] = prompt
    return body
