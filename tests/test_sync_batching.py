"""The blocking stream hands over every ready token per round trip, from one owning task."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from goml_async import GenerationError, GenerationTimeout, GomlError, StreamContext, Token
from goml_async import sync as goml_sync
from goml_async._sync_stream import MAX_BATCH, _finish
from goml_async.model import BaseTextModel
from goml_async.testing import FakeOpenAIServer, Script, ScriptedModel


class Recorder:
    """What a token source saw: its steps, the task of each, and how far the caller had read."""

    def __init__(self) -> None:
        self.steps = 0  # __anext__ calls the source has been asked for
        self.consumed = 0  # tokens the caller has taken (set by the test's loop)
        self.consumed_at: list[int] = []  # self.consumed when each token was produced
        self.tasks: set[int] = set()
        self.closed_in: int | None = None
        self.cancelled = False

    def step(self) -> None:
        self.steps += 1
        self.tasks.add(anyio.get_current_task().id)

    def produced(self, index: int) -> Token:
        self.consumed_at.append(self.consumed)
        return Token(id=index, text=f"t{index}")

    def closed(self) -> None:
        self.closed_in = anyio.get_current_task().id


Source = Callable[[Recorder], AsyncIterator[Token]]


class SourceModel(BaseTextModel):
    """A model whose every stream is ``source``, recording into ``recorder``."""

    def __init__(self, source: Source) -> None:
        super().__init__(model_type="recorded")
        self.recorder = Recorder()
        self._source = source

    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        self.recorder = Recorder()
        return self._source(self.recorder)


def ready_source(count: int) -> Source:
    """Every token is ready at once: an in-memory source."""

    async def source(recorder: Recorder) -> AsyncIterator[Token]:
        try:
            for index in range(count):
                recorder.step()
                yield recorder.produced(index)
            recorder.step()  # the call that finds the end
        finally:
            recorder.closed()

    return source


def waiting_source(count: int, wait: Callable[[], Any]) -> Source:
    """Every token waits before it is ready (a worker thread, a sleep, a socket)."""

    async def source(recorder: Recorder) -> AsyncIterator[Token]:
        try:
            for index in range(count):
                recorder.step()
                await wait()
                yield recorder.produced(index)
        finally:
            recorder.closed()

    return source


def bursty_source(chunks: int, size: int, *, last_read: Callable[[], Any] | None = None) -> Source:
    """``size`` tokens per read, as over HTTP with several events per chunk."""

    async def source(recorder: Recorder) -> AsyncIterator[Token]:
        try:
            for chunk in range(chunks):
                for offset in range(size):
                    recorder.step()
                    if offset == 0:
                        read = last_read if last_read and chunk == chunks - 1 else _checkpoint
                        try:
                            await read()
                        except anyio.get_cancelled_exc_class():
                            recorder.cancelled = True
                            raise
                    yield recorder.produced(chunk * size + offset)
        finally:
            recorder.closed()

    return source


async def _checkpoint() -> None:
    await anyio.lowlevel.checkpoint()


async def _in_thread() -> None:
    await anyio.to_thread.run_sync(lambda: None)


def consume(model: SourceModel, *, leave_after: int | None = None) -> list[str]:
    """Read a blocking stream of ``model`` as a script would, keeping the recorder informed."""
    texts: list[str] = []
    tokens = goml_sync.BlockingModel(model).stream("x", max_tokens=0)
    for token in tokens:
        texts.append(token.text)
        model.recorder.consumed += 1
        if leave_after is not None and len(texts) == leave_after:
            break
    tokens.close()  # what leaving the loop over a dropped generator does
    return texts


def batch_sizes(consumed_at: list[int]) -> list[int]:
    """Tokens produced while the caller stood at the same place: one hand-over each."""
    sizes: list[int] = []
    for index, mark in enumerate(consumed_at):
        if index and mark == consumed_at[index - 1]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


def test_ready_tokens_go_over_in_growing_batches() -> None:
    model = SourceModel(ready_source(2000))
    assert consume(model) == [f"t{index}" for index in range(2000)]
    sizes = batch_sizes(model.recorder.consumed_at)
    # 1, 2, 4, ... up to the cap, then full batches: a handful of round trips, not 2000.
    ramp = [2**power for power in range(MAX_BATCH.bit_length()) if 2**power <= MAX_BATCH]
    assert sizes[: len(ramp)] == ramp
    assert all(size == MAX_BATCH for size in sizes[len(ramp) : -1])
    assert sum(sizes) == 2000 and len(sizes) <= len(ramp) + 2000 // MAX_BATCH + 1


def test_one_task_steps_and_closes_the_stream() -> None:
    for model, leave_after in (
        (SourceModel(ready_source(1000)), None),
        (SourceModel(ready_source(1000)), 300),
        (SourceModel(bursty_source(50, 4)), None),
        (SourceModel(bursty_source(50, 4)), 17),
        (SourceModel(waiting_source(20, _checkpoint)), 5),
    ):
        consume(model, leave_after=leave_after)
        recorder = model.recorder
        assert len(recorder.tasks) == 1, recorder.tasks
        assert recorder.closed_in in recorder.tasks  # closed by its owner, before close() returned


@pytest.mark.parametrize("wait", [_checkpoint, _in_thread], ids=["sleep", "worker thread"])
def test_nothing_is_generated_ahead_of_a_source_that_waits(wait: Callable[[], Any]) -> None:
    model = SourceModel(waiting_source(30, wait))
    tokens = goml_sync.BlockingModel(model).stream("x", max_tokens=0)
    for count, _ in enumerate(tokens, start=1):
        model.recorder.consumed = count
        assert model.recorder.steps == count  # asked for exactly what the caller took (+0)
        if count == 12:
            break
    tokens.close()
    assert model.recorder.steps == 12
    assert batch_sizes(model.recorder.consumed_at) == [1] * 12


def test_a_bursty_source_has_at_most_its_next_read_started() -> None:
    size = 5
    model = SourceModel(bursty_source(40, size))
    tokens = goml_sync.BlockingModel(model).stream("x", max_tokens=0)
    for count, _ in enumerate(tokens, start=1):
        model.recorder.consumed = count
        reached = (count - 1) // size + 1  # reads the caller has reached
        started = (model.recorder.steps - 1) // size + 1
        assert started <= reached + 1
    # Each read's ready tokens went over together: far fewer round trips than tokens.
    assert len(batch_sizes(model.recorder.consumed_at)) <= 2 * 40 + 8


def test_leaving_during_a_read_ahead_cancels_it_in_the_owner_task() -> None:
    # The second read never completes: leaving must cancel it, not wait for it. (Batches of 1,
    # 2, then the ready t3 with the second read started behind it.)
    model = SourceModel(bursty_source(2, 4, last_read=anyio.sleep_forever))
    assert consume(model, leave_after=4) == ["t0", "t1", "t2", "t3"]
    recorder = model.recorder
    assert recorder.steps == 5
    assert recorder.cancelled  # the cancellation reached the waiting step
    assert recorder.closed_in in recorder.tasks and len(recorder.tasks) == 1


def test_the_error_comes_after_the_tokens_before_it() -> None:
    ready = ScriptedModel(["a", "b", "c", "d", "e", "f", "g"], fail_after=6)
    seen: list[str] = []
    with pytest.raises(GenerationError) as caught:
        for token in goml_sync.BlockingModel(ready).stream("x"):
            seen.append(token.text)
    assert seen == ["a", "b", "c", "d", "e", "f"]
    assert caught.value.partial_text == "abcdef"


def test_an_error_found_ahead_of_the_caller_waits_for_it() -> None:
    async def source(recorder: Recorder) -> AsyncIterator[Token]:
        for index in range(4):
            recorder.step()
            yield recorder.produced(index)
        await anyio.lowlevel.checkpoint()  # the failing read waits first: found ahead
        raise OSError("connection reset")

    model = SourceModel(source)
    seen: list[str] = []
    with pytest.raises(GenerationError, match="connection reset"):
        for token in goml_sync.BlockingModel(model).stream("x", max_tokens=0):
            seen.append(token.text)
    assert seen == ["t0", "t1", "t2", "t3"]
    # Leaving before reaching it: no error for tokens never asked for.
    assert consume(model, leave_after=3) == ["t0", "t1", "t2"]


def test_a_deadline_entered_in_a_step_ahead_still_fires() -> None:
    # The idle deadline's cancel scope is entered by a step started ahead of the caller (driven
    # by hand) and left when that step is finished in the same task: the deadline still fires.
    async def source(recorder: Recorder) -> AsyncIterator[Token]:
        for index in range(2):
            recorder.step()
            yield recorder.produced(index)
        await anyio.sleep_forever()
        yield recorder.produced(2)  # never reached

    model = SourceModel(source)
    seen: list[str] = []
    with pytest.raises(GenerationTimeout, match="idle"):
        for token in goml_sync.BlockingModel(model).stream("x", max_tokens=0, idle_timeout=0.05):
            seen.append(token.text)
    assert seen == ["t0", "t1"]


def test_a_long_http_stream_in_bursts() -> None:
    # Over HTTP many events arrive per chunk: they go over together, from the one task that
    # holds the response and the connection limiter to the end.
    words = [f" w{index}" for index in range(600)]
    with FakeOpenAIServer(Script(tokens=words)) as server:
        model = goml_sync.load_model(server.base_url)
        try:
            assert [t.text for t in model.stream("x", max_tokens=0)] == words
            tokens = model.stream("x", max_tokens=0)
            assert [next(tokens).text for _ in range(100)] == words[:100]
            tokens.close()  # closes the response in its task
            assert server.wait_for(lambda: server.streams_aborted + server.streams_completed == 2)
        finally:
            goml_sync.run(model.model.aclose)


def test_streaming_from_the_loop_thread_is_an_error_not_a_deadlock() -> None:
    async def reenter() -> list[Token]:
        return list(goml_sync.BlockingModel(ScriptedModel(["x"])).stream("x"))

    with pytest.raises(GomlError, match="own event loop thread"):
        goml_sync.run(reenter)


def test_a_stream_never_iterated_starts_nothing() -> None:
    model = SourceModel(ready_source(3))
    goml_sync.BlockingModel(model).stream("x")
    assert model.recorder.steps == 0 and model.recorder.tasks == set()


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import os, signal, threading
    import anyio
    from goml_async import StreamContext, Token, sync
    from goml_async.model import BaseTextModel

    state = {"cancelled": False, "closed": False, "started": threading.Event()}

    class Model(BaseTextModel):
        def _stream_prompt(self, prompt: str, context: StreamContext):
            return self._tokens()

        async def _tokens(self):
            try:
                yield Token(id=0, text="a")
                yield Token(id=1, text="b")
                try:
                    await anyio.sleep_forever()  # a read the caller ends up waiting for
                except anyio.get_cancelled_exc_class():
                    state["cancelled"] = True
                    raise
            finally:
                state["closed"] = True

    def interrupt():
        state["started"].wait()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt).start()
    seen = []
    try:
        for token in sync.BlockingModel(Model(model_type="m")).stream("x"):
            seen.append(token.text)
            if token.text == "b":  # the read after "b" never ends: the caller waits for it
                state["started"].set()
    except KeyboardInterrupt:
        print("interrupted", "".join(seen))
    for _ in range(100):  # the cancellation runs on the loop: give it up to a second
        if state["closed"]:
            break
        sync.run(anyio.sleep, 0.01)
    print("cancelled", state["cancelled"], "closed", state["closed"])
    """
)


