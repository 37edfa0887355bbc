"""Transports to where checkpoints live: :class:`SSHTransport` and :class:`LocalTransport`.

:class:`SSHTransport` is built on asyncssh, which runs on **asyncio only**: under trio its
methods raise :class:`~goml_async.errors.NotSupported` saying so (use asyncio there, or
:class:`LocalTransport`). It needs the ``ssh`` extra (``pip install 'goml_async[ssh]'``).
:class:`LocalTransport` (defined in :mod:`goml_async.agent.local`, re-exported here) uses
anyio only and runs under asyncio and trio.

Both implement :class:`~goml_async.agent.types.RemoteTransport`: a connection or I/O failure
raises :class:`~goml_async.errors.TransportError` (the original error is its ``__cause__``); a
command that runs and exits non-zero is not an error, its exit code is returned.
"""

from __future__ import annotations

import getpass
import logging
import os
import posixpath
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import AsyncResource

from ..errors import BackendUnavailable, ConfigError, NotSupported, TransportError
from .local import LocalTransport, _check_timeouts, _exit_code
from .types import CommandResult

if TYPE_CHECKING:
    import asyncssh

__all__ = ["INSTALL_HINT", "LocalTransport", "SSHTransport"]

logger = logging.getLogger(__name__)

#: How to install what :class:`SSHTransport` needs.
INSTALL_HINT = "pip install 'goml_async[ssh]'"

_T = TypeVar("_T")

# A dead connection is noticed by the server's keepalive replies stopping.
_KEEPALIVE_INTERVAL = 30.0
_KEEPALIVE_COUNT_MAX = 3


