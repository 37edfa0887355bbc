"""uvicorn, set up for ``goml serve``: the app on sockets the caller bound, signals left alone.

uvicorn's own signal handling re-raises SIGTERM/SIGINT once it has shut down, which would end
the process with the signal instead of exit status 0; ``goml serve`` handles the signals itself
and tells the server when to stop (``should_exit``, then ``force_exit``). Connections are read
under the header/body timeouts and the connection cap of :mod:`goml_async.server._connections`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn

from ._connections import ConnectionGuard, ConnectionLimits, accept_backlog
from .app import ServerApp

__all__ = ["QuietServer", "make_server"]


class QuietServer(uvicorn.Server):
    """uvicorn's Server without its signal handlers (the caller owns SIGINT and SIGTERM).

    ``on_started`` is called once the server accepts connections.
    """

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def make_server(
    app: ServerApp,
    *,
    grace: float,
    log_level: str = "warning",
    access_log: bool = False,
    on_started: Callable[[], None] | None = None,
    limits: ConnectionLimits | None = None,
) -> QuietServer:
    """A uvicorn server for ``app``: h11, no lifespan, no websockets, no proxy headers.

    ``grace`` is uvicorn's own last-resort deadline for connections at shutdown; the app's
    :meth:`~goml_async.server.app.ServerApp.drain` normally ends them first. ``access_log``
    logs one line per request (logger ``uvicorn.access``) whatever ``log_level`` is.
    ``limits`` are the connection limits (default: :class:`ConnectionLimits`); the app's
    ``/healthz`` reports them under ``connections``.
    """
    guard = ConnectionGuard(limits)
    config = uvicorn.Config(
        app,
        lifespan="off",
        http=guard.protocol_class(),
        ws="none",
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=False,
        timeout_graceful_shutdown=int(grace) + 5,
        backlog=accept_backlog(guard.limits.max_connections),
    )
    if access_log:
        # uvicorn logs access lines at INFO on a logger it has just set to log_level: asked
        # for, they are printed at any level (and propagate to the root handler).
        access = logging.getLogger("uvicorn.access")
        access.setLevel(logging.INFO)
        access.propagate = True
    app.connection_stats = guard.snapshot
    return QuietServer(config, on_started)
