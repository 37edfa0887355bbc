"""What the commands share: the model arguments, loading a model from one argument, the
progress bar of long work, and the listening socket of the commands that serve."""

from __future__ import annotations

import argparse
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from goml_async.errors import ConfigError
from goml_async.model import TextModel
from goml_async.registry import bundled_model_path, load_default_model, load_model
from goml_async.settings import current_settings

__all__ = [
    "add_model_arguments",
    "default_target",
    "describe_target",
    "is_url",
    "listen_socket",
    "load_target",
    "progress_bar",
    "served_name",
]

_DEFAULT_LABEL = "the bundled default model (SmolLM2-135M-Instruct)"

_MODEL_HELP = (
    'a .gguf file, an MLX folder, a server URL or "default" (the bundled model); default: {}'
)
_BACKEND_HELP = "force a backend: mlx, llama or http"
_SERVER_MODEL_HELP = "model name sent to a server URL"


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    default: str | None = "default",
    server_model: str | None = None,
) -> None:
    """Add ``-m/--model`` and ``--backend`` to a command, and ``server_model`` when given.

    ``default`` is the command's ``--model`` default, usually ``"default"`` (the bundled model), or
    None for :func:`default_target` (``GOML_BASE_URL`` if set, else the bundled model).
    ``server_model`` names the flag for the model name sent to a server URL
    (``--model-name`` or ``--http-model``; its value defaults to ``""``, the server's choice).
    """
    shown = f'"{default}"' if default else "GOML_BASE_URL if set, else the bundled model"
    parser.add_argument("-m", "--model", default=default, help=_MODEL_HELP.format(shown))
    parser.add_argument("--backend", help=_BACKEND_HELP)
    if server_model is not None:
        parser.add_argument(server_model, default="", help=_SERVER_MODEL_HELP)


def is_url(spec: str) -> bool:
    """Whether ``spec`` names an OpenAI-compatible server rather than a local model."""
    return spec.startswith(("http://", "https://"))


def served_name(spec: str) -> str:
    """The name a served model gets by default: the file or folder name without ``.gguf``
    (the bundled model's for ``default``), or ``""`` for a URL (the server names its model)."""
    if spec == "default":
        return bundled_model_path().stem
    if is_url(spec):
        return ""
    return Path(spec.rstrip("/")).name.removesuffix(".gguf") or spec


def default_target() -> str | None:
    """What a command runs on when no ``--model`` is given: ``GOML_BASE_URL``, or None (the
    bundled model). ``OPENAI_BASE_URL`` is deliberately not used here: a shell set up for
    OpenAI must not send ``goml`` prompts there unasked."""
    return current_settings().base_url


def describe_target(spec: str | None) -> str:
    """A human label for a ``--model``/``--judge`` value."""
    if not spec:
        spec = default_target()
    return _DEFAULT_LABEL if spec in (None, "", "default") else str(spec)


async def load_target(
    spec: str | None,
    *,
    backend: str | None = None,
    http_model: str = "",
    console: Console | None = None,
    prefix: str = "",
    **options: Any,
) -> TextModel:
    """Load ``spec``: ``default`` (the bundled model), a path, or a server's base URL; None
    means :func:`default_target` (``GOML_BASE_URL`` if set, else the bundled model).

    Every command loads its models here. ``http_model`` is the model name sent to a server
    (``--model-name``, ``--judge-model``); ``options`` go to the backend (``context_len``,
    ``parallel_slots``, ...). The wait is shown as a spinner on a terminal and as one plain
    line otherwise, after ``prefix`` (e.g. ``"goml serve: "``).
    """
    err = console or Console(stderr=True)
    if not spec:
        spec = default_target()
    label = describe_target(spec)
    started = time.perf_counter()
    waiting = f"{prefix}loading {label} ..."
    spinner = err.status(waiting, spinner="dots") if err.is_terminal else None
    if spinner is None:
        err.print(waiting, highlight=False, markup=False, soft_wrap=True)
    if is_url(spec or "") and http_model:
        options["model"] = http_model
    with spinner or contextlib.nullcontext():
        if not spec or spec == "default":
            model = await load_default_model(backend=backend, **options)
        else:
            model = await load_model(spec, backend=backend, **options)
    if spinner is not None:
        err.print(f"[dim]loaded {label} in {time.perf_counter() - started:.1f} s[/dim]")
    return model


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, not yet listening (the server listens once it
    serves, so no connection waits on a model load; bound here, so ``--port 0`` knows its port).

    It is made with the TCP protocol number and TCP_NODELAY, which asyncio and the operating
    system carry over to every accepted connection: without it, Nagle's algorithm holds a
    stream's first token back behind the headers until the client's delayed ACK (about 40 ms
    on a kept-alive connection).

    Raises:
        ConfigError: ``--host`` does not resolve, or ``--port`` cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError("--host", f"cannot listen on {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "--port", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


def progress_bar(
    console: Console, *, label_width: int = 22, only_on_terminal: bool = True
) -> Progress:
    """The bar of a long command: label, bar, done/total and time so far, on ``console``.

    ``only_on_terminal`` hides it when the console is not a terminal (a log gets plain lines).
    """
    return Progress(
        TextColumn(f"{{task.description:<{label_width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=only_on_terminal and not console.is_terminal,
    )
