"""FakeOpenAIServer: a real loopback HTTP/1.1 server speaking OpenAI's chat/completions format.

It streams Server-Sent Events like vLLM, llama-server or OpenAI do, and injects the faults real
servers can't easily be made to produce: stalls, malformed events, abrupt disconnects, error
payloads, error statuses with ``Retry-After``, and SSE bytes split anywhere. It runs on its own
thread with its own event loop, so any test (asyncio or trio) and any benchmark can use it.

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream`` true or false),
``GET /v1/models``, ``GET /health``; anything else is a 404 in OpenAI's error shape.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from .._openai_wire.chunks import new_completion_id
from .._openai_wire.json_text import dumps
from ..errors import ConfigError, LifecycleError
from ._http11 import LAST_CHUNK, ClientGone, Connection, HTTPError, RequestHead, response_head
from ._openai_wire import (
    CompletionRequest,
    Disconnect,
    RecordedRequest,
    ReplyPlan,
    RequestError,
    Script,
    error_body,
    parse_completion_request,
    plain_outcome,
    stream_steps,
)

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Script"]

_ROUTES: Final = {
    "/v1/chat/completions": "POST",
    "/v1/completions": "POST",
    "/v1/models": "GET",
    "/health": "GET",
}
_LOADING: Final = error_body(503, "Loading model")


class FakeOpenAIServer:
    """A scripted OpenAI-compatible HTTP server on ``127.0.0.1``, on a free port.

    Start it with ``with`` (or :meth:`start`/:meth:`stop`); point a client at :attr:`base_url`.
    Behaviour comes from a :class:`Script`, which may be replaced between requests. Counters
    and recorded requests are safe to read from any thread.

    A client's EOF counts as a disconnect: a response in progress stops at once.

    Args:
        script: what to reply and which faults to inject (default: ``Script()``).
        host: the address to listen on.
        port: the port to listen on (0: a free one).

    Example:
        >>> import httpx
        >>> with FakeOpenAIServer(Script(tokens=["Hi", "!"])) as server:
        ...     body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
        ...     reply = httpx.post(f"{server.base_url}/chat/completions", json=body).json()
        >>> message = reply["choices"].pop()["message"]
        >>> message.get("content")
        'Hi!'
    """

    def __init__(
        self, script: Script | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        if script is not None and not isinstance(script, Script):
            raise ConfigError("script", f"must be a Script, got {type(script).__name__}")
        self._lock = threading.Lock()
        self._script = script if script is not None else Script()
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._scope: anyio.CancelScope | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._posts = 0  # completion requests since the script was set (for Script.statuses)
        self._health_checks = 0
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._connections_opened = 0
        self._connections_open = 0
        self._streams_started = 0
        self._streams_completed = 0
        self._streams_aborted = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> FakeOpenAIServer:
        """Start listening on a background thread; return once the port is bound.

        Raises:
            LifecycleError: the server is already running, or it could not start.
        """
        if self._thread is not None:
            raise LifecycleError("FakeOpenAIServer is already running: stop() it first")
        self._ready.clear()
        with self._lock:
            failures = len(self._errors)
        thread = threading.Thread(target=self._run, name="FakeOpenAIServer", daemon=True)
        self._thread = thread
        thread.start()
        self._ready.wait(timeout)
        if self._token is None:
            self.stop()
            with self._lock:
                cause = self._errors[failures] if len(self._errors) > failures else None
            raise LifecycleError(f"FakeOpenAIServer could not start on {self._host}") from cause
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, and join the thread. Idempotent."""
        thread, scope, token = self._thread, self._scope, self._token
        if thread is None:
            return
        if thread.is_alive() and scope is not None and token is not None:
            with contextlib.suppress(RuntimeError):  # RunFinishedError: the loop has ended
                anyio.from_thread.run_sync(scope.cancel, token=token)
        thread.join(timeout)
        self._thread = self._scope = self._token = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException as exc:  # kept for start()/errors: a thread has nowhere to raise
            with self._lock:
                self._errors.append(exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        listener = await anyio.create_tcp_listener(
            local_host=self._host, local_port=self._requested_port
        )
        async with listener:
            self._port = listener.extra(anyio.abc.SocketAttribute.local_port)
            with anyio.CancelScope() as scope:
                self._scope = scope
                self._token = anyio.lowlevel.current_token()
                self._ready.set()
                await listener.serve(self._serve_connection)

    # -- what tests read -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the server must be running)."""
        if self._port is None or self._thread is None:
            raise LifecycleError("FakeOpenAIServer is not running: use `with` or start()")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, the server's root."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the base URL an OpenAI client expects."""
        return f"{self.url}/v1"

    @property
    def script(self) -> Script:
        """The current script; setting one restarts the ``statuses`` and health-check counts."""
        with self._lock:
            return self._script

    @script.setter
    def script(self, script: Script) -> None:
        if not isinstance(script, Script):
            raise ConfigError("script", f"must be a Script, got {type(script).__name__}")
        with self._lock:
            self._script = script
            self._posts = self._health_checks = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected errors inside the server (a bug here, not a client's fault)."""
        with self._lock:
            return list(self._errors)

    @property
    def connections_opened(self) -> int:
        """Connections accepted since the server started."""
        with self._lock:
            return self._connections_opened

    @property
    def connections_open(self) -> int:
        """Connections open now."""
        with self._lock:
            return self._connections_open

    @property
    def streams_started(self) -> int:
        """Streaming replies whose headers were sent."""
        with self._lock:
            return self._streams_started

    @property
    def streams_completed(self) -> int:
        """Streaming replies written up to ``[DONE]`` and the end of the body."""
        with self._lock:
            return self._streams_completed

    @property
    def streams_aborted(self) -> int:
        """Streaming replies that did not complete: the client closed the connection or a
        write failed (noticed at once, even during a delay), or ``disconnect_after`` cut it."""
        with self._lock:
            return self._streams_aborted

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value.

        This blocks the calling thread (the server runs on its own): from async code that must
        keep running meanwhile, call it through ``anyio.to_thread.run_sync``.

        Example:
            >>> with FakeOpenAIServer() as server:
            ...     server.wait_for(lambda: server.streams_aborted == 0, timeout=0.1)
            True
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    # -- connections -----------------------------------------------------------------------------

    async def _serve_connection(self, stream: anyio.abc.ByteStream) -> None:
        connection = Connection(stream)
        with self._lock:
            self._connections_opened += 1
            self._connections_open += 1
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(connection.read_forever)
                try:
                    await self._serve_requests(connection)
                    await connection.finish()
                finally:
                    tg.cancel_scope.cancel()
        except Exception as exc:  # a bug in the server: keep it for the test, drop the client
            with self._lock:
                self._errors.append(exc)
        finally:
            try:
                await anyio.aclose_forcefully(stream)  # raises again when the server is stopping
            finally:
                with self._lock:
                    self._connections_open -= 1

    async def _serve_requests(self, connection: Connection) -> None:
        """Answer requests until the connection is to be closed."""
        while True:
            try:
                request = await connection.read_request()
                if request is None:
                    return
                if not await self._respond(connection, *request):
                    return
            except HTTPError as exc:  # the request cannot be read: answer and close
                body = error_body(exc.status, exc.message)
                with contextlib.suppress(ClientGone):
                    await self._send_json(connection, exc.status, body, keep_alive=False)
                return
            except ClientGone:
                return

    async def _respond(self, connection: Connection, head: RequestHead, body: bytes) -> bool:
        """Answer one request; return whether the connection serves another."""
        started = time.perf_counter()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        method, path, keep_alive = head.method, head.path, head.keep_alive
        with self._lock:
            self._requests.append(RecordedRequest(method, path, dict(head.headers), parsed, body))
        allowed = _ROUTES.get(path)
        if allowed is None:
            message = f"Invalid URL ({method} {path})"
            await self._send_json(connection, 404, error_body(404, message), keep_alive)
        elif method != allowed:
            message = f"{method} is not allowed on {path}: use {allowed}"
            extra = [("Allow", allowed)]
            await self._send_json(connection, 405, error_body(405, message), keep_alive, extra)
        elif path == "/health":
            with self._lock:
                loading = self._health_checks < self._script.loading_until_requests
                self._health_checks += 1
            payload = _LOADING if loading else b'{"status":"ok"}'
            await self._send_json(connection, 503 if loading else 200, payload, keep_alive)
        elif path == "/v1/models":
            model = {"id": self.script.model, "object": "model", "owned_by": "goml"}
            payload = dumps({"object": "list", "data": [model]}).encode()
            await self._send_json(connection, 200, payload, keep_alive)
        else:
            return await self._complete(connection, head, parsed, started)
        return keep_alive

    async def _complete(
        self, connection: Connection, head: RequestHead, body: object, started: float
    ) -> bool:
        chat = head.path == "/v1/chat/completions"
        keep_alive = head.keep_alive
        with self._lock:
            script, posts = self._script, self._posts
            self._posts += 1
        if posts < len(script.statuses):
            status = script.statuses[posts]
            extra = [] if script.retry_after is None else [("Retry-After", script.retry_after)]
            message = f"injected HTTP {status} ({posts + 1} of {len(script.statuses)})"
            payload = error_body(status, message)
            await self._send_json(connection, status, payload, keep_alive, extra)
            return keep_alive
        try:
            request = parse_completion_request(body, chat=chat)
        except RequestError as exc:
            payload = error_body(exc.status, exc.message)
            await self._send_json(connection, exc.status, payload, keep_alive)
            return keep_alive
        reply = _new_reply(script, request)
        if request.stream:
            return await self._stream(connection, head, reply, started)
        delay, status, plain = plain_outcome(reply)
        with connection.watch_eof() as scope:
            await anyio.sleep(delay)
        if scope.cancelled_caught or plain is None:
            return False
        await self._send_json(connection, status, plain, keep_alive)
        return keep_alive

    async def _stream(
        self, connection: Connection, head: RequestHead, reply: ReplyPlan, started: float
    ) -> bool:
        chunked = head.version == "HTTP/1.1"  # HTTP/1.0 gets a body delimited by the close
        keep_alive = head.keep_alive and chunked
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        headers.append(("Connection", "keep-alive" if keep_alive else "close"))
        pending = response_head(200, headers)
        piece = reply.script.chunk_size
        completed = False
        with self._lock:
            self._streams_started += 1
        try:
            with connection.watch_eof():
                for step in stream_steps(reply, started=started):
                    if isinstance(step, bytes):
                        await connection.send_body(step, head=pending, piece=piece, chunked=chunked)
                        pending = b""
                        continue
                    if pending:  # the headers go out before any pause
                        await connection.send(pending)
                        pending = b""
                    if isinstance(step, Disconnect):
                        break
                    await anyio.sleep(step.seconds)
                else:
                    await connection.send(pending + LAST_CHUNK if chunked else pending)
                    completed = True
        except ClientGone:
            pass
        finally:  # also when the server is stopping: a stream cut short is aborted
            with self._lock:
                if completed:
                    self._streams_completed += 1
                else:
                    self._streams_aborted += 1
        return completed and keep_alive

    async def _send_json(
        self,
        connection: Connection,
        status: int,
        payload: bytes,
        keep_alive: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            *(extra or []),
            ("Connection", "keep-alive" if keep_alive else "close"),
        ]
        await connection.send(response_head(status, headers) + payload)


def _new_reply(script: Script, request: CompletionRequest) -> ReplyPlan:
    return ReplyPlan(script, request, new_completion_id(request.chat), int(time.time()))
