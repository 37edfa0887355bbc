"""Process facts for tests, read from /proc: children of a process, and whether one still runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio

__all__ = ["children_of", "gone", "wait_gone", "wait_until"]


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    return stat.rsplit(")", 1)[1].split()


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] == "Z"


def wait_until(predicate: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Poll ``predicate`` (process state has no event to wait on) until it holds or time is up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


async def until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll ``condition`` (a worker's counters, which have no event) from a task until it holds.

    Raises:
        TimeoutError: it did not hold within ``seconds``.
    """
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (polling state that has no event to wait on)
            await anyio.sleep(0.002)


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    """Wait until ``pid`` is gone; True if it went within ``seconds``."""
    return wait_until(lambda: gone(pid), seconds)
