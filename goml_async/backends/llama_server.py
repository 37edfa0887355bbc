"""LlamaServer: launch, watch and stop one llama.cpp HTTP server process.

The server is the ``llama-server`` binary (an explicit ``binary=``, then ``GOML_LLAMA_SERVER``,
then ``llama-server`` on PATH) or, where there is none, the xllamacpp launcher
(``python -m goml_async.backends.llama_launcher``), which takes the same flags.

Example:
    ```python
    async with LlamaServer("model.gguf", LoadConfig(context_len=2048)) as server:
        print(server.base_url)  # http://127.0.0.1:<free port>; OpenAI API under /v1
    ```

What it guarantees:

* ``LoadConfig.parallel_slots`` slots (default 4), decoded together (continuous batching), each
  with ``context_len`` tokens of context (see :func:`llama_server_args`) and its own KV cache
  stream, so a greedy reply does not depend on what the other slots hold.
* Bad input fails before anything starts: a missing or non-GGUF model (:class:`ModelLoadError`),
  a missing or non-executable binary (:class:`BackendUnavailable`), a port in use
  (:class:`ConfigError`).
* Readiness is ``GET /health`` answering 200 (503 means "loading": keep waiting). If the process
  exits first, or is not ready within ``startup_timeout``, the error has its last log lines.
* stdout and stderr are read continuously by two daemon threads into a bounded tail
  (:meth:`LlamaServer.log_tail`), so the pipes never fill. Threads, not tasks: the server object
  may be started in one task and closed in another (the sync facade does exactly that), which a
  task group held across calls cannot allow.
* The process runs in its own process group. :meth:`LlamaServer.aclose` (idempotent, safe while
  being cancelled) sends SIGTERM to the group, then SIGKILL after a grace period. A
  ``weakref.finalize`` hook SIGKILLs the group if the object is dropped or the interpreter exits
  first, so Ctrl-C never leaves a server behind.
* It dies with its owner however the owner ends: on Linux the server is started with
  ``PR_SET_PDEATHSIG`` = SIGKILL, so even a SIGKILL, SIGTERM or SIGHUP of the owning process
  (which run no Python clean-up) takes the server with it. The signal follows the thread that
  started the server: start it from the thread that runs the event loop (as ``start()`` does).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import anyio
import httpx
from anyio.abc import AsyncResource

from .._validate import integer, is_int, non_empty_str
from ..convert.gguf_meta import kv_bytes_per_token
from ..errors import BackendUnavailable, ConfigError, LifecycleError, ModelLoadError
from ..settings import GomlSettings, current_settings
from ..types import LoadConfig
from ._llama_process import (
    LogTail,
    check_binary,
    check_model,
    describe_exit,
    die_with_parent,
    kill_group,
    reserve_port,
    wait_exit,
)
from ._llama_sizing import (
    DECODE_THREADS,
    DEFAULT_SLOT_CONTEXT,
    DEFAULT_SLOTS,
    cpu_count,
    kv_cache_warning,
    memory_bytes,
    read_meta,
    slot_context,
    train_context,
)
from .llama_launcher import INSTALL_HINT

__all__ = [
    "ALL_GPU_LAYERS",
    "DEFAULT_SLOTS",
    "DEFAULT_SLOT_CONTEXT",
    "INSTALL_HINT",
    "LOG_TAIL_LINES",
    "LlamaServer",
    "cached_llama_server",
    "launcher_command",
    "llama_server_args",
    "slot_context",
]

#: ``-ngl`` value for ``LoadConfig.gpu_layers == -1`` ("all"): every llama-server version reads
#: 999 as "every layer" (newer ones also take ``all``, older ones do not).
ALL_GPU_LAYERS = 999
#: Log lines kept from the server's stdout and stderr together.
LOG_TAIL_LINES = 200
_LAUNCHER_MODULE = "goml_async.backends.llama_launcher"
_POLL_INTERVAL = 0.05  # seconds between /health polls and exit checks during startup
_TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_ERROR_LINES = 20  # log lines quoted in error messages
_DRAIN_SECONDS = 1.0  # how long to wait for the last log lines of an exited process
# What llama-server and the launcher print when the model (not the server) is the problem.
_MODEL_FAILURE_MARKERS = (
    "failed to load model",
    "error loading model",
    "model loading error",
    "failed to read magic",
    "gguf_init_from_file",
)

logger = logging.getLogger(__name__)


def launcher_command() -> list[str]:
    """The argv prefix that runs the xllamacpp launcher with this interpreter."""
    return [sys.executable, "-m", _LAUNCHER_MODULE]


def llama_server_args(
    model_path: str | os.PathLike[str],
    config: LoadConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    threads: int | None = None,
    extra_args: Sequence[str] = (),
    train_context: int | None = None,
) -> list[str]:
    """llama-server's flags for a model and a LoadConfig (without the binary).

    ``parallel_slots`` -> ``--parallel`` (:data:`DEFAULT_SLOTS` when 0), with continuous
    batching and one KV cache stream per slot (``--no-kv-unified``); ``-c`` is the slots times
    :func:`slot_context`, because llama-server divides ``-c`` among its slots: every request
    gets ``context_len`` tokens whatever else runs. ``gpu_layers`` -> ``-ngl`` (when >= 0; -1,
    "all", becomes ``-ngl 999``), ``adapter_path`` -> ``--lora``; ``threads`` -> ``-tb``
    (default: the CPUs this process may use), with ``-t 1`` (:data:`DECODE_THREADS`).
    ``extra_args`` follow verbatim, so they can override (``-t N`` puts the threads back on
    one-token steps, and gives up the guarantee below).

    One KV stream per slot is what keeps greedy output the same whatever else the server
    runs: in a unified cache (llama-server's choice when it picks the slot count itself) a
    sequence's cells sit among other sequences' cells, and its attention sums come out in
    another order, which can change a temperature-0 answer. One thread for a step of one
    token keeps it so once a reply is long: see :data:`DECODE_THREADS`.

    Example:
        >>> args = llama_server_args("m.gguf", LoadConfig(context_len=512), port=8080, threads=2)
        >>> " ".join(args[6:])
        '-c 2048 --parallel 4 --cont-batching --no-kv-unified -ngl 999 --jinja -t 1 -tb 2'
    """
    config = config or LoadConfig()
    args = ["-m", os.fspath(model_path), "--host", host, "--port", str(port)]
    slots = config.parallel_slots or DEFAULT_SLOTS
    args += ["-c", str(slots * slot_context(config, train_context))]
    args += ["--parallel", str(slots), "--cont-batching", "--no-kv-unified"]
    gpu_layers = ALL_GPU_LAYERS if config.gpu_layers < 0 else config.gpu_layers
    args += ["-ngl", str(gpu_layers)]
    # Jinja chat templates (the pinned build's default, named so that it stays so).
    args += ["--jinja"]
    if config.adapter_path:
        args += ["--lora", config.adapter_path]
    # One thread for one-token steps, the threads for the rest: see DECODE_THREADS.
    args += ["-t", str(DECODE_THREADS), "-tb", str(threads or cpu_count())]
    return [*args, *extra_args]


def cached_llama_server(settings: GomlSettings | None = None) -> Path | None:
    """The newest llama-server built by ``scripts/build-llama-server`` into the cache, if any.

    It lives at ``<cache_dir>/llama-server/<version>/llama-server`` (``GOML_CACHE_DIR``,
    default ``~/.cache/goml_async``).
    """
    root = (settings or current_settings()).cache_dir / "llama-server"
    candidates = sorted(
        (path for path in root.glob("*/llama-server") if os.access(path, os.X_OK)),
        key=lambda path: path.stat().st_mtime,
    )
    return candidates[-1] if candidates else None


def _launcher_or_raise(why: str) -> list[str]:
    if importlib.util.find_spec("xllamacpp") is None:
        raise BackendUnavailable(
            f"{why}the xllamacpp launcher is not installed",
            backend="llama",
            install_hint=INSTALL_HINT,
        )
    return launcher_command()


def _resolve_command(
    binary: str | os.PathLike[str] | None, use_launcher: bool | None, settings: GomlSettings
) -> tuple[list[str], bool]:
    if use_launcher:
        if binary is not None:
            raise ConfigError("use_launcher", "use_launcher=True and binary= exclude each other")
        return _launcher_or_raise(""), True
    if binary is not None:
        return [check_binary(binary, "binary=")], False
    if settings.llama_server is not None:
        return [check_binary(settings.llama_server, "GOML_LLAMA_SERVER")], False
    found = shutil.which("llama-server") or cached_llama_server(settings)
    if found:
        return [str(found)], False
    if use_launcher is False:
        raise BackendUnavailable(
            "no llama-server binary found: pass binary=, set GOML_LLAMA_SERVER or put "
            "llama-server on PATH",
            backend="llama",
        )
    return _launcher_or_raise(
        "no llama-server binary found (pass binary=, set GOML_LLAMA_SERVER or put "
        "llama-server on PATH) and "
    ), True


class LlamaServer(AsyncResource):
    """One llama.cpp HTTP server process, owned by this object.

    Args:
        model_path: the GGUF model file.
        config: context length, GPU layers, parallel slots and LoRA adapter (see
            :func:`llama_server_args` for the flags).
        binary: the llama-server executable (a path, or a name on PATH). Default: ``settings.
            llama_server`` (``GOML_LLAMA_SERVER``), then ``llama-server`` on PATH, then the
            binary cached by ``scripts/build-llama-server``, then the xllamacpp launcher.
        use_launcher: True forces the xllamacpp launcher; False forbids it (a binary must be
            found); None (default) uses it only when no binary is found.
        host: the address to listen on.
        port: the port; 0 picks a free one when the server starts.
        threads: CPU threads for prompts and batched steps (``-tb``; one-token steps run on
            one, :data:`DECODE_THREADS`); None: the CPUs this process may use.
        extra_args: more llama-server flags, passed verbatim after the ones above.
        startup_timeout: seconds to wait for ``/health``; None takes
            ``settings.llama_startup_timeout`` (``GOML_LLAMA_STARTUP_TIMEOUT``, default 120).
        settings: where defaults come from; None reads the environment.

    Raises:
        BackendUnavailable: no usable binary (named in the message) and no launcher.
        ConfigError: an invalid argument.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        config: LoadConfig | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        use_launcher: bool | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float | None = None,
        settings: GomlSettings | None = None,
    ) -> None:
        if config is not None and not isinstance(config, LoadConfig):
            raise ConfigError("config", f"must be a LoadConfig, got {type(config).__name__}")
        non_empty_str("host", host)
        if not is_int(port) or not 0 <= port <= 65535:
            raise ConfigError("port", f"must be an int in 0..65535, got {port!r}")
        integer("threads", threads, minimum=1, allow_none=True)
        if isinstance(extra_args, str | bytes) or not all(isinstance(a, str) for a in extra_args):
            raise ConfigError("extra_args", f"must be a sequence of str, got {extra_args!r}")
        settings = settings or current_settings()
        timeout = settings.llama_startup_timeout if startup_timeout is None else startup_timeout
        if not timeout > 0:
            raise ConfigError("startup_timeout", f"must be > 0, got {startup_timeout!r}")
        self._model_path = Path(model_path).expanduser()
        self._config = config or LoadConfig()
        self._host = host
        self._port = port
        self._threads = threads
        self._extra_args = tuple(extra_args)
        self._startup_timeout = float(timeout)
        self._prefix, self._uses_launcher = _resolve_command(binary, use_launcher, settings)
        self._train_context: int | None = None  # read from the GGUF on start()
        self._kv_bytes = 0  # estimated on start()
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[int, int], LlamaServer] | None = None
        self._logs = LogTail(LOG_TAIL_LINES)
        self._started = False
        self._closed = False
        self._close_done: anyio.Event | None = None

    # -- what it is ---------------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        """The GGUF file being served."""
        return self._model_path

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port; 0 until a server asked to pick a free port has started."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no ``/v1``; the OpenAI API lives under ``base_url + "/v1"``)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def command(self) -> list[str]:
        """The full argv the server runs with (``--port 0`` before a free port is picked)."""
        return [
            *self._prefix,
            *llama_server_args(
                self._model_path,
                self._config,
                host=self._host,
                port=self._port,
                threads=self._threads,
                extra_args=self._extra_args,
                train_context=self._train_context,
            ),
        ]

    @property
    def kv_cache_bytes(self) -> int:
        """The f16 KV cache all slots take, estimated from the GGUF on start (0: unknown)."""
        return self._kv_bytes

    @property
    def slots(self) -> int:
        """How many requests the server decodes at once (``--parallel``); more wait in its queue."""
        return self._config.parallel_slots or DEFAULT_SLOTS

    @property
    def slot_context(self) -> int:
        """The context each slot holds, in tokens (see :func:`slot_context`); final once started."""
        return slot_context(self._config, self._train_context)

    @property
    def uses_launcher(self) -> bool:
        """Whether the server is the xllamacpp launcher rather than a llama-server binary."""
        return self._uses_launcher

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id); None before start."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited (negative: killed by that signal)."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, n: int = _ERROR_LINES) -> list[str]:
        """The last ``n`` lines the server wrote to stdout and stderr (at most 200 are kept)."""
        return self._logs.lines(n)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._process else "not started"
        return f"<LlamaServer {str(self._model_path)!r} at {self.base_url} pid={self.pid} {state}>"

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return await self.start()

    async def start(self) -> Self:
        """Validate the input, launch the server and wait until ``/health`` says it is ready.

        Raises:
            ModelLoadError: the model is missing or not GGUF, or the server failed to load it.
            ConfigError: the port is in use.
            BackendUnavailable: the server exited, or was not ready within startup_timeout
                (the message has its last log lines).
        """
        if self._started:
            raise LifecycleError(f"{self!r} was already started; create a new LlamaServer")
        self._started = True
        try:
            await anyio.to_thread.run_sync(check_model, self._model_path, self._config)
            meta = await anyio.to_thread.run_sync(read_meta, self._model_path)
            self._train_context = train_context(meta)
            self._kv_bytes = (
                kv_bytes_per_token(meta) * self.slots * self.slot_context if meta else 0
            )
            warning = kv_cache_warning(self._kv_bytes, memory_bytes())
            if warning is not None:
                logger.warning("%s", warning)
            self._port = await anyio.to_thread.run_sync(reserve_port, self._host, self._port)
            self._spawn()
            await self._wait_ready()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        return self

    def _spawn(self) -> None:
        command = self.command
        logger.debug("starting %s", command)
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: killpg reaches every child
                preexec_fn=die_with_parent(),  # gone with its owner, even after a SIGKILL
            )
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot run llama-server {command[0]!r}: {exc.strerror or exc}", backend="llama"
            ) from exc
        self._process = process
        self._finalizer = weakref.finalize(self, kill_group, process.pid, signal.SIGKILL)
        self._logs.follow(process)

    async def _wait_ready(self) -> None:
        url = f"{self.base_url}/health"
        last = "no answer yet"
        # trust_env=False: a proxy from the environment must never see loopback health checks.
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            with anyio.move_on_after(self._startup_timeout):
                while True:
                    await self._raise_if_exited()
                    try:
                        response = await client.get(url)
                    except httpx.TransportError as exc:
                        last = f"{type(exc).__name__}"
                    else:
                        if response.status_code == 200:
                            return
                        last = f"HTTP {response.status_code} {response.text[:200]!r}"
                    await anyio.sleep(_POLL_INTERVAL)
        await self._raise_if_exited()
        raise BackendUnavailable(
            f"llama-server for {str(self._model_path)!r} was not ready at {url} within "
            f"{self._startup_timeout:g} s (last answer: {last}){self._quoted_logs()}",
            backend="llama",
        )

    async def _raise_if_exited(self) -> None:
        code = self.returncode
        if code is None:
            return
        await self._drain_logs()
        lines = self.log_tail(_ERROR_LINES)
        logs = self._quoted_logs()
        if any(marker in line.lower() for line in lines for marker in _MODEL_FAILURE_MARKERS):
            raise ModelLoadError(
                str(self._model_path), f"llama-server exited with {describe_exit(code)}{logs}"
            )
        raise BackendUnavailable(
            f"llama-server {self.command[0]!r} exited with {describe_exit(code)} before it "
            f"was ready{logs}",
            backend="llama",
        )

    def _quoted_logs(self) -> str:
        lines = self.log_tail(_ERROR_LINES)
        if not lines:
            return "; it wrote no log lines"
        return f"; last {len(lines)} log lines:\n" + "\n".join(f"    {line}" for line in lines)

    async def _drain_logs(self) -> None:
        """Give the pump threads a moment to read what the exited process wrote last."""
        await self._logs.drain(_DRAIN_SECONDS)

    def check_alive(self) -> None:
        """Raise if the server process has exited; call it when a request to it fails.

        Raises:
            BackendUnavailable: "llama-server crashed (exit code N)" with the last log lines,
                or the server was never started or already closed.
        """
        if self._process is None:
            raise BackendUnavailable("llama-server was not started", backend="llama")
        if self._closed:
            raise BackendUnavailable("llama-server was closed (aclose)", backend="llama")
        code = self._process.poll()
        if code is None:
            return
        self._logs.join(0.2)  # the process is gone, so the pipes reach EOF at once
        raise BackendUnavailable(
            f"llama-server crashed ({describe_exit(code)}){self._quoted_logs()}",
            backend="llama",
        )

    async def aclose(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after 5 s. Idempotent.

        Safe to call from a task that is being cancelled: the shutdown is shielded.
        """
        if self._closed:
            if self._close_done is not None:
                await self._close_done.wait()
            return
        self._closed = True
        process = self._process
        if process is None:
            return
        self._close_done = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):
                await self._stop(process)
        finally:
            self._close_done.set()

    async def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            kill_group(process.pid, signal.SIGTERM)
            if not await wait_exit(process, _TERM_GRACE):
                logger.warning("llama-server pid %d ignored SIGTERM; killing it", process.pid)
                kill_group(process.pid, signal.SIGKILL)
                await wait_exit(process, _TERM_GRACE)
        # The leader is gone; anything it started in its group goes with it.
        kill_group(process.pid, signal.SIGKILL)
        if self._finalizer is not None:
            self._finalizer.detach()
        await self._drain_logs()
        code = process.returncode
        logger.debug("llama-server pid %d stopped (%s)", process.pid, describe_exit(code))
