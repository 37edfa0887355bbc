"""uvicorn, set up for ``goml serve``: the app on sockets the caller bound, signals left alone.

uvicorn's own signal handling re-raises SIGTERM/SIGINT once it has shut down, which would end
the process with the signal instead of exit status 0; ``goml serve`` handles the signals itself
and tells the server when to stop (``should_exit``, then ``force_exit``).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn

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
) -> QuietServer:
    """A uvicorn server for ``app``: h11, no lifespan, no websockets, no proxy headers.

    ``grace`` is uvicorn's own last-resort deadline for connections at shutdown; the app's
    :meth:`~goml_async.server.app.ServerApp.drain` normally ends them first.
    """
    config = uvicorn.Config(
        app,
        lifespan="off",
        http="h11",
        ws="none",
        log_config=None,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=False,
        timeout_graceful_shutdown=int(grace) + 5,
    )
    return QuietServer(config, on_started)
