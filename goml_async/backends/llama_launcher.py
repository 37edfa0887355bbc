"""A ``llama-server`` stand-in: llama.cpp's own HTTP server, run in-process by ``xllamacpp``.

When no ``llama-server`` binary is installed, :class:`~goml_async.backends.llama_server.LlamaServer`
runs ``python -m goml_async.backends.llama_launcher`` instead. It takes the subset of
llama-server's flags that goml_async uses and serves the same HTTP API (``/health``,
``/v1/chat/completions`` with SSE streaming, ``/slots``, ...) from the prebuilt ``xllamacpp``
wheel, so no compiler is needed.

Example:
    ```console
    $ python -m goml_async.backends.llama_launcher -m model.gguf --port 8080 -c 2048 -t 2
    llama_launcher: listening on http://127.0.0.1:8080 (xllamacpp 2026.10.11549, startup 0.09 s)
    ```

It serves until SIGTERM or SIGINT and then exits 0. An unknown flag exits 2 with a one-line error;
so does a missing ``xllamacpp`` (with the ``pip install`` line that fixes it). A model that fails to
load exits 1 with ``failed to load model`` in the message.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

__all__ = ["INSTALL_HINT", "build_parser", "main"]

#: The command that installs xllamacpp.
INSTALL_HINT = "pip install 'goml_async[llama]'"

_PROG = "llama_launcher"
_SUPPORTED = "-m -c -t -ngl -np -cb -nocb -kvu -no-kvu --lora --host --port --no-webui"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors name the supported flags and the way out."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(
            2,
            f"{_PROG}: error: {message} (the xllamacpp launcher accepts only {_SUPPORTED}; "
            "install a real llama-server binary for other flags)\n",
        )


def _gpu_layers(value: str) -> int:
    """``-ngl`` as llama-server reads it: a number, ``auto`` (-1) or ``all`` (-2)."""
    if value == "auto":
        return -1
    if value == "all":
        return -2
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, 'auto' or 'all', got {value!r}"
        ) from None


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The launcher's argument parser: llama-server's spelling of every flag it accepts."""
    parser = _Parser(
        prog=f"python -m goml_async.backends.{_PROG}",
        description="Serve a GGUF model with llama.cpp's HTTP server, in-process via xllamacpp.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("-m", "--model", required=True, help="path of the GGUF model file")
    add("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    add("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    add("-c", "--ctx-size", type=int, default=0, help="context size; 0 = from the model")
    add("-t", "--threads", type=int, default=-1, help="CPU threads; -1 = llama.cpp's default")
    add(
        "-tb",
        "--threads-batch",
        type=int,
        default=None,
        help="CPU threads for prompts and batched steps (default: --threads)",
    )
    add(
        "-ngl",
        "--gpu-layers",
        "--n-gpu-layers",
        type=_gpu_layers,
        default=None,
        metavar="N",
        help="layers to offload to the GPU: a number, 'auto' or 'all'",
    )
    add(
        "--lora",
        action="append",
        default=[],
        metavar="FNAME",
        help="a LoRA adapter (repeatable; comma-separated values load several)",
    )
    add("-np", "--parallel", type=_positive, default=None, help="number of server slots")
    add(
        "-cb",
        "--cont-batching",
        dest="cont_batching",
        action="store_true",
        default=None,
        help="decode the slots' sequences in one batch (llama.cpp's default)",
    )
    add("-nocb", "--no-cont-batching", dest="cont_batching", action="store_false")
    add(
        "-kvu",
        "--kv-unified",
        dest="kv_unified",
        action="store_true",
        default=None,
        help="one KV buffer shared by every slot",
    )
    add(
        "-no-kvu",
        "--no-kv-unified",
        dest="kv_unified",
        action="store_false",
        help="one KV buffer per slot (what keeps greedy output independent of other requests)",
    )
    add(
        "--jinja",
        dest="jinja",
        action="store_true",
        default=None,
        help="render chat templates with Jinja (llama.cpp's default)",
    )
    add("--no-jinja", dest="jinja", action="store_false")
    add(
        "--no-webui",
        "--no-ui",
        action="store_true",
        help="accepted for llama-server compatibility (the web UI is never needed here)",
    )
    return parser


def _import_xllamacpp() -> Any:
    try:
        return importlib.import_module("xllamacpp")
    except ImportError:
        return None


def _params(xlc: Any, args: argparse.Namespace) -> Any:
    params = xlc.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx_size
    params.hostnames = [args.host]
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = (
        args.threads if args.threads_batch is None else args.threads_batch
    )
    params.warmup = False  # like a real server started for tests: answer /health at once
    params.ui = False
    if args.gpu_layers is not None:
        params.n_gpu_layers = args.gpu_layers
    if args.parallel is not None:
        params.n_parallel = args.parallel
    if args.cont_batching is not None:
        params.cont_batching = args.cont_batching
    if args.kv_unified is not None:
        params.kv_unified = args.kv_unified
    if args.jinja is not None:
        params.use_jinja = args.jinja
    adapters = [item for value in args.lora for item in value.split(",") if item]
    if adapters:
        params.lora_adapters = [xlc.CommonAdapterLoraInfo(path, 1.0) for path in adapters]
    return params


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; returns the exit status (0 after SIGTERM/SIGINT, 1 or 2 on errors)."""
    args = build_parser().parse_args(argv)
    xlc = _import_xllamacpp()
    if xlc is None:
        print(
            f"{_PROG}: error: xllamacpp is not installed; run: {INSTALL_HINT}",
            file=sys.stderr,
            flush=True,
        )
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the model loads, so a SIGTERM during a long load is not lost.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.perf_counter()
    try:
        server = xlc.Server(_params(xlc, args))
    except Exception as exc:  # xllamacpp raises plain RuntimeError/ValueError on a bad model
        print(
            f"{_PROG}: error: failed to load model {args.model!r}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    elapsed = time.perf_counter() - started
    version = getattr(xlc, "__version__", "?")
    address = str(server.listening_address)
    if "://" not in address:
        address = f"http://{address}"
    print(
        f"{_PROG}: listening on {address} (xllamacpp {version}, startup {elapsed:.2f} s)",
        flush=True,
    )
    # Event.wait with a timeout keeps the main thread returning to the interpreter, so the
    # signal handlers above always run promptly.
    while not stop.wait(0.5):
        pass
    print(f"{_PROG}: stopping", flush=True)
    del server  # the native destructor stops the HTTP server and frees the model
    return 0


if __name__ == "__main__":
    sys.exit(main())
