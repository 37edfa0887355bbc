"""The app behind a real uvicorn on loopback: real sockets, real disconnects, chunked uploads.

uvicorn runs on asyncio only, so these tests pin ``anyio_backend`` to asyncio; the app itself
is covered on trio too by test_app.py.
"""

from __future__ import annotations

import json
import re
import socket
import time

import anyio
import httpx
import pytest

from goml_async.server import create_app
from goml_async.testing import ScriptedModel

from .helpers import USER, chunk_text, sse_payloads, uvicorn_serving, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn needs asyncio."""
    return "asyncio"


async def test_a_stream_over_http() -> None:
    app = create_app(ScriptedModel(["Hel", "lo"], delay=0.01), model_name="m")
    async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        body = {"messages": [USER], "stream": True, "stream_options": {"include_usage": True}}
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    payloads = sse_payloads(raw)
    assert chunk_text(payloads) == "Hello"
    assert payloads[-1] == "[DONE]"


async def test_a_client_dropping_the_connection_stops_generation() -> None:
    model = ScriptedModel(["tok"] * 2000, delay=0.005)
    app = create_app(model)
    async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        body = {"messages": [USER], "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            chunks = 0
            async for _ in response.aiter_raw():
                chunks += 1
                if chunks == 5:
                    break
        left = time.monotonic()
        await wait_until(lambda: app.active_requests == 0, 2.0)
        stopped_after = time.monotonic() - left
    assert stopped_after < 1.0
    assert app.stats.client_disconnects == 1
    assert model.metrics().generated_tokens < 500


def read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length (the connection may stay open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


async def test_a_chunked_upload_over_the_limit_is_refused_early() -> None:
    app = create_app(ScriptedModel(["x"]), max_body_bytes=10_000)
    async with uvicorn_serving(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            sock.sendall(head.encode())
            piece = b"x" * 4096
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) * 3)  # 12 KiB of an endless body
            sock.settimeout(5)
            reply = await anyio.to_thread.run_sync(read_response, sock)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_too_large"


async def test_without_a_queue_a_burst_over_http_gets_exactly_max_concurrency_through() -> None:
    model = ScriptedModel(["a", "b", "c"], delay=0.05)
    app = create_app(model, max_concurrency=3, max_queue=0)
    statuses: list[int] = []
    async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url) as http:

        async def one() -> None:
            response = await http.post("/v1/chat/completions", json={"messages": [USER]})
            statuses.append(response.status_code)

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(one)
    assert sorted(statuses) == [200] * 3 + [429] * 5
    assert model.max_concurrency == 3
