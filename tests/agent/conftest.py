"""Fixtures of the agent tests: a real checkpoint tree and two real SSH servers.

``checkpoint_tree`` is a folder laid out like a training host's adapter base, holding real tiny
LoRA adapters in mlx-lm's format for the 2-layer ``tiny_mlx`` model (so they load on it).

``small_disk`` is a real 1 MiB tmpfs mounted on a temporary folder, which a test can fill up
(ENOSPC) and free again.

``asyncssh_server`` is an in-process asyncssh server (exec + SFTP) on a free loopback port,
running in its own thread and event loop so that asyncio and trio tests can both use it; it
counts connections and records commands. ``openssh_server`` is Debian's ``/usr/sbin/sshd`` on a
free loopback port with its own config and keys (one per test session). Both yield an
:class:`SSHServer` with what a client needs: host, port, user, key and known_hosts file.
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from model_fixtures import _TINY, _missing, require
from processes import children_of

from goml_async.agent.transport import SSHTransport

# -- the checkpoint tree --------------------------------------------------------------------------

#: The layers and projections the tiny adapters train (mlx-lm's ``lora_parameters.keys``).
LORA_KEYS = ("self_attn.q_proj", "self_attn.v_proj")
LORA_RANK = 4
LORA_SCALE = 20.0

#: Checkpoint files of the tree (relative path -> mtime, whole seconds and all distinct).
TREE_CHECKPOINTS = {
    "adapters-27b-v2/0000100_adapters.safetensors": 1_750_000_100.0,
    "adapters-27b-v2/0000200_adapters.safetensors": 1_750_000_200.0,
    "adapters-15k/gemma-3-12b/0000050_adapters.safetensors": 1_750_000_050.0,
    "adapters-vi/0000300_adapters.safetensors": 1_750_000_300.0,
}


@dataclass(frozen=True)
class CheckpointTree:
    """A checkpoint tree on disk: ``root`` is the adapter base.

    ``checkpoints`` maps each checkpoint file (relative to ``root``) to its mtime. Besides them
    the tree holds an ``adapter_config.json`` in every adapter folder, mlx-lm's final
    ``adapters.safetensors``, a log file, an ``adapters-empty`` folder and a
    ``checkpoints-old`` folder whose adapter must not be found.
    """

    root: Path
    checkpoints: dict[str, float]

    def path(self, relative: str) -> Path:
        return self.root / relative


def _lora_dims() -> dict[str, tuple[int, int]]:
    """(input, output) sizes of the adapted projections of the tiny model."""
    hidden = _TINY["hidden_size"]
    kv_out = _TINY["num_key_value_heads"] * _TINY["head_dim"]
    q_out = _TINY["num_attention_heads"] * _TINY["head_dim"]
    return {"self_attn.q_proj": (hidden, q_out), "self_attn.v_proj": (hidden, kv_out)}


def _save_safetensors(tensors: dict[str, Any], path: Path) -> None:
    """Write float32 numpy arrays as safetensors (the package if installed, else by hand)."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
        offset, blobs = 0, []
        for name in sorted(tensors):
            blob = tensors[name].astype("<f4").tobytes()
            header[name] = {
                "dtype": "F32",
                "shape": list(tensors[name].shape),
                "data_offsets": [offset, offset + len(blob)],
            }
            offset += len(blob)
            blobs.append(blob)
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
        path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    else:
        save_file(tensors, str(path), metadata={"format": "mlx"})


def write_mlx_adapter(path: Path, *, seed: int = 0) -> Path:
    """A rank-4 LoRA adapter for the tiny model, as mlx-lm saves one (float32 safetensors)."""
    np = require("numpy")
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(_TINY["num_hidden_layers"]):
        for key, (inputs, outputs) in _lora_dims().items():
            prefix = f"model.layers.{layer}.{key}"
            tensors[f"{prefix}.lora_a"] = rng.normal(0, 0.02, (inputs, LORA_RANK)).astype("f4")
            tensors[f"{prefix}.lora_b"] = rng.normal(0, 0.02, (LORA_RANK, outputs)).astype("f4")
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_safetensors(tensors, path)
    return path


def write_adapter_config(folder: Path) -> Path:
    """mlx-lm's ``adapter_config.json`` for :func:`write_mlx_adapter`'s adapters."""
    config = {
        "fine_tune_type": "lora",
        "num_layers": _TINY["num_hidden_layers"],
        "lora_parameters": {
            "rank": LORA_RANK,
            "scale": LORA_SCALE,
            "dropout": 0.0,
            "keys": list(LORA_KEYS),
        },
        "model": "tiny-random-llama",
        "iters": 300,
        "batch_size": 1,
        "learning_rate": 1e-5,
    }
    path = folder / "adapter_config.json"
    path.write_text(json.dumps(config, indent=4))
    return path


