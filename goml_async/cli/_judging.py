"""What ``goml probe`` and ``goml score`` share: checking ``--judge`` before anything loads,
saying when the judge cannot follow the rubric, and stopping on SIGINT/SIGTERM with whatever
finished still in hand."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from rich.console import Console

from goml_async._concurrency import task_group
from goml_async.errors import ConfigError

from ._common import describe_target, is_url

if TYPE_CHECKING:
    from goml_async.scoring.judge import Judge

__all__ = [
    "Stop",
    "check_judge",
    "check_judge_max_tokens",
    "judge_label",
    "judge_warning",
    "say",
    "stop_on_signals",
]


def say(err: Console, text: str, *, style: str | None = None) -> None:
    """One plain line on ``err``, never wrapped, so that a log reader can grep for it."""
    err.print(text, style=style, highlight=False, markup=False, soft_wrap=True)


def check_judge(spec: str | None, *, allow_same: bool) -> None:
    """Refuse a ``--judge`` value that names nothing loadable, before any model is loaded.

    Accepted: a server URL (``http://`` or ``https://``), ``default``, an existing path and,
    where ``allow_same``, ``same``.

    Raises:
        ConfigError: for ``--judge``, listing what it takes.
    """
    if not spec or spec == "default" or is_url(spec) or (allow_same and spec == "same"):
        return
    if Path(spec).expanduser().exists():
        return
    takes = "a server URL (http://HOST:PORT/v1), a model path, " + (
        "'same' or 'default'" if allow_same else "or 'default'"
    )
    raise ConfigError("--judge", f"{spec!r} is not a URL and no such file exists; it takes {takes}")


def check_judge_max_tokens(value: int | None) -> None:
    """Refuse a negative ``--judge-max-tokens`` (0 means no cap)."""
    if value is not None and value < 0:
        raise ConfigError("--judge-max-tokens", f"must be >= 0 (0 for no cap), got {value}")


def judge_label(spec: str, judge: Judge) -> str:
    """The judge as the user knows it: the model name and URL of a server, else the model."""
    if is_url(spec):
        return f"{judge.model_name} at {spec}" if judge.model_name else spec
    return describe_target(spec)


def judge_warning(judge: Judge, label: str) -> str | None:
    """One line when most of the judge's replies could not be used, else None."""
    stats = judge.stats
    if not stats.replies or not stats.mostly_unusable:
        return None
    line = (
        f"the judge ({label}) is too small to follow the rubric: {stats.unusable} of "
        f"{stats.replies} replies ({stats.unusable_fraction:.0%}) were not valid JSON for it"
    )
    if stats.capped:
        line += f", {stats.capped} of them cut at the {judge.max_tokens}-token cap"
    line += "; use a larger judge model (--judge URL --judge-model NAME)"
    if stats.capped:
        line += " or raise --judge-max-tokens"
    return line


@dataclass(slots=True)
class Stop:
    """The first SIGINT or SIGTERM of a :func:`stop_on_signals` block, once it came."""

    signal: signal.Signals | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        assert self.signal is not None
        return 128 + int(self.signal)


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[Stop]:
    """Watch for SIGINT and SIGTERM while the block runs; the first cancels ``stop.scope``.

    Put the work that a signal may cut short in ``with stop.scope:``; it then ends early
    without an exception and ``stop.signal`` says which signal came. Further signals are
    ignored until the block is over, so what follows the scope in the block (closing models,
    writing what finished) is not cut short. An error of the block propagates as itself.

    Example:
        ```python
        async with stop_on_signals() as stop:
            with stop.scope:
                await work()
            save_what_finished()
        return stop.exit_status if stop.signal else 0
        ```
    """
    stop = Stop()
    async with task_group() as group:
        await group.start(_watch, stop)
        yield stop
        group.cancel_scope.cancel()


async def _watch(stop: Stop, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if stop.signal is None:
                stop.signal = signal.Signals(signum)
                stop.scope.cancel()
