"""What an OpenAI-compatible server answered, when it is not the event stream we asked for.

Sans-I/O helpers of :mod:`goml_async.backends.http` (plus one bounded body reader): the kind of
a 200 reply from its Content-Type, a whole (non-streamed) completion from a server that ignores
``stream: true``, numbers from untrusted ``/models`` metadata, and error bodies read only up to
a limit, so a hostile server cannot make the client hold an unbounded body.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import httpx

from .._openai_wire.tool_calls import message_tool_calls
from ..errors import APIStatusError, GenerationError
from ..retry import parse_retry_after
from ..types import ModelInfo, Token
from . import _openai

__all__ = [
    "MAX_ERROR_BODY",
    "MAX_LISTING",
    "MAX_WHOLE_REPLY",
    "ReplyKind",
    "meta_int",
    "model_listing",
    "not_a_stream",
    "read_capped",
    "reply_kind",
    "status_error",
    "whole_reply",
    "whole_reply_token",
]

#: The most of an error body kept (for ``APIStatusError.body`` and its message).
MAX_ERROR_BODY = 64 * 1024
#: The largest ``GET /models`` answer read.
MAX_LISTING = 4 * 1024 * 1024
#: The largest non-streamed JSON reply accepted in place of an event stream.
MAX_WHOLE_REPLY = 16 * 1024 * 1024

ReplyKind = Literal["event-stream", "json", "other"]


def reply_kind(content_type: str | None) -> ReplyKind:
    """How to read a 200 reply: an event stream (also when no type is given), JSON, or not."""
    if not content_type:
        return "event-stream"
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/event-stream":
        return "event-stream"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    return "other"


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more (left unread)."""
    parts: list[bytes] = []
    size = 0
    chunks: AsyncIterator[bytes] = response.aiter_bytes()  # decoded: a gzip bomb is capped too
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts)[:limit], True
    return b"".join(parts), False


def meta_int(value: object) -> int:
    """A count from server metadata, or 0 when it is not a finite, non-negative number."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if value >= 0 else 0
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    return 0


def whole_reply_token(payload: object, state: _openai.StreamState) -> Token | None:
    """The reply of a server that answered a streamed request with one JSON completion.

    The text becomes one token, each of ``message.tool_calls`` one delta in
    ``state.tool_deltas``; usage, llama.cpp's timings and the finish reason go to ``state``,
    which is then done.

    Raises:
        GenerationError: the JSON is an error, or not a completion.
    """
    if not isinstance(payload, Mapping):
        raise GenerationError(f"the server answered with JSON that is not an object: {payload!r}")
    if "error" in payload:
        raise _openai.stream_error(payload)
    choices = payload.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(first, Mapping):
        raise GenerationError(
            "the server answered with JSON that is not a completion (no choices[0]): "
            f"{str(payload)[:200]}"
        )
    message = first.get("message")
    text: Any = message.get("content") if isinstance(message, Mapping) else first.get("text")
    if text is not None and not isinstance(text, str):
        raise GenerationError(f"the server's completion text is not a string: {text!r}")
    calls = message.get("tool_calls") if isinstance(message, Mapping) else None
    if calls:
        state.tool_deltas.extend(message_tool_calls(calls))
    usage, timings = payload.get("usage"), payload.get("timings")
    state.usage = dict(usage) if isinstance(usage, Mapping) else None
    state.timings = dict(timings) if isinstance(timings, Mapping) else None
    reason = first.get("finish_reason")
    state.finish_reason = reason if isinstance(reason, str) else None
    state.done = True
    return Token(-1, text) if text else None


def model_listing(
    status: int, content_type: str | None, body: bytes | None, model_name: str
) -> ModelInfo | str:
    """The ModelInfo in a ``GET /models`` answer, or what is wrong with the answer.

    Args:
        status: the HTTP status.
        content_type: the Content-Type header.
        body: the body, or None when it was too large to read.
        model_name: the model asked for; its entry is used, else the first.

    Returns:
        The info (llama.cpp's ``meta``: architecture, ``n_vocab``, ``n_embd``), or a phrase
        such as ``"answered 404 (text/html): not an OpenAI-compatible API ..."``.
    """
    media = (content_type or "").split(";", 1)[0].strip() or "no content type"
    not_openai = (
        "not an OpenAI-compatible API base URL (it usually ends in /v1; "
        "load_model(..., probe=False) skips this check)"
    )
    if status in (401, 403):
        return (
            f"answered {status}: the server wants an API key (set GOML_API_KEY or "
            "OPENAI_API_KEY, or pass api_key=)"
        )
    if status != 200:
        return f"answered {status} ({media}): {not_openai}"
    if body is None:
        return f"answered with a listing larger than {MAX_LISTING} bytes"
    try:
        listing = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"answered 200 ({media}) with something that is not JSON: {not_openai}"
    entries = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(entries, list):
        return f"answered 200 with JSON that is not a model listing (no data list): {not_openai}"
    cards = [entry for entry in entries if isinstance(entry, dict)]
    chosen = next((card for card in cards if card.get("id") == model_name), None)
    chosen = chosen or (cards[0] if cards else {})
    found_meta = chosen.get("meta")
    meta: dict[str, Any] = found_meta if isinstance(found_meta, dict) else {}
    architecture = meta.get("general.architecture")
    return ModelInfo(
        architecture=architecture if isinstance(architecture, str) and architecture else "http",
        vocab_size=meta_int(meta.get("n_vocab")),
        hidden_size=meta_int(meta.get("n_embd")),
    )


async def status_error(response: httpx.Response, where: str) -> tuple[APIStatusError, float | None]:
    """The error for a non-200 answer from ``where``, and its Retry-After in seconds.

    At most :data:`MAX_ERROR_BODY` bytes of the body are read and kept.
    """
    raw, more = await read_capped(response, MAX_ERROR_BODY)
    body = raw.decode("utf-8", errors="replace")
    try:
        detail = _openai.error_message(json.loads(body))
    except (json.JSONDecodeError, TypeError):
        detail = _openai.error_message(body)
    if more:
        detail += f" (the body was longer than {MAX_ERROR_BODY} bytes: cut there)"
    error = APIStatusError(
        f"{where} answered {response.status_code} {response.reason_phrase}: {detail}",
        status_code=response.status_code,
        body=body,
    )
    return error, parse_retry_after(response.headers)


async def whole_reply(
    response: httpx.Response, where: str, state: _openai.StreamState
) -> Token | None:
    """Read a 200 JSON reply (a server that ignored ``stream: true``) as one token."""
    raw, more = await read_capped(response, MAX_WHOLE_REPLY)
    if more:
        raise GenerationError(
            f"{where} answered with a JSON reply larger than {MAX_WHOLE_REPLY} bytes"
        )
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenerationError(f"{where} answered 200 with malformed JSON: {raw[:200]!r}") from exc
    return whole_reply_token(payload, state)


async def not_a_stream(response: httpx.Response, where: str, base_url: str) -> GenerationError:
    """The error for a 200 reply that is neither an event stream nor JSON (never retried)."""
    raw, _ = await read_capped(response, 512)
    snippet = " ".join(raw.decode("utf-8", errors="replace").split())[:160]
    content_type = response.headers.get("content-type", "")
    return GenerationError(
        f"{where} answered 200 with Content-Type {content_type!r}, not an event stream: is "
        f"{base_url} the base URL of an OpenAI-compatible API (it usually ends in /v1)? "
        f"The reply began: {snippet!r}"
    )