class SSHTransport(AsyncResource):
    """Commands and files on a host over SSH (asyncssh), on one reused connection.

    The connection is opened by the first call and reused by every later one (commands run
    concurrently on it as separate channels); if it has dropped, the next call reconnects
    once. Authentication uses keys only: ``key_path``, or else the default keys in ``~/.ssh``
    and a running ssh-agent. The host key is checked against ``known_hosts`` (default
    ``~/.ssh/known_hosts``); ``insecure_skip_host_key_check=True`` accepts any key and logs a
    warning on every connect. ``~/.ssh/config`` is not read: every setting is explicit.

    Args:
        host: the host name or address.
        user: the login user (None: the current user).
        port: the SSH port.
        key_path: a private key file (unencrypted, or unlocked in the agent).
        known_hosts: the known_hosts file that must list the host's key.
        insecure_skip_host_key_check: accept any host key (man-in-the-middle risk).
        connect_timeout: seconds to connect, exchange keys and authenticate.
        command_timeout: seconds one command or file stat may take. File copies have no total
            deadline (adapters can be large); a dead connection is still noticed by keepalives.

    Example:
        >>> async def newest(host: str) -> str:
        ...     async with SSHTransport(host, user="train", key_path="~/.ssh/id_ed25519") as ssh:
        ...         result = await ssh.run("ls -t /data/lem | head -1")
        ...         return result.stdout.strip()
    """

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int = 22,
        key_path: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        insecure_skip_host_key_check: bool = False,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
    ) -> None:
        if not host or not host.strip():
            raise ConfigError("host", "must name the SSH host, got an empty string")
        if not 1 <= port <= 65535:
            raise ConfigError("port", f"must be in 1..65535, got {port!r}")
        _check_timeouts(connect_timeout, command_timeout)
        try:
            import asyncssh  # noqa: F401  (fail here, with the install hint, not mid-run)
        except ImportError as exc:
            raise BackendUnavailable(
                "SSHTransport needs asyncssh", backend="ssh", install_hint=INSTALL_HINT
            ) from exc
        self.host = host
        self.user = user or getpass.getuser()
        self.port = port
        self.key_path = Path(key_path).expanduser() if key_path is not None else None
        self.known_hosts = (
            Path(known_hosts).expanduser()
            if known_hosts is not None
            else Path("~/.ssh/known_hosts").expanduser()
        )
        self.insecure_skip_host_key_check = insecure_skip_host_key_check
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = anyio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"SSHTransport({self._target!r})"

    @property
    def _target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    async def run(self, command: str) -> CommandResult:
        """Run ``command`` with the remote user's shell; its exit code and output.

        Raises:
            TransportError: no connection, the connection was lost while the command ran,
                or the command took longer than ``command_timeout`` (it is then abandoned:
                its channel is closed).
        """
        import asyncssh

        for attempt in (1, 2):
            conn = await self._session()
            try:
                with anyio.fail_after(self.command_timeout):
                    try:
                        process = await conn.create_process(
                            command, stdin=asyncssh.DEVNULL, encoding="utf-8", errors="replace"
                        )
                    except _dropped_errors() as exc:
                        # The channel never opened, so the command never ran: safe to retry.
                        await self._forget(conn, exc, retry=attempt == 1)
                        continue
                    try:
                        completed = await process.wait(check=False)
                    finally:
                        process.close()
            except TimeoutError:
                raise TransportError(
                    f"command on {self._target} timed out after {self.command_timeout:g} s: "
                    f"{command!r}"
                ) from None
            except (asyncssh.Error, OSError) as exc:
                raise TransportError(
                    f"command on {self._target} failed: {command!r}: {exc}"
                ) from exc
            if completed.exit_status is None and completed.exit_signal is None:
                # The channel closed without an exit status: the connection went away while
                # the command ran (it may have run in part, so it is not retried).
                raise TransportError(f"connection to {self._target} lost while running {command!r}")
            return CommandResult(
                _exit_code(completed.returncode),
                str(completed.stdout or ""),
                str(completed.stderr or ""),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def copy_from(self, remote: str, local: str) -> None:
        """Copy the remote file ``remote`` to ``local`` over SFTP (parents are created).

        The file is written as ``local + ".part"`` and renamed when complete, so ``local`` is
        never a partial copy; its modification time is the remote file's.
        """
        target = Path(local)
        part = target.with_name(target.name + ".part")
        try:
            await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot create {str(target.parent)!r}: {exc}") from exc

        async def get(sftp: asyncssh.SFTPClient) -> None:
            await sftp.get(remote, str(part), preserve=True)

        try:
            await self._sftp_call(f"copy {remote!r} from {self._target}", get, limit_s=None)
            os.replace(part, target)
        except OSError as exc:
            raise TransportError(f"cannot write {str(target)!r}: {exc}") from exc
        finally:
            with suppress(OSError):
                part.unlink(missing_ok=True)

    async def copy_to(self, local: str, remote: str) -> None:
        """Copy the local file ``local`` to ``remote`` over SFTP (remote parents are created)."""
        if not await anyio.Path(local).is_file():
            raise TransportError(f"cannot copy {local!r} to {self._target}: no such local file")
        parent = posixpath.dirname(remote)

        async def put(sftp: asyncssh.SFTPClient) -> None:
            if parent:
                await sftp.makedirs(parent, exist_ok=True)
            await sftp.put(local, remote)

        await self._sftp_call(f"copy {local!r} to {remote!r} on {self._target}", put, limit_s=None)

    async def mtime(self, remote: str) -> float:
        """The remote file's modification time (SFTP stat), in Unix seconds."""

        async def stat(sftp: asyncssh.SFTPClient) -> float:
            attrs = await sftp.stat(remote)
            if attrs.mtime is None:
                raise TransportError(f"{self._target} reports no modification time for {remote!r}")
            return attrs.mtime + (attrs.mtime_ns or 0) / 1e9

        what = f"stat {remote!r} on {self._target}"
        return await self._sftp_call(what, stat, limit_s=self.command_timeout)

    async def aclose(self) -> None:
        """Close the SFTP session and the connection; idempotent."""
        self._closed = True
        conn, sftp = self._conn, self._sftp
        self._conn = self._sftp = None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            with anyio.move_on_after(self.connect_timeout, shield=True):
                await conn.wait_closed()

    # -- connection management -------------------------------------------------------------

    async def _session(self) -> asyncssh.SSHClientConnection:
        """The live connection, connecting (or reconnecting) if needed."""
        _require_asyncio()
        async with self._lock:
            if self._closed:
                raise TransportError(f"{self!r} is closed")
            if self._conn is None or self._conn.is_closed():
                if self._conn is not None:
                    logger.info("SSH connection to %s dropped; reconnecting", self._target)
                self._sftp = None
                self._conn = await self._connect()
            return self._conn

    async def _sftp_client(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        """The SFTP client of ``conn``, started once and reused.

        Errors from opening the SFTP channel propagate unchanged, so that a connection that
        died unnoticed is reconnected by the caller.
        """
        async with self._lock:
            if self._conn is conn and self._sftp is not None:
                return self._sftp
            client = await conn.start_sftp_client()
            if self._conn is conn:
                self._sftp = client
            return client

    async def _forget(
        self, conn: asyncssh.SSHClientConnection, exc: BaseException, *, retry: bool
    ) -> None:
        """Drop a connection that failed; raise unless the caller may retry once."""
        async with self._lock:
            if self._conn is conn:
                self._conn, self._sftp = None, None
            conn.abort()
        if not retry:
            raise TransportError(f"SSH connection to {self._target} lost: {exc}") from exc
        logger.info("SSH connection to %s lost (%s); reconnecting", self._target, exc)

    async def _sftp_call(
        self,
        what: str,
        op: Callable[[asyncssh.SFTPClient], Awaitable[_T]],
        *,
        limit_s: float | None,
    ) -> _T:
        """Run one SFTP operation, reconnecting once if the connection turns out dead.

        ``limit_s`` bounds the whole operation; the SFTP channel's start is always bounded by
        ``command_timeout``.
        """
        import asyncssh

        for attempt in (1, 2):
            conn = await self._session()
            try:
                with anyio.fail_after(self.command_timeout):
                    client = await self._sftp_client(conn)
            except TimeoutError:
                raise TransportError(
                    f"{what}: SFTP did not start within {self.command_timeout:g} s"
                ) from None
            except _dropped_errors() as exc:
                await self._forget(conn, exc, retry=attempt == 1)
                continue
            except (asyncssh.Error, OSError) as exc:
                raise TransportError(f"{what}: cannot start SFTP: {exc}") from exc
            try:
                with anyio.fail_after(limit_s):
                    return await op(client)
            except _dropped_errors() as exc:
                await self._forget(conn, exc, retry=attempt == 1)
            except TimeoutError:
                raise TransportError(f"{what}: timed out after {limit_s} s") from None
            except asyncssh.SFTPNoSuchFile as exc:
                raise TransportError(f"{what}: no such file ({exc.reason})") from exc
            except asyncssh.SFTPError as exc:
                raise TransportError(f"{what}: {exc.reason}") from exc
            except (asyncssh.Error, OSError) as exc:
                raise TransportError(f"{what}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> asyncssh.SSHClientConnection:
        import asyncssh

        options: dict[str, Any] = {
            "port": self.port,
            "username": self.user,
            "connect_timeout": self.connect_timeout,
            "config": None,
            "password_auth": False,
            "kbdint_auth": False,
            "keepalive_interval": _KEEPALIVE_INTERVAL,
            "keepalive_count_max": _KEEPALIVE_COUNT_MAX,
        }
        if self.key_path is not None:
            # Only this key: an agent's other keys must not make a wrong key "work".
            options.update(client_keys=[str(self.key_path)], agent_path=None)
        if self.insecure_skip_host_key_check:
            logger.warning(
                "INSECURE: connecting to %s WITHOUT verifying its host key "
                "(insecure_skip_host_key_check); anyone on the network path can impersonate it",
                self._target,
            )
            options["known_hosts"] = None
        elif not self.known_hosts.is_file():
            raise TransportError(
                f"cannot verify the host key of {self._target}: the known_hosts file "
                f"{str(self.known_hosts)!r} does not exist; add the host's key to it "
                f"(ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts})"
            )
        else:
            options["known_hosts"] = str(self.known_hosts)
        try:
            conn = await asyncssh.connect(self.host, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise TransportError(
                f"host key of {self._target} is not trusted: it is missing from, or does not "
                f"match, known_hosts {str(self.known_hosts)!r} ({exc.reason})"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            key = str(self.key_path) if self.key_path else "the default keys"
            raise TransportError(
                f"{self._target} refused the login with {key}: {exc.reason}"
            ) from exc
        except TimeoutError:
            raise TransportError(
                f"connecting to {self._target} timed out after {self.connect_timeout:g} s"
            ) from None
        except asyncssh.KeyImportError as exc:
            raise TransportError(f"cannot use the key {str(self.key_path)!r}: {exc}") from exc
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(f"cannot connect to {self._target}: {exc}") from exc
        logger.debug("connected to %s", self._target)
        return conn


def _dropped_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the connection itself is gone (worth one reconnect)."""
    import asyncssh

    return (
        asyncssh.ConnectionLost,
        asyncssh.DisconnectError,
        asyncssh.ChannelOpenError,
        asyncssh.SFTPConnectionLost,
        ConnectionError,
    )


def _require_asyncio() -> None:
    """Raise NotSupported when running under trio (asyncssh needs asyncio)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return  # trio is not even imported, so this is not trio
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return
    raise NotSupported(
        "SSHTransport uses asyncssh, which runs on asyncio only, and this is trio: run the "
        "agent under asyncio (anyio.run(..., backend='asyncio')), or read the checkpoints "
        "from a local folder with LocalTransport"
    )
