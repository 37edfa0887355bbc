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
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc

from goml_async._validate import integer
from goml_async.errors import ConfigError
from goml_async.server import ServerConfig, create_app, require_server_extra
from goml_async.service import ChatAdapter, Service
from goml_async.settings import current_settings

from ._common import add_model_arguments, is_url, listen_socket, load_target, served_name

if TYPE_CHECKING:
    import uvicorn

    from goml_async.model import TextModel
    from goml_async.server._connections import ConnectionLimits
    from goml_async.server.app import ServerApp

__all__ = ["add_parser", "run"]

_HELP = "serve a model over an OpenAI-compatible HTTP API"
_DESCRIPTION = """\
Serve a model over an OpenAI-compatible HTTP API: POST /v1/chat/completions and
/v1/completions (streamed or not), GET /v1/models, /v1/models/ID/info, /healthz, a chat
page at /, and the ml routes (GET /v1/ml/status, /v1/ml/backends, POST /v1/ml/generate).

--model takes a .gguf file (llama.cpp), an MLX model folder, the base URL of another
OpenAI-compatible server, or "default" (the bundled SmolLM2-135M-Instruct). Clients may ask
for the served name, the --model value or any --alias. Set GOML_SERVER_API_KEY to require
"Authorization: Bearer <key>" on /v1/*.

Requests past --max-concurrency wait in line (first come first served) up to --max-queue and
--queue-timeout; only past that is the answer 429 with Retry-After. Host names other than
localhost, IP addresses and this machine's name need --allowed-host.

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
    add_model_arguments(parser)
    parser.add_argument("--model-name", help="the name replies carry (default: from --model)")
    parser.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="NAME",
        help="another model name clients may ask for (repeatable; '*' accepts any name)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port; 0 picks a free one (8090)")
    parser.add_argument(
        "--max-tokens", type=int, default=4096, help="cap on max_tokens per request (4096)"
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=4,
        help="requests served at once (and a local model's decoding slots); more wait in line (4)",
    )
    parser.add_argument(
        "--max-queue", type=int, default=64, help="requests that may wait in line; then 429 (64)"
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=120.0,
        help="seconds a request may wait in line before a 429; 0 = no limit (120)",
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
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name served besides localhost, IP addresses and this machine's name "
        "(repeatable; '*.example.com' for subdomains, '*' for any)",
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin (https://app.example.com) that may POST (repeatable; '*' any)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client may take to send a request's headers (10)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client may take to send a request's body (30)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="connections open at once; 0 = half the file-descriptor limit, at most 1024",
    )
    parser.add_argument(
        "--context-len", type=int, default=0, help="llama.cpp context size (0 = the model's)"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (at any --log-level)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="server log level (warning)",
    )
    parser.set_defaults(run=run)


#: ServerConfig fields whose flag is not the field's name with dashes.
_FLAGS: Final = {
    "api_key": "GOML_SERVER_API_KEY",
    "aliases": "--alias",
    "allowed_hosts": "--allowed-host",
    "allowed_origins": "--allowed-origin",
}


def _flag(field: str) -> str:
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def _allowed_hosts(args: argparse.Namespace) -> list[str]:
    """The --allowed-host names, this machine's name, and --host when it is a name."""
    names = [*args.allowed_host, socket.gethostname()]
    if args.host not in ("", "0.0.0.0", "::"):
        names.append(args.host)
    return names


def _check(args: argparse.Namespace) -> ServerConfig:
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", f"must be in 0..65535, got {args.port}")
    if not args.grace >= 0:
        raise ConfigError("--grace", f"must be >= 0 seconds, got {args.grace}")
    integer("--context-len", args.context_len, minimum=0)
    settings = current_settings()
    key = settings.server_api_key
    options = {
        "max_tokens": args.max_tokens,
        "max_concurrency": args.max_concurrency,
        "max_queue": args.max_queue,
        "queue_timeout": args.queue_timeout or None,
        "timeout": args.timeout or None,
        "max_context": args.max_context,
        "max_body_bytes": args.max_body_bytes,
        "api_key": key.get_secret_value() if key is not None else None,
        "aliases": args.alias,
        "allowed_hosts": _allowed_hosts(args),
        "allowed_origins": args.allowed_origin,
    }
    try:
        return ServerConfig(model_name=args.model_name, **options)
    except ConfigError as exc:
        raise ConfigError(_flag(exc.field), exc.problem) from None


