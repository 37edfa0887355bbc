"""Process plumbing for :mod:`goml_async.backends.llama_server` (private).

Input checks that run before a server starts, process-group signalling, reaping without
busy-waiting, and :class:`LogTail`, which drains a child's stdout and stderr in daemon threads.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import anyio

from ..errors import BackendUnavailable, ConfigError, ModelLoadError
from ..types import LoadConfig

__all__ = [
    "LogTail",
    "check_binary",
    "check_model",
    "describe_exit",
    "die_with_parent",
    "kill_group",
    "reserve_port",
    "wait_exit",
]

_GGUF_MAGIC = b"GGUF"
_MAX_LINE = 8192  # longer log lines are split, so one endless line cannot grow without bound

logger = logging.getLogger("goml_async.backends.llama_server")


def check_binary(value: str | os.PathLike[str], source: str) -> str:
    """Resolve an explicit binary (a path, or a name on PATH) to an absolute path.

    Raises:
        BackendUnavailable: it does not exist or is not executable; names the path and
            ``source`` (where the value came from).
    """
    text = os.fspath(value)
    path = Path(text).expanduser()
    if os.sep not in text and not path.exists():
        found = shutil.which(text)
        path = Path(found) if found else path
    if not path.exists():
        raise BackendUnavailable(f"llama-server binary not found: {str(path)!r} (from {source})")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise BackendUnavailable(
            f"llama-server binary is not executable: {str(path)!r} (from {source}); "
            f"try: chmod +x {path}"
        )
    return str(path.absolute())


def check_model(path: Path, config: LoadConfig) -> None:
    """Fail early, naming the path, when the model is missing or not a GGUF file.

    Raises:
        ModelLoadError: the model (or the LoRA adapter) is missing, unreadable or not GGUF.
    """
    if not path.exists():
        raise ModelLoadError(str(path), "no such file")
    if not path.is_file():
        raise ModelLoadError(str(path), "not a file (llama-server needs one .gguf file)")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise ModelLoadError(str(path), f"cannot read it: {exc.strerror or exc}") from exc
    if magic != _GGUF_MAGIC:
        raise ModelLoadError(
            str(path), f"not a GGUF file (it starts with {magic!r}; a GGUF file with b'GGUF')"
        )
    if config.adapter_path and not Path(config.adapter_path).is_file():
        raise ModelLoadError(config.adapter_path, "LoRA adapter file not found")


def reserve_port(host: str, port: int) -> int:
    """Return ``port`` if it can be bound on ``host``; for 0, a free port chosen by the OS.

    Raises:
        ConfigError: ``port`` is in use (field ``port``) or ``host`` does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError("host", f"cannot resolve {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # Like the server itself: a port held only by TIME_WAIT connections counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(
                "port", f"cannot listen on {host}:{port}: {exc.strerror or exc} (port in use?)"
            ) from exc
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Resolved once, in the parent: the child between fork and exec only calls it.
_PRCTL = _load_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies; None off Linux.

    Linux's ``PR_SET_PDEATHSIG`` holds even when the parent is killed with SIGKILL, so a
    managed server can never outlive its owner. The signal fires when the *thread* that
    started the child ends, so start servers from a thread that lives as long as they should
    (the event loop's thread does). If the parent died between fork and this call, the child
    would already be an orphan: it exits at once instead.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def kill_group(pid: int, signum: int) -> None:
    """Signal the process group led by ``pid``; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _wait_blocking(process: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


async def wait_exit(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait up to ``seconds`` for the process to exit (reaping it); True if it did."""
    if process.poll() is not None:
        return True
    return await anyio.to_thread.run_sync(_wait_blocking, process, seconds)


def describe_exit(code: int | None) -> str:
    """``exit code 3``, or ``exit code -9, killed by SIGKILL``."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"exit code {code}, killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class LogTail:
    """The last ``maxlen`` lines of a child's stdout and stderr, read by daemon threads.

    Reading continuously means the child never blocks on a full pipe, however much it logs.
    """

    def __init__(self, maxlen: int) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def follow(self, process: subprocess.Popen[bytes]) -> None:
        """Start draining the process's stdout and stderr pipes."""
        for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
            if stream is None:
                continue
            thread = threading.Thread(
                target=self._pump,
                args=(stream,),
                name=f"llama-server-{process.pid}-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _pump(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(lambda: stream.readline(_MAX_LINE), b""):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._lock:
                    self._lines.append(text)
                logger.debug("llama-server: %s", text)

    def lines(self, n: int) -> list[str]:
        """The last ``n`` lines, oldest first."""
        with self._lock:
            lines = list(self._lines)
        return lines[-n:] if n > 0 else []

    def join(self, seconds: float) -> None:
        """Block up to ``seconds`` per pipe until the readers reach EOF."""
        for thread in self._threads:
            thread.join(seconds)

    async def drain(self, seconds: float) -> None:
        """Wait (in a worker thread) up to ``seconds`` for the readers to reach EOF."""
        if any(thread.is_alive() for thread in self._threads):
            await anyio.to_thread.run_sync(self.join, seconds)
