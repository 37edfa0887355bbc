"""Callbacks that may be sync or async, and task groups whose failure reads as itself.

A task group reports failures as a ``BaseExceptionGroup``, even when a single task failed.
The SDK's callers expect the error they would get without concurrency (a ``JudgeError``, a
``ConfigError`` from a callback), so :func:`task_group` raises the first one as itself.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar, overload

import anyio
from anyio.abc import TaskGroup

__all__ = ["first_error", "maybe_await", "task_group"]

T = TypeVar("T")


@overload
async def maybe_await(value: Awaitable[T]) -> T: ...
@overload
async def maybe_await(value: T) -> T: ...
async def maybe_await(value: Awaitable[T] | T) -> T:
    """``value`` itself, or what it gives when awaited if it is awaitable.

    For callbacks that may be plain functions or coroutine functions: ``await
    maybe_await(callback(event))`` works for both.
    """
    if inspect.isawaitable(value):
        return await value
    return value


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The first exception in ``group`` (nested groups searched in order) that is not a
    cancellation, or None if there is none."""
    cancelled = anyio.get_cancelled_exc_class()
    for exc in group.exceptions:
        found = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if found is not None and not isinstance(found, cancelled):
            return found
    return None


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """An anyio task group that raises the first error of its tasks (or of its body) as itself.

    As with any task group, the first failure cancels the other tasks. What escapes is that
    failure itself, with its ``__cause__`` kept, instead of an ExceptionGroup; when several
    fail at once, the first is raised and the others are dropped. A group holding nothing but
    cancellations is re-raised unchanged, so a cancellation is never swallowed.

    Example:
        ```python
        async with task_group() as tg:
            for item in items:
                tg.start_soon(score, item)
        ```
    """
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        first = first_error(group)
        if first is None:
            raise
        raise first from first.__cause__