def _connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    from goml_async.server._connections import ConnectionLimits

    try:
        return ConnectionLimits(
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
        )
    except ConfigError as exc:
        raise ConfigError(_flag(exc.field), exc.problem) from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="goml serve: %(levelname)s %(name)s: %(message)s"
    )
    if level != "debug":
        # Each request of the llama-server readiness poll (a 503 until the model is loaded)
        # and of every client would be an INFO line: they are for debugging only.
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    config = _check(args)
    require_server_extra("starlette", "uvicorn")
    limits = _connection_limits(args)
    _setup_logging(args.log_level)
    return anyio.run(_serve, args, config, limits, backend="asyncio")


#: The listening socket (the name the serve tests know it by).
_listen = listen_socket


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
    options: dict[str, Any] = {}
    if args.context_len:
        options["context_len"] = args.context_len
    if not is_url(args.model):
        # A local model decodes as many sequences as the server lets in at once, so requests
        # wait in the server's own line (visible in /healthz), never inside llama-server.
        options["parallel_slots"] = args.max_concurrency
    return await load_target(args.model, backend=args.backend, prefix="goml serve: ", **options)


async def _serve(args: argparse.Namespace, config: ServerConfig, limits: ConnectionLimits) -> int:
    sock = listen_socket(args.host, args.port)
    started = time.monotonic()
    failure: Exception | None = None
    session = _Session(grace=args.grace, loading=anyio.CancelScope())
    try:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:
                group.start_soon(_on_signals, signals, session, group)
                try:
                    await _run(args, config, limits, sock, session)
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
    errors = stats.client_errors + stats.server_errors
    _say(
        f"stopped after {time.monotonic() - started:.1f} s: {stats.requests} request(s), "
        f"{stats.completed} completed, {errors} error(s) ({stats.client_errors} 4xx, "
        f"{stats.server_errors} 5xx), {stats.client_disconnects} client disconnect(s), "
        f"{stats.stopped_at_shutdown} stopped at shutdown"
    )
    return 0


def _aliases(args: argparse.Namespace, name: str | None) -> list[str]:
    """The names accepted besides ``name``: the default name from --model, the --model value
    itself (``default``, a path; not a URL) and every --alias."""
    names = [served_name(args.model)]
    if not is_url(args.model):
        names.append(args.model)
    return [alias for alias in [*names, *args.alias] if alias and alias != name]


async def _run(
    args: argparse.Namespace,
    config: ServerConfig,
    limits: ConnectionLimits,
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

    async with model, Service(current_settings()) as service:
        name = config.model_name or served_name(args.model) or None
        app = create_app(
            model,
            config,
            model_name=name,
            aliases=_aliases(args, name),
            routes=lambda app: [ml_mount(service, config, admit=app.admit, stats=app.stats)],
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
            limits=limits,
        )
        session.server, session.app = server, app
        await server.serve(sockets=[sock])
        # Whatever is still running (uvicorn cancels only at its own, later, deadline).
        await app.drain(0.0)


def _announce(app: ServerApp, url: str) -> None:
    config = app.config
    auth = "API key required" if config.api_key else "no API key"
    also = ", ".join(map(repr, app.model_names[1:]))
    names = f"model {app.model_name!r}" + (f" (also {also})" if also else "")
    _say(
        f"listening on {url} ({names}, max_tokens {config.max_tokens}, "
        f"{config.max_concurrency} at once, {auth}); Ctrl+C to stop"
    )
