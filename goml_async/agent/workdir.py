"""WorkDirLock: one agent per work_dir.

An agent's work_dir holds its write-ahead buffer and its scored-state file, and the agent keeps
both in memory while it runs: a second agent writing the same files would interleave sequence
numbers and acknowledge records the first one never sent, losing or duplicating points. So an
agent takes an exclusive ``fcntl.flock`` on ``work_dir/agent.lock`` before it touches anything
there and holds it until it is closed; the holder's PID is written into the lock file, so a
second agent fails at once with an error naming it. The kernel drops the lock when the holder
exits, however it exits (``kill -9`` included), so a stale lock file never blocks a restart.

flock works between processes on one machine; on a network file system shared by several
machines it may not exclude anything: give each machine its own work_dir.

A work_dir that cannot be used (it is a file, or cannot be created or written) raises
:class:`~goml_async.errors.ConfigError` naming ``work_dir``, before any work is done.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Self

from ..errors import ConfigError, NotSupported

__all__ = ["LOCK_FILE", "WorkDirLock"]

#: The lock file's name inside the work_dir.
LOCK_FILE = "agent.lock"

_HINT = "set --work-dir (GOML_AGENT_WORK_DIR, or work_dir in the config file) to"


class WorkDirLock:
    """An exclusive, non-blocking lock on an agent's work_dir.

    Args:
        work_dir: the folder to lock (created when missing).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     with WorkDirLock(folder) as lock:
        ...         try:
        ...             WorkDirLock(folder).acquire()
        ...         except ConfigError as exc:
        ...             print("in use by another goml agent" in str(exc))
        True
    """

    def __init__(self, work_dir: str | os.PathLike[str]) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_FILE
        self._fd: int | None = None
        self._finalizer: weakref.finalize[[int], WorkDirLock] | None = None
        # acquire() runs in worker threads: two at once must not open two descriptors.
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Create the work_dir if needed and lock it; idempotent.

        Raises:
            ConfigError: (field ``work_dir``) another process holds the lock (its PID is
                named), or the folder is not a folder, or cannot be created or written.
            NotSupported: the platform has no ``fcntl.flock`` (Windows).
        """
        with self._guard:
            if self._fd is None:
                self._fd = self._lock()
                # Closing the descriptor releases the lock: also when the object is dropped.
                self._finalizer = weakref.finalize(self, os.close, self._fd)

    def _lock(self) -> int:
        """Open, lock and sign the lock file; its descriptor."""
        if sys.platform == "win32":
            raise NotSupported("the agent locks its work_dir with fcntl.flock, which Windows lacks")
        import fcntl

        folder = self.work_dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(
                "work_dir", f"{str(folder)!r} is a file, not a folder; {_HINT} a folder"
            ) from None
        except OSError as exc:
            raise ConfigError(
                "work_dir", f"cannot create {str(folder)!r}: {_reason(exc)}; {_HINT} another one"
            ) from exc
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                "work_dir",
                f"cannot write in {str(folder)!r}: {_reason(exc)}; {_HINT} a writable folder",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "a process that has not written its PID yet"
            raise ConfigError(
                "work_dir",
                f"{str(folder)!r} is in use by another goml agent ({who}); stop it, or "
                f"{_HINT} a folder of this agent's own",
            ) from None
        except OSError as exc:
            os.close(fd)
            raise ConfigError(
                "work_dir", f"cannot lock {str(self.path)!r}: {_reason(exc)}"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(
                "work_dir", f"cannot write in {str(folder)!r}: {_reason(exc)}; {_HINT} another one"
            ) from exc
        return fd

    def release(self) -> None:
        """Release the lock; idempotent. The lock file stays (removing it would race)."""
        with self._guard:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            # No PID: nobody holds it. (Closing the descriptor releases the lock all the same.)
            with suppress(OSError):
                os.ftruncate(fd, 0)
            if self._finalizer is not None:
                self._finalizer()  # closes fd

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"WorkDirLock({str(self.work_dir)!r}, held={self.held})"


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _reason(exc: OSError) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: '/x'``."""
    return exc.strerror or str(exc)
