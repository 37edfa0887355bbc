"""REST routes over a :class:`~goml_async.service.Service`, meant to be mounted at ``/v1/ml``.

- ``GET /backends``: every backend with its availability, and the default;
- ``GET /status``: the Service's readiness, backends, judge and scoring suites;
- ``POST /generate``: ``{"prompt", "backend"?, "system"?, "temperature"?, "max_tokens"?,
  "model"?}`` -> ``{"text", "backend", "model", "finish_reason", "usage"}``.

Errors use the OpenAI server's shape, ``{"error": {"message", "type", "param", "code"}}``:
400 for a bad request (bad JSON, a missing or ill-typed field, a negative number, an unknown
field), 404 for a ``backend`` that is not registered (like the OpenAI server's unknown
``model``: the request names something that does not exist here), 413 for a body over the
limit, 503 when the Service is not running, the backend is not available or no default backend
exists, 504 on a timeout, 500 when generation fails. A client that hangs up stops its
generation (and leaves the line if it was waiting for a place). ``goml serve`` mounts these
routes; this module needs the ``server`` extra (Starlette).

Example:
    ```python
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/v1/ml", app=ml_routes(service))])
    ```
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from .._validate import is_int, number_between
from ..errors import BackendUnavailable, ConfigError
from ..service import Service, ServiceUnavailable, UnknownBackendError
from ..types import GenerateMetrics, GenOpts, Result
from ._http import ClientGone, read_json_body
from ._wire import ServerError, error_from_exception, shown, usage
from .guard import RequestGuard
from .limits import ServerConfig, bearer_token_ok
from .sse import run_until_disconnect, send_json_error
from .stats import ServerStats

__all__ = ["GenerateRequest", "create_ml_app", "ml_mount", "ml_routes", "parse_generate_request"]

logger = logging.getLogger("goml_async.server")

_FIELDS: Final = ("backend", "max_tokens", "model", "prompt", "system", "temperature")

#: Holds a place for one generation: ``ServerApp.admit``, entered as ``async with admit():``.
Admit: TypeAlias = Callable[[], contextlib.AbstractAsyncContextManager[None]]


class _Gone(Exception):
    """The client hung up: there is nobody to answer."""


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """A validated ``POST /generate`` body."""

    prompt: str
    backend: str = ""
    system: str | None = None
    temperature: float = 0.0
    max_tokens: int = 0
    model: str = ""


def _bad(param: str, problem: str) -> ServerError:
    return ServerError(400, f"{param}: {problem}", param=param, code="invalid_value")


def _text(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ServerError(400, f"{name}: required", param=name, code="missing_field")
        return None
    if not isinstance(value, str):
        raise _bad(name, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise _bad(name, "must not be empty")
    return value


def parse_generate_request(body: object) -> GenerateRequest:
    """Validate a ``POST /generate`` JSON body.

    Raises:
        ServerError: 400 naming the field that is missing, ill-typed, negative or unknown.

    Example:
        >>> parse_generate_request({"prompt": "Hi", "max_tokens": 8}).max_tokens
        8
    """
    if not isinstance(body, dict):
        raise ServerError(400, "the request body must be a JSON object", code="invalid_request")
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise ServerError(
            400,
            f"unknown field(s) {', '.join(map(shown, unknown[:5]))}; known: {', '.join(_FIELDS)}",
            param=unknown[0][:100],
            code="unknown_field",
        )
    prompt = _text(body, "prompt", required=True)
    assert prompt is not None
    temperature = body.get("temperature")
    if temperature is not None:
        try:  # an int too large for a float (10**400) is refused like an infinity
            number_between("temperature", temperature, 0.0)
        except ConfigError:
            raise _bad("temperature", f"must be a number >= 0, got {shown(temperature)}") from None
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 0):
        raise _bad("max_tokens", f"must be an integer >= 0, got {shown(max_tokens)}")
    return GenerateRequest(
        prompt=prompt,
        backend=_text(body, "backend") or "",
        system=_text(body, "system") or None,
        temperature=float(temperature or 0.0),
        max_tokens=max_tokens or 0,
        model=_text(body, "model") or "",
    )


def _usage(metrics: GenerateMetrics | None) -> dict[str, int] | None:
    """The token counts, or None when the backend did not report them."""
    if metrics is None or not (metrics.prompt_tokens or metrics.generated_tokens):
        return None
    return usage(metrics)


def _service_error(exc: Exception, request: GenerateRequest) -> ServerError:
    """The reply for an exception of the Service or the backend."""
    if isinstance(exc, UnknownBackendError):
        if request.backend:
            return ServerError(404, str(exc), param="backend", code="backend_not_found")
        return ServerError(503, str(exc), code="no_default_backend")
    if isinstance(exc, ServiceUnavailable):
        return ServerError(503, str(exc), code="service_unavailable")
    if isinstance(exc, BackendUnavailable):
        return ServerError(503, str(exc), code="backend_unavailable")
    return error_from_exception(exc)


class _Handlers:
    """The three endpoints, over one Service and the server's limits."""

    def __init__(
        self,
        service: Service,
        config: ServerConfig,
        admit: Admit | None = None,
        stats: ServerStats | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.admit: Admit = admit or contextlib.nullcontext
        self.stats = stats

    def _authorize(self, request: Request) -> None:
        if not bearer_token_ok(request.headers, self.config.api_key):
            raise ServerError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def backends(self, request: Request) -> Response:
        return await self._answer(request, self._backends)

    async def status(self, request: Request) -> Response:
        return await self._answer(request, self._status)

    async def generate(self, request: Request) -> Response:
        if self.stats is not None:
            self.stats.requests += 1
        response = await self._answer(request, self._generate)
        if self.stats is not None and response.status_code == 200:
            self.stats.completed += 1
        return response

    async def _answer(
        self, request: Request, handler: Callable[[Request], Awaitable[dict[str, Any]]]
    ) -> Response:
        try:
            self._authorize(request)
            body = await handler(request)
        except _Gone:
            if self.stats is not None:
                self.stats.client_disconnects += 1
            # Nobody reads it: the ASGI server drops a reply to a closed connection.
            return Response(status_code=499)
        except ServerError as error:
            if self.stats is not None:
                self.stats.count_error(error)
            if error.status >= 500:
                logger.warning(
                    "%s %s: %d %s", request.method, request.url.path, error.status, error
                )
            return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
        return JSONResponse(body)

    async def _backends(self, request: Request) -> dict[str, Any]:
        status = self.service.status().to_dict()
        return {"backends": status["backends"], "default": status["default_backend"]}

    async def _status(self, request: Request) -> dict[str, Any]:
        return self.service.status().to_dict()

    async def _generate(self, request: Request) -> dict[str, Any]:
        try:
            body = await read_json_body(request, self.config.max_body_bytes)
        except ClientGone:
            raise _Gone from None
        parsed = parse_generate_request(body)
        max_tokens = min(parsed.max_tokens, self.config.max_tokens)
        try:
            opts = GenOpts(
                temperature=parsed.temperature, max_tokens=max_tokens, model=parsed.model
            )
            if self.service.state != "running":
                raise ServiceUnavailable(self.service.state)
            name, _ = self.service.lookup(parsed.backend or None)

            async def generate() -> Result:
                # The place is held, and the timeout counts, only while generating.
                async with self.admit():
                    with anyio.fail_after(self.config.timeout):
                        return await self.service.generate(
                            name, parsed.prompt, opts, system=parsed.system
                        )

            # A client that hangs up cancels the generation (or its wait for a place).
            result, gone = await run_until_disconnect(request.receive, generate)
        except TimeoutError:
            raise ServerError(
                504,
                f"generation did not finish within the server's timeout of "
                f"{self.config.timeout:g} s",
                type="timeout_error",
                code="timeout",
            ) from None
        except Exception as exc:
            raise _service_error(exc, parsed) from exc
        if gone or result is None:
            raise _Gone
        return {
            "text": result.text,
            "backend": name,
            "model": parsed.model or self.service.model_name(name) or name,
            "finish_reason": result.finish_reason,
            "usage": _usage(result.metrics),
        }


def ml_routes(
    service: Service,
    config: ServerConfig | None = None,
    *,
    admit: Admit | None = None,
    stats: ServerStats | None = None,
) -> Router:
    """The ``/backends``, ``/status`` and ``/generate`` routes over ``service``.

    Args:
        service: the Service to call; start it (``async with service``) before serving.
        config: the limits it honours: ``api_key`` (bearer token required on every route),
            ``max_tokens`` (the cap on a request's ``max_tokens``; 0 or none asked keeps the
            backend's default), ``timeout`` (504 after it) and ``max_body_bytes`` (413).
            Default: ``ServerConfig()``.
        admit: entered (``async with``) around each generation; ``goml serve`` passes
            :meth:`ServerApp.admit <goml_async.server.app.ServerApp.admit>`, so these requests
            share the OpenAI routes' concurrency cap, line (429 past it) and shutdown drain
            (503).
        stats: where ``/generate`` requests, replies, errors and disconnects are counted
            (``goml serve`` passes the app's, so ``/healthz`` counts them).

    Returns:
        A Starlette Router: ``Mount("/v1/ml", app=ml_routes(service))``.
    """
    if not isinstance(service, Service):
        raise ConfigError("service", f"must be a Service, got {type(service).__name__}")
    handlers = _Handlers(service, config if config is not None else ServerConfig(), admit, stats)
    return Router(
        routes=[
            Route("/backends", handlers.backends, methods=["GET"]),
            Route("/status", handlers.status, methods=["GET"]),
            Route("/generate", handlers.generate, methods=["POST"]),
        ]
    )


def ml_mount(
    service: Service,
    config: ServerConfig | None = None,
    *,
    admit: Admit | None = None,
    stats: ServerStats | None = None,
) -> Mount:
    """:func:`ml_routes` mounted at ``/v1/ml``, for ``create_app(..., routes=[...])``.

    Example:
        ```python
        app = create_app(
            model, config, routes=lambda app: [ml_mount(service, admit=app.admit, stats=app.stats)]
        )
        ```
    """
    return Mount("/v1/ml", app=ml_routes(service, config, admit=admit, stats=stats))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    error = ServerError(
        exc.status_code,
        f"{exc.detail}: {request.method} {request.url.path}",
        code=codes.get(exc.status_code),
        headers=exc.headers,
    )
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def create_ml_app(service: Service, config: ServerConfig | None = None) -> ASGIApp:
    """A standalone ASGI app with :func:`ml_routes` mounted at ``/v1/ml``.

    Unknown paths and methods get 404/405 in the same error shape; requests pass the same
    Host/Origin/Content-Type checks as ``goml serve`` (:mod:`goml_async.server.guard`).

    Example:
        ```python
        async with Service() as service:
            service.register("local", InferenceAdapter(model, "local"))
            await uvicorn.Server(uvicorn.Config(create_ml_app(service), port=8091)).serve()
        ```
    """
    config = config if config is not None else ServerConfig()
    app = Starlette(
        routes=[ml_mount(service, config)],
        exception_handlers={HTTPException: _http_error},
    )
    guard = RequestGuard(config.allowed_hosts, config.allowed_origins)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = guard.check(scope["method"], scope["headers"])
            if refusal is not None:
                await send_json_error(send, refusal)
                return
        await app(scope, receive, send)

    return guarded
