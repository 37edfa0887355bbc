"""A TokenStream sent as Server-Sent Events over plain ASGI, stopped when the client leaves.

:class:`TokenStreamSender` is the one place that streams tokens to an HTTP client: the server
app and :mod:`goml_async.integrations.fastapi` both use it. While it sends, a second task
listens for ``http.disconnect``; a client that goes away cancels the send, and leaving the
stream's ``async with`` closes it, which stops generation at the backend (the llama-server
slot goes idle, the MLX thread stops). The headers go out with the first token, so an error
before it gets its own status and a JSON body; an error after it becomes an error event, then
the body ends: it is never dropped silently.

Only anyio is needed here (no Starlette), so this runs under asyncio and trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeAlias, TypeVar

import anyio

from ..stream import StreamItem, TokenStream
from ..tools import ToolCallDelta
from ._wire import ServerError, error_from_exception
from .events import EventEncoder

__all__ = [
    "ASGIReceive",
    "ASGISend",
    "Outcome",
    "SSE_HEADERS",
    "TokenStreamSender",
    "run_until_disconnect",
    "send_json_error",
]

ASGIReceive: TypeAlias = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend: TypeAlias = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: How a sent stream ended: finished (``[DONE]`` sent), failed (an error event sent), the client
#: went away, or it was stopped by :meth:`TokenStreamSender.stop` (e.g. at server shutdown).
Outcome: TypeAlias = Literal["pending", "completed", "error", "disconnected", "stopped"]

#: Headers of every event stream: no caching, and no buffering by a reverse proxy (nginx).
SSE_HEADERS: Final = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)

T = TypeVar("T")


async def _watch_disconnect(receive: ASGIReceive, on_disconnect: Callable[[], None]) -> None:
    """Wait for ``http.disconnect`` (skipping any request body not read), then report it."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            on_disconnect()
            return


async def run_until_disconnect(
    receive: ASGIReceive, work: Callable[[], Awaitable[T]]
) -> tuple[T | None, bool]:
    """Run ``work()`` while listening for the client; cancel it if the client disconnects.

    Returns:
        ``(result, False)`` when the work finished, ``(None, True)`` when the client left first.

    Raises:
        Exception: what ``work()`` raised.
    """
    gone = finished = False
    result: T | None = None
    failure: Exception | None = None

    async with anyio.create_task_group() as group:

        def disconnected() -> None:
            nonlocal gone
            gone = not finished
            group.cancel_scope.cancel()

        group.start_soon(_watch_disconnect, receive, disconnected)
        try:
            result = await work()
        except Exception as exc:  # raised below as itself, not inside an exception group
            failure = exc
        finished = True
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result, gone


class TokenStreamSender:
    """Sends one TokenStream as a ``text/event-stream`` response.

    The status and headers go out with the first token. A failure before it (a bad request
    the backend refused, a timeout, a shutdown) is answered like a non-streamed request: its
    own status and OpenAI's JSON error body. A failure after it is an error event.

    Args:
        stream: the tokens to send; it is closed when sending ends, however it ends.
        encoder: the event format (:class:`~goml_async.server.events.OpenAIEncoder` or
            :class:`~goml_async.server.events.TextEncoder`).
        status: the HTTP status.
        headers: extra response headers, as ``(name, value)`` byte pairs.
        on_error: called with the error reply when the stream fails, and whether the response
            had started (then it was sent as an error event; before the first token it is sent
            as a JSON error with its own status).

    Attributes:
        outcome: how sending ended (see :data:`Outcome`); ``"pending"`` until then.
        error: the error reported in the stream, if any.
    """

    __slots__ = (
        "_encoder",
        "_finished",
        "_headers",
        "_on_error",
        "_scope",
        "_started",
        "_status",
        "_stop_error",
        "_stream",
        "error",
        "outcome",
    )

    def __init__(
        self,
        stream: TokenStream,
        encoder: EventEncoder,
        *,
        status: int = 200,
        headers: Sequence[tuple[bytes, bytes]] = (),
        on_error: Callable[[ServerError, bool], None] | None = None,
    ) -> None:
        self._stream = stream
        self._encoder = encoder
        self._status = status
        self._headers = [*SSE_HEADERS, *headers]
        self._on_error = on_error
        self._scope: anyio.CancelScope | None = None
        self._stop_error: ServerError | None = None
        self._finished = False
        self._started = False
        self.outcome: Outcome = "pending"
        self.error: ServerError | None = None

    def stop(self, error: ServerError | None = None) -> None:
        """Stop generating now; send ``error`` as the stream's last event when given."""
        self._stop_error = error
        if self._scope is None:
            self._scope = anyio.CancelScope()
        self._scope.cancel()

    async def __call__(self, receive: ASGIReceive, send: ASGISend) -> Outcome:
        """Send the response; return how it ended. The stream is always closed afterwards."""
        try:
            async with anyio.create_task_group() as group:

                def disconnected() -> None:
                    if not self._finished:
                        self.outcome = "disconnected"
                    group.cancel_scope.cancel()

                group.start_soon(_watch_disconnect, receive, disconnected)
                try:
                    await self._send(send)
                except OSError:
                    # ASGI servers of spec 2.4 raise OSError from send() once the client is gone.
                    self.outcome = "disconnected"
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
        return self.outcome

    async def _start(self, send: ASGISend) -> None:
        self._started = True
        await send(
            {"type": "http.response.start", "status": self._status, "headers": self._headers}
        )

    async def _send_item(self, item: StreamItem, send: ASGISend) -> None:
        encoder = self._encoder
        if isinstance(item, ToolCallDelta):
            data = encoder.encode_tool_call(item)
        else:
            data = encoder.encode_token(item)
        if not self._started:
            await self._start(send)
            data = encoder.start() + data
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _send(self, send: ASGISend) -> None:
        stream, encoder = self._stream, self._encoder
        if self._scope is None:
            self._scope = anyio.CancelScope()
        tail = b""
        failure: ServerError | None = None
        with self._scope:
            try:
                # The headers wait for the first token: an error before any output still
                # gets its own HTTP status and a JSON body, as a non-streamed request would.
                async with stream, _items(stream) as items:
                    async for item in items:
                        await self._send_item(item, send)
                tail = encoder.end(stream.finish_reason, stream.metrics)
                self.outcome = "completed"
            except OSError:
                raise  # from send(): the client is gone
            except Exception as exc:
                failure = self.error = error_from_exception(exc)
                self.outcome = "error"
                tail = encoder.error(failure)
                if self._on_error is not None:
                    self._on_error(failure, self._started)
        if self._scope.cancelled_caught:
            self.outcome = "stopped"
            failure = self.error = self._stop_error
            tail = encoder.error(failure) if failure is not None else b""
        self._finished = True
        if not self._started:
            if failure is not None:
                await send_json_error(send, failure)
                return
            await self._start(send)
            tail = encoder.start() + tail
        await send({"type": "http.response.body", "body": tail, "more_body": False})


@asynccontextmanager
async def _items(stream: TokenStream) -> AsyncIterator[AsyncIterator[StreamItem]]:
    """The stream's tokens, and its tool-call deltas in arrival order when tools were offered.

    Without tools the stream itself is read: no generator between it and the sender on the
    path every token takes. The events generator is closed on the way out, however it ends.
    """
    if not stream.config.tools:
        yield stream
        return
    events = stream.events()
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def send_json_error(send: ASGISend, error: ServerError) -> None:
    """An error reply in OpenAI's JSON shape, with its own status, over plain ASGI."""
    body = json.dumps(error.body(), ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in error.headers.items()
        ),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
