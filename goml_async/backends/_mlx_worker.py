"""The MLX worker: one thread per model, and the hand-over of tokens to the loop.

MLX streams are bound to the thread that created them, so every MLX call of a model (load,
generate, classify, batch) runs on that model's own thread (which, once the model is closed,
waits for the next model instead of ending: see :class:`_Carrier`). The thread runs queued jobs (a
load, a submission to the scheduler, a wake-up) and, between jobs, one step of the model's
scheduler at a time while it has work that can go on (see ``_mlx_scheduler``).

Tokens cross to the event loop through an :class:`Outlet`: a thread-safe queue per stream that
the worker appends to without waiting for the reader, and a non-blocking wake-up of the
reader's loop (``call_soon_threadsafe`` on asyncio, ``run_sync_soon`` on trio). The worker never
blocks on a reader, so a slow reader cannot hold up the other streams; how far a sequence may
run ahead of its reader is the scheduler's decision, made from :meth:`Outlet.asked` and
:meth:`Outlet.backlog`.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol, TypeVar

import anyio
import anyio.lowlevel

from ..errors import GenerationError

__all__ = ["ConsumerGone", "MLXWorker", "Outlet", "Stepper", "notify_all"]

T = TypeVar("T")
LoopCaller = Callable[[Callable[[], None]], object]


class ConsumerGone(Exception):
    """The reader of a stream left (or its event loop ended): stop producing."""


def _loop_caller() -> LoopCaller:
    """A thread-safe, non-blocking "run this soon on the current event loop".

    anyio's ``from_thread.run_sync`` waits for the loop to run the call; the worker must not
    wait on any one reader's loop. The loop library is found among the imported modules (it
    is imported, since it is running), so this module imports neither.
    """
    trio = sys.modules.get("trio")
    if trio is not None:  # outside trio.run, current_trio_token raises RuntimeError
        with contextlib.suppress(RuntimeError):
            return trio.lowlevel.current_trio_token().run_sync_soon  # type: ignore[no-any-return]
    loop = sys.modules["asyncio"].get_running_loop()
    return loop.call_soon_threadsafe  # type: ignore[no-any-return]


class Outlet:
    """One reader's stream of items from the worker; created on the reader's event loop.

    The reader calls :meth:`get` for each item; the worker calls :meth:`put`, which never
    waits. ``asked`` counts the items the reader has asked for, ``taken`` those it got.
    """

    def __init__(self, wake_worker: Callable[[], None]) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._call = _loop_caller()
        self._event: anyio.Event | None = None
        self._wake_worker = wake_worker
        self._asked = 0
        self._taken = 0
        self._put = 0
        self.cancelled = threading.Event()
        #: Whether the reader wakes the worker when it finds nothing to take (the worker
        #: clears it while it produces ahead anyway, to spare a wake-up per token).
        self.wake_on_ask = True

    # -- the reader's side (event loop) -----------------------------------------------------------

    async def get(self) -> Any:
        """The next item, once the worker has put it."""
        self._asked += 1
        if not self._items:
            if self.wake_on_ask:
                self._wake_worker()
            while not self._items:
                self._event = anyio.Event()
                await self._event.wait()
        self._taken += 1
        return self._items.popleft()

    def close(self) -> None:
        """The reader is done: the worker drops the sequence at its next step."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            self._wake_worker()

    def _wake(self) -> None:  # runs on the reader's loop
        if self._event is not None:
            self._event.set()

    # -- the worker's side ------------------------------------------------------------------------

    def asked(self) -> bool:
        """The reader is waiting for an item that has not been put yet."""
        return self._asked > self._put

    def backlog(self) -> int:
        """Items put that the reader has not taken yet."""
        return self._put - self._taken

    def put(self, item: Any) -> None:
        """Queue one item for the reader; call :func:`notify_all` after a step's puts."""
        self._put += 1
        self._items.append(item)

    def notify(self) -> None:
        """Wake the reader (it sees every item put so far)."""
        with contextlib.suppress(RuntimeError):  # the reader's loop is gone: nobody to wake
            self._call(self._wake)


