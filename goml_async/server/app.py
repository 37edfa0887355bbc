"""The OpenAI-compatible ASGI app: any TextModel behind ``/v1/chat/completions`` and friends.

Routes:

- ``POST /v1/chat/completions``, ``POST /v1/completions``: streamed (SSE) or not, in OpenAI's
  wire format, with usage from the backend's own token counts
  (:mod:`goml_async.server.completions`);
- ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /v1/models/{id}/info`` (ModelInfo and the
  last call's metrics);
- ``GET /healthz``: status, model, limits, queue and counters (never needs the API key);
- ``GET /`` and ``GET /static/...``: the chat page and its assets.

Every request first passes the Host/Origin/Content-Type checks of
:mod:`goml_async.server.guard`. Generation requests take one of ``max_concurrency`` places,
waiting in a bounded FIFO line for one (:mod:`goml_async.server.admission`). Errors are
OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with the matching status, also for
the unexpected (a JSON 500, counted). This module needs the ``server`` extra (Starlette); build
the app with :func:`goml_async.server.create_app`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
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
from ._wire import ServerError, shown
from .admission import Admission, QueueClosed, QueueFull, QueueTimeout
from .completions import Completions, Endpoint, Stoppable
from .guard import RequestGuard
from .limits import ServerConfig, bearer_token_ok
from .sse import send_json_error
from .stats import ServerStats

__all__ = ["ANY_NAME", "ServerApp", "Stoppable"]

logger = logging.getLogger("goml_async.server")

_SHUTTING_DOWN = "the server is shutting down"
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}
#: The ``aliases`` entry that makes the server accept any model name.
ANY_NAME = "*"


def _default_name(model: TextModel) -> str:
    name = getattr(model, "model_name", "")
    return name if isinstance(name, str) and name else model.model_type


class ServerApp:
    """An ASGI app serving one TextModel in OpenAI's format.

    Build it with :func:`goml_async.server.create_app`; run it with any ASGI server
    (``uvicorn.run(app)``) or ``goml serve``. The app does not own the model: close the model
    yourself after the server stops.

    Attributes:
        model: the model served.
        config: the limits.
        model_name: the name replies carry; clients may also ask for any of ``model_names``,
            ``""`` or no ``model``.
        model_names: every name accepted, ``model_name`` first (``/v1/models`` lists them).
        stats: the counters ``/healthz`` reports.
        connection_stats: set by the HTTP server (``goml serve``) to report its connection
            limits in ``/healthz``; None otherwise.
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
        aliases = [name for name in config.aliases if name != ANY_NAME]
        self.model_names = tuple(dict.fromkeys([self.model_name, *aliases]))
        self._any_name = ANY_NAME in config.aliases
        self.stats = ServerStats()
        self.connection_stats: Callable[[], dict[str, Any]] | None = None
        self._admission = Admission(
            config.max_concurrency, max_queue=config.max_queue, timeout=config.queue_timeout
        )
        self._guard = RequestGuard(config.allowed_hosts, config.allowed_origins)
        self._jobs: set[Stoppable] = set()
        self._stopped: set[Stoppable] = set()
        self._shutting_down = False
        self._idle: anyio.Event | None = None
        self._started = time.monotonic()
        self._created = int(time.time())
        completions = Completions(self)
        extra = routes(self) if callable(routes) else routes
        routes = [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/models/{model_id:path}/info", self._model_info, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self._model, methods=["GET"]),
            Route("/v1/chat/completions", Endpoint(completions.chat), methods=["POST"]),
            Route("/v1/completions", Endpoint(completions.completion), methods=["POST"]),
            *extra,  # e.g. the /v1/ml routes goml serve mounts
            Route("/", self._index, methods=["GET"]),
            Mount("/static", StaticFiles(directory=config.static_dir, check_dir=False)),
        ]
        self._app = Starlette(
            routes=routes,
            exception_handlers={
                ServerError: self._server_error,
                HTTPException: self._http_error,
                Exception: self._internal_error,
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._guard.check(scope["method"], scope["headers"])
            if refusal is not None:
                await self.send_error(refusal, send, scope)
                return
        await self._app(scope, receive, send)

    # -- state ------------------------------------------------------------------------------------

    @property
    def active_requests(self) -> int:
        """Generation requests being served now."""
        return self._admission.active

    @property
    def queued_requests(self) -> int:
        """Generation requests waiting in line for a place now."""
        return self._admission.waiting

    @property
    def shutting_down(self) -> bool:
        """True once :meth:`start_shutdown` was called: new completions get 503."""
        return self._shutting_down

    def start_shutdown(self) -> None:
        """Refuse new generation requests and those waiting in line (503); those in progress
        go on."""
        self._shutting_down = True
        self._admission.close()

    def shutdown_error(self) -> ServerError:
        """The 503 a request gets from the shutdown."""
        return ServerError(503, _SHUTTING_DOWN, code="shutting_down")

    def refuse_if_shutting_down(self) -> None:
        """Raise the 503 a new generation request gets once the shutdown began."""
        if self._shutting_down:
            raise self.shutdown_error()

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
            job.stop(self.shutdown_error())
        with anyio.move_on_after(5.0):
            await self._wait_idle()
        self.stats.stopped_at_shutdown += len(left)
        return len(left)

    async def _wait_idle(self) -> None:
        if self._admission.active:
            # One event for every waiter (a second signal drains while the first still waits).
            if self._idle is None or self._idle.is_set():
                self._idle = anyio.Event()
            await self._idle.wait()

    @contextlib.contextmanager
    def tracking(self, job: Stoppable) -> Iterator[None]:
        """Make ``job`` stoppable by the shutdown while the ``with`` block runs."""
        self._jobs.add(job)
        try:
            yield
        finally:
            self._jobs.discard(job)
            self._stopped.discard(job)

    async def enter(self) -> None:
        """Take a place for a generation request, waiting in line for one.

        Raises:
            ServerError: 503 while shutting down; 429 + Retry-After when the line is full or
                the wait in it runs out.
        """
        self.refuse_if_shutting_down()
        waiting = self._admission.waiting or self._admission.active >= self._admission.limit
        try:
            await self._admission.enter()
        except QueueClosed:
            raise self.shutdown_error() from None
        except QueueFull:
            raise self._busy(
                f"the server is busy: {self._admission.limit} request(s) in progress and "
                f"{self.config.max_queue} waiting, the most it holds; retry later",
                code="server_busy",
            ) from None
        except QueueTimeout:
            raise self._busy(
                f"the server is busy: no place came free within the queue timeout of "
                f"{self.config.queue_timeout:g} s; retry later",
                code="queue_timeout",
            ) from None
        if waiting:
            self.stats.queued += 1

    def leave(self) -> None:
        """Give back the place taken by :meth:`enter`."""
        self._admission.leave()
        if not self._admission.active and self._idle is not None:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place for one request of another route (e.g. ``/v1/ml/generate``): the
        same concurrency cap, line and shutdown drain as the completions.

        Raises:
            ServerError: 503 while shutting down, 429 when the line is full or the wait runs
                out.
        """
        await self.enter()
        try:
            yield
        finally:
            self.leave()

    def _busy(self, message: str, *, code: str) -> ServerError:
        return ServerError(
            429,
            message,
            type="rate_limit_error",
            code=code,
            headers={"Retry-After": str(self.config.retry_after)},
        )

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` answers."""
        config = self.config
        stats = asdict(self.stats)
        health = {
            "status": "shutting_down" if self._shutting_down else "ok",
            "model": self.model_name,
            "model_names": list(self.model_names),
            "model_type": self.model.model_type,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "active_requests": self._admission.active,
            "peak_active_requests": self._admission.peak_active,
            "queued_requests": self._admission.waiting,
            "peak_queued_requests": self._admission.peak_waiting,
            "max_concurrency": config.max_concurrency,
            "max_queue": config.max_queue,
            "queue_timeout_seconds": config.queue_timeout,
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
        if self.connection_stats is not None:
            health["connections"] = self.connection_stats()
        return health

    # -- shared checks and replies ----------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        """Raise 401 unless the request carries the API key (always passes without one)."""
        if not bearer_token_ok(request.headers, self.config.api_key):
            raise ServerError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>' "
                "(the key is the server's GOML_SERVER_API_KEY)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def check_model(self, requested: str) -> None:
        """Raise 404 unless ``requested`` is one of :attr:`model_names` (or ``""``)."""
        if requested and requested not in self.model_names and not self._any_name:
            names = ", ".join(map(repr, self.model_names))
            raise ServerError(
                404,
                f"the model {shown(requested)} does not exist here; this server serves "
                f"{names} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    async def send_error(self, error: ServerError, send: Send, scope: Scope | None = None) -> None:
        """Count ``error`` and send it as the reply (over plain ASGI)."""
        self.stats.count_error(error)
        if error.status >= 500 and scope is not None:
            logger.warning(
                "%s %s: %d %s", scope.get("method"), scope.get("path"), error.status, error.message
            )
        await send_json_error(send, error)

    # -- plain routes -----------------------------------------------------------------------------

    def _model_card(self, name: str) -> dict[str, Any]:
        info = self.model.info()
        return {
            "id": name,
            "object": "model",
            "created": self._created,
            "owned_by": "goml_async",
            # vLLM's field: every name served here is the same model.
            "root": self.model_name,
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
        self.authorize(request)
        cards = [self._model_card(name) for name in self.model_names]
        return JSONResponse({"object": "list", "data": cards})

    def _requested(self, request: Request) -> str:
        requested: str = request.path_params["model_id"] or "?"
        self.check_model(requested)
        return requested if requested in self.model_names else self.model_name

    async def _model(self, request: Request) -> Response:
        self.authorize(request)
        return JSONResponse(self._model_card(self._requested(request)))

    async def _model_info(self, request: Request) -> Response:
        self.authorize(request)
        name = self._requested(request)
        metrics = self.model.metrics()
        return JSONResponse(
            {
                "id": name,
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
            f"{exc.detail}: {request.method} {shown(request.url.path)}",
            code=code,
            headers=exc.headers,
        )
        self.stats.count_error(error)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        # A bug, not the client's fault: still OpenAI's JSON shape, and counted. Starlette
        # re-raises it afterwards, so the ASGI server logs the traceback.
        error = ServerError(
            500, f"internal server error: {type(exc).__name__}", code="internal_error"
        )
        self.stats.count_error(error)
        return JSONResponse(error.body(), status_code=500)
