"""The blocking facade's stream: tokens handed to the calling thread in batches.

A blocking stream runs on the facade's background loop while the caller iterates in its own
thread. One round trip between the two threads costs tens of microseconds, far more than a token
of a fast source, so each round trip hands over every token that is ready rather than one:

- One task (:meth:`_Pump.run`) owns the stream for its whole life. Every step of the stream runs
  in it and it closes the stream, because backends hold limiters, responses and cancel scopes
  across tokens.
- Nothing is generated ahead of demand for a source that waits (a worker thread, a socket, a
  sleep): the first step of each round trip is the one the caller asked for, and a further step
  is only tried right after a step that completed without waiting. When such a step does wait,
  the tokens collected so far go to the caller at once and the step finishes in the same task;
  its token opens the next batch. So a source whose every token waits never has a step started
  ahead of the caller, and a bursty one (several tokens per HTTP chunk) at most its next read.
- Whether a step completes without waiting is seen by driving its coroutine by hand: ``send``
  raising StopIteration means it completed. A step that waits is awaited to its end through
  :func:`_finish`, which passes what the step yields to the event loop and the loop's answers,
  cancellation included, back to the step.
- Batches start at one token and double on each round trip up to :data:`MAX_BATCH`, so a
  caller that reads one token and leaves has made the model generate one token, and the first
  token is not held back while a long burst is collected.

The caller asks through ``anyio.from_thread.run_sync`` (a call on the loop thread, no new task)
and waits on a ``concurrent.futures.Future`` that the pump resolves without awaiting anything.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from concurrent.futures import Future
from typing import Any, TypeAlias, TypeVar

import anyio
import anyio.from_thread
from anyio.from_thread import BlockingPortal
from anyio.lowlevel import EventLoopToken

from .stream import TokenStream
from .types import Token

__all__ = ["MAX_BATCH", "iterate"]

T = TypeVar("T")

#: The most tokens handed over in one round trip.
MAX_BATCH = 256

#: One hand-over: the tokens, and whether the stream has ended after them.
Batch: TypeAlias = tuple[list[Token], bool]


@types.coroutine
def _finish(step: Coroutine[Any, Any, T], suspended: Any) -> Generator[Any, Any, T]:
    """Await the rest of ``step``, a coroutine that has just yielded ``suspended``.

    What the step yields goes to the event loop as it is, and what the loop sends or throws
    (a cancellation) goes back into the step, so the step waits and is cancelled exactly as if
    it had been awaited from the start. Closing this coroutine closes the step.
    """
    while True:
        try:
            answer = yield suspended
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:
            try:
                suspended = step.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                suspended = step.send(answer)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class _Pump:
    """The loop-side owner of one blocking stream.

    :meth:`ask` and :meth:`stop` are called on the loop thread by the blocking side; the stream
    is only ever stepped and closed by :meth:`run`.
    """

    __slots__ = ("_asked", "_reply", "_scope", "_stopped", "_stream", "_wake")

    def __init__(self, stream: TokenStream) -> None:
        self._stream = stream
        self._asked: Future[Batch] | None = None  # a request the pump has not taken yet
        self._reply: Future[Batch] | None = None  # the request being filled
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped = False

    def ask(self, reply: Future[Batch]) -> None:
        """The caller wants the next tokens, in ``reply``."""
        self._asked = reply
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        """The caller left early: stop waiting (also for a step started ahead of it)."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Serve requests until the stream ends or the caller leaves; close it either way."""
        try:
            async with self._stream:
                with anyio.CancelScope() as self._scope:
                    if not self._stopped:
                        await self._serve()
        finally:
            # Ended while the caller waits (cancelled from outside, or a BaseException from the
            # source): release the caller, who then reads this task's outcome.
            self._hand([], ended=True)

    def _hand(self, tokens: list[Token], *, ended: bool) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            reply.set_result((tokens, ended))

    async def _demand(self) -> None:
        while self._asked is None:
            self._wake = anyio.Event()
            await self._wake.wait()
        self._reply, self._asked, self._wake = self._asked, None, None

    async def _serve(self) -> None:
        next_step = self._stream.__anext__
        batch: list[Token] = []
        limit = 1
        while True:
            if self._reply is None:
                await self._demand()
            step = next_step()
            try:
                try:
                    suspended = step.send(None)
                except StopIteration as done:
                    token, ready = done.value, True
                else:
                    if batch:
                        # A step ahead of the caller waits: what is ready goes now, and this
                        # step's token opens the next batch.
                        self._hand(batch, ended=False)
                        batch = []
                    token, ready = await _finish(step, suspended), False
            except Exception as exc:  # StopAsyncIteration: the end; anything else: its error
                if self._reply is None:  # found by a step ahead of the caller: when asked
                    await self._demand()
                self._hand(batch, ended=True)
                if isinstance(exc, StopAsyncIteration):
                    return
                raise
            batch.append(token)
            if ready and len(batch) < limit:
                continue
            if self._reply is None:  # the token of a step that went ahead of the caller
                await self._demand()
            self._hand(batch, ended=False)
            batch = []
            limit = min(2 * limit, MAX_BATCH)


def iterate(
    portal: BlockingPortal, token: EventLoopToken, stream: TokenStream
) -> Generator[Token, None, None]:
    """Iterate over ``stream`` from a thread other than the loop's (``portal``'s, ``token``'s).

    Leaving the loop early closes the stream in its task; an exception while waiting (Ctrl-C's
    KeyboardInterrupt) cancels that task, which stops the generation; the stream's error is
    raised after the tokens that came before it.
    """
    pump = _Pump(stream)
    task = portal.start_task_soon(pump.run)
    interrupted = True
    ended = False
    try:
        while not ended:
            reply: Future[Batch] = Future()
            anyio.from_thread.run_sync(pump.ask, reply, token=token)
            tokens, ended = reply.result()
            yield from tokens
        interrupted = False
    except GeneratorExit:  # the caller left the loop early, between two tokens
        interrupted = False
        raise
    finally:
        if interrupted:
            # e.g. Ctrl-C while tokens were being computed: cancel the pump, whose shielded
            # cleanup still closes the stream (and so stops the generation).
            task.cancel()
        else:
            if not ended:
                anyio.from_thread.run_sync(pump.stop, token=token)
            task.result()  # waits for the stream to be closed; re-raises its error, if any
