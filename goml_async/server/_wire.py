"""The server's OpenAI wire format, without I/O: errors, replies and their parts.

Pure functions and small value objects: the ASGI side (``app``, ``sse``) only moves the bytes
built here. Requests are validated in :mod:`goml_async.server._requests`; their values are
checked once more by :class:`~goml_async.types.GenerateConfig` when the model is called, and
:func:`param_name` maps its field names back to the request's.
"""

from __future__ import annotations

import json
import reprlib
import uuid
from collections.abc import Mapping
from typing import Any, Final

from ..errors import (
    APIStatusError,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    GomlError,
    NotSupported,
)
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


def dumps(value: object) -> str:
    """Compact JSON with raw UTF-8 text."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __repr__(self) -> str:
        return f"ServerError({self.status}, {self.message!r}, code={self.code!r})"


def param_name(config_field: str) -> str:
    """The request parameter behind a GenerateConfig field (``stop_sequences`` -> ``stop``)."""
    return _PARAMS.get(config_field, config_field)


def error_from_exception(exc: BaseException) -> ServerError:
    """The error reply for an exception raised while generating.

    ConfigError -> 400 naming the parameter; NotSupported -> 400; GenerationTimeout -> 504;
    an upstream server's 400 -> 400 (usually a prompt longer than its context); any other
    GenerationError, and anything unexpected, -> 500.
    """
    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, ConfigError):
        return ServerError(400, str(exc), param=param_name(exc.field), code="invalid_value")
    if isinstance(exc, NotSupported):
        return ServerError(400, str(exc), code="not_supported")
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


def new_completion_id(chat: bool) -> str:
    """A fresh reply ID: ``chatcmpl-...`` or ``cmpl-...``."""
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def openai_finish_reason(reason: str | None) -> str:
    """OpenAI's finish_reason for a TokenStream's: ``length`` stays, everything else is ``stop``."""
    return "length" if reason == "length" else "stop"


def usage(metrics: GenerateMetrics | None) -> dict[str, int]:
    """OpenAI's usage object from the stream's metrics (the backend's own token counts)."""
    prompt = metrics.prompt_tokens if metrics is not None else 0
    completion = metrics.generated_tokens if metrics is not None else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def timings(metrics: GenerateMetrics | None) -> dict[str, float] | None:
    """llama.cpp's ``timings`` object (an extension OpenAI clients ignore), when the backend
    measured prefill or decode; None otherwise."""
    if metrics is None or not (metrics.prefill_seconds or metrics.decode_seconds):
        return None
    return {
        "prompt_n": metrics.prompt_tokens,
        "prompt_ms": round(metrics.prefill_seconds * 1000, 3),
        "prompt_per_second": metrics.prefill_tokens_per_sec,
        "predicted_n": metrics.generated_tokens,
        "predicted_ms": round(metrics.decode_seconds * 1000, 3),
        "predicted_per_second": metrics.decode_tokens_per_sec,
    }


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
) -> dict[str, Any]:
    """The whole non-streamed reply: ``chat.completion`` or ``text_completion``.

    ``logprobs`` is the choice's ``logprobs`` object (``LogprobsCollector.render()``), when
    they were asked for.
    """
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    choice["logprobs"] = logprobs
    choice["finish_reason"] = openai_finish_reason(finish_reason)
    reply: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(metrics),
    }
    measured = timings(metrics)
    if measured is not None:
        reply["timings"] = measured
    return reply
