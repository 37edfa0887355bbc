"""The MLX worker: one long-lived thread per model, and the hand-over of tokens to the loop.

MLX streams are bound to the thread that created them, so every call on a model (load,
generate, classify, batch) runs on that model's own thread, one at a time. Tokens cross to the
event loop through a memory object stream with no buffer: the worker blocks on each token until
the consumer has taken it, so nothing is generated ahead of the reader, and a consumer that
leaves makes the worker's next hand-over fail, which stops generation at the next token.
Long jobs (a prefill, a batch) check between their steps whether their caller left, so one that
is cancelled frees the worker within a step.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from ..errors import GenerationError

__all__ = ["Consumer", "ConsumerGone", "MLXWorker"]

T = TypeVar("T")


class ConsumerGone(Exception):
    """The reader of a stream left (or its event loop ended): stop producing."""


class Consumer(Generic[T]):
    """The worker's end of a zero-buffer stream to one async reader."""

    def __init__(
        self, send: MemoryObjectSendStream[T], token: anyio.lowlevel.EventLoopToken
    ) -> None:
        self._send = send
        self._token = token
        self._demand = threading.Semaphore(0)
        self.cancelled = threading.Event()

    def ask(self) -> None:
        """The reader wants one more item (called on the event loop, before each receive)."""
        self._demand.release()

    def wait_for_demand(self) -> None:
        """Block until the reader asks for the next item, so nothing is produced ahead of it.

        Raises:
            ConsumerGone: the reader left while the worker was waiting.
        """
        while not self._demand.acquire(timeout=0.05):
            if self.cancelled.is_set():
                raise ConsumerGone
        if self.cancelled.is_set():  # woken by close(), not by a request: compute nothing
            raise ConsumerGone

    def close(self) -> None:
        """Close the send end. Call it on the event loop, once the reader is done."""
        self.cancelled.set()
        self._send.close()
        self._demand.release()  # a worker waiting for demand wakes up and sees it is gone

    def put(self, item: T) -> None:
        """Hand one item over; returns once the reader has taken it.

        Raises:
            ConsumerGone: the reader closed its end, or its event loop is gone.
        """
        if self.cancelled.is_set():
            raise ConsumerGone
        try:
            anyio.from_thread.run(self._send.send, item, token=self._token)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConsumerGone from exc
        except RuntimeError as exc:  # the event loop has finished
            raise ConsumerGone from exc


class MLXWorker:
    """A daemon thread that runs one job at a time, in submission order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The worker thread (MLX state lives on it)."""
        return self._thread

    def _main(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue a job that reports its own outcome."""
        if self._closed:
            raise GenerationError("the MLX model is closed")
        self._jobs.put(job)

    async def call(self, func: Callable[[], T], *, stop: threading.Event | None = None) -> T:
        """Run ``func`` on the worker thread and await its result (or exception).

        A job cannot be interrupted half way through an MLX call, so the caller always waits
        for ``func`` to return. Without ``stop`` a cancelled caller waits for all of it; with
        ``stop``, cancelling the caller sets the event, which ``func`` checks between steps
        (raising :class:`ConsumerGone`), so the worker is free again within one step.
        """
        done = anyio.Event()
        token = anyio.lowlevel.current_token()
        outcome: list[Any] = []

        def job() -> None:
            try:
                outcome.append((True, func()))
            except BaseException as exc:  # handed to the awaiting task, raised there
                outcome.append((False, exc))
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                anyio.from_thread.run_sync(done.set, token=token)

        self.submit(job)
        if stop is None:
            with anyio.CancelScope(shield=True):
                await done.wait()
        else:
            try:
                await done.wait()
            except anyio.get_cancelled_exc_class():
                stop.set()
                with anyio.CancelScope(shield=True):
                    await done.wait()
                raise
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def stream(self, produce: Callable[[Consumer[Any]], None]) -> Any:
        """Start ``produce(consumer)`` on the worker; return the receive end and the consumer.

        ``produce`` must end by putting a final item the reader recognises (the reader stops
        there), so the worker never needs the event loop once the reader is done with it.
        """
        send, receive = anyio.create_memory_object_stream[Any](0)
        consumer: Consumer[Any] = Consumer(send, anyio.lowlevel.current_token())

        def job() -> None:
            try:
                produce(consumer)
            except ConsumerGone:
                pass
            except BaseException as exc:  # handed to the reader, never lost
                with contextlib.suppress(ConsumerGone):
                    consumer.put(exc)

        self.submit(job)
        return receive, consumer

    def close(self) -> None:
        """Stop the thread after the jobs already queued. Idempotent."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)

    async def aclose(self) -> None:
        """Stop the thread and wait for it to finish its current job."""
        self.close()
        await anyio.to_thread.run_sync(self._thread.join, 30.0, abandon_on_cancel=True)
