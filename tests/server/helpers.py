"""What the server tests share: SSE parsing, a hand-driven ASGI client, uvicorn on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from openai.types.chat import ChatCompletionUserMessageParam

from goml_async._sse import ServerSentEvent, SSEDecoder

# Typed as the openai client's message, so it goes to that client as it is.
USER: ChatCompletionUserMessageParam = {"role": "user", "content": "hello there"}


def sse_events(body: bytes) -> list[ServerSentEvent]:
    """Every event of an SSE body, decoded by goml_async's own decoder."""
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.flush()


def sse_payloads(body: bytes) -> list[Any]:
    """The ``data`` of every event, JSON-decoded except ``[DONE]``."""
    return [
        event.data if event.data == "[DONE]" else json.loads(event.data)
        for event in sse_events(body)
    ]


def chunk_text(payloads: list[Any]) -> str:
    """The text carried by OpenAI chat or completion chunks."""
    parts = []
    for payload in payloads:
        if not isinstance(payload, dict) or not payload.get("choices"):
            continue
        choice = payload["choices"][0]
        if "delta" in choice:
            parts.append(choice["delta"].get("content") or "")
        else:
            parts.append(choice.get("text") or "")
    return "".join(parts)


@dataclass
class Exchange:
    """What a hand-driven ASGI request saw."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: int = 0


async def drive(
    app: Any,
    path: str,
    body: dict[str, Any],
    *,
    disconnect_when: Callable[[Exchange], bool] = lambda _: False,
    on_chunk: Callable[[Exchange], None] | None = None,
    gone: anyio.Event | None = None,
) -> Exchange:
    """POST ``body`` to ``app`` as an ASGI server would, disconnecting once ``disconnect_when``
    (or once ``gone`` is set, when given: a client that hangs up before any reply).

    httpx's ASGITransport only sends ``http.disconnect`` once the response is complete, so the
    tests that drop a client mid-stream drive the app by hand (on asyncio and trio alike).
    """
    raw = json.dumps(body).encode()
    seen = Exchange()
    gone = gone or anyio.Event()
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen.status = message["status"]
            seen.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            seen.body += message.get("body", b"")
            seen.chunks += 1
            if on_chunk is not None:
                on_chunk(seen)
            if not message.get("more_body", False) or disconnect_when(seen):
                gone.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return seen


def free_socket() -> socket.socket:
    """A TCP socket on a free loopback port, bound as ``goml serve`` binds its own."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    """``app`` behind a real uvicorn on a free loopback port; yields the base URL.

    uvicorn runs on asyncio only, so the tests that use this pin ``anyio_backend`` to asyncio.
    """
    from goml_async.server._uvicorn import make_server

    sock = free_socket()
    port = sock.getsockname()[1]
    started = anyio.Event()
    server = make_server(app, grace=1.0, on_started=started.set)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            await started.wait()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``condition`` (the server's own counters, which have no event) until it holds."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (polling state that has no event to wait on)
            await anyio.sleep(0.005)
