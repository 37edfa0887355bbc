"""Server-Sent Events for a token stream: OpenAI's chunks or plain text events.

An encoder turns the parts of a stream (its start, each token, its end, a failure) into the
bytes of SSE events; :class:`~goml_async.server.sse.TokenStreamSender` sends them. The
JSON of OpenAI chunks is built from a prefix made once per stream, so each token costs one
``json.dumps`` of its text.
"""

from __future__ import annotations

import time

from ..types import GenerateMetrics, Token
from ._logprobs import LogprobsCollector
from ._wire import ServerError, dumps, new_completion_id, openai_finish_reason, timings, usage

__all__ = ["EventEncoder", "OpenAIEncoder", "TextEncoder"]


class EventEncoder:
    """Turns a token stream into Server-Sent Events; subclasses choose the format.

    :meth:`start` is sent with the headers, :meth:`encode_token` once per token, then either
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
    (:mod:`goml_async.server._logprobs`).

    Args:
        chat: chat chunks (True) or completion chunks (False).
        model: the model name in every chunk.
        include_usage: send the usage chunk.
        completion_id: the reply's ID (default: a fresh one).
        created: the reply's Unix time (default: now).
        logprobs: None for no log-probabilities, else the alternatives per token.
    """

    __slots__ = ("_chat", "_head", "_include_usage", "_logprobs", "_tail")

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
        head = {
            "id": completion_id or new_completion_id(chat),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()) if created is None else created,
            "model": model,
        }
        # Every chunk is this envelope + its choices (+ usage): built once, filled per token.
        self._head = "data: " + dumps(head)[:-1]
        self._tail = ',"usage":null}\n\n' if include_usage else "}\n\n"

    def _choice(
        self,
        delta_or_text: str,
        finish_reason: str | None,
        extra: str = "",
        logprobs: str = "null",
    ) -> str:
        finish = dumps(finish_reason)
        return (
            f'{self._head},"choices":[{{"index":0,{delta_or_text},'
            f'"logprobs":{logprobs},"finish_reason":{finish}}}]{extra}{self._tail}'
        )

    def start(self) -> bytes:
        if not self._chat:
            return b""
        return self._choice('"delta":{"role":"assistant","content":""}', None).encode()

    def token(self, text: str) -> bytes:
        if not text:
            return b""
        if self._chat:
            return self._choice(f'"delta":{{"content":{dumps(text)}}}', None).encode()
        return self._choice(f'"text":{dumps(text)}', None).encode()

    def encode_token(self, token: Token) -> bytes:
        if self._logprobs is None or not token.text:
            return self.token(token.text)
        logprobs = dumps(self._logprobs.chunk(token))
        text = dumps(token.text)
        part = f'"delta":{{"content":{text}}}' if self._chat else f'"text":{text}'
        return self._choice(part, None, logprobs=logprobs).encode()

    def end(self, finish_reason: str | None, metrics: GenerateMetrics | None) -> bytes:
        reason = openai_finish_reason(finish_reason)
        measured = timings(metrics)
        extra = f',"timings":{dumps(measured)}' if measured is not None else ""
        last = self._choice('"delta":{}' if self._chat else '"text":""', reason, extra)
        if self._include_usage:
            last += f'{self._head},"choices":[],"usage":{dumps(usage(metrics))}}}\n\n'
        return (last + "data: [DONE]\n\n").encode()

    def error(self, error: ServerError) -> bytes:
        return f"data: {dumps(error.body())}\n\n".encode()


class TextEncoder(EventEncoder):
    """Plain text events: each token is ``data: <text>`` (the default ``message`` event).

    A token holding line breaks becomes several ``data:`` lines, which an SSE client (a
    browser's ``EventSource``) joins back with ``"\\n"``. The end is an ``event: done`` whose
    data is ``{"finish_reason": ..., "usage": {...}}``; a failure is an ``event: error`` whose
    data is the OpenAI error object. Neither reaches an ``onmessage`` handler.
    """

    __slots__ = ()

    def token(self, text: str) -> bytes:
        if not text:
            return b""
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return ("".join(f"data: {line}\n" for line in lines) + "\n").encode()

    def end(self, finish_reason: str | None, metrics: GenerateMetrics | None) -> bytes:
        done = {"finish_reason": openai_finish_reason(finish_reason), "usage": usage(metrics)}
        return f"event: done\ndata: {dumps(done)}\n\n".encode()

    def error(self, error: ServerError) -> bytes:
        return f"event: error\ndata: {dumps(error.body())}\n\n".encode()