def test_ctrl_c_while_waiting_mid_stream_cancels_the_step() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interrupted", "ab", "cancelled", "True", "closed", "True"]


class Suspend:
    """An awaitable that yields ``marker`` to whoever drives the coroutine."""

    def __init__(self, marker: object) -> None:
        self.marker = marker

    def __await__(self) -> Any:
        return (yield self.marker)


def test_finish_forwards_sends_throws_and_close_to_the_step() -> None:
    log: list[object] = []

    async def step() -> str:
        try:
            log.append(await Suspend("first"))
            try:
                await Suspend("second")
            except ValueError as exc:
                log.append(exc)
            await Suspend("third")
        finally:
            log.append("cleanup")
        return "done"

    inner = step()
    assert inner.send(None) == "first"
    outer = _finish(inner, "first")
    assert outer.send(None) == "first"  # re-yields what the step yielded
    assert outer.send("answer") == "second"  # the loop's answer reaches the step
    error = ValueError("cancel-like")
    assert outer.throw(error) == "third"  # thrown into the step, which handled it
    outer.close()  # GeneratorExit closes the step
    assert log == ["answer", error, "cleanup"]
    assert inspect.getcoroutinestate(inner) == inspect.CORO_CLOSED

    inner = step()
    inner.send(None)
    outer = _finish(inner, "first")
    outer.send(None)
    outer.send(1)
    outer.throw(ValueError())
    with pytest.raises(StopIteration) as finished:
        outer.send(None)
    assert finished.value.value == "done"  # the step's result is the wrapper's
