"""One httpx client per event loop, closed when that loop ends (or at ``aclose``).

An ``httpx.AsyncClient`` and its connections belong to the event loop that opened them, so a
model used from several loops (the blocking facade's thread, repeated ``asyncio.run`` calls,
notebooks) needs a client per loop. Each client is paired with a *keeper*: an async generator,
started in its loop, whose ``finally`` closes the client. Event loops finalise the async
generators still alive when they end (``asyncio.run`` through ``shutdown_asyncgens``,
``trio.run`` before it returns), so every loop closes its own client, in that loop, without the
model having to know when the loop ends. Nothing else holds a client: a loop that is gone
leaves no socket behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable

import anyio
import httpx
from anyio.lowlevel import RunVar

__all__ = ["LoopClients"]


async def _close_when_loop_ends(client: httpx.AsyncClient) -> AsyncGenerator[None]:
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


class _Entry:
    __slots__ = ("client", "keeper")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.keeper = _close_when_loop_ends(client)
        # Start the keeper now, synchronously: its body runs straight to ``yield`` (no await
        # before it), and the first ``__anext__`` is what registers it with the running loop's
        # async-generator hooks, so the loop closes it (and the client) when it ends.
        with contextlib.suppress(StopIteration):
            self.keeper.__anext__().send(None)


class LoopClients:
    """Lazily opened clients, one per event loop.

    Args:
        factory: builds a new client (called at most once per event loop).
        name: a unique name for the per-loop variable.
    """

    def __init__(self, factory: Callable[[], httpx.AsyncClient], name: str) -> None:
        self._factory = factory
        self._var: RunVar[_Entry | None] = RunVar(name, None)
        #: How many clients were opened, over every loop (for tests and diagnostics).
        self.opened = 0

    def get(self) -> httpx.AsyncClient:
        """The current event loop's client, opened on first use. Call it from async code."""
        entry = self._var.get()
        if entry is not None:
            return entry.client
        entry = _Entry(self._factory())
        self._var.set(entry)
        self.opened += 1
        return entry.client

    async def aclose_current(self) -> None:
        """Close the current loop's client now (the others close when their loops end)."""
        entry = self._var.get()
        if entry is not None:
            self._var.set(None)
            await entry.keeper.aclose()
