"""Durable file writes for the agent's buffers and state: appends that undo themselves on failure.

A disk can fill up (ENOSPC) or fail in the middle of a write. An append that fails half way
must leave the file exactly as it was: otherwise its fragment is glued to the next append and
the file no longer parses. :func:`append_durably` therefore writes with unbuffered ``os.write``
calls from a known offset and, on any error, cuts the file back to that offset before raising
(truncating to a smaller size frees space, so it works on a full disk). A whole-file rewrite
goes through :func:`replace_durably`: a temporary file, fsynced, renamed over the old one, and
removed again if anything fails, so a failure leaves the old file and no partial copy.

All of these block: callers run them in a worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
from contextlib import suppress
from pathlib import Path

__all__ = ["append_durably", "fsync_dir", "replace_durably"]

logger = logging.getLogger(__name__)

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def append_durably(path: Path, payload: bytes, *, expected_size: int | None = None) -> int:
    """Write ``payload`` at the end of ``path`` and fsync it; returns the file's new size.

    Args:
        path: the file (created, with its parent folders, when missing).
        payload: the bytes to append.
        expected_size: the size the caller left the file at, if it knows; a file of another
            size was changed by something else, and nothing is written to it.

    Raises:
        OSError: the file has not the expected size, or the write or the fsync failed. The
            file was cut back to where the payload started (a file this call created is
            removed), so it is as it was before the call; if even that failed, it is logged
            and the file is longer than before.
    """
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | _CLOEXEC, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            if expected_size is not None and start != expected_size:
                raise OSError(
                    errno.ESTALE,
                    f"the file has {start} bytes where this process left {expected_size}: "
                    "something else changed it",
                )
            os.lseek(fd, start, os.SEEK_SET)
            _write_all(fd, payload)
            os.fsync(fd)
        except OSError:
            _undo(fd, path, start)
            if created:
                with suppress(OSError):
                    path.unlink()
            raise
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)
    return start + len(payload)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until everything is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _undo(fd: int, path: Path, size: int) -> None:
    """Cut a failed append off again (best effort: the original error is what gets raised)."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        logger.error("%s: could not cut off a failed write: %s", path, exc)


def replace_durably(path: Path, data: bytes) -> None:
    """Make ``data`` the content of ``path`` atomically (temporary file, fsync, rename).

    Raises:
        OSError: the temporary file could not be written or renamed. ``path`` is unchanged
            and the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a create, rename or unlink in ``folder`` durable (where the OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory
    finally:
        os.close(fd)
