"""LocalTransport: the :class:`~goml_async.agent.types.RemoteTransport` interface on this machine.

For checkpoints on a local disk (no ``host`` in the agent's config), and for tests. It uses
anyio only, so it runs under asyncio and trio. Commands run with ``/bin/sh``; a failure to run
or a timeout raises :class:`~goml_async.errors.TransportError`, a non-zero exit is returned.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

import anyio
from anyio.abc import AsyncResource, ByteReceiveStream

from ..errors import ConfigError, TransportError
from .types import CommandResult

__all__ = ["LocalTransport"]


def _exit_code(returncode: int | None) -> int:
    """A process's exit code the way a shell reports it (128 + N for signal N)."""
    if returncode is None:
        return 255
    return returncode if returncode >= 0 else 128 - returncode


def _check_timeouts(connect_timeout: float | None, command_timeout: float) -> None:
    if connect_timeout is not None and not connect_timeout > 0:
        raise ConfigError("connect_timeout", f"must be > 0, got {connect_timeout!r}")
    if not command_timeout > 0:
        raise ConfigError("command_timeout", f"must be > 0, got {command_timeout!r}")


class LocalTransport(AsyncResource):
    """The :class:`~goml_async.agent.types.RemoteTransport` interface on this machine.

    Commands run with ``/bin/sh`` in ``root`` (when given); relative paths are relative to
    ``root``. Works under asyncio and trio.

    Args:
        root: the working folder for commands and relative paths (None: the current folder).
        command_timeout: seconds one command may take; on timeout its process group is killed.

    Example:
        >>> async def listing(folder: str) -> list[str]:
        ...     async with LocalTransport(folder) as local:
        ...         return (await local.run("ls")).stdout.split()
    """

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, command_timeout: float = 60.0
    ) -> None:
        _check_timeouts(None, command_timeout)
        self.root = Path(root).expanduser() if root is not None else None
        self.command_timeout = command_timeout
        self._closed = False

    def __repr__(self) -> str:
        return f"LocalTransport(root={str(self.root) if self.root else None!r})"

    def _path(self, path: str) -> Path:
        resolved = Path(path).expanduser()
        return self.root / resolved if self.root is not None else resolved

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"{self!r} is closed")

    async def run(self, command: str) -> CommandResult:
        """Run ``command`` with ``/bin/sh``; its exit code and output.

        Raises:
            TransportError: the shell could not start (e.g. ``root`` is missing), or the command
                took longer than ``command_timeout``.
        """
        self._check_open()
        try:
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.root,
                start_new_session=True,  # its own process group, killed as a whole on timeout
            )
        except OSError as exc:
            raise TransportError(f"cannot run {command!r} in {self.root}: {exc}") from exc
        stdout, stderr = bytearray(), bytearray()
        try:
            with anyio.fail_after(self.command_timeout):
                async with anyio.create_task_group() as group:
                    assert process.stdout is not None and process.stderr is not None
                    group.start_soon(_drain, process.stdout, stdout)
                    group.start_soon(_drain, process.stderr, stderr)
                returncode = await process.wait()
        except TimeoutError:
            raise TransportError(
                f"command timed out after {self.command_timeout:g} s: {command!r}"
            ) from None
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    with suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGKILL)
                await process.aclose()
        return CommandResult(
            _exit_code(returncode),
            stdout.decode("utf-8", errors="replace"),
            stderr.decode("utf-8", errors="replace"),
        )

    async def copy_from(self, remote: str, local: str) -> None:
        """Copy ``remote`` (relative to ``root``) to ``local``; parents are created."""
        self._check_open()
        await anyio.to_thread.run_sync(_copy_file, self._path(remote), Path(local))

    async def copy_to(self, local: str, remote: str) -> None:
        """Copy ``local`` to ``remote`` (relative to ``root``); parents are created."""
        self._check_open()
        await anyio.to_thread.run_sync(_copy_file, Path(local), self._path(remote))

    async def mtime(self, remote: str) -> float:
        """The file's modification time, in Unix seconds."""
        self._check_open()
        path = self._path(remote)
        try:
            return (await anyio.Path(path).stat()).st_mtime
        except FileNotFoundError as exc:
            raise TransportError(f"stat {str(path)!r}: no such file") from exc
        except OSError as exc:
            raise TransportError(f"stat {str(path)!r}: {exc}") from exc

    async def aclose(self) -> None:
        """Nothing to release; later calls raise TransportError. Idempotent."""
        self._closed = True


async def _drain(stream: ByteReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        into += chunk


def _copy_file(source: Path, target: Path) -> None:
    """Copy with metadata through ``target.part``, so ``target`` is never a partial file."""
    part = target.with_name(target.name + ".part")
    try:
        if not source.is_file():
            raise TransportError(f"cannot copy {str(source)!r}: no such file")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, part)
        os.replace(part, target)
    except OSError as exc:
        raise TransportError(f"cannot copy {str(source)!r} to {str(target)!r}: {exc}") from exc
    finally:
        with suppress(OSError):
            part.unlink(missing_ok=True)
