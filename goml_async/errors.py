"""The goml_async exception tree.

Every error the SDK raises derives from :class:`GomlError`. Third-party exceptions (httpx, mlx,
asyncssh, influx) are translated at the boundary with ``raise ... from exc``, so the original is
always available as ``__cause__``. Every public error is defined here; the modules that raise
them (``goml_async.service``, ``goml_async.scoring.probes``) re-export theirs under the names
they have always had.

```
GomlError
├── ConfigError              bad input, naming the field (also a ValueError and a TypeError)
│   └── UnknownProbeError    no probe has that id: lists the known ids (also a KeyError)
├── BackendUnavailable       a backend that cannot be used: carries the pip install hint
│   ├── UnknownBackendError  no backend is registered under that name: lists the known ones
│   └── ServiceUnavailable   the Service is not started yet, or closed
├── ModelLoadError           a model file or folder is missing or unreadable: names the path
├── NotSupported             the backend cannot do this operation (e.g. classify over HTTP)
├── JudgeError               an LLM judge reply not valid for its scale: keeps the raw reply
├── TransportError           a remote host (SSH) or local checkpoint folder could not be used
├── SinkError                a metrics sink (InfluxDB) could not take a write or a query
├── LifecycleError           used out of order: started twice, before start or after stop
├── ServiceCloseError        closing some of a Service's backends failed: lists each failure
└── GenerationError          generation failed: carries the partial text and token count
    ├── GenerationTimeout    a first-token, idle or total deadline passed
    ├── SchemaViolation      the output left its response_format: carries the partial text
    ├── StreamInterrupted    the stream broke after the first token (never replayed)
    ├── APIStatusError       the server answered with an error status (after any retries)
    └── APIConnectionError   the server could not be reached (after any retries)
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "BackendUnavailable",
    "ConfigError",
    "GenerationError",
    "GenerationTimeout",
    "GomlError",
    "JudgeError",
    "LifecycleError",
    "ModelLoadError",
    "NotSupported",
    "SchemaViolation",
    "ServiceCloseError",
    "ServiceUnavailable",
    "SinkError",
    "StreamInterrupted",
    "TransportError",
    "UnknownBackendError",
    "UnknownProbeError",
]


class GomlError(Exception):
    """Root of every exception raised by goml_async."""


class ConfigError(GomlError, ValueError, TypeError):
    """An invalid value was given; ``field`` names the offending parameter.

    It is also a ``ValueError`` and a ``TypeError``: bad input of either kind (a value out of
    range, an argument of the wrong type) is a ConfigError, and ``except`` clauses written for
    the built-in errors still catch it.

    Example:
        >>> ConfigError("max_tokens", "must be >= 0, got -1")
        ConfigError('max_tokens: must be >= 0, got -1')
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class UnknownProbeError(ConfigError, KeyError):
    """No probe has the requested id; the message lists the known ids.

    It is a :class:`ConfigError` (bad input) and a ``KeyError`` (a failed lookup), so either
    ``except`` clause catches it.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return f"{self.field}: {self.problem}"


class BackendUnavailable(GomlError):
    """A backend is unknown, not installed, or cannot run here.

    ``install_hint`` holds the exact command that fixes a missing extra, when there is one.
    """

    def __init__(
        self, message: str, *, backend: str | None = None, install_hint: str | None = None
    ):
        self.backend = backend
        self.install_hint = install_hint
        if install_hint:
            message = f"{message} (install it with: {install_hint})"
        super().__init__(message)


class UnknownBackendError(BackendUnavailable):
    """No backend is registered under this name; ``known`` lists the names that are.

    Raised by the registry (:func:`~goml_async.get_backend`, :func:`~goml_async.load_model`)
    and by a :class:`~goml_async.Service` alike, so one ``except`` clause covers both.

    Args:
        name: the name asked for.
        known: the registered names.
        configured: where the name came from, when it was not an argument (an env var).
        message: the whole message, when the caller words it for its context.
    """

    def __init__(
        self,
        name: str,
        known: Sequence[str],
        *,
        configured: str = "",
        message: str | None = None,
    ) -> None:
        self.known = tuple(known)
        if message is None:
            listed = ", ".join(self.known) or "none"
            where = f" ({configured})" if configured else ""
            message = f"unknown backend {name!r}{where}; registered: {listed}"
        super().__init__(message, backend=name)


class ServiceUnavailable(BackendUnavailable):
    """The Service is not running: it was not started yet, or it is closed."""

    def __init__(self, state: Literal["new", "running", "closed"]) -> None:
        self.state = state
        if state == "new":
            problem = "the Service is not started: use 'async with Service(...)' or start()"
        else:
            problem = "the Service is closed"
        super().__init__(problem)


class ModelLoadError(GomlError):
    """A model could not be loaded; ``path`` names what was being loaded."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"cannot load model {path!r}: {problem}")


