"""``goml serve``: serve a model over an OpenAI-compatible HTTP API.

uvicorn runs inside an event loop this command owns (anyio on asyncio). SIGINT or SIGTERM
starts a graceful shutdown: the listening socket closes, requests in progress get ``--grace``
seconds to finish, what is left is stopped (a stream gets an error event), the model is
closed (with it any llama-server process) and the command exits 0. A second signal stops
everything at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from goml_async.errors import ConfigError
from goml_async.registry import load_default_model, load_model
from goml_async.server import ServerConfig, create_app, require_server_extra
from goml_async.service import ChatAdapter, Service
from goml_async.settings import GomlSettings

from ._common import served_name

if TYPE_CHECKING:
    import uvicorn

    from goml_async.model import TextModel
    from goml_async.server.app import ServerApp

__all__ = ["add_parser", "run"]

_HELP = "serve a model over an OpenAI-compatible HTTP API"
_DESCRIPTION = """\
Serve a model over an OpenAI-compatible HTTP API: POST /v1/chat/completions and
/v1/completions (streamed or not), GET /v1/models, /v1/models/ID/info, /healthz, a chat
page at /, and the ml routes (GET /v1/ml/status, /v1/ml/backends, POST /v1/ml/generate).

--model takes a .gguf file (llama.cpp), an MLX model folder, the base URL of another
OpenAI-compatible server, or "default" (the bundled SmolLM2-135M-Instruct). Set
GOML_SERVER_API_KEY to require "Authorization: Bearer <key>" on /v1/*.

SIGINT or SIGTERM shuts down gracefully: requests in progress get --grace seconds to finish.
"""
_EPILOG = """\
examples:
  goml serve                                       the bundled model on 127.0.0.1:8090
  goml serve --model models/smollm2.gguf --port 0  any free port (printed)
  GOML_SERVER_API_KEY=secret goml serve --host 0.0.0.0 --max-concurrency 8
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help=_HELP,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-m", "--model", default="default", help='model path or URL, or "default" (the default)'
    )
    parser.add_argument("--backend", help="force a backend: mlx, llama or http")
    parser.add_argument("--model-name", help="the name clients ask for (default: from --model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port; 0 picks a free one (8090)")
    parser.add_argument(
        "--max-tokens", type=int, default=4096, help="cap on max_tokens per request (4096)"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=4, help="requests served at once; more get 429 (4)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per request; 0 = none (300)"
    )
    parser.add_argument(
        "--max-context",
        type=int,
        default=0,
        help="chat messages kept: the system message + the last N (0 = all, the default)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=1024 * 1024, help="largest request body (1 MiB)"
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds to finish requests at shutdown (10)"
    )
    parser.add_argument(
        "--context-len", type=int, default=0, help="llama.cpp context size (0 = the model's)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="server log level (warning)",
    )
    parser.set_defaults(run=run)


def _check(args: argparse.Namespace) -> ServerConfig:
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", f"must be in 0..65535, got {args.port}")
    if not args.grace >= 0:
        raise ConfigError("--grace", f"must be >= 0 seconds, got {args.grace}")
    if args.context_len < 0:
        raise ConfigError("--context-len", f"must be >= 0, got {args.context_len}")
    settings = GomlSettings()
    key = settings.server_api_key
    options = {
        "max_tokens": args.max_tokens,
        "max_concurrency": args.max_concurrency,
        "timeout": args.timeout or None,
        "max_context": args.max_context,
        "max_body_bytes": args.max_body_bytes,
        "api_key": key.get_secret_value() if key is not None else None,
    }
    try:
        return ServerConfig(model_name=args.model_name, **options)
    except ConfigError as exc:
        where = (
            "GOML_SERVER_API_KEY" if exc.field == "api_key" else "--" + exc.field.replace("_", "-")
        )
        raise ConfigError(where, exc.problem) from None


def run(args: argparse.Namespace) -> int:
    config = _check(args)
    require_server_extra("starlette", "uvicorn")
    logging.basicConfig(
        level=args.log_level.upper(), format="goml serve: %(levelname)s %(name)s: %(message)s"
    )
    return anyio.run(_serve, args, config, backend="asyncio")


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (bound here, so ``--port 0`` knows its port).

    It is made with the TCP protocol number, so asyncio sets TCP_NODELAY on every accepted
    connection: without it, Nagle's algorithm holds a stream's first token back behind the
    headers until the client's delayed ACK (about 40 ms on a kept-alive connection).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError("--host", f"cannot listen on {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)  # uvicorn listens once it serves: no connection waits on a load
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "--port", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass
class _Session:
    """What the signal handler acts on, as the command goes from loading to serving."""

    grace: float
    loading: anyio.CancelScope
    server: uvicorn.Server | None = None
    app: ServerApp | None = None
    signals: int = 0


def _say(text: str) -> None:
    print(f"goml serve: {text}", flush=True)


async def _on_signals(
    signals: AsyncIterator[signal.Signals], session: _Session, group: anyio.abc.TaskGroup
) -> None:
    async for signum in signals:
        session.signals += 1
        name = signum.name
        server, app = session.server, session.app
        if server is None or app is None:
            session.loading.cancel()
            continue
        if session.signals == 1:
            _say(
                f"{name} received: no new requests; {app.active_requests} in progress get "
                f"{session.grace:g} s to finish (send it again to stop them now)"
            )
            server.should_exit = True
            group.start_soon(app.drain, session.grace)
        else:
            _say(f"{name} received again: stopping every request now")
            server.force_exit = True
            group.start_soon(app.drain, 0.0)


async def _load(args: argparse.Namespace) -> TextModel:
    label = "the bundled default model" if args.model == "default" else args.model
    print(f"goml serve: loading {label} ...", file=sys.stderr, flush=True)
    options: dict[str, Any] = {}
    if args.context_len:
        options["context_len"] = args.context_len
    if args.model == "default":
        return await load_default_model(backend=args.backend, **options)
    return await load_model(args.model, backend=args.backend, **options)


async def _serve(args: argparse.Namespace, config: ServerConfig) -> int:
    sock = _listen(args.host, args.port)
    started = time.monotonic()
    failure: Exception | None = None
    session = _Session(grace=args.grace, loading=anyio.CancelScope())
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:
                group.start_soon(_on_signals, signals, session, group)
                try:
                    await _run(args, config, sock, session)
                except Exception as exc:  # raised below, outside the task group (not as a group)
                    failure = exc
                group.cancel_scope.cancel()
    finally:
        sock.close()
    if failure is not None:
        raise failure
    if session.app is None:
        _say("interrupted while loading the model; stopped")
        return 0
    stats = session.app.stats
    _say(
        f"stopped after {time.monotonic() - started:.1f} s: {stats.requests} request(s), "
        f"{stats.completed} completed, {stats.errors} error(s), {stats.client_disconnects} "
        f"client disconnect(s), {stats.stopped_at_shutdown} stopped at shutdown"
    )
    return 0


async def _run(
    args: argparse.Namespace,
    config: ServerConfig,
    sock: socket.socket,
    session: _Session,
) -> None:
    from goml_async.server._uvicorn import make_server

    model: TextModel | None = None
    with session.loading:
        model = await _load(args)
    if model is None:
        return
    from goml_async.server.ml_routes import ml_mount

    async with model, Service(GomlSettings()) as service:
        name = config.model_name or served_name(args.model) or None
        app = create_app(
            model,
            config,
            model_name=name,
            routes=lambda app: [ml_mount(service, config, admit=app.admit)],
        )
        # The served model is the Service's default backend (the model stays ours to close).
        service.register(app.model_name, ChatAdapter(model, app.model_name), default=True)
        url = _url(sock)
        server = make_server(
            app,
            grace=args.grace,
            log_level=args.log_level,
            access_log=args.access_log,
            on_started=lambda: _announce(app, url),
        )
        session.server, session.app = server, app
        await server.serve(sockets=[sock])
        # Whatever is still running (uvicorn cancels only at its own, later, deadline).
        await app.drain(0.0)


def _announce(app: ServerApp, url: str) -> None:
    config = app.config
    auth = "API key required" if config.api_key else "no API key"
    _say(
        f"listening on {url} (model {app.model_name!r}, max_tokens {config.max_tokens}, "
        f"{config.max_concurrency} at once, {auth}); Ctrl+C to stop"
    )
