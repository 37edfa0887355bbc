"""Server-Sent Events for a token stream: OpenAI's chunks or plain text events.

An encoder turns the parts of a stream (its start, each token, its end, a failure) into the
bytes of SSE events; :class:`~goml_async.server.sse.TokenStreamSender` sends them. The
chunks' JSON comes from :class:`~goml_async._openai_wire.chunks.ChunkWriter` (the envelope
serialised once per stream, so each token costs one JSON string of its text) and the framing
from :mod:`goml_async._sse`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .._openai_wire.chunks import DONE, ChunkWriter, new_completion_id
from .._openai_wire.json_text import dumps
from .._openai_wire.logprobs import LogprobsCollector
from .._openai_wire.usage import timings_from_metrics, usage_from_metrics, wire_finish_reason
from .._sse import encode_data, encode_event
from ..tools import ToolCallDelta
from ..types import GenerateMetrics, Token
from ._wire import ServerError

__all__ = ["EventEncoder", "OpenAIEncoder", "TextEncoder"]

_DONE_EVENT = encode_data(DONE)


class EventEncoder:
    """Turns a token stream into Server-Sent Events; subclasses choose the format.

    :meth:`start` is sent with the headers, :meth:`encode_token` once per token and
    :meth:`encode_tool_call` once per tool-call delta (in arrival order), then either
    :meth:`end` (the stream finished) or :meth:`error` (it failed after it started).
    """

    def start(self) -> bytes:
        """Bytes sent before the first token (nothing by default)."""
        return b""

    def token(self, text: str) -> bytes:
        """The event carrying one token's text (empty bytes to send nothing)."""
        raise NotImplementedError

    def encode_token(self, token: Token) -> bytes:
        """The event carrying one token: :meth:`token` of its text unless a format sends more
        of it (OpenAI chunks with logprobs)."""
        return self.token(token.text)

    def encode_tool_call(self, delta: ToolCallDelta) -> bytes:
        """The event carrying one piece of a tool call.

        A format that has no place for tool calls raises, so that a stream with calls is an
        error event rather than a reply that silently lost them.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot send tool calls")

    def end(self, finish_reason: str | None, metrics: GenerateMetrics | None) -> bytes:
        """The closing events of a finished stream."""
        raise NotImplementedError

    def error(self, error: ServerError) -> bytes:
        """The event reporting a failure after the stream started."""
        raise NotImplementedError


class OpenAIEncoder(EventEncoder):
    """OpenAI's streaming format: ``chat.completion.chunk`` or ``text_completion`` chunks.

    A chat stream opens with a role chunk (``delta.role = "assistant"``); each token is one
    chunk; the end is a chunk with an empty delta and the finish_reason (plus llama.cpp's
    ``timings`` when the backend measured them), then (when
    ``include_usage``) a chunk with ``choices: []`` and the usage, then ``data: [DONE]``. With
    ``include_usage`` every other chunk carries ``"usage": null``, as OpenAI's do. An error is
    one ``data: {"error": {...}}`` event, and the stream ends without ``[DONE]``. With
    ``logprobs`` each token's chunk carries its log-probabilities in OpenAI's shape
    (:mod:`goml_async._openai_wire.logprobs`). A tool-call delta is a chunk whose
    ``delta.tool_calls`` holds ``{"index", "id", "type": "function", "function": {"name",
    "arguments"}}`` on a call's first piece and ``{"index", "function": {"arguments"}}`` on
    the others, as OpenAI streams them (a call the backend gave no ID gets one here).

    Args:
        chat: chat chunks (True) or completion chunks (False).
        model: the model name in every chunk.
        include_usage: send the usage chunk.
        completion_id: the reply's ID (default: a fresh one).
        created: the reply's Unix time (default: now).
        logprobs: None for no log-probabilities, else the alternatives per token.
    """

    __slots__ = ("_calls_seen", "_chat", "_envelope", "_include_usage", "_logprobs", "_writer")

    def __init__(
        self,
        *,
        chat: bool,
        model: str,
        include_usage: bool = False,
        completion_id: str | None = None,
        created: int | None = None,
        logprobs: int | None = None,
    ) -> None:
        self._chat = chat
        self._include_usage = include_usage
        self._logprobs = None if logprobs is None else LogprobsCollector(chat=chat, top=logprobs)
        completion_id = completion_id or new_completion_id(chat)
        created = int(time.time()) if created is None else created
        self._writer = ChunkWriter(
            chat=chat,
            completion_id=completion_id,
            created=created,
            model=model,
            null_usage=include_usage,
        )
        # Tool-call chunks are rare (a few per reply): built whole, not from a template.
        self._envelope: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._calls_seen = 0

    def start(self) -> bytes:
        if not self._chat:
            return b""
        return encode_data(self._writer.role()).encode()

    def token(self, text: str) -> bytes:
        if not text:
            return b""
        return encode_data(self._writer.content(text)).encode()

    def encode_token(self, token: Token) -> bytes:
        if self._logprobs is None or not token.text:
            return self.token(token.text)
        logprobs = dumps(self._logprobs.chunk(token))
        return encode_data(self._writer.content(token.text, logprobs)).encode()

    def encode_tool_call(self, delta: ToolCallDelta) -> bytes:
        if not self._chat:
            raise NotImplementedError("a text completion has no place for tool calls")
        function: dict[str, Any] = {}
        entry: dict[str, Any] = {"index": delta.index}
        if delta.index >= self._calls_seen:  # the call's first piece: its ID, type and name
            self._calls_seen = delta.index + 1
            entry["id"] = delta.id or f"call_{uuid.uuid4().hex[:24]}"
            entry["type"] = "function"
            function["name"] = delta.name or ""
        elif delta.name:
            function["name"] = delta.name
        function["arguments"] = delta.arguments
        entry["function"] = function
        chunk = {
            **self._envelope,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [entry]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        if self._include_usage:
            chunk["usage"] = None
        return encode_data(dumps(chunk)).encode()

    def end(self, finish_reason: str | None, metrics: GenerateMetrics | None) -> bytes:
        writer = self._writer
        finish = writer.finish(wire_finish_reason(finish_reason), timings_from_metrics(metrics))
        last = encode_data(finish)
        if self._include_usage:
            last += encode_data(writer.usage(usage_from_metrics(metrics)))
        return (last + _DONE_EVENT).encode()

    def error(self, error: ServerError) -> bytes:
        return encode_data(dumps(error.body())).encode()


class TextEncoder(EventEncoder):
    """Plain text events: each token is ``data: <text>`` (the default ``message`` event).

    A token holding line breaks becomes several ``data:`` lines, which an SSE client (a
    browser's ``EventSource``) joins back with ``"\\n"``. The end is an ``event: done`` whose
    data is ``{"finish_reason": ..., "usage": {...}}``; a failure is an ``event: error`` whose
    data is the OpenAI error object; a tool-call delta is an ``event: tool_call`` whose data is
    ``{"index", "id", "name", "arguments"}`` (the :class:`~goml_async.tools.ToolCallDelta`).
    None of these reaches an ``onmessage`` handler.
    """

    __slots__ = ()

    def token(self, text: str) -> bytes:
        if not text:
            return b""
        return encode_data(text).encode()

    def end(self, finish_reason: str | None, metrics: GenerateMetrics | None) -> bytes:
        done = {
            "finish_reason": wire_finish_reason(finish_reason),
            "usage": usage_from_metrics(metrics),
        }
        return encode_event(dumps(done), event="done").encode()

    def encode_tool_call(self, delta: ToolCallDelta) -> bytes:
        piece = {
            "index": delta.index,
            "id": delta.id,
            "name": delta.name,
            "arguments": delta.arguments,
        }
        return encode_event(dumps(piece), event="tool_call").encode()

    def error(self, error: ServerError) -> bytes:
        return encode_event(dumps(error.body()), event="error").encode()
