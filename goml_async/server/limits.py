"""The server's limits, without I/O: its config, the token clamp, the chat context window, the
body-size limit and the bearer-token check.

Example:
    >>> config = ServerConfig(max_tokens=512, max_context=4)
    >>> clamp_max_tokens(None, config.max_tokens), clamp_max_tokens(9000, config.max_tokens)
    (512, 512)
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .._validate import int_at_least, non_empty_str, seconds
from ..errors import ConfigError
from ..types import Message

__all__ = [
    "BodyTooLarge",
    "DEFAULT_STATIC_DIR",
    "ServerConfig",
    "bearer_token_ok",
    "clamp_max_tokens",
    "read_body",
    "window_messages",
]

#: The chat page and its assets, served at ``/`` and ``/static/...``.
DEFAULT_STATIC_DIR: Final = Path(__file__).resolve().parent / "static"


def _names(name: str, value: object) -> tuple[str, ...]:
    """A sequence of non-empty strings as a tuple without repeats (order kept)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(name, f"must be a sequence of str, got {value!r}")
    if not all(isinstance(item, str) and item.strip() for item in value):
        raise ConfigError(name, f"every item must be a non-empty str, got {value!r}")
    return tuple(dict.fromkeys(item.strip() for item in value))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How :func:`~goml_async.server.create_app` serves a model.

    Attributes:
        model_name: the name clients ask for and replies carry (default: the model's own name
            if it has one, else its ``model_type``).
        aliases: other names accepted for the model (``"*"``: any name at all); each is
            listed by ``/v1/models`` after ``model_name``.
        max_concurrency: generation requests served at once; more wait in line.
        max_queue: requests that may wait for a place, first come first served (0: none wait);
            one more gets 429 + Retry-After.
        queue_timeout: the longest wait in line in seconds (None: no limit); a request that
            waits longer gets 429 + Retry-After.
        max_tokens: the cap on ``max_tokens``; a request without one (or with 0) gets the cap.
        timeout: seconds one completion may take (None: no limit); a non-streamed request that
            runs out gets 504, a stream gets an error event.
        max_context: chat messages kept: the first if it is a system message, plus the last
            ``max_context`` others (0: keep every message).
        max_body_bytes: the largest request body accepted (413 above it).
        api_key: when set, ``/v1/*`` needs ``Authorization: Bearer <api_key>`` (401 otherwise);
            never shown in reprs.
        retry_after: the ``Retry-After`` seconds sent with 429.
        static_dir: the folder served at ``/`` (its ``index.html``) and ``/static/...``.
        allowed_hosts: ``Host`` names accepted besides ``localhost``, ``*.localhost`` and IP
            addresses (``"*"``: any; ``"*.example.com"``: its subdomains); any other gets 400,
            which stops DNS-rebinding attacks.
        allowed_origins: browser origins (``"https://app.example.com"``, or ``"*"``) that may
            POST besides the page's own origin; another ``Origin`` gets 403.
    """

    model_name: str | None = None
    aliases: tuple[str, ...] = ()
    max_concurrency: int = 4
    max_queue: int = 64
    queue_timeout: float | None = 120.0
    max_tokens: int = 4096
    timeout: float | None = 300.0
    max_context: int = 0
    max_body_bytes: int = 1024 * 1024
    api_key: str | None = field(default=None, repr=False)
    retry_after: int = 1
    static_dir: Path = DEFAULT_STATIC_DIR
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        non_empty_str("model_name", self.model_name, allow_none=True)
        set_ = object.__setattr__
        set_(self, "aliases", _names("aliases", self.aliases))
        int_at_least("max_concurrency", self.max_concurrency, 1)
        int_at_least("max_queue", self.max_queue, 0)
        set_(self, "queue_timeout", seconds("queue_timeout", self.queue_timeout, allow_none=True))
        int_at_least("max_tokens", self.max_tokens, 1)
        int_at_least("max_context", self.max_context, 0)
        int_at_least("max_body_bytes", self.max_body_bytes, 1)
        int_at_least("retry_after", self.retry_after, 0)
        set_(self, "timeout", seconds("timeout", self.timeout, allow_none=True))
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ConfigError("api_key", "must be a non-empty str or None")
        if not isinstance(self.static_dir, str | Path):
            raise ConfigError("static_dir", f"must be a path, got {self.static_dir!r}")
        set_(self, "static_dir", Path(self.static_dir))
        set_(self, "allowed_hosts", _names("allowed_hosts", self.allowed_hosts))
        set_(self, "allowed_origins", _names("allowed_origins", self.allowed_origins))


def clamp_max_tokens(requested: int | None, cap: int) -> int:
    """The request's ``max_tokens`` within the server's cap; None or 0 means the cap."""
    if not requested:
        return cap
    return min(requested, cap)


def window_messages(messages: Sequence[Message], max_context: int) -> list[Message]:
    """The sliding window: the first message if it is a system message, plus the last
    ``max_context`` of the others; everything when there are no more than ``max_context`` or
    ``max_context`` is 0. A window never starts with ``tool`` results: the assistant message
    whose calls they answer fell out of it, and a result without its call means nothing to the
    model, so they go too.

    Example:
        >>> chat = [Message("system", "s")] + [Message("user", str(n)) for n in range(5)]
        >>> [m.content for m in window_messages(chat, 2)]
        ['s', '3', '4']
    """
    if max_context <= 0 or len(messages) <= max_context:
        return list(messages)
    head = list(messages[:1]) if messages[0].role == "system" else []
    rest = list(messages[len(head) :])[-max_context:]
    while rest and rest[0].role == "tool":
        rest.pop(0)
    return head + rest


class BodyTooLarge(Exception):
    """The request body is larger than the limit (answered with 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


async def read_body(
    chunks: AsyncIterable[bytes], limit: int, *, declared_length: int | None = None
) -> bytes:
    """Read a request body chunk by chunk, stopping as soon as it passes ``limit`` bytes.

    Args:
        chunks: the body as it arrives.
        limit: the most bytes accepted.
        declared_length: the ``Content-Length``, when given: a body declared too large is
            refused before a byte of it is read.

    Raises:
        BodyTooLarge: the body (or its declared length) is over the limit.
    """
    if declared_length is not None and declared_length > limit:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    iterator = aiter(chunks)
    try:
        async for chunk in iterator:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            parts.append(chunk)
    finally:
        # Stopping early leaves an async generator (Starlette's request.stream()) unfinished:
        # close it here rather than when it is garbage-collected.
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
    return b"".join(parts)


def bearer_token_ok(headers: Mapping[str, str], api_key: str | None) -> bool:
    """Whether the ``Authorization`` header carries ``Bearer <api_key>`` (always, with no key).

    The token is compared in constant time (:func:`hmac.compare_digest`).
    """
    if api_key is None:
        return True
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())