@pytest.fixture
def checkpoint_tree(tmp_path: Path) -> CheckpointTree:
    """A fresh adapter base with real tiny mlx-lm adapters (see :class:`CheckpointTree`)."""
    root = tmp_path / "lem"
    for seed, (relative, mtime) in enumerate(TREE_CHECKPOINTS.items()):
        adapter = write_mlx_adapter(root / relative, seed=seed)
        write_adapter_config(adapter.parent)
        os.utime(adapter, (mtime, mtime))
    # Not checkpoints: mlx-lm's final copy, a log, an empty run, a folder not named adapters-*.
    write_mlx_adapter(root / "adapters-27b-v2" / "adapters.safetensors", seed=99)
    (root / "adapters-27b-v2" / "train.log").write_text("Iter 100: loss 1.23\n")
    (root / "adapters-15k" / "README.txt").write_text("replaced by its gemma-3-* folders\n")
    (root / "adapters-empty").mkdir()
    write_mlx_adapter(root / "checkpoints-old" / "0000100_adapters.safetensors", seed=98)
    return CheckpointTree(root, dict(TREE_CHECKPOINTS))


# -- a small real disk ----------------------------------------------------------------------------


@dataclass
class SmallDisk:
    """A mounted tmpfs of ``size`` bytes at ``path``; :meth:`fill` uses up its space."""

    path: Path
    size: int

    @property
    def _filler(self) -> Path:
        return self.path / "filler"

    def fill(self, *, leave: int = 0) -> None:
        """Write a filler file until the disk is full (ENOSPC), then free ``leave`` bytes of it.

        tmpfs counts whole pages, so ``leave`` is rounded up to a multiple of 4096.
        """
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            block = b"\0" * 4096
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            if leave:
                size = os.fstat(fd).st_size
                os.ftruncate(fd, max(0, size - -(-leave // 4096) * 4096))
        finally:
            os.close(fd)

    def free(self) -> None:
        """Remove the filler file: the space is free again."""
        self._filler.unlink(missing_ok=True)

    def files(self, folder: str | Path) -> dict[str, bytes]:
        """Every file under ``path / folder``, by relative name, with its bytes."""
        root = self.path / folder
        return {
            str(file.relative_to(root)): file.read_bytes()
            for file in sorted(root.rglob("*"))
            if file.is_file()
        }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A real 1 MiB tmpfs, mounted for the test (root only; CI runs as root)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    size = 1024 * 1024
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        _missing(
            "cannot mount a tmpfs to fill up (it needs root, or CAP_SYS_ADMIN): "
            + (mounted.stderr.strip() or f"mount exited with {mounted.returncode}")
        )
    try:
        yield SmallDisk(mount_point, size)
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


# -- SSH servers ----------------------------------------------------------------------------------


@dataclass
class SSHServer:
    """How to reach a test SSH server, plus what the tests may do to it.

    ``connections`` counts the logins the server accepted so far (the OpenSSH server lives for
    the whole session, so compare before and after). ``commands`` records the commands run,
    on the asyncssh server only. ``drop()`` closes every client connection from the server
    side while the server keeps listening.
    """

    host: str
    port: int
    user: str
    key_path: Path
    known_hosts: Path
    root: Path
    kind: str
    commands: list[str] = field(default_factory=list)
    accepted: int = 0
    _count: Callable[[], int] | None = None
    _drop: Callable[[], None] = lambda: None

    @property
    def connections(self) -> int:
        return self._count() if self._count is not None else self.accepted

    def drop(self) -> None:
        self._drop()

    def transport(self, **options: Any) -> SSHTransport:
        """An :class:`SSHTransport` to this server (``options`` override the defaults)."""
        settings: dict[str, Any] = {
            "user": self.user,
            "port": self.port,
            "key_path": self.key_path,
            "known_hosts": self.known_hosts,
            "connect_timeout": 5.0,
            "command_timeout": 20.0,
        }
        settings.update(options)
        return SSHTransport(self.host, **settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _AsyncsshThread:
    """An asyncssh server with its own event loop in a daemon thread."""

    def __init__(self, info: SSHServer, host_key: Any, client_public: str) -> None:
        self.info = info
        self.host_key = host_key
        self.client_public = client_public
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.live: set[Any] = set()
        self.thread = threading.Thread(target=self._run, name="asyncssh-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        import asyncssh

        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        owner = self

        class CountingServer(asyncssh.SSHServer):
            def connection_made(self, conn: Any) -> None:
                owner.info.accepted += 1
                owner.live.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                owner.live.difference_update({c for c in owner.live if c.is_closed()})

        server = await asyncssh.create_server(
            CountingServer,
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(self.client_public),
            process_factory=self._handle,
            sftp_factory=asyncssh.SFTPServer,  # the real file system, like OpenSSH's sftp
        )
        self.info.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await self.stop.wait()
        server.close()
        await self._close_all()
        await server.wait_closed()

    async def _handle(self, process: Any) -> None:
        """Run the command with /bin/sh in the tree; kill it if the client goes away."""
        command = process.command or ""
        self.info.commands.append(command)
        proc = await asyncio.create_subprocess_shell(
            command,
            cwd=self.info.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        finished = asyncio.ensure_future(proc.communicate())
        closed = asyncio.ensure_future(process.channel.wait_closed())
        try:
            await asyncio.wait({finished, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone = closed.done()
            closed.cancel()
            if not finished.done():
                os.killpg(proc.pid, signal.SIGKILL)
                await finished
        if gone:
            return
        out, err = finished.result()
        process.stdout.write(out.decode(errors="replace"))
        process.stderr.write(err.decode(errors="replace"))
        code = proc.returncode if proc.returncode is not None else 255
        process.exit(code if code >= 0 else 128 - code)

    async def _close_all(self) -> None:
        conns = list(self.live)
        self.live.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed()

    def drop(self) -> None:
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self._close_all(), self.loop).result(timeout=10)

    def close(self) -> None:
        if self.loop is not None and self.stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)


@pytest.fixture
def asyncssh_server(checkpoint_tree: CheckpointTree, tmp_path: Path) -> Iterator[SSHServer]:
    """An in-process asyncssh server (exec with /bin/sh in the tree, SFTP) on loopback."""
    asyncssh = require("asyncssh")
    folder = tmp_path / "asyncssh"
    folder.mkdir()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = folder / "id_ed25519"
    client_key.write_private_key(str(key_path))
    info = SSHServer(
        host="127.0.0.1",
        port=0,
        user=getpass.getuser(),
        key_path=key_path,
        known_hosts=folder / "known_hosts",
        root=checkpoint_tree.root,
        kind="asyncssh",
    )
    server = _AsyncsshThread(info, host_key, client_key.export_public_key().decode())
    server.thread.start()
    if not server.ready.wait(timeout=10) or server.error is not None:
        server.close()
        raise RuntimeError(f"the asyncssh server did not start: {server.error!r}")
    public = host_key.export_public_key().decode().strip()
    info.known_hosts.write_text(f"[127.0.0.1]:{info.port} {public}\n")
    info._drop = server.drop
    try:
        yield info
    finally:
        server.close()


@pytest.fixture(params=["asyncssh", pytest.param("openssh", marks=pytest.mark.slow)])
def ssh_server(request: pytest.FixtureRequest) -> SSHServer:
    """Run a test against the asyncssh server and against OpenSSH's sshd."""
    server: SSHServer = request.getfixturevalue(f"{request.param}_server")
    return server


SSHD = Path("/usr/sbin/sshd")
SSHD_HINT = "apt-get install -y openssh-server openssh-client"

_SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/ssh_host_ed25519_key
AuthorizedKeysFile {folder}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
PrintLastLog no
MaxSessions 64
Subsystem sftp internal-sftp
PidFile {folder}/sshd.pid
LogLevel VERBOSE
"""


@pytest.fixture(scope="session")
def openssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """Debian's OpenSSH sshd on a free loopback port, with its own config and keys.

    One server per test session. Key login only, as the current user. ``root`` is ``/``: the
    server sees the whole file system, so tests use absolute paths.
    """
    keygen = shutil.which("ssh-keygen")
    if not SSHD.exists() or keygen is None:
        _missing(f"OpenSSH's sshd is not installed; install it with: {SSHD_HINT}")
    assert keygen is not None
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("ssh_host_ed25519_key", "id_ed25519"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
            check=True,
            capture_output=True,
        )
    shutil.copy(folder / "id_ed25519.pub", folder / "authorized_keys")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(_SSHD_CONFIG.format(port=port, folder=folder))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    log_path = folder / "sshd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            pytest.fail(f"sshd exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"sshd did not listen on {port}:\n{log_path.read_text()}")
            time.sleep(0.05)
    public = (folder / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")

    def drop() -> None:
        # Each client connection is served by a child of the listening sshd: end them all.
        for pid in children_of(process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while children_of(process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def accepted() -> int:
        return log_path.read_text(errors="replace").count("Accepted publickey")

    info = SSHServer(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        key_path=folder / "id_ed25519",
        known_hosts=known_hosts,
        root=Path("/"),
        kind="openssh",
        _count=accepted,
        _drop=drop,
    )
    try:
        yield info
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
