"""The server's side of OpenAI's wire format, without I/O: error replies and whole replies.

The shapes live in :mod:`goml_async._openai_wire`, shared with the client and the test server;
this module adds the server's own policy: which exception becomes which error reply, and
replies built from a stream's finish reason and metrics. The ASGI side (``app``, ``sse``) only
moves the bytes built here. Requests are validated in :mod:`goml_async.server._requests`; their
values are checked once more by :class:`~goml_async.types.GenerateConfig` when the model is
called, and :func:`param_name` maps its field names back to the request's.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._openai_wire.chunks import completion_object, new_completion_id
from .._openai_wire.errors import error_object, openai_error_type
from .._openai_wire.json_text import dumps
from .._openai_wire.usage import timings_from_metrics as timings
from .._openai_wire.usage import usage_from_metrics as usage
from .._openai_wire.usage import wire_finish_reason
from ..errors import (
    APIStatusError,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    GomlError,
    NotSupported,
    SchemaViolation,
)
from ..tools import ToolCall
from ..types import GenerateMetrics

__all__ = [
    "ServerError",
    "completion_reply",
    "dumps",
    "error_from_exception",
    "new_completion_id",
    "openai_finish_reason",
    "param_name",
    "shown",
    "timings",
    "usage",
]

#: OpenAI's finish_reason for a stream's (the name the server's modules know it by).
openai_finish_reason = wire_finish_reason

#: GenerateConfig field -> the request parameter that sets it.
_PARAMS: Final = {"stop_sequences": "stop", "repeat_penalty": "repeat_penalty"}

# Error messages quote what the client sent, which may be huge or deeply nested: a bounded repr
# keeps the message short and never recurses without limit.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


_SHOWN_CHARS: Final = 120


def shown(value: object) -> str:
    """A short repr of a client's value (at most 120 characters), for error messages.

    Example:
        >>> shown([[[["deep"]]]]), len(shown("x" * 1000)), len(shown([["y" * 50] * 9] * 9))
        ('[[[[...]]]]', 60, 120)
    """
    text = _REPR.repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


# -- errors ---------------------------------------------------------------------------------------


class ServerError(Exception):
    """An error reply in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

    Attributes:
        status: the HTTP status.
        message: what went wrong, for people.
        type: OpenAI's error type (``invalid_request_error``, ``server_error``, ...).
        param: the request parameter at fault, or None.
        code: a short machine-readable code (``model_not_found``, ``timeout``, ...), or None.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or openai_error_type(status)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON error object."""
        return error_object(self.message, self.type, param=self.param, code=self.code)

    def __repr__(self) -> str:
        return f"ServerError({self.status}, {self.message!r}, code={self.code!r})"


def param_name(config_field: str) -> str:
    """The request parameter behind a GenerateConfig field (``stop_sequences`` -> ``stop``)."""
    return _PARAMS.get(config_field, config_field)


def error_from_exception(exc: BaseException) -> ServerError:
    """The error reply for an exception raised while generating.

    ConfigError -> 400 naming the parameter; NotSupported -> 400; SchemaViolation -> 422
    naming ``response_format``, or ``tools`` for a reply that broke the tools or
    ``tool_choice`` (code ``schema_violation``); GenerationTimeout -> 504; an
    upstream server's 400 -> 400 (usually a prompt longer than its context); any other
    GenerationError, and anything unexpected, -> 500.

    A SchemaViolation is a 4xx, not a 5xx that clients retry: the same request under greedy
    decoding fails the same way, and the usual cause (a ``max_tokens`` too small for the
    document) is the request's to change.
    """
    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, ConfigError):
        return ServerError(400, str(exc), param=param_name(exc.field), code="invalid_value")
    if isinstance(exc, NotSupported):
        return ServerError(400, str(exc), code="not_supported")
    if isinstance(exc, SchemaViolation):
        if exc.format_type == "tools":
            message, param = f"the reply did not meet the tools or tool_choice: {exc}", "tools"
        else:
            message = f"the output did not meet the response_format: {exc}"
            param = "response_format"
        return ServerError(422, message, param=param, code="schema_violation")
    if isinstance(exc, GenerationTimeout):
        return ServerError(
            504,
            f"generation did not finish within the server's timeout of {exc.seconds:g} s "
            f"({exc.tokens_generated} token(s) generated)",
            type="timeout_error",
            code="timeout",
        )
    if isinstance(exc, APIStatusError) and exc.status_code == 400:
        return ServerError(400, f"the model's server rejected the request: {exc}")
    if isinstance(exc, GenerationError | GomlError):
        return ServerError(500, f"generation failed: {exc}", code="generation_error")
    return ServerError(500, f"internal server error: {type(exc).__name__}", code="internal_error")


# -- replies --------------------------------------------------------------------------------------


def completion_reply(
    *,
    chat: bool,
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    metrics: GenerateMetrics | None,
    logprobs: dict[str, Any] | None = None,
    tool_calls: Sequence[ToolCall] = (),
) -> dict[str, Any]:
    """The whole non-streamed reply: ``chat.completion`` or ``text_completion``.

    ``finish_reason`` and ``metrics`` are the stream's; ``logprobs`` is the choice's
    ``logprobs`` object (``LogprobsCollector.render()``), when they were asked for. A chat
    reply with ``tool_calls`` carries them in the message in OpenAI's shape, its ``content``
    null when the model wrote no text (as OpenAI's).
    """
    reply = completion_object(
        chat=chat,
        completion_id=completion_id,
        created=created,
        model=model,
        text=text,
        finish_reason=wire_finish_reason(finish_reason),
        usage=usage(metrics),
        timings=timings(metrics),
        logprobs=logprobs,
    )
    if chat and tool_calls:
        message = reply["choices"][0]["message"]
        message["content"] = text or None
        message["tool_calls"] = [call.to_openai() for call in tool_calls]
    return reply
