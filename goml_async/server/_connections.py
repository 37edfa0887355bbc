"""Connection limits for ``goml serve``'s HTTP server: read timeouts and a connection cap.

uvicorn's h11 protocol has a keep-alive timeout but no timeout for reading a request: a client
that sends its headers one byte at a time (slowloris) holds a connection, and a file
descriptor, for ever, and a few hundred of them make every health probe fail. This module
subclasses that protocol:

- **header timeout**: from the moment a connection waits for a request (when it opens, and
  after each response) until the request's headers are complete;
- **body timeout**: from the end of the headers until the whole body has arrived;
- **connection cap**: past ``max_connections`` open connections, a new one closes the
  connection that has waited longest for its headers (so a probe that sends its request at
  once gets in); when every connection is busy with a request, the new one is closed instead.

A connection that runs out of time is closed; a request still reading its body then sees the
client disconnect. asyncio only: uvicorn's protocols are asyncio protocols (a leaf module).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeAlias

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._validate import int_at_least, is_number
from ..errors import ConfigError

if TYPE_CHECKING:
    # Types only, in this asyncio-only leaf module: uvicorn's protocols are asyncio protocols.
    import asyncio  # noqa: TID251

__all__ = [
    "ConnectionGuard",
    "ConnectionLimits",
    "GuardedH11Protocol",
    "accept_backlog",
    "default_max_connections",
]

logger = logging.getLogger("goml_async.server")

Phase: TypeAlias = Literal["headers", "body"]

#: File descriptors kept free for everything else the server opens (model files, pipes,
#: connections to llama-server) when the cap is derived from the descriptor limit.
_CAP_CEILING: Final = 1024


def _fd_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def default_max_connections() -> int:
    """Half the process's file-descriptor limit, between 16 and 1024 (1024 without a limit)."""
    limit = _fd_limit()
    return _CAP_CEILING if limit is None else max(16, min(_CAP_CEILING, limit // 2))


def accept_backlog(max_connections: int) -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go.

    A quarter of the descriptors the cap leaves free (8 to 2048): a burst of connections is
    accepted in batches that fit, and the cap closes the extra ones before the next batch, so
    accepting never runs out of descriptors.
    """
    limit = _fd_limit()
    if limit is None:
        return 2048
    return max(8, min(2048, (limit - max_connections) // 4))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how many connections may be open.

    Attributes:
        header_timeout: seconds from the moment a connection waits for a request until its
            headers are complete.
        body_timeout: seconds from the end of the headers until the whole body has arrived.
        max_connections: the most connections open at once; 0 picks
            :func:`default_max_connections`.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 0

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            # Not seconds(): an infinite timeout is allowed here (no limit on slow clients).
            if not is_number(value) or not value > 0:
                raise ConfigError(name, f"must be > 0 seconds, got {value!r}")
            object.__setattr__(self, name, float(value))
        if int_at_least("max_connections", self.max_connections, 0) == 0:
            object.__setattr__(self, "max_connections", default_max_connections())


class ConnectionGuard:
    """The open connections of one server, the limits they live under, and the counters.

    Attributes:
        limits: the timeouts and the cap.
        header_timeouts: connections closed because their headers took too long.
        body_timeouts: connections closed because their body took too long.
        shed: connections closed to make room for a new one.
        refused: new connections closed because every open one was busy with a request.
    """

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self._open: dict[GuardedH11Protocol, None] = {}  # in the order they opened
        self.header_timeouts = 0
        self.body_timeouts = 0
        self.shed = 0
        self.refused = 0

    @property
    def open_connections(self) -> int:
        """Connections open now (those being closed excluded)."""
        return len(self._open)

    def protocol_class(self) -> type[asyncio.Protocol]:
        """uvicorn's ``http`` protocol class for a server under this guard."""
        guard = self

        class BoundH11Protocol(GuardedH11Protocol):
            pass

        BoundH11Protocol.guard = guard
        return BoundH11Protocol

    def snapshot(self) -> dict[str, Any]:
        """The limits and counters, for ``/healthz``."""
        return {
            "open": self.open_connections,
            "max_connections": self.limits.max_connections,
            "header_timeout_seconds": self.limits.header_timeout,
            "body_timeout_seconds": self.limits.body_timeout,
            "header_timeouts_total": self.header_timeouts,
            "body_timeouts_total": self.body_timeouts,
            "shed_total": self.shed,
            "refused_total": self.refused,
        }

    def opened(self, protocol: GuardedH11Protocol) -> None:
        """Count a new connection; past the cap, close the one waiting longest for headers."""
        self._open[protocol] = None
        if len(self._open) <= self.limits.max_connections:
            return
        waiting = [p for p in self._open if p is not protocol and p.waiting_since is not None]
        if waiting:
            self.shed += 1
            self.close(min(waiting, key=lambda p: p.waiting_since or 0.0))
        else:
            self.refused += 1
            self.close(protocol)

    def timed_out(self, protocol: GuardedH11Protocol, phase: Phase) -> None:
        """Close a connection whose request took longer than its phase allows."""
        if phase == "headers":
            self.header_timeouts += 1
        else:
            self.body_timeouts += 1
        logger.debug("closing %s: no complete request %s in time", protocol.client, phase)
        self.close(protocol)

    def close(self, protocol: GuardedH11Protocol) -> None:
        """Close a connection now; it no longer counts against the cap."""
        self._open.pop(protocol, None)
        protocol.transport.close()

    def closed(self, protocol: GuardedH11Protocol) -> None:
        """Forget a connection that is gone."""
        self._open.pop(protocol, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a read timer per request phase, under a ConnectionGuard.

    Use :meth:`ConnectionGuard.protocol_class`, which binds ``guard``.
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._phase_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting_since(self) -> float | None:
        """When this connection began to wait for a request's headers (loop time), or None
        while it is busy with a request."""
        return self._phase_since if self._phase == "headers" else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()
        self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._phase = None
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()  # the next request's headers are due now

    def _watch(self) -> None:
        """Start the timer of the phase the connection is in, when that phase changed."""
        if self.transport.is_closing():
            self._stop_timer()
            return
        state = self.conn.their_state
        phase: Phase | None = (
            "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        )
        if phase == self._phase:
            return
        self._stop_timer()
        self._phase = phase
        if phase is None:
            return
        limits = self.guard.limits
        timeout = limits.header_timeout if phase == "headers" else limits.body_timeout
        self._phase_since = self.loop.time()
        self._timer = self.loop.call_later(timeout, self._expired, phase)

    def _expired(self, phase: Phase) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.guard.timed_out(self, phase)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
