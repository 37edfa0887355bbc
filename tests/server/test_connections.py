"""Slowloris on real sockets: headers sent a byte at a time, a body that never finishes, more
connections than the cap, against the server ``goml serve`` runs (uvicorn, asyncio only)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from goml_async.server import create_app
from goml_async.server._connections import (
    ConnectionLimits,
    accept_backlog,
    default_max_connections,
)
from goml_async.server._uvicorn import make_server
from goml_async.server.app import ServerApp
from goml_async.testing import ScriptedModel

from .helpers import USER, free_socket, wait_until

pytestmark = pytest.mark.anyio

SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"x" * 4000


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn needs asyncio."""
    return "asyncio"


@asynccontextmanager
async def serving(app: ServerApp, limits: ConnectionLimits) -> AsyncIterator[int]:
    """``app`` behind ``goml serve``'s uvicorn set-up on a free port; yields the port."""
    sock = free_socket()
    port = sock.getsockname()[1]
    started = anyio.Event()
    server = make_server(app, grace=1.0, on_started=started.set, limits=limits)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            await started.wait()
        try:
            yield port
        finally:
            server.should_exit = True


async def dribble(port: int, closed_after: list[float], head: bytes = b"") -> None:
    """Connect, send ``head``, then the slow headers one byte every 50 ms until the server
    closes the connection; record how long it stayed open."""
    opened = time.monotonic()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        if head:
            await stream.send(head)
            await stream.receive()  # the response to the complete request
        try:
            for byte in SLOW_HEAD:
                await stream.send(bytes([byte]))
                with anyio.move_on_after(0.05):
                    if not await stream.receive():
                        break
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            pass
    closed_after.append(time.monotonic() - opened)


async def test_slow_headers_are_cut_off_and_a_probe_still_gets_through() -> None:
    app = create_app(ScriptedModel(["hi"]))
    limits = ConnectionLimits(header_timeout=1.0, max_connections=16)
    closed_after: list[float] = []
    async with serving(app, limits) as port, anyio.create_task_group() as group:
        for _ in range(41):
            group.start_soon(dribble, port, closed_after)
        assert app.connection_stats is not None
        connections: Callable[[], dict[str, Any]] = app.connection_stats
        await wait_until(lambda: connections()["shed_total"] >= 40 - 16 + 1)
        asked = time.monotonic()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            probe = await http.get("/healthz", timeout=5)
        probed_in = time.monotonic() - asked
        await wait_until(lambda: len(closed_after) == 41, 10.0)
    assert probe.status_code == 200
    assert probed_in < 1.0  # well within the header timeout: the cap made room
    assert max(closed_after) < limits.header_timeout + 1.0  # none outlived the header timeout
    stats = probe.json()["connections"]
    assert stats["max_connections"] == 16 and stats["header_timeout_seconds"] == 1.0
    final = connections()
    assert final["header_timeouts_total"] >= 1
    assert final["shed_total"] + final["header_timeouts_total"] >= 41


async def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request() -> None:
    app = create_app(ScriptedModel(["hi"]))
    limits = ConnectionLimits(header_timeout=0.5)
    closed_after: list[float] = []
    async with serving(app, limits) as port:
        first = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        with anyio.fail_after(10):
            await dribble(port, closed_after, first)
        connections = app.connection_stats
        assert connections is not None
        assert connections()["header_timeouts_total"] == 1
    # Closed by the header timeout (0.5 s after the response), not kept open by the bytes that
    # reset uvicorn's keep-alive timer (5 s).
    assert 0.5 <= closed_after[0] < 2.0


async def test_a_body_that_never_finishes_is_cut_off() -> None:
    model = ScriptedModel(["hi"])
    app = create_app(model)
    limits = ConnectionLimits(body_timeout=0.5)
    async with serving(app, limits) as port:
        started = time.monotonic()
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"messages"'
            )
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)):
                with anyio.fail_after(5):
                    while True:
                        await stream.receive()  # nothing comes but the end
        held = time.monotonic() - started
        await wait_until(lambda: app.stats.client_disconnects == 1)
        connections = app.connection_stats
        assert connections is not None and connections()["body_timeouts_total"] == 1
    assert 0.5 <= held < 2.0
    assert model.calls == []


async def test_when_every_connection_is_busy_a_new_one_is_refused() -> None:
    app = create_app(ScriptedModel(["tok"] * 200, delay=0.01), max_concurrency=4)
    limits = ConnectionLimits(max_connections=2)
    body = {"messages": [USER], "stream": True}
    async with serving(app, limits) as port, anyio.create_task_group() as group:
        url = f"http://127.0.0.1:{port}"
        finished: list[int] = []

        async def stream_one() -> None:
            async with (
                httpx.AsyncClient(base_url=url) as http,
                http.stream("POST", "/v1/chat/completions", json=body, timeout=10) as reply,
            ):
                finished.append(len(await reply.aread()))

        for _ in range(2):
            group.start_soon(stream_one)
        await wait_until(lambda: app.active_requests == 2)
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient(base_url=url) as http:
                await http.get("/healthz", timeout=5)
        await wait_until(lambda: len(finished) == 2, 10.0)
    connections = app.connection_stats
    assert connections is not None and connections()["refused_total"] == 1
    assert all(size > 0 for size in finished)  # the busy ones were not cut


def test_the_defaults_follow_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() == max(16, min(1024, soft // 2))
    assert ConnectionLimits().max_connections == default_max_connections()
    assert 8 <= accept_backlog(default_max_connections()) <= 2048


@pytest.mark.parametrize(
    ("field", "value"),
    [("header_timeout", 0), ("body_timeout", -1.0), ("max_connections", -1)],
)
def test_bad_limits_name_the_field(field: str, value: float) -> None:
    from goml_async.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        ConnectionLimits(**{field: value})  # type: ignore[arg-type]
    assert caught.value.field == field
