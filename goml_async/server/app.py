"""The OpenAI-compatible ASGI app: any TextModel behind ``/v1/chat/completions`` and friends.

Routes:

- ``POST /v1/chat/completions``, ``POST /v1/completions``: streamed (SSE) or not, in OpenAI's
  wire format, with usage from the backend's own token counts;
- ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /v1/models/{id}/info`` (ModelInfo and the
  last call's metrics);
- ``GET /healthz``: status, model, limits and counters (never needs the API key);
- ``GET /`` and ``GET /static/...``: the chat page and its assets.

Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with the matching
status. This module needs the ``server`` extra (Starlette); build the app with
:func:`goml_async.server.create_app`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ..model import TextModel
from ..stream import TokenStream
from ..types import Result
from ._wire import (
    CompletionRequest,
    ServerError,
    completion_reply,
    error_from_exception,
    new_completion_id,
    parse_completion_request,
)
from .events import OpenAIEncoder
from .limits import (
    BodyTooLarge,
    ConcurrencyGate,
    ServerConfig,
    bearer_token_ok,
    clamp_max_tokens,
    read_body,
    window_messages,
)
from .sse import TokenStreamSender, run_until_disconnect
from .stats import ServerStats

__all__ = ["ServerApp", "read_json_body"]

logger = logging.getLogger("goml_async.server")

_SHUTTING_DOWN = "the server is shutting down"
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}


class _PlainJob:
    """A non-streamed completion in progress, which the shutdown may stop."""

    __slots__ = ("error", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.error: ServerError | None = None

    def stop(self, error: ServerError | None = None) -> None:
        self.error = error
        self.scope.cancel()


class _Endpoint:
    """A raw ASGI endpoint: Starlette routes it without wrapping it in request/response."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


def _default_name(model: TextModel) -> str:
    name = getattr(model, "model_name", "")
    return name if isinstance(name, str) and name else model.model_type


async def read_json_body(request: Request, max_body_bytes: int) -> object:
    """The request's JSON body, read incrementally up to ``max_body_bytes``.

    Raises:
        ServerError: 400 for a bad Content-Length or a body that is not JSON, 413 for a body
            over the limit.
    """
    declared = request.headers.get("content-length")
    try:
        length = int(declared) if declared is not None else None
    except ValueError:
        raise ServerError(400, f"invalid Content-Length {declared!r}") from None
    try:
        body = await read_body(request.stream(), max_body_bytes, declared_length=length)
    except BodyTooLarge as exc:
        raise ServerError(413, str(exc), code="request_too_large") from None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServerError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None


