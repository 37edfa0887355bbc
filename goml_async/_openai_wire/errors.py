"""The error body, ``{"error": {...}}``, in OpenAI's shape and llama.cpp's, both ways.

OpenAI's error object has ``message``, ``type``, ``param`` and ``code`` (a string); llama.cpp's
has no ``param`` and its ``code`` is the HTTP status. A client reads both (and bodies that are
not JSON at all), whether they come as a whole reply or as an event of a stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..errors import APIStatusError, GenerationError

__all__ = [
    "error_message",
    "error_object",
    "llama_error_object",
    "llama_error_type",
    "openai_error_type",
    "stream_error",
]

#: llama.cpp's error ``type`` per HTTP status (any other: as :func:`openai_error_type`).
_LLAMA_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "rate_limit_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


def openai_error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status: ``server_error`` from 500 on."""
    return "server_error" if status >= 500 else "invalid_request_error"


def llama_error_type(status: int) -> str:
    """llama.cpp's error ``type`` for an HTTP status (``unavailable_error`` for 503, ...)."""
    return _LLAMA_TYPES.get(status) or openai_error_type(status)


def error_object(
    message: str, type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def llama_error_object(message: str, type: str, code: int) -> dict[str, Any]:
    """llama.cpp's error body: ``{"error": {"message", "type", "code"}}``, the code a status."""
    return {"error": {"message": message, "type": type, "code": code}}


def error_message(body: str | Mapping[str, Any]) -> str:
    """The human part of an error body in either shape, or the body itself (at most 500
    characters of a body that is not JSON)."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            return str(error.get("message") or error)
        return str(error)
    return body.strip()[:500]


def stream_error(payload: Mapping[str, Any]) -> GenerationError:
    """The error carried by an ``{"error": {...}}`` event of a stream.

    A status code in the error (llama.cpp's shape) makes it an :class:`APIStatusError`.
    """
    error = payload.get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    message = f"the server reported an error mid-stream: {error_message(payload)}"
    if isinstance(code, int) and not isinstance(code, bool):
        return APIStatusError(message, status_code=code, body=str(payload))
    return GenerationError(message)
