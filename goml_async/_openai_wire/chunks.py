"""The reply shapes: ``chat.completion``, ``text_completion`` and their streamed chunks.

A streamed reply is a role chunk (chat only), one chunk per token, a finish chunk with the
finish_reason and, when the client asked for ``stream_options.include_usage``, a chunk with
``choices: []`` and the usage; then ``[DONE]``. :class:`ChunkWriter` writes the JSON of each;
the SSE framing is :mod:`goml_async._sse`'s.

Servers differ in the optional parts, and the writer can speak either way: OpenAI sends
``"logprobs": null`` in every choice and, with ``include_usage``, ``"usage": null`` in every
chunk but the last; llama.cpp and vLLM leave both out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from .json_text import dumps, json_string

__all__ = ["DONE", "ChunkWriter", "completion_object", "new_completion_id"]

#: The ``data`` of the event that ends a stream.
DONE: Final = "[DONE]"


def new_completion_id(chat: bool) -> str:
    """A fresh reply ID: ``chatcmpl-...`` or ``cmpl-...``."""
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


class ChunkWriter:
    """The JSON text of each chunk of one streamed reply.

    The envelope (ID, object, creation time, model) is serialised once per stream, and each
    token's chunk is that text around the JSON string of its text: the one value per token.

    Args:
        chat: chat chunks (``delta``) or completion chunks (``text``).
        completion_id: the reply's ID, the same in every chunk.
        created: the reply's Unix time.
        model: the model name in every chunk.
        null_usage: every chunk but the usage chunk says ``"usage": null`` (OpenAI's way when
            the usage was asked for).
        null_logprobs: every choice without log-probabilities says ``"logprobs": null``
            (OpenAI's way); False leaves the field out.

    Example:
        >>> import json
        >>> writer = ChunkWriter(chat=True, completion_id="c", created=1, model="m")
        >>> json.loads(writer.content("Hi"))["choices"]
        [{'index': 0, 'delta': {'content': 'Hi'}, 'logprobs': None, 'finish_reason': None}]
    """

    __slots__ = (
        "_finish_open",
        "_head",
        "_logprobs_open",
        "_no_logprobs",
        "_tail",
        "_text_close",
        "_text_open",
    )

    def __init__(
        self,
        *,
        chat: bool,
        completion_id: str,
        created: int,
        model: str,
        null_usage: bool = False,
        null_logprobs: bool = True,
    ) -> None:
        envelope = {
            "id": completion_id,
            # A legacy completion's chunks have the same object as the whole reply.
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        # Every chunk is this envelope (without its closing brace) + its choices + the tail.
        self._head = dumps(envelope)[:-1]
        self._tail = ',"usage":null}' if null_usage else "}"
        self._no_logprobs = ',"logprobs":null' if null_logprobs else ""
        if chat:
            text, close, empty = '"delta":{"content":', "}", '"delta":{}'
        else:
            text, close, empty = '"text":', "", '"text":""'
        choice = self._head + ',"choices":[{"index":0,'
        self._text_open = choice + text
        self._text_close = f'{close}{self._no_logprobs},"finish_reason":null}}]{self._tail}'
        self._logprobs_open = close + ',"logprobs":'
        self._finish_open = f'{choice}{empty}{self._no_logprobs},"finish_reason":'

    def role(self) -> str:
        """The chunk that opens a chat reply: ``delta = {"role": "assistant", "content": ""}``."""
        return (
            f'{self._head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}}'
            f'{self._no_logprobs},"finish_reason":null}}]{self._tail}'
        )

    def content(self, text: str, logprobs: str | None = None) -> str:
        """The chunk of one token's text, with its ``logprobs`` object's JSON when given."""
        if logprobs is None:
            return self._text_open + json_string(text) + self._text_close
        return (
            f"{self._text_open}{json_string(text)}{self._logprobs_open}{logprobs}"
            f',"finish_reason":null}}]{self._tail}'
        )

    def finish(self, finish_reason: str, timings: Mapping[str, Any] | None = None) -> str:
        """The chunk with the finish_reason (an empty delta or text), and ``timings`` if any."""
        extra = "" if timings is None else f',"timings":{dumps(timings)}'
        return f"{self._finish_open}{json_string(finish_reason)}}}]{extra}{self._tail}"

    def usage(self, usage: Mapping[str, Any], timings: Mapping[str, Any] | None = None) -> str:
        """The last chunk, ``choices: []`` with the usage (and ``timings`` if any)."""
        extra = "" if timings is None else f',"timings":{dumps(timings)}'
        return f'{self._head},"choices":[],"usage":{dumps(usage)}{extra}}}'


def completion_object(
    *,
    chat: bool,
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    usage: Mapping[str, Any],
    timings: Mapping[str, Any] | None = None,
    logprobs: Mapping[str, Any] | None = None,
    null_logprobs: bool = True,
) -> dict[str, Any]:
    """A whole reply that was not streamed: ``chat.completion`` or ``text_completion``.

    ``logprobs`` is the choice's ``logprobs`` object; without one, ``null_logprobs`` says
    ``"logprobs": null`` (OpenAI's way) rather than leaving the field out.
    """
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    if logprobs is not None or null_logprobs:
        choice["logprobs"] = logprobs
    choice["finish_reason"] = finish_reason
    reply: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
    if timings is not None:
        reply["timings"] = timings
    return reply