def notify_all(outlets: Iterable[Outlet]) -> None:
    """Wake the readers of ``outlets`` with one call per event loop."""
    by_loop: dict[Any, list[Outlet]] = {}
    for outlet in outlets:
        by_loop.setdefault(outlet._call, []).append(outlet)
    for call, group in by_loop.items():
        if len(group) == 1:
            group[0].notify()
            continue

        def wake(group: list[Outlet] = group) -> None:
            for outlet in group:
                outlet._wake()

        with contextlib.suppress(RuntimeError):
            call(wake)


class Stepper(Protocol):
    """What the worker runs between jobs (the model's scheduler)."""

    def ready(self) -> bool:
        """There is work that can go on now."""
        ...

    def step(self) -> None:
        """Do one unit of it (a prefill chunk, a decoding step)."""
        ...

    def shutdown(self) -> None:
        """The worker is stopping: release everything still held."""
        ...


def _nothing() -> None:
    """A job that only wakes the worker up."""


class _Carrier:
    """A daemon thread that runs one worker's loop after another, for the whole process.

    MLX keeps per-thread state (its compile cache among it) that holds Python objects, and
    frees it when the thread ends. A thread that ended as the interpreter shut down would free
    it after Python is gone, and the process would abort ("terminate called without an active
    exception"). So a worker's thread never ends: when its model closes it goes back to the
    idle carriers and the next model's worker takes it; at exit the idle ones are simply
    stopped with the process, as daemon threads are.
    """

    _idle: ClassVar[list[_Carrier]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[MLXWorker] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="goml-mlx-idle", daemon=True)
        self.thread.start()

    @classmethod
    def take(cls, worker: MLXWorker, name: str) -> threading.Thread:
        """Run ``worker``'s loop on an idle carrier (or a new one); return its thread."""
        with cls._lock:
            carrier = cls._idle.pop() if cls._idle else None
        if carrier is None:
            carrier = cls()
        carrier.thread.name = name
        carrier._inbox.put(worker)
        return carrier.thread

    def _run(self) -> None:
        while True:
            worker = self._inbox.get()
            try:
                worker._main()
            finally:
                self.thread.name = "goml-mlx-idle"
                with self._lock:
                    self._idle.append(self)
                worker._stopped.set()
                del worker  # an idle carrier keeps nothing of the model it served


class MLXWorker:
    """Runs jobs in submission order, and its stepper in between, on a thread of its own."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._closed = False
        self._stopped = threading.Event()
        self.stepper: Stepper | None = None
        self._thread = _Carrier.take(self, name)

    @property
    def thread(self) -> threading.Thread:
        """The thread every job of this worker runs on (MLX state lives on it)."""
        return self._thread

    @property
    def stopped(self) -> bool:
        """Its loop has ended (after :meth:`close`); its thread serves no model of it now."""
        return self._stopped.is_set()

    def _main(self) -> None:
        try:
            while True:
                stepper = self.stepper
                busy = stepper is not None and stepper.ready()
                try:
                    job = self._jobs.get_nowait() if busy else self._jobs.get()
                except queue.Empty:
                    if stepper is not None:
                        stepper.step()
                    continue
                if job is None:
                    return
                job()
        finally:
            if self.stepper is not None:
                self.stepper.shutdown()
                self.stepper = None

    def submit(self, job: Callable[[], None]) -> None:
        """Queue a job that reports its own outcome."""
        if self._closed:
            raise GenerationError("the MLX model is closed")
        self._jobs.put(job)

    def wake(self) -> None:
        """Make the worker look at its stepper again (cheap; safe from any thread)."""
        self._jobs.put(_nothing)

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

    def close(self) -> None:
        """Stop the loop after the jobs already queued. Idempotent."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until its loop has ended (True), or ``timeout`` seconds have passed."""
        return self._stopped.wait(timeout)

    async def aclose(self) -> None:
        """Stop the loop and wait for it to finish its current job."""
        self.close()
        await anyio.to_thread.run_sync(self._stopped.wait, 30.0, abandon_on_cancel=True)
