"""The server's OpenAI wire format, without I/O: request validation, replies, chunks and errors.

Pure functions and small value objects: the ASGI side (``app``, ``sse``) only moves the bytes
built here. Request fields are checked here with errors that name the OpenAI parameter; the
values are checked once more by :class:`~goml_async.types.GenerateConfig` when the model is
called, and :func:`param_name` maps its field names back to the request's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import (
    APIStatusError,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    GomlError,
    NotSupported,
)
from ..types import GenerateMetrics, Message, Role

__all__ = [
    "CompletionRequest",
    "ServerError",
    "completion_reply",
    "dumps",
    "error_from_exception",
    "new_completion_id",
    "openai_finish_reason",
    "param_name",
    "parse_completion_request",
    "timings",
    "usage",
]

#: GenerateConfig field -> the request parameter that sets it.
_PARAMS: Final = {"stop_sequences": "stop", "repeat_penalty": "repeat_penalty"}
#: Request roles accepted in ``messages`` and the role they become (``developer`` is OpenAI's
#: newer name for ``system``).
_ROLES: Final[dict[str, Role]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_MAX_STOPS: Final = 16


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


# -- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated ``/v1/chat/completions`` or ``/v1/completions`` request.

    Attributes:
        chat: True for chat completions.
        model: the requested model ("" when omitted).
        messages: the conversation (chat only).
        prompt: the prompt (completions only).
        stream: reply with Server-Sent Events.
        include_usage: ``stream_options.include_usage``: send a usage chunk before ``[DONE]``.
        max_tokens: ``max_tokens`` (or ``max_completion_tokens``); None when not given.
        options: the other sampling fields as GenerateConfig keyword options.
    """

    chat: bool
    model: str = ""
    messages: tuple[Message, ...] = ()
    prompt: str = ""
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad(param: str, problem: str) -> ServerError:
    return ServerError(400, f"{param}: {problem}", param=param, code="invalid_value")


def _optional_int(body: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < minimum:
        raise _bad(name, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _optional_number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _bad(name, f"must be a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _stops(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(item, str) for item in stops):
        raise _bad("stop", f"must be a string or a list of strings, got {value!r}")
    if len(stops) > _MAX_STOPS:
        raise _bad("stop", f"at most {_MAX_STOPS} stop sequences, got {len(stops)}")
    if any(not item for item in stops):
        raise _bad("stop", "stop sequences must not be empty strings")
    return tuple(stops)


def _content(value: object, index: int) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    param = f"messages[{index}].content"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _bad(param, f"only text content parts are supported, got {kind!r}")
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(param, "a text part needs a string 'text'")
            texts.append(text)
        return "".join(texts)
    raise _bad(param, f"must be a string or a list of text parts, got {type(value).__name__}")


def _messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _bad("messages", "must be a non-empty list of {role, content} objects")
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"messages[{index}]", f"must be an object, got {type(item).__name__}")
        role = item.get("role")
        if role not in _ROLES:
            raise _bad(
                f"messages[{index}].role",
                f"must be one of system, developer, user, assistant; got {role!r}",
            )
        content = item.get("content")
        if content is None and role == "assistant":
            content = ""
        messages.append(Message(_ROLES[role], _content(content, index)))
    return tuple(messages)


def _prompt(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    raise _bad("prompt", "must be a string (or a list holding exactly one string)")


def parse_completion_request(body: object, *, chat: bool) -> CompletionRequest:
    """Validate a decoded request body.

    Unknown fields are ignored, as OpenAI-compatible servers do. ``null`` counts as absent.

    Raises:
        ServerError: 400 naming the parameter that is wrong.
    """
    if not isinstance(body, dict):
        raise ServerError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if model is None:
        model = ""
    if not isinstance(model, str):
        raise _bad("model", f"must be a string, got {type(model).__name__}")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", f"must be true or false, got {stream!r}")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise _bad("stream_options", "must be an object")
    include_usage = (stream_options or {}).get("include_usage", False)
    if include_usage is None:
        include_usage = False
    if not isinstance(include_usage, bool):
        raise _bad("stream_options.include_usage", f"must be true or false, got {include_usage!r}")
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("n", f"only n=1 is supported, got {n!r}")
    max_tokens = _optional_int(body, "max_completion_tokens", minimum=0)
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens", minimum=0)
    options: dict[str, Any] = {}
    temperature = _optional_number(body, "temperature", 0.0, 2.0)
    if temperature is not None:
        options["temperature"] = temperature
    top_p = _optional_number(body, "top_p", 0.0, 1.0)
    if top_p is not None:
        options["top_p"] = top_p
    top_k = _optional_int(body, "top_k", minimum=0)
    if top_k is not None:
        options["top_k"] = top_k
    repeat_penalty = _optional_number(body, "repeat_penalty", 0.0, 10.0)
    if repeat_penalty is not None:
        options["repeat_penalty"] = repeat_penalty
    seed = _optional_int(body, "seed", minimum=0)
    if seed is not None:
        options["seed"] = seed
    stops = _stops(body.get("stop"))
    if stops:
        options["stop_sequences"] = stops
    if chat:
        return CompletionRequest(
            chat=True,
            model=model,
            messages=_messages(body.get("messages")),
            stream=bool(stream),
            include_usage=include_usage,
            max_tokens=max_tokens,
            options=options,
        )
    return CompletionRequest(
        chat=False,
        model=model,
        prompt=_prompt(body.get("prompt")),
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_tokens,
        options=options,
    )


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
) -> dict[str, Any]:
    """The whole non-streamed reply: ``chat.completion`` or ``text_completion``."""
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    choice["logprobs"] = None
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
