"""maybe_await and task_group: sync or async callbacks, and failures raised as themselves."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from goml_async._concurrency import first_error, maybe_await, task_group

pytestmark = pytest.mark.anyio


class _Ready:
    """An awaitable that is not a coroutine (as some callback libraries return)."""

    def __await__(self) -> Generator[Any, None, str]:
        yield from ()
        return "ready"


async def _coroutine() -> int:
    await anyio.lowlevel.checkpoint()
    return 7


async def test_maybe_await_returns_plain_values_and_awaits_awaitables() -> None:
    assert await maybe_await(3) == 3
    assert await maybe_await("") == ""
    assert await maybe_await(_coroutine()) == 7
    assert await maybe_await(_Ready()) == "ready"


async def _fail_with_cause() -> None:
    try:
        raise OSError("disk full")
    except OSError as exc:
        raise ValueError("could not save") from exc


async def test_a_task_failure_is_raised_as_itself_with_its_cause() -> None:
    sibling_cancelled = anyio.Event()

    async def wait_forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            sibling_cancelled.set()

    with pytest.raises(ValueError, match="could not save") as info:
        async with task_group() as tg:
            tg.start_soon(wait_forever)
            tg.start_soon(_fail_with_cause)
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value.__cause__) == "disk full"
    assert sibling_cancelled.is_set()  # the first failure cancels the other tasks


async def test_a_failure_of_the_body_is_raised_as_itself() -> None:
    with pytest.raises(KeyError, match="missing"):
        async with task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            await anyio.lowlevel.checkpoint()
            raise KeyError("missing")


async def test_several_failures_raise_the_first() -> None:
    async def fail_once_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("second")  # a second failure, on purpose

    async def fail_now() -> None:
        await anyio.lowlevel.checkpoint()
        raise ValueError("first")

    with pytest.raises(ValueError, match="first") as info:
        async with task_group() as tg:
            tg.start_soon(fail_once_cancelled)
            tg.start_soon(fail_now)
    assert not isinstance(info.value, BaseExceptionGroup)


async def test_without_failures_every_task_finishes() -> None:
    done: list[int] = []

    async def work(number: int) -> None:
        await anyio.lowlevel.checkpoint()
        done.append(number)

    async with task_group() as tg:
        for number in range(3):
            tg.start_soon(work, number)
    assert sorted(done) == [0, 1, 2]


async def test_an_outer_cancellation_is_not_swallowed() -> None:
    after_the_group = False
    with anyio.CancelScope() as scope:
        async with task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            scope.cancel()
            await anyio.sleep_forever()
        after_the_group = True  # pragma: no cover  (the cancellation must skip this)
    assert scope.cancelled_caught
    assert not after_the_group


async def test_a_cancelled_group_with_a_failing_task_raises_the_failure() -> None:
    async def fail_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise ValueError("cleanup failed")

    with anyio.CancelScope() as scope, pytest.raises(ValueError, match="cleanup failed"):
        async with task_group() as tg:
            tg.start_soon(fail_when_cancelled)
            await anyio.lowlevel.checkpoint()
            scope.cancel()
            await anyio.sleep_forever()


async def _cancellation() -> BaseException:
    """A real cancellation exception of the running backend."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class() as exc:
            caught = exc
            raise
    return caught


async def test_first_error_skips_cancellations_and_searches_nested_groups() -> None:
    cancelled = await _cancellation()
    inner = ValueError("inner")
    group = BaseExceptionGroup("outer", [cancelled, BaseExceptionGroup("g", [inner]), KeyError()])
    assert first_error(group) is inner
    assert first_error(BaseExceptionGroup("only cancelled", [cancelled])) is None
