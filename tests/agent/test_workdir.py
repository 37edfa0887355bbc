"""WorkDirLock: one agent per work_dir, across real processes, and gone with its holder."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from goml_async.agent.workdir import LOCK_FILE, WorkDirLock
from goml_async.errors import ConfigError

HOLDER = textwrap.dedent(
    """
    import sys
    from goml_async.agent.workdir import WorkDirLock

    lock = WorkDirLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold it until the test kills us
    """
)


def test_another_process_is_refused_until_the_holder_is_killed(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ConfigError) as caught:
            WorkDirLock(work).acquire()
        assert caught.value.field == "work_dir"
        assert f"is in use by another goml agent (PID {holder.pid})" in str(caught.value)
        holder.send_signal(signal.SIGKILL)  # no chance to clean up
        holder.wait(10)
    assert (work / LOCK_FILE).read_text() == f"{holder.pid}\n"  # a stale PID stays behind
    with WorkDirLock(work) as lock:  # the kernel dropped the dead holder's lock
        assert (lock.held, (work / LOCK_FILE).read_text()) == (True, f"{os.getpid()}\n")
    assert (lock.held, (work / LOCK_FILE).read_text()) == (False, "")


def test_release_is_idempotent_and_a_dropped_lock_is_released(tmp_path: Path) -> None:
    lock = WorkDirLock(tmp_path)
    lock.acquire()
    lock.acquire()  # idempotent: still one descriptor, still held
    with pytest.raises(ConfigError, match="in use"):
        WorkDirLock(tmp_path).acquire()  # flock excludes a second descriptor in one process too
    lock.release()
    lock.release()
    dropped = WorkDirLock(tmp_path)
    dropped.acquire()
    del dropped
    gc.collect()
    with WorkDirLock(tmp_path):
        pass
