"""The goml_async exception tree.

Every error the SDK raises derives from :class:`GomlError`. Third-party exceptions (httpx, mlx,
asyncssh, influx) are translated at the boundary with ``raise ... from exc``, so the original is
always available as ``__cause__``.

```
GomlError
├── ConfigError            bad input: names the field that was wrong (also a ValueError)
├── BackendUnavailable     unknown backend name or missing extra: carries the pip install hint
├── ModelLoadError         a model file or folder is missing or unreadable: names the path
├── NotSupported           the backend cannot do this operation (e.g. classify over HTTP)
├── JudgeError             an LLM judge reply that is not valid for its scale: keeps the raw reply
├── TransportError         a remote host (SSH) or local checkpoint folder could not be used
├── SinkError              a metrics sink (InfluxDB) refused or could not take a write or query
└── GenerationError        generation failed: carries the partial text and token count
    ├── GenerationTimeout  a first-token, idle or total deadline passed
    ├── StreamInterrupted  the stream broke after the first token (never replayed)
    ├── APIStatusError     the server answered with an error status (after any retries)
    └── APIConnectionError the server could not be reached (after any retries)
```
"""

from __future__ import annotations

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "BackendUnavailable",
    "ConfigError",
    "GenerationError",
    "GenerationTimeout",
    "GomlError",
    "JudgeError",
    "ModelLoadError",
    "NotSupported",
    "SinkError",
    "StreamInterrupted",
    "TransportError",
]


class GomlError(Exception):
    """Root of every exception raised by goml_async."""


class ConfigError(GomlError, ValueError):
    """An invalid value was given; ``field`` names the offending parameter.

    Example:
        >>> ConfigError("max_tokens", "must be >= 0, got -1")
        ConfigError('max_tokens: must be >= 0, got -1')
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


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
