"""Blocking twins of the async API, for scripts and notebooks.

Every call runs on one background event-loop thread (an anyio BlockingPortal started on first
use), so these functions work in a plain script and also inside an already running loop, such as
Jupyter's: the calling thread blocks while the background loop does the work. There is no
``asyncio.run`` per call and no nest_asyncio. No logic lives here: each twin calls the async API.

Example:
    ```python
    from goml_async import sync

    with sync.load_model("models/smollm2.gguf") as model:
        print(model.generate("The capital of France is", max_tokens=8).text)
        for token in model.stream("Count to five:"):
            print(token.text, end="")
    ```
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import anyio
import anyio.lowlevel
from anyio.from_thread import BlockingPortal
from anyio.lowlevel import EventLoopToken

from . import _sync_stream, registry
from .compat import Backend
from .errors import ConfigError, LifecycleError
from .model import TextModel
from .stream import TokenStream
from .types import (
    BatchResult,
    ClassifyResult,
    GenerateConfig,
    GenerateMetrics,
    GenerateOptions,
    GenOpts,
    MessageLike,
    ModelInfo,
    Result,
    Token,
)

__all__ = [
    "BlockingBackend",
    "BlockingModel",
    "chat",
    "generate",
    "load_default_model",
    "load_model",
    "run",
    "shutdown",
]

T = TypeVar("T")


class _LoopThread:
    """One daemon thread running an event loop with a BlockingPortal, started on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._token: EventLoopToken | None = None
        self._thread: threading.Thread | None = None

    def portal(self) -> BlockingPortal:
        return self.handles()[0]

    def handles(self) -> tuple[BlockingPortal, EventLoopToken]:
        """The portal, and the loop's token for calls that need no task of their own."""
        with self._lock:
            if self._portal is None:
                self._start()
            assert self._portal is not None and self._token is not None
            if threading.current_thread() is self._thread:
                raise LifecycleError(
                    "goml_async.sync was called from its own event loop thread (for example from "
                    "a callback); await the async API there instead"
                )
            return self._portal, self._token

    def _start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            async with BlockingPortal() as portal:
                self._portal, self._token = portal, anyio.lowlevel.current_token()
                ready.set()
                await portal.sleep_until_stopped()

        def main() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # reported to the thread that started us
                failure.append(exc)
                ready.set()

        # A daemon thread: a loop that is never stopped must not keep the interpreter alive.
        self._thread = threading.Thread(target=main, name="goml-sync-loop", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise LifecycleError("the background event loop failed to start") from failure[0]

    def stop(self) -> None:
        with self._lock:
            portal, thread = self._portal, self._thread
            self._portal = self._thread = self._token = None
        if portal is not None and thread is not None and thread is not threading.current_thread():
            portal.call(portal.stop)
            thread.join(timeout=5)


_loop = _LoopThread()
atexit.register(_loop.stop)


def run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``await func(*args)`` on the background loop and return its result.

    An exception in the calling thread while it waits (Ctrl-C's KeyboardInterrupt) cancels the
    call on the loop too, so an interrupted generation stops instead of running on unseen.
    """
    return _call(_loop.portal(), func, *args)


def _call(portal: BlockingPortal, func: Callable[..., Awaitable[T]], *args: Any) -> T:
    future = portal.start_task_soon(func, *args)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def shutdown() -> None:
    """Stop the background loop thread (it restarts on the next call). Runs at exit too."""
    _loop.stop()


def _iterate(stream: TokenStream) -> Generator[Token, None, None]:
    # A generator, so that nothing starts on the loop before the caller's first ``next()``.
    portal, token = _loop.handles()
    yield from _sync_stream.iterate(portal, token, stream)


def _unwrap(model: TextModel | BlockingModel) -> TextModel:
    if isinstance(model, BlockingModel):
        return model.model
    if not isinstance(model, TextModel):
        raise ConfigError(
            "model", f"must be a TextModel or BlockingModel, got {type(model).__name__}"
        )
    return model


class _BlockingResource:
    """``with`` support for the blocking wrappers: leaving the block calls ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BlockingModel(_BlockingResource):
    """A TextModel with blocking methods. Create it with :func:`load_model` or wrap one."""

    def __init__(self, model: TextModel) -> None:
        self._model = _unwrap(model)

    @property
    def model(self) -> TextModel:
        """The async TextModel underneath."""
        return self._model

    @property
    def model_type(self) -> str:
        """The model's ``model_type``."""
        return self._model.model_type

    def generate(
        self, prompt: str, config: GenerateConfig | None = None, **options: Unpack[GenerateOptions]
    ) -> Result:
        """Complete ``prompt`` and return the whole reply."""
        return run(self._model.generate(prompt, config, **options).collect)

    def chat(
        self,
        messages: Iterable[MessageLike],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> Result:
        """Reply to ``messages`` and return the whole reply."""
        return run(self._model.chat(messages, config, **options).collect)

    def stream(
        self, prompt: str, config: GenerateConfig | None = None, **options: Unpack[GenerateOptions]
    ) -> Generator[Token, None, None]:
        """Iterate over the tokens of a completion; leaving the loop stops generation.

        Tokens that are already there reach the calling thread together; a model that computes
        token by token is never asked for a token before the loop wants it.
        """
        return _iterate(self._model.generate(prompt, config, **options))

    def stream_chat(
        self,
        messages: Iterable[MessageLike],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> Generator[Token, None, None]:
        """Iterate over the tokens of a chat reply."""
        return _iterate(self._model.chat(messages, config, **options))

    def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> list[ClassifyResult]:
        """Blocking :meth:`TextModel.classify`."""
        return run(lambda: self._model.classify(prompts, config, **options))

    def batch_generate(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> list[BatchResult]:
        """Blocking :meth:`TextModel.batch_generate`."""
        return run(lambda: self._model.batch_generate(prompts, config, **options))

    def info(self) -> ModelInfo:
        """The model's ModelInfo."""
        return self._model.info()

    def metrics(self) -> GenerateMetrics:
        """Metrics of the last finished call."""
        return self._model.metrics()

    def err(self) -> BaseException | None:
        """The error of the last finished call."""
        return self._model.err()

    def close(self) -> None:
        """Close the model. Idempotent."""
        run(self._model.aclose)

    def __repr__(self) -> str:
        return f"<BlockingModel {self._model!r}>"


class BlockingBackend(_BlockingResource):
    """A string-level :class:`~goml_async.compat.Backend` with blocking methods."""

    def __init__(self, backend: Backend) -> None:
        if not isinstance(backend, Backend):
            raise ConfigError("backend", f"must be a Backend, got {type(backend).__name__}")
        self._backend = backend

    @property
    def name(self) -> str:
        """The backend's name."""
        return self._backend.name

    @property
    def backend(self) -> Backend:
        """The async Backend underneath."""
        return self._backend

    def available(self) -> bool:
        """Whether the backend can serve requests."""
        return self._backend.available()

    def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        """Blocking :meth:`Backend.generate`."""
        return run(self._backend.generate, prompt, opts)

    def chat(self, messages: Sequence[MessageLike], opts: GenOpts | None = None) -> Result:
        """Blocking :meth:`Backend.chat`."""
        return run(self._backend.chat, messages, opts)

    def close(self) -> None:
        """Close the backend if it has ``aclose``. Idempotent when the backend's is."""
        aclose = getattr(self._backend, "aclose", None)
        if aclose is not None:
            run(aclose)


def load_model(path_or_url: str, backend: str | None = None, **options: Any) -> BlockingModel:
    """Blocking :func:`goml_async.load_model`."""
    return BlockingModel(run(lambda: registry.load_model(path_or_url, backend, **options)))


def load_default_model(backend: str | None = None, **options: Any) -> BlockingModel:
    """Blocking :func:`goml_async.load_default_model`."""
    return BlockingModel(run(lambda: registry.load_default_model(backend, **options)))


def generate(
    model: TextModel | BlockingModel,
    prompt: str,
    config: GenerateConfig | None = None,
    **options: Unpack[GenerateOptions],
) -> Result:
    """Complete ``prompt`` on ``model`` (async or blocking) and return the whole reply."""
    return run(_unwrap(model).generate(prompt, config, **options).collect)


def chat(
    model: TextModel | BlockingModel,
    messages: Iterable[MessageLike],
    config: GenerateConfig | None = None,
    **options: Unpack[GenerateOptions],
) -> Result:
    """Reply to ``messages`` on ``model`` (async or blocking) and return the whole reply."""
    return run(_unwrap(model).chat(messages, config, **options).collect)
