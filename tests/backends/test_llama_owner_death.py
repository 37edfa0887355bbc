"""A managed llama-server dies with the process that owns it, however that process ends.

Each test starts a real owner process (a script inside ``async with load_model(...)``,
``goml generate`` or ``goml serve``) that starts a real llama.cpp server (the llama-server binary
and the xllamacpp launcher), ends the owner with a signal, and checks the server is gone and its
port is free again. SIGKILL runs no clean-up at all in the owner: only ``PR_SET_PDEATHSIG``
stops the server then.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import children_of, gone, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"),
]

OWNER = textwrap.dedent(
    """
    import sys, anyio
    from goml_async import load_model

    async def main() -> None:
        kind, path = sys.argv[1], sys.argv[2]
        options = {"use_launcher": True} if kind == "launcher" else {"binary": kind}
        async with await load_model(path, threads=1, **options) as model:
            print(model.server.pid, model.server.port, flush=True)
            await anyio.sleep(3600)

    anyio.run(main)
    """
)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def reap(process: subprocess.Popen[str]) -> None:
    """Kill the process if it still runs, wait for it and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.communicate()


@pytest.fixture(params=["launcher", "llama-server"])
def server_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "launcher":
        request.getfixturevalue("launcher_available")
        return "launcher"
    return str(request.getfixturevalue("real_llama_server"))


@pytest.fixture
def owner(tiny_gguf: Path, server_kind: str) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A script that owns a llama-server, with the server's pid and port."""
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER, server_kind, str(tiny_gguf)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"the owner exited before starting a server (code {process.wait()})"
        pid, port = (int(part) for part in line.split())
        yield process, pid, port
    finally:
        reap(process)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL])
def test_the_server_dies_with_its_owner(
    owner: tuple[subprocess.Popen[str], int, int], signum: signal.Signals
) -> None:
    process, pid, port = owner
    assert not gone(pid)
    process.send_signal(signum)
    process.wait(timeout=30)
    assert wait_until(lambda: gone(pid)), f"llama-server {pid} outlived its owner ({signum.name})"
    assert wait_until(lambda: port_free(port)), f"port {port} still held after {signum.name}"


def _goml(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "goml_async", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _server_child(process: subprocess.Popen[str]) -> int:
    """Wait for the command's llama-server child and return its pid."""
    found: list[int] = []

    def started() -> bool:
        found[:] = children_of(process.pid)
        return bool(found) or process.poll() is not None

    assert wait_until(started, 60), "no llama-server was started"
    assert found, f"goml exited early: {process.communicate()}"
    return found[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_goml_generate_stops_its_server_when_terminated(
    tiny_gguf: Path, launcher_available: None, signum: signal.Signals
) -> None:
    # What `timeout 6 goml generate -n 2000 ...` does, and what closing a terminal sends.
    process = _goml("generate", "--model", str(tiny_gguf), "-n", "100000", "--raw", "hello")
    try:
        child = _server_child(process)
        assert process.stdout is not None
        assert process.stdout.read(1)  # it is streaming
        process.send_signal(signum)
        assert process.wait(timeout=30) == 128 + signum
        assert wait_until(lambda: gone(child))
        assert f"stopped by {signum.name}" in process.communicate()[1]
    finally:
        reap(process)


def test_goml_serve_killed_with_sigkill_takes_its_server(
    tiny_gguf: Path, launcher_available: None
) -> None:
    process = _goml("serve", "--model", str(tiny_gguf), "--port", "0")
    try:
        child = _server_child(process)
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
        process.kill()
        process.wait(timeout=30)
        assert wait_until(lambda: gone(child)), "goml serve's llama-server outlived kill -9"
    finally:
        reap(process)
