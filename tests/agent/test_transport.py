"""SSHTransport against a real asyncssh server and OpenSSH's sshd; LocalTransport on both loops."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from goml_async.agent.transport import INSTALL_HINT, LocalTransport, SSHTransport
from goml_async.agent.types import RemoteTransport
from goml_async.errors import BackendUnavailable, ConfigError, GomlError, TransportError

from .conftest import CheckpointTree, SSHServer, free_port

pytestmark = pytest.mark.anyio

#: asyncssh runs on asyncio only; the trio case has its own test below.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

CHECKPOINT = "adapters-27b-v2/0000100_adapters.safetensors"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections but never says anything."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


# -- SSHTransport ---------------------------------------------------------------------------------


@asyncio_only
async def test_ssh_run_returns_exit_code_and_output(ssh_server: SSHServer) -> None:
    async with ssh_server.transport() as ssh:
        assert isinstance(ssh, RemoteTransport)
        ok = await ssh.run("echo hello")
        failed = await ssh.run("printf out; printf err >&2; exit 3")
        missing = await ssh.run("ls /definitely/not/here")
    assert (ok.exit_code, ok.stdout, ok.ok) == (0, "hello\n", True)
    assert (failed.exit_code, failed.stdout, failed.stderr, failed.ok) == (3, "out", "err", False)
    assert missing.exit_code != 0 and "not/here" in missing.stderr


@asyncio_only
async def test_ssh_copy_round_trip(
    ssh_server: SSHServer, checkpoint_tree: CheckpointTree, tmp_path: Path
) -> None:
    source = checkpoint_tree.path(CHECKPOINT)
    fetched = tmp_path / "local" / "deep" / "adapter.safetensors"
    sent = tmp_path / "remote" / "a" / "b" / "adapter.safetensors"
    async with ssh_server.transport() as ssh:
        await ssh.copy_from(str(source), str(fetched))
        await ssh.copy_to(str(fetched), str(sent))
    assert fetched.read_bytes() == source.read_bytes() == sent.read_bytes()
    assert not list(fetched.parent.glob("*.part"))
    # copy_from keeps the remote modification time.
    assert fetched.stat().st_mtime == source.stat().st_mtime


@asyncio_only
async def test_ssh_mtime_is_the_files(
    ssh_server: SSHServer, checkpoint_tree: CheckpointTree
) -> None:
    async with ssh_server.transport() as ssh:
        for relative, mtime in checkpoint_tree.checkpoints.items():
            path = checkpoint_tree.path(relative)
            assert await ssh.mtime(str(path)) == mtime == path.stat().st_mtime


@asyncio_only
async def test_ssh_missing_remote_file_is_a_transport_error(
    ssh_server: SSHServer, tmp_path: Path
) -> None:
    async with ssh_server.transport() as ssh:
        with pytest.raises(TransportError, match="no such file"):
            await ssh.copy_from("/no/such/adapter.safetensors", str(tmp_path / "x"))
        with pytest.raises(TransportError, match="no such file"):
            await ssh.mtime("/no/such/adapter.safetensors")
        with pytest.raises(TransportError, match="no such local file"):
            await ssh.copy_to(str(tmp_path / "absent"), str(tmp_path / "y"))
        assert not (tmp_path / "x").exists()
        assert (await ssh.run("true")).ok  # the connection survives those errors


@asyncio_only
async def test_ssh_reuses_one_connection(
    ssh_server: SSHServer, checkpoint_tree: CheckpointTree, tmp_path: Path
) -> None:
    before = ssh_server.connections
    async with ssh_server.transport() as ssh:
        for index in range(5):
            assert (await ssh.run(f"echo {index}")).stdout == f"{index}\n"
        await ssh.mtime(str(checkpoint_tree.path(CHECKPOINT)))
        await ssh.copy_from(str(checkpoint_tree.path(CHECKPOINT)), str(tmp_path / "a"))
        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(ssh.run, f"echo concurrent {index}")
    assert ssh_server.connections - before == 1
    if ssh_server.kind == "asyncssh":
        assert ssh_server.commands[:5] == [f"echo {index}" for index in range(5)]
        assert len(ssh_server.commands) == 13


@asyncio_only
async def test_ssh_concurrent_first_calls_open_one_connection(ssh_server: SSHServer) -> None:
    before = ssh_server.connections
    async with ssh_server.transport() as ssh, anyio.create_task_group() as group:
        for index in range(6):
            group.start_soon(ssh.run, f"echo {index}")
    assert ssh_server.connections - before == 1


@asyncio_only
async def test_ssh_reconnects_after_the_server_drops_the_connection(
    ssh_server: SSHServer, checkpoint_tree: CheckpointTree, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="goml_async.agent.transport")
    path = str(checkpoint_tree.path(CHECKPOINT))
    before = ssh_server.connections
    async with ssh_server.transport() as ssh:
        assert (await ssh.run("echo one")).stdout == "one\n"
        ssh_server.drop()
        assert (await ssh.run("echo two")).stdout == "two\n"
        await ssh.mtime(path)
        ssh_server.drop()
        # An SFTP call on a dropped connection reconnects too.
        assert await ssh.mtime(path) == checkpoint_tree.checkpoints[CHECKPOINT]
    assert ssh_server.connections - before == 3
    assert sum("reconnecting" in record.getMessage() for record in caplog.records) == 2


@asyncio_only
async def test_ssh_connection_lost_during_a_command(ssh_server: SSHServer) -> None:
    async with ssh_server.transport() as ssh:
        assert (await ssh.run("true")).ok
        dropper = threading.Timer(0.5, ssh_server.drop)
        dropper.start()
        try:
            with pytest.raises(TransportError, match="lost while running 'sleep 5'"):
                await ssh.run("sleep 5")
        finally:
            dropper.join()
        # Not retried (it may have run in part), but the next command reconnects.
        assert (await ssh.run("echo back")).stdout == "back\n"


@asyncio_only
async def test_ssh_rejects_an_unknown_host_key(ssh_server: SSHServer, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text(
        f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIDtWz0rJ6lq+vJ6y1x8Jq3b9TQp1bK1jYVbxH7m1m0wB\n"
    )
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    for known_hosts in (other, empty):
        async with ssh_server.transport(known_hosts=known_hosts) as ssh:
            with pytest.raises(TransportError, match="known_hosts") as caught:
                await ssh.run("true")
        assert caught.value.__cause__ is not None


@asyncio_only
async def test_ssh_missing_known_hosts_file_is_explained(
    asyncssh_server: SSHServer, tmp_path: Path
) -> None:
    async with asyncssh_server.transport(known_hosts=tmp_path / "nope") as ssh:
        with pytest.raises(
            TransportError, match=r"known_hosts file .* does not exist.*ssh-keyscan"
        ):
            await ssh.run("true")
    assert asyncssh_server.connections == 0


@asyncio_only
async def test_ssh_insecure_flag_accepts_any_host_key_loudly(
    ssh_server: SSHServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    caplog.set_level(logging.WARNING, logger="goml_async.agent.transport")
    options = {"known_hosts": empty, "insecure_skip_host_key_check": True}
    async with ssh_server.transport(**options) as ssh:
        assert (await ssh.run("echo in")).stdout == "in\n"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "INSECURE" in warnings[0].getMessage()
    assert f"127.0.0.1:{ssh_server.port}" in warnings[0].getMessage()


@asyncio_only
async def test_ssh_wrong_key_is_refused(ssh_server: SSHServer, tmp_path: Path) -> None:
    import asyncssh

    wrong = tmp_path / "wrong_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(wrong))
    async with ssh_server.transport(key_path=wrong) as ssh:
        with pytest.raises(TransportError, match="refused the login") as caught:
            await ssh.run("true")
    assert isinstance(caught.value.__cause__, asyncssh.PermissionDenied)


@asyncio_only
async def test_ssh_unreadable_key_is_a_transport_error(
    asyncssh_server: SSHServer, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage_key"
    garbage.write_text("not a key\n")
    async with asyncssh_server.transport(key_path=garbage) as ssh:
        with pytest.raises(TransportError, match="garbage_key"):
            await ssh.run("true")
    async with asyncssh_server.transport(key_path=tmp_path / "absent_key") as ssh:
        with pytest.raises(TransportError, match="absent_key"):
            await ssh.run("true")


@asyncio_only
async def test_ssh_refused_port_fails_fast(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    ssh = SSHTransport("127.0.0.1", port=free_port(), known_hosts=known, connect_timeout=5)
    started = time.monotonic()
    with pytest.raises(TransportError, match="cannot connect"):
        await ssh.run("true")
    assert time.monotonic() - started < 5
    await ssh.aclose()


@asyncio_only
async def test_ssh_silent_server_times_out_within_the_connect_timeout(
    silent_port: int, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    ssh = SSHTransport("127.0.0.1", port=silent_port, known_hosts=known, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"timed out after 0\.5 s"):
        await ssh.run("true")
    assert 0.4 < time.monotonic() - started < 3
    await ssh.aclose()


@asyncio_only
async def test_ssh_command_timeout(ssh_server: SSHServer) -> None:
    before = ssh_server.connections
    async with ssh_server.transport(command_timeout=0.5) as ssh:
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"timed out after 0\.5 s.*sleep 5"):
            await ssh.run("sleep 5")
        assert time.monotonic() - started < 3
        assert (await ssh.run("echo still here")).stdout == "still here\n"
    assert ssh_server.connections - before == 1


@asyncio_only
async def test_ssh_closed_transport_refuses_work(asyncssh_server: SSHServer) -> None:
    ssh = asyncssh_server.transport()
    assert (await ssh.run("true")).ok
    await ssh.aclose()
    await ssh.aclose()  # idempotent
    with pytest.raises(TransportError, match="closed"):
        await ssh.run("true")
    assert asyncssh_server.connections == 1


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_ssh_under_trio_is_a_clear_error(asyncssh_server: SSHServer) -> None:
    async with asyncssh_server.transport() as ssh:
        with pytest.raises(GomlError, match=r"asyncio only.*trio"):
            await ssh.run("true")
        with pytest.raises(GomlError, match="asyncio only"):
            await ssh.mtime("/etc/hostname")
    assert asyncssh_server.connections == 0


def test_ssh_validates_its_arguments() -> None:
    with pytest.raises(ConfigError, match="host"):
        SSHTransport("")
    with pytest.raises(ConfigError, match="port"):
        SSHTransport("example.org", port=70000)
    with pytest.raises(ConfigError, match="connect_timeout"):
        SSHTransport("example.org", connect_timeout=0)
    with pytest.raises(ConfigError, match="command_timeout"):
        SSHTransport("example.org", command_timeout=-1)
    ssh = SSHTransport("example.org", user="train", port=2222, known_hosts="~/kh")
    assert repr(ssh) == "SSHTransport('train@example.org:2222')"
    assert ssh.known_hosts == Path("~/kh").expanduser()


def test_ssh_without_asyncssh_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncssh", None)  # makes `import asyncssh` fail
    with pytest.raises(BackendUnavailable, match="asyncssh") as caught:
        SSHTransport("example.org")
    assert caught.value.install_hint == INSTALL_HINT == "pip install 'goml_async[ssh]'"


# -- LocalTransport -------------------------------------------------------------------------------


async def test_local_run_returns_exit_code_and_output(checkpoint_tree: CheckpointTree) -> None:
    async with LocalTransport(checkpoint_tree.root) as local:
        assert isinstance(local, RemoteTransport)
        where = await local.run("pwd")
        failed = await local.run("printf out; printf err >&2; exit 3")
        listing = await local.run("ls -d adapters-*")
    assert (where.exit_code, where.stdout.strip()) == (0, str(checkpoint_tree.root))
    assert (failed.exit_code, failed.stdout, failed.stderr, failed.ok) == (3, "out", "err", False)
    assert "adapters-27b-v2" in listing.stdout.split()


async def test_local_copy_round_trip(checkpoint_tree: CheckpointTree, tmp_path: Path) -> None:
    source = checkpoint_tree.path(CHECKPOINT)
    fetched = tmp_path / "local" / "deep" / "adapter.safetensors"
    async with LocalTransport(checkpoint_tree.root) as local:
        await local.copy_from(CHECKPOINT, str(fetched))  # relative to the root
        await local.copy_to(str(fetched), "uploads/x/adapter.safetensors")
    sent = checkpoint_tree.path("uploads/x/adapter.safetensors")
    assert fetched.read_bytes() == source.read_bytes() == sent.read_bytes()
    assert fetched.stat().st_mtime == source.stat().st_mtime
    assert not list(fetched.parent.glob("*.part"))


async def test_local_mtime_is_the_files(checkpoint_tree: CheckpointTree, tmp_path: Path) -> None:
    odd = tmp_path / "odd"
    odd.write_text("x")
    os.utime(odd, (1_700_000_000.25, 1_700_000_000.25))
    async with LocalTransport(checkpoint_tree.root) as local:
        for relative, mtime in checkpoint_tree.checkpoints.items():
            assert await local.mtime(relative) == mtime
        assert await local.mtime(str(odd)) == odd.stat().st_mtime == 1_700_000_000.25


async def test_local_errors_are_transport_errors(tmp_path: Path) -> None:
    async with LocalTransport(tmp_path) as local:
        with pytest.raises(TransportError, match="no such file"):
            await local.copy_from("absent", str(tmp_path / "x"))
        with pytest.raises(TransportError, match="no such file"):
            await local.copy_to(str(tmp_path / "absent"), "y")
        with pytest.raises(TransportError, match="no such file"):
            await local.mtime("absent")
    with pytest.raises(TransportError, match="cannot run"):
        await LocalTransport(tmp_path / "missing-root").run("true")


async def test_local_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    async with LocalTransport(tmp_path, command_timeout=0.3) as local:
        started = time.monotonic()
        with pytest.raises(TransportError, match=r"timed out after 0\.3 s"):
            await local.run("sleep 30 & echo $! > bg.pid; wait")
        assert time.monotonic() - started < 3
        assert (await local.run("echo still here")).stdout == "still here\n"
    background = int((tmp_path / "bg.pid").read_text())
    with anyio.fail_after(5):
        while _alive(background):  # noqa: ASYNC110 (polling /proc: there is no event to wait on)
            await anyio.sleep(0.02)


async def test_local_closed_transport_refuses_work(tmp_path: Path) -> None:
    local = LocalTransport(tmp_path)
    await local.aclose()
    await local.aclose()
    with pytest.raises(TransportError, match="closed"):
        await local.run("true")


def test_local_validates_and_shows_its_root(tmp_path: Path) -> None:
    assert repr(LocalTransport(tmp_path)) == f"LocalTransport(root={str(tmp_path)!r})"
    assert repr(LocalTransport()) == "LocalTransport(root=None)"
    with pytest.raises(ConfigError, match="command_timeout"):
        LocalTransport(tmp_path, command_timeout=0)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
