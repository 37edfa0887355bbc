"""``goml mcp``: serve a model's ml_* MCP tools over stdio or streamable HTTP.

The model becomes the one backend of a :class:`~goml_async.service.Service` (its default), with
the judge from the settings (``GOML_JUDGE_URL``, ``GOML_JUDGE_MODEL``). Over stdio, stdout is
the protocol channel: everything else goes to stderr. SIGINT or SIGTERM stops the server, and
the model (with any llama-server process) is closed.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from goml_async.errors import BackendUnavailable, ConfigError
from goml_async.service import ChatAdapter, Service
from goml_async.settings import GomlSettings, current_settings

from ._common import add_model_arguments, listen_socket, load_target, served_name
from .generate import DEFAULT_SYSTEM

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["add_parser", "run"]

_INSTALL_HINT = "pip install 'goml_async[mcp]'"
_HELP = "serve the ml_* MCP tools (generate, score, probe) for a model"
_DESCRIPTION = """\
Serve MCP tools over a model: ml_generate, ml_score (heuristic; semantic and content with a
judge), ml_probe (the capability probes, graded), ml_status and ml_backends.

--model takes a .gguf file (llama.cpp), an MLX model folder, the base URL of an
OpenAI-compatible server, or "default" (the bundled SmolLM2-135M-Instruct). The judge for
ml_score comes from GOML_JUDGE_URL and GOML_JUDGE_MODEL. ml_generate and ml_probe send the
--system message first (the same default as goml generate and goml chat), unless a call gives
its own.

ml_probe sends a progress notification after each probe to a client that asks for progress;
a client that cancels the call (or whose timeout passes) stops it: the model stops generating.

--transport stdio (the default) talks MCP on stdin/stdout, as MCP clients launch it;
--transport http serves streamable HTTP at http://HOST:PORT/mcp.
"""
_EPILOG = """\
examples:
  goml mcp                                              the bundled model, over stdio
  goml mcp --model models/smollm2.gguf --system "You are a terse assistant."
  goml mcp --transport http --port 0                    streamable HTTP on a free port

an MCP client's configuration (e.g. Claude Desktop's claude_desktop_config.json):
  {"mcpServers": {"goml": {"command": "goml", "args": ["mcp", "--model", "default"]}}}
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "mcp",
        help=_HELP,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, server_model="--http-model")
    parser.add_argument("--name", help="the backend's name in the tools (default: from --model)")
    parser.add_argument(
        "--system",
        default=DEFAULT_SYSTEM,
        help="default system message for ml_generate and ml_probe, as for goml generate "
        f'(default: "{DEFAULT_SYSTEM}"; "" for none)',
    )
    parser.add_argument(
        "--probe-max-tokens", type=int, default=128, help="ml_probe's default max_tokens (128)"
    )
    parser.add_argument(
        "--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or http"
    )
    parser.add_argument("--host", default="127.0.0.1", help="http: address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="http: port; 0 picks a free one")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="log level, on stderr (warning)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", f"must be in 0..65535, got {args.port}")
    if not 1 <= args.probe_max_tokens <= 8192:
        raise ConfigError("--probe-max-tokens", f"must be in 1..8192, got {args.probe_max_tokens}")
    if args.name is not None and not args.name.strip():
        raise ConfigError("--name", "must not be empty")
    missing = [m for m in ("mcp", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(
            f"goml mcp needs {', '.join(missing)}, which is not installed",
            backend="mcp",
            install_hint=_INSTALL_HINT,
        )
    settings = current_settings()
    # uvicorn (for --transport http) runs on asyncio; stdio would run on either.
    return anyio.run(_main, args, settings, backend="asyncio")


def _say(text: str) -> None:
    print(f"goml mcp: {text}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace, settings: GomlSettings) -> int:
    from rich.console import Console

    from goml_async.mcp import create_mcp_server

    sock = listen_socket(args.host, args.port) if args.transport == "http" else None
    service = Service(settings)
    try:
        model = await load_target(
            args.model,
            backend=args.backend,
            http_model=args.http_model,
            console=Console(stderr=True),
        )
        name = args.name or served_name(args.model) or getattr(model, "model_name", "") or "http"
        service.register(name, ChatAdapter(model, name), own=True, default=True)
        async with service:
            server = create_mcp_server(
                service,
                system=args.system,
                probe_max_tokens=args.probe_max_tokens,
                log_level=args.log_level,
            )
            async with anyio.create_task_group() as group:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    if sock is None:
                        group.start_soon(_on_signals, signals, service, group.cancel_scope)
                        await server.run_stdio_async()
                    else:
                        await _serve_http(server, sock, args, signals, group)
                group.cancel_scope.cancel()
    finally:
        if sock is not None:
            sock.close()
        with anyio.CancelScope(shield=True):
            await service.aclose()
    return 0


async def _on_signals(
    signals: AsyncIterator[signal.Signals], service: Service, scope: anyio.CancelScope
) -> None:
    async for signum in signals:
        # Close the model first: the stdio reader only notices the cancellation once its
        # blocking read of stdin returns.
        _say(f"{signum.name} received: stopping")
        await service.aclose()
        scope.cancel()
        return


async def _serve_http(
    server: MCPServer[Any],
    sock: socket.socket,
    args: argparse.Namespace,
    signals: AsyncIterator[signal.Signals],
    group: anyio.abc.TaskGroup,
) -> None:
    import uvicorn

    from goml_async.server._uvicorn import QuietServer

    app = server.streamable_http_app(streamable_http_path="/mcp", host=args.host)
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, log_level=args.log_level, access_log=False
    )
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}/mcp" if ":" in host else f"http://{host}:{port}/mcp"
    http = QuietServer(config, lambda: print(f"goml mcp: listening on {url}", flush=True))

    async def stop_on_signal() -> None:
        async for signum in signals:
            _say(f"{signum.name} received: stopping")
            http.should_exit = True
            return

    group.start_soon(stop_on_signal)
    await http.serve(sockets=[sock])
