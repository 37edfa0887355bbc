"""The TextModel protocol and BaseTextModel, the base class every backend builds on.

A backend implements one primitive, a token source (``_stream_prompt`` and ``_stream_chat``:
async generators of :class:`~goml_async.types.Token`), plus ``_aclose``. Config resolution,
input validation, the TokenStream, ``metrics()``/``err()`` bookkeeping, ``batch_generate`` and
``async with`` come from here, once for every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import anyio

from .errors import ConfigError, GenerationError, GomlError, NotSupported
from .stream import StreamContext, TokenSource, TokenStream
from .types import (
    BatchResult,
    ClassifyResult,
    GenerateConfig,
    GenerateMetrics,
    Message,
    MessageLike,
    ModelInfo,
    Token,
    coerce_messages,
    resolve_config,
)

__all__ = ["BaseTextModel", "TextModel"]


@runtime_checkable
class TextModel(Protocol):
    """A loaded language model. Every backend's model satisfies this protocol.

    ``generate`` and ``chat`` return a :class:`~goml_async.stream.TokenStream` at once (nothing
    runs until it is iterated). Each also accepts the fields of
    :class:`~goml_async.types.GenerateConfig` as keyword arguments.
    """

    @property
    def model_type(self) -> str:
        """A short name for the model's kind (e.g. ``"llama"``, ``"mlx"``, ``"http"``)."""
        ...

    def generate(
        self, prompt: str, config: GenerateConfig | None = None, **options: Any
    ) -> TokenStream:
        """Stream a completion of ``prompt``."""
        ...

    def chat(
        self, messages: Iterable[MessageLike], config: GenerateConfig | None = None, **options: Any
    ) -> TokenStream:
        """Stream the assistant's reply to ``messages`` (the model's chat template applies)."""
        ...

    async def classify(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[ClassifyResult]:
        """Prefill each prompt and sample the token at its last position."""
        ...

    async def batch_generate(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[BatchResult]:
        """Generate for several prompts; each result carries its tokens or its own error."""
        ...

    def info(self) -> ModelInfo:
        """Static facts about the model."""
        ...

    def metrics(self) -> GenerateMetrics:
        """Metrics of the last finished generate/chat call."""
        ...

    def err(self) -> BaseException | None:
        """The error of the last finished generate/chat call, or None (go-ml's ``Err()``)."""
        ...

    async def aclose(self) -> None:
        """Free the model's resources (threads, subprocesses, connections). Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ConfigError("prompts", f"must be a list of str, got {type(prompts).__name__}")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ConfigError(f"prompts[{index}]", f"must be a str, got {type(prompt).__name__}")
    return list(prompts)


class BaseTextModel(ABC):
    """Shared behaviour of every TextModel; subclasses supply the token sources.

    Subclasses implement :meth:`_stream_prompt`, and :meth:`_stream_chat` when the model has a
    chat template; they may override :meth:`classify`, :meth:`batch_generate`, :meth:`info` and
    :meth:`_aclose`.
    """

    #: Concurrency of the default :meth:`batch_generate`.
    batch_concurrency: int = 4

    def __init__(self, *, model_type: str, default_config: GenerateConfig | None = None) -> None:
        self._model_type = model_type
        self._default_config = default_config
        self._last_metrics = GenerateMetrics()
        self._last_error: BaseException | None = None
        self._closed = False

    @property
    def model_type(self) -> str:
        """A short name for the model's kind."""
        return self._model_type

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has been called."""
        return self._closed

    # -- the primitive ----------------------------------------------------------------------------

    @abstractmethod
    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        """Yield the tokens of a completion of ``prompt`` (read the config from ``context``)."""

    def _stream_chat(self, messages: list[Message], context: StreamContext) -> AsyncIterator[Token]:
        """Yield the tokens of the reply to ``messages``."""
        raise NotSupported(f"the {self._model_type} model has no chat template")

    async def _aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the backend's resources (called once)."""

    # -- public API -------------------------------------------------------------------------------

    def generate(
        self, prompt: str, config: GenerateConfig | None = None, **options: Any
    ) -> TokenStream:
        """Stream a completion of ``prompt``.

        Example:
            ```python
            async for token in model.generate("Once upon a time", max_tokens=32):
                print(token.text, end="")
            ```
        """
        if not isinstance(prompt, str):
            raise ConfigError("prompt", f"must be a str, got {type(prompt).__name__}")
        return self._open_stream(
            lambda context: self._stream_prompt(prompt, context), config, options
        )

    def chat(
        self, messages: Iterable[MessageLike], config: GenerateConfig | None = None, **options: Any
    ) -> TokenStream:
        """Stream the assistant's reply to ``messages`` (Messages or role/content dicts)."""
        conversation = coerce_messages(messages)
        return self._open_stream(
            lambda context: self._stream_chat(conversation, context), config, options
        )

    async def classify(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[ClassifyResult]:
        """Not supported unless the backend overrides it."""
        raise NotSupported(f"the {self._model_type} backend cannot classify")

    async def batch_generate(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[BatchResult]:
        """Generate for every prompt, :attr:`batch_concurrency` at a time, in input order.

        A prompt's failure is recorded in its BatchResult and does not stop the others.
        """
        checked = _check_prompts(prompts)
        resolved = self._resolve(config, options)
        results: list[BatchResult] = [BatchResult() for _ in checked]
        pending = iter(enumerate(checked))

        async def worker() -> None:
            # Workers take prompts from one shared iterator, so prompts start in input order
            # whatever the scheduler does, and at most batch_concurrency run at once.
            for index, prompt in pending:
                tokens: list[Token] = []
                try:
                    async with self.generate(prompt, resolved) as stream:
                        async for token in stream:
                            tokens.append(token)
                except GomlError as exc:
                    results[index] = BatchResult(tokens=tuple(tokens), error=exc)
                else:
                    results[index] = BatchResult(tokens=tuple(tokens))

        async with anyio.create_task_group() as group:
            for _ in range(min(max(1, self.batch_concurrency), len(checked))):
                group.start_soon(worker)
        return results

    def info(self) -> ModelInfo:
        """Static facts about the model (only the architecture unless the backend knows more)."""
        return ModelInfo(architecture=self._model_type)

    def metrics(self) -> GenerateMetrics:
        """Metrics of the last finished generate/chat call."""
        return self._last_metrics

    def err(self) -> BaseException | None:
        """The error of the last finished generate/chat call, or None."""
        return self._last_error

    async def aclose(self) -> None:
        """Release the model's resources. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- helpers ----------------------------------------------------------------------------------

    def _open_stream(
        self, source: TokenSource, config: GenerateConfig | None, options: dict[str, Any]
    ) -> TokenStream:
        """A TokenStream over ``source`` that reports to this model when it finishes."""
        return TokenStream(source, config=self._resolve(config, options), on_finish=self._record)

    def _resolve(self, config: GenerateConfig | None, options: dict[str, Any]) -> GenerateConfig:
        if self._closed:
            raise GenerationError(f"the {self._model_type} model is closed")
        return resolve_config(config if config is not None else self._default_config, options)

    def _record(self, stream: TokenStream) -> None:
        self._last_metrics = stream.metrics or GenerateMetrics()
        self._last_error = stream.error

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self._model_type}{state}>"
