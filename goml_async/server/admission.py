"""Admission to the server's places: a concurrency cap in front of a bounded FIFO queue.

A request takes one of ``limit`` places at once when one is free; otherwise it waits in line,
first come first served, for up to ``timeout`` seconds. A full line (``max_queue`` waiting) or
a wait that runs out is refused, and the server answers 429 with ``Retry-After``. A place is
handed straight from the request that leaves to the first in line, so nobody can overtake the
queue between the two. A waiter that is cancelled (its client hung up) leaves the line and
passes on a place it was handed at that very moment.

Only anyio is needed here, so this runs under asyncio and trio.

Example:
    >>> import anyio
    >>> admission = Admission(1, max_queue=4, timeout=None)
    >>> async def one():
    ...     async with admission.place():
    ...         return admission.active
    >>> anyio.run(one)
    1
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

import anyio

from .._validate import int_at_least, seconds

__all__ = ["Admission", "QueueClosed", "QueueFull", "QueueTimeout"]


class QueueFull(Exception):
    """Every place is taken and the line is full."""


class QueueTimeout(Exception):
    """The request waited in line longer than the queue timeout."""


class QueueClosed(Exception):
    """The server is shutting down: nobody is admitted any more."""


class _Waiter:
    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.outcome: Literal["waiting", "admitted", "closed"] = "waiting"


class Admission:
    """At most ``limit`` holders at once, and a FIFO line of at most ``max_queue`` waiters.

    Args:
        limit: places (requests served at once), >= 1.
        max_queue: how many may wait for a place (0: nobody waits, a full house is refused).
        timeout: the longest wait in seconds; None waits as long as it takes.

    Attributes:
        peak_active: the most holders there were at once.
        peak_waiting: the longest the line has been.
        waited: how many were admitted after waiting in line.
    """

    __slots__ = (
        "_active",
        "_closed",
        "_limit",
        "_max_queue",
        "_timeout",
        "_waiters",
        "peak_active",
        "peak_waiting",
        "waited",
    )

    def __init__(self, limit: int, *, max_queue: int, timeout: float | None) -> None:
        self._limit = int_at_least("limit", limit, 1)
        self._max_queue = int_at_least("max_queue", max_queue, 0)
        self._timeout = seconds("timeout", timeout, allow_none=True)
        self._active = 0
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self.peak_active = 0
        self.peak_waiting = 0
        self.waited = 0

    @property
    def limit(self) -> int:
        """How many may hold a place at once."""
        return self._limit

    @property
    def active(self) -> int:
        """How many hold a place now."""
        return self._active

    @property
    def waiting(self) -> int:
        """How many wait in line now."""
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold a place for the ``async with`` block (:meth:`enter`, then :meth:`leave`)."""
        await self.enter()
        try:
            yield
        finally:
            self.leave()

    async def enter(self) -> None:
        """Take a place, waiting in line for one if none is free.

        Raises:
            QueueFull: no place is free and ``max_queue`` requests are already waiting.
            QueueTimeout: no place came free within the timeout.
            QueueClosed: :meth:`close` was called.
        """
        if self._closed:
            raise QueueClosed
        if self._active < self._limit:
            # No await between the check and the count: two requests never take one place.
            self._take()
            return
        if len(self._waiters) >= self._max_queue:
            raise QueueFull
        waiter = _Waiter()
        self._waiters.append(waiter)
        self.peak_waiting = max(self.peak_waiting, len(self._waiters))
        try:
            with anyio.move_on_after(self._timeout):
                await waiter.event.wait()
        except BaseException:  # cancelled: the client went away while it waited
            self._abandon(waiter)
            raise
        if waiter.outcome == "admitted":  # also when the timeout fired at the same moment
            self.waited += 1
            return
        if waiter.outcome == "closed":
            raise QueueClosed
        self._abandon(waiter)
        raise QueueTimeout

    def leave(self) -> None:
        """Give a place back: to the first in line if anyone waits, else to the pool."""
        if self._active <= 0:
            raise RuntimeError("Admission.leave() without a matching enter()")
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.outcome = "admitted"  # the place changes hands; the count stays
            waiter.event.set()
            return
        self._active -= 1

    def close(self) -> None:
        """Refuse everyone from now on; those waiting get :class:`QueueClosed`."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.outcome = "closed"
            waiter.event.set()

    def _take(self) -> None:
        self._active += 1
        self.peak_active = max(self.peak_active, self._active)

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.outcome == "admitted":
            self.leave()  # handed a place as it gave up: pass it on to the next in line
        elif waiter.outcome == "waiting":
            self._waiters.remove(waiter)