class NotSupported(GomlError):
    """The model or backend does not support the requested operation."""


class JudgeError(GomlError):
    """A judge reply could not be used; ``raw_reply`` keeps what the judge said."""

    def __init__(self, message: str, *, raw_reply: str = "") -> None:
        self.raw_reply = raw_reply
        super().__init__(message)


class TransportError(GomlError):
    """A remote transport failed: connection, authentication, host key, timeout or file copy.

    A command that runs and exits non-zero is not a TransportError: its exit code is returned.
    """


class LifecycleError(GomlError):
    """An object was used out of order, or could not start.

    Started twice, used before it started or after it stopped, called from the event loop
    thread it runs on, or its start failed (the cause is chained). A closed *model* is a
    :class:`GenerationError` instead, where every other failure of a generation is.
    """


class ServiceCloseError(GomlError):
    """Closing some owned backends failed; every other one was still closed.

    Attributes:
        failures: ``(backend name, exception)`` for each close that failed, in closing order.
    """

    def __init__(self, failures: Sequence[tuple[str, Exception]]) -> None:
        self.failures = tuple(failures)
        detail = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in self.failures)
        super().__init__(f"closing {len(self.failures)} backend(s) failed: {detail}")


class SinkError(GomlError):
    """A metrics sink (InfluxDB) could not take a write or answer a query.

    ``status`` is the HTTP status when the server answered, else None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class GenerationError(GomlError):
    """Generation failed.

    Attributes:
        partial_text: the text delivered before the failure (after stop-sequence cutting).
        tokens_generated: how many tokens were delivered before the failure.
    """

    def __init__(self, message: str, *, partial_text: str = "", tokens_generated: int = 0) -> None:
        self.partial_text = partial_text
        self.tokens_generated = tokens_generated
        super().__init__(message)


class GenerationTimeout(GenerationError):
    """A deadline passed; ``deadline`` is ``"first_token"``, ``"idle"`` or ``"total"``."""

    def __init__(
        self,
        message: str,
        *,
        deadline: str,
        seconds: float,
        partial_text: str = "",
        tokens_generated: int = 0,
    ) -> None:
        self.deadline = deadline
        self.seconds = seconds
        super().__init__(message, partial_text=partial_text, tokens_generated=tokens_generated)


class SchemaViolation(GenerationError):
    """The output can no longer be, or at its end is not, a document of the ``response_format``.

    Raised from the stream at the first chunk holding a byte that cannot lead to a valid
    document, or at the end when the document is incomplete or fails the schema's validation;
    no text past the last valid chunk is delivered.

    Attributes:
        partial_text: the text delivered before the offending chunk (the valid prefix).
        offset: the byte offset in the output of the first byte that broke the format, or None
            when the output ended without a complete, valid document.
        format_type: the ``response_format`` type (``"json_schema"``, ``"regex"``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        format_type: str,
        offset: int | None = None,
        partial_text: str = "",
        tokens_generated: int = 0,
    ) -> None:
        self.format_type = format_type
        self.offset = offset
        super().__init__(message, partial_text=partial_text, tokens_generated=tokens_generated)


class StreamInterrupted(GenerationError):
    """The connection failed after the first token; the output so far is kept, never replayed."""


class APIStatusError(GenerationError):
    """An HTTP server answered with an error status.

    Attributes:
        status_code: the HTTP status.
        body: the response body as text (the server's error message, usually JSON).
    """

    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        self.status_code = status_code
        self.body = body
        super().__init__(message)


class APIConnectionError(GenerationError):
    """An HTTP server could not be reached, or dropped the connection before the first token."""