class ServerApp:
    """An ASGI app serving one TextModel in OpenAI's format.

    Build it with :func:`goml_async.server.create_app`; run it with any ASGI server
    (``uvicorn.run(app)``) or ``goml serve``. The app does not own the model: close the model
    yourself after the server stops.

    Attributes:
        model: the model served.
        config: the limits.
        model_name: the name clients ask for (``""`` and an omitted ``model`` are accepted too).
        stats: the counters ``/healthz`` reports.
    """

    def __init__(
        self,
        model: TextModel,
        config: ServerConfig,
        routes: Sequence[BaseRoute] | Callable[[ServerApp], Sequence[BaseRoute]] = (),
    ) -> None:
        self.model = model
        self.config = config
        self.model_name = config.model_name or _default_name(model)
        self.stats = ServerStats()
        self._gate = ConcurrencyGate(config.max_concurrency)
        self._jobs: set[TokenStreamSender | _PlainJob] = set()
        self._stopped: set[TokenStreamSender | _PlainJob] = set()
        self._shutting_down = False
        self._idle: anyio.Event | None = None
        self._started = time.monotonic()
        self._created = int(time.time())
        extra = routes(self) if callable(routes) else routes
        routes = [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/models/{model_id:path}/info", self._model_info, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self._model, methods=["GET"]),
            Route("/v1/chat/completions", _Endpoint(self._chat), methods=["POST"]),
            Route("/v1/completions", _Endpoint(self._completion), methods=["POST"]),
            *extra,  # e.g. the /v1/ml routes goml serve mounts
            Route("/", self._index, methods=["GET"]),
            Mount("/static", StaticFiles(directory=config.static_dir, check_dir=False)),
        ]
        self._app = Starlette(
            routes=routes,
            exception_handlers={
                ServerError: self._server_error,
                HTTPException: self._http_error,
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    # -- state ------------------------------------------------------------------------------------

    @property
    def active_requests(self) -> int:
        """Completion requests being served now."""
        return self._gate.active

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`start_shutdown` was called: new completions get 503."""
        return self._shutting_down

    def start_shutdown(self) -> None:
        """Refuse new completion requests (503); those in progress go on."""
        self._shutting_down = True

    async def drain(self, grace: float) -> int:
        """Shut down: wait up to ``grace`` seconds for the requests in progress, then stop
        the rest (a stream gets an error event, a plain request 503). Returns how many were
        stopped."""
        self.start_shutdown()
        with anyio.move_on_after(grace):
            await self._wait_idle()
        left = [job for job in self._jobs if job not in self._stopped]
        self._stopped.update(left)
        for job in left:
            job.stop(ServerError(503, _SHUTTING_DOWN, code="shutting_down"))
        with anyio.move_on_after(5.0):
            await self._wait_idle()
        self.stats.stopped_at_shutdown += len(left)
        return len(left)

    async def _wait_idle(self) -> None:
        if self._gate.active:
            # One event for every waiter (a second signal drains while the first still waits).
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()
            await self._idle.wait()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Count one request of another route (e.g. ``/v1/ml/generate``) against the same
        concurrency cap and shutdown drain as the completions.

        Raises:
            ServerError: 503 while shutting down, 429 when the cap is reached.
        """
        if self._shutting_down:
            raise ServerError(503, _SHUTTING_DOWN, code="shutting_down")
        if not self._gate.try_enter():
            raise self._busy()
        try:
            yield
        finally:
            self._leave()

    def _busy(self) -> ServerError:
        return ServerError(
            429,
            f"the server is busy: {self._gate.limit} request(s) in progress, the most it serves "
            "at once; retry later",
            type="rate_limit_error",
            code="server_busy",
            headers={"Retry-After": str(self.config.retry_after)},
        )

    def _leave(self) -> None:
        self._gate.leave()
        if not self._gate.active and self._idle is not None:
            self._idle.set()

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` answers."""
        config = self.config
        stats = asdict(self.stats)
        return {
            "status": "shutting_down" if self._shutting_down else "ok",
            "model": self.model_name,
            "model_type": self.model.model_type,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "active_requests": self._gate.active,
            "max_concurrency": config.max_concurrency,
            "max_tokens": config.max_tokens,
            "max_context": config.max_context,
            "timeout_seconds": config.timeout,
            "max_body_bytes": config.max_body_bytes,
            "auth_required": config.api_key is not None,
            **{
                f"{name}_total" if name != "by_status" else "errors_by_status": value
                for name, value in stats.items()
            },
        }

    # -- plain routes -----------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if not bearer_token_ok(request.headers, self.config.api_key):
            raise ServerError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>' "
                "(the key is the server's GOML_SERVER_API_KEY)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _check_model(self, requested: str) -> None:
        if requested and requested != self.model_name:
            raise ServerError(
                404,
                f"the model {requested!r} does not exist here; this server serves "
                f"{self.model_name!r} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def _model_card(self) -> dict[str, Any]:
        info = self.model.info()
        return {
            "id": self.model_name,
            "object": "model",
            "created": self._created,
            "owned_by": "goml_async",
            # llama.cpp's names, which HTTPModel.refresh_info reads.
            "meta": {
                "general.architecture": info.architecture,
                "n_vocab": info.vocab_size,
                "n_embd": info.hidden_size,
            },
            "max_tokens": self.config.max_tokens,
        }

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse(self.health(), status_code=503 if self._shutting_down else 200)

    async def _models(self, request: Request) -> Response:
        self._authorize(request)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def _model(self, request: Request) -> Response:
        self._authorize(request)
        self._check_model(request.path_params["model_id"] or "?")
        return JSONResponse(self._model_card())

    async def _model_info(self, request: Request) -> Response:
        self._authorize(request)
        self._check_model(request.path_params["model_id"] or "?")
        metrics = self.model.metrics()
        return JSONResponse(
            {
                "id": self.model_name,
                **asdict(self.model.info()),
                "prefill_tokens_per_sec": metrics.prefill_tokens_per_sec,
                "decode_tokens_per_sec": metrics.decode_tokens_per_sec,
                "peak_memory_bytes": metrics.peak_memory_bytes,
                "active_memory_bytes": metrics.active_memory_bytes,
                "metrics": asdict(metrics),
            }
        )

    async def _index(self, request: Request) -> Response:
        page = self.config.static_dir / "index.html"
        if not await anyio.Path(page).is_file():
            raise ServerError(
                404, "no chat page is installed (static/index.html)", code="not_found"
            )
        return FileResponse(page, media_type="text/html; charset=utf-8")

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServerError)
        self.stats.count_error(exc)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _STATUS_CODES.get(exc.status_code)
        error = ServerError(
            exc.status_code,
            f"{exc.detail}: {request.method} {request.url.path}",
            code=code,
            headers=exc.headers,
        )
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    # -- completions ------------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._complete(scope, receive, send, chat=True)

    async def _completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._complete(scope, receive, send, chat=False)

    async def _send_error(
        self, error: ServerError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.stats.count_error(error)
        if error.status >= 500:
            logger.warning(
                "%s %s: %d %s", scope.get("method"), scope.get("path"), error.status, error.message
            )
        response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
        await response(scope, receive, send)

    async def _read(self, request: Request, *, chat: bool) -> CompletionRequest:
        payload = await read_json_body(request, self.config.max_body_bytes)
        return parse_completion_request(payload, chat=chat)

    async def _complete(self, scope: Scope, receive: Receive, send: Send, *, chat: bool) -> None:
        self.stats.requests += 1
        request = Request(scope, receive)
        try:
            self._authorize(request)
            if self._shutting_down:
                raise ServerError(503, _SHUTTING_DOWN, code="shutting_down")
            parsed = await self._read(request, chat=chat)
            self._check_model(parsed.model)
            # The check and the count are one synchronous step: no await can slip between.
            if not self._gate.try_enter():
                raise self._busy()
        except ServerError as error:
            await self._send_error(error, scope, receive, send)
            return
        try:
            try:
                stream = self._open(parsed)
            except Exception as exc:
                await self._send_error(error_from_exception(exc), scope, receive, send)
                return
            if parsed.stream:
                await self._stream_reply(stream, parsed, receive, send)
            else:
                await self._plain_reply(stream, parsed, scope, receive, send)
        finally:
            self._leave()

    def _open(self, parsed: CompletionRequest) -> TokenStream:
        """The model's TokenStream for a request, within the server's limits."""
        options = dict(parsed.options)
        options["max_tokens"] = clamp_max_tokens(parsed.max_tokens, self.config.max_tokens)
        if self.config.timeout is not None:
            options["total_timeout"] = self.config.timeout
        if parsed.chat:
            messages = window_messages(parsed.messages, self.config.max_context)
            return self.model.chat(messages, **options)
        return self.model.generate(parsed.prompt, **options)

    async def _stream_reply(
        self, stream: TokenStream, parsed: CompletionRequest, receive: Receive, send: Send
    ) -> None:
        encoder = OpenAIEncoder(
            chat=parsed.chat, model=self.model_name, include_usage=parsed.include_usage
        )
        sender = TokenStreamSender(stream, encoder, on_error=self._stream_failed)
        self._jobs.add(sender)
        try:
            outcome = await sender(receive, send)
        finally:
            self._jobs.discard(sender)
            self._stopped.discard(sender)
        if outcome == "completed":
            self.stats.completed += 1
        elif outcome == "disconnected":
            self.stats.client_disconnects += 1

    def _stream_failed(self, error: ServerError, started: bool) -> None:
        self.stats.count_error(error, in_stream=started)
        if started or error.status >= 500:
            when = "after" if started else "before"
            logger.warning("stream failed %s it started: %d %s", when, error.status, error.message)

    async def _plain_reply(
        self,
        stream: TokenStream,
        parsed: CompletionRequest,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        job = _PlainJob()
        self._jobs.add(job)

        async def collect() -> Result | None:
            with job.scope:
                return await stream.collect()
            return None

        try:
            result, gone = await run_until_disconnect(receive, collect)
        except Exception as exc:
            await self._send_error(error_from_exception(exc), scope, receive, send)
            return
        finally:
            self._jobs.discard(job)
            self._stopped.discard(job)
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        if gone:
            self.stats.client_disconnects += 1
            return
        if result is None:
            await self._send_error(
                job.error or ServerError(503, _SHUTTING_DOWN, code="shutting_down"),
                scope,
                receive,
                send,
            )
            return
        reply = completion_reply(
            chat=parsed.chat,
            completion_id=new_completion_id(parsed.chat),
            created=int(time.time()),
            model=self.model_name,
            text=result.text,
            finish_reason=result.finish_reason,
            metrics=result.metrics,
        )
        self.stats.completed += 1
        await JSONResponse(reply)(scope, receive, send)
