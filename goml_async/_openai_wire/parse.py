"""Reading a streamed reply: one SSE ``data`` payload at a time, into tokens and what ended it.

Besides OpenAI's chunk shapes (``chat.completion.chunk``, ``text_completion``), this reads
llama.cpp's native ``/completion`` chunks, which carry a token ID on every token.
"""

from __future__ import annotations

import json
import json.scanner
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import GenerationError
from ..tools import ToolCallDelta
from ..types import Token
from .chunks import DONE
from .errors import stream_error
from .logprobs import logprob_tokens
from .tool_calls import tool_call_deltas
from .usage import NATIVE_STOPS

__all__ = ["StreamState", "parse_event", "parse_native_chunk"]

_scan: Final[Any] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


@dataclass(slots=True)
class StreamState:
    """What one streamed reply said besides its tokens.

    ``pending`` holds the tokens after the first of a chunk that carried several (OpenAI and
    vLLM may batch tokens with their log-probabilities); the reader takes them right after the
    token :func:`parse_event` returned. ``tool_deltas`` holds the chunk's tool-call deltas,
    which the reader takes after those tokens.
    """

    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    done: bool = False
    pending: deque[Token] = field(default_factory=deque)
    tool_deltas: deque[ToolCallDelta] = field(default_factory=deque)


def parse_event(data: str, state: StreamState) -> Token | None:
    """One SSE ``data`` payload: the token it carries (None if none); the rest goes to ``state``.

    Chat chunks carry ``choices[0].delta.content``, completion chunks ``choices[0].text``, and
    llama.cpp's native ``/completion`` chunks ``content`` with the token's ID in ``tokens``.
    A chunk with log-probabilities gives one token per entry, each with its ID where the server
    sends one (llama.cpp does), even when its text is empty (text the server holds back, an
    end-of-generation token); further tokens of the same chunk go to ``state.pending``.
    A chat chunk's ``delta.tool_calls`` go to ``state.tool_deltas``.
    Usage, llama.cpp's timings and the finish reason are recorded; ``[DONE]`` (or the native
    ``stop: true``) sets ``state.done``.

    Raises:
        GenerationError: malformed JSON or log-probabilities, a non-object chunk, or an
            ``{"error": ...}`` payload.
    """
    if data == DONE:
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
        calls = delta.get("tool_calls") if delta is not None else None
        if calls:
            state.tool_deltas.extend(tool_call_deltas(calls))
        if text is not None and not isinstance(text, str):
            raise TypeError("the text is not a string")
        logprobs = choice.get("logprobs")
        if logprobs:
            return logprob_tokens(text or "", logprobs, state.pending)
        return Token(-1, text) if text else None
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        raise GenerationError(f"the server sent a malformed chunk: {data[:200]!r}") from exc


def parse_native_chunk(payload: Mapping[str, Any], state: StreamState) -> Token | None:
    """A chunk of llama.cpp's native ``/completion`` stream (``{"content", "tokens", ...}``).

    Its first token is returned, any further ones go to ``state.pending``. The last chunk has
    ``stop: true``: it ends the stream (there is no ``[DONE]``) and carries the counts, which
    become ``usage`` so that the prompt count includes cached tokens.
    """
    if payload.get("stop") is True:
        state.done = True
        state.finish_reason = NATIVE_STOPS.get(str(payload.get("stop_type")))
        evaluated, predicted = payload.get("tokens_evaluated"), payload.get("tokens_predicted")
        if isinstance(evaluated, int) and isinstance(predicted, int):
            state.usage = {"prompt_tokens": evaluated, "completion_tokens": predicted}
    text = payload.get("content") or ""
    if not isinstance(text, str):
        raise GenerationError(f"the server sent a non-text content: {text!r}"[:300])
    probabilities = payload.get("completion_probabilities")
    if probabilities:
        return logprob_tokens(text, {"content": probabilities}, state.pending)
    ids = payload.get("tokens")
    if not ids:
        return Token(-1, text) if text else None
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        raise GenerationError(f"the server sent malformed token IDs: {ids!r}"[:300])
    first, *rest = ids
    state.pending.extend(Token(i, "") for i in rest)
    return Token(first, text)
