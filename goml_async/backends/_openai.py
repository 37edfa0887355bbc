"""The HTTP client's side of OpenAI's wire format: request bodies, stream chunks, usage, timings.

The shapes themselves live in :mod:`goml_async._openai_wire`, which the server and the test
server share; this module names what the client uses of them (the HTTP and llama backends
import them from here) and adds the client's own check of the log-probabilities it asked for.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import cast

from .._openai_wire.errors import error_message, stream_error
from .._openai_wire.parse import StreamState, parse_event, parse_native_chunk
from .._openai_wire.requests import chat_body, completion_body, sampling_fields, stream_body
from .._openai_wire.usage import finish_reason, metrics_from
from ..errors import NotSupported
from ..tools import ToolCallDelta
from ..types import GenerateConfig, Token

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


async def checked_logprobs(
    source: AsyncIterator[Token | ToolCallDelta], config: GenerateConfig, server: str
) -> AsyncIterator[Token | ToolCallDelta]:
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
    async with aclosing(cast("AsyncGenerator[Token | ToolCallDelta]", source)) as tokens:
        async for token in tokens:
            if isinstance(token, ToolCallDelta):
                yield token
                continue
            if first and token.logprob is None:
                raise NotSupported(
                    f"{server} streamed tokens without log-probabilities although logprobs "
                    "were asked for: the server does not support them"
                )
            first = False
            if len(token.top_logprobs) > top:
                token = replace(token, top_logprobs=token.top_logprobs[:top])
            yield token
