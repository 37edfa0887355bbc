"""go-ml's string-level world, as thin wrappers over the token stream.

- :class:`Backend`: ``await generate(prompt, opts) -> Result`` and ``await chat(...)``.
- :class:`StreamingBackend` (deprecated): Backend plus callback streaming.
- :class:`InferenceAdapter`: any TextModel as a Backend and StreamingBackend.
- :class:`BackendTextModel` (aliases ``HTTPTextModel``, ``LlamaTextModel``): any Backend as a
  TextModel.

Stop sequences are cut by the TokenStream on the client side, so the adapter delivers only text
before a stop, in whole calls and while streaming alike.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

from anyio.abc import AsyncResource

from ._concurrency import maybe_await
from ._validate import string
from .errors import BackendUnavailable, ConfigError, NotSupported
from .model import BaseTextModel, TextModel
from .stream import StreamContext, TokenStream
from .types import GenerateConfig, GenerateMetrics, GenOpts, Message, MessageLike, Result, Token

__all__ = [
    "Backend",
    "BackendTextModel",
    "HTTPTextModel",
    "InferenceAdapter",
    "LlamaTextModel",
    "StreamingBackend",
    "TokenCallback",
    "as_text_model",
]

#: Called with each token's text; may be sync or async. Raising stops generation.
TokenCallback: TypeAlias = Callable[[str], Awaitable[None] | None]

_STREAMING_DEPRECATION = (
    "{name} is deprecated: iterate TextModel.generate()/TextModel.chat() instead "
    "(async for token in model.generate(prompt): ...)"
)


@runtime_checkable
class Backend(Protocol):
    """go-ml's string-level backend: whole replies as :class:`~goml_async.types.Result`."""

    @property
    def name(self) -> str:
        """The backend's name (e.g. ``"mlx"``, ``"http"``)."""
        ...

    def available(self) -> bool:
        """Whether the backend can serve requests now."""
        ...

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        """Complete ``prompt``."""
        ...

    async def chat(self, messages: Sequence[MessageLike], opts: GenOpts | None = None) -> Result:
        """Reply to ``messages``."""
        ...


@runtime_checkable
class StreamingBackend(Backend, Protocol):
    """Deprecated: a Backend that streams through callbacks.

    Use ``TextModel.generate()`` instead; implementing this protocol explicitly, or calling
    these methods on an :class:`InferenceAdapter`, emits a DeprecationWarning.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "_is_protocol", False):
            warnings.warn(
                _STREAMING_DEPRECATION.format(
                    name=f"StreamingBackend (subclassed by {cls.__name__})"
                ),
                DeprecationWarning,
                stacklevel=2,
            )

    async def generate_stream(
        self, prompt: str, opts: GenOpts | None, callback: TokenCallback
    ) -> Result:
        """Complete ``prompt``, calling ``callback`` with each token's text."""
        ...

    async def chat_stream(
        self, messages: Sequence[MessageLike], opts: GenOpts | None, callback: TokenCallback
    ) -> Result:
        """Reply to ``messages``, calling ``callback`` with each token's text."""
        ...


async def _pump(stream: TokenStream, callback: TokenCallback) -> Result:
    """Feed a stream's tokens to a callback; a callback error closes the stream and propagates."""
    async with stream:
        async for token in stream:
            if token.text:
                outcome = callback(token.text)
                if outcome is not None:  # most callbacks are sync: no coroutine per token
                    await maybe_await(outcome)
    return Result(text=stream.text, metrics=stream.metrics, finish_reason=stream.finish_reason)


class InferenceAdapter(AsyncResource):
    """Any TextModel as a go-ml :class:`Backend` (and deprecated StreamingBackend).

    Args:
        model: the TextModel to wrap; the adapter owns it (``aclose`` closes it).
        name: the backend name reported by :attr:`name`.

    A model error after partial output raises a GenerationError whose ``partial_text`` holds
    the text delivered before it.

    Example:
        ```python
        backend = InferenceAdapter(model, "mlx")
        result = await backend.generate("Hello", GenOpts(max_tokens=16))
        print(result.text)
        ```
    """

    def __init__(self, model: TextModel, name: str = "") -> None:
        if not isinstance(model, TextModel):
            raise ConfigError("model", f"must be a TextModel, got {type(model).__name__}")
        string("name", name)
        self._bind(name or model.model_type, model)

    def _bind(self, name: str, model: TextModel | None) -> None:
        """Set the adapter's state; a subclass that starts its model later binds None first."""
        self._name = name
        self._model: TextModel | None = model
        self._closed = False

    @property
    def name(self) -> str:
        """The backend name given at construction (default: the model's ``model_type``)."""
        return self._name

    @property
    def model(self) -> TextModel:
        """The wrapped TextModel, for classify, batch_generate, info and metrics.

        Raises:
            BackendUnavailable: the model is not started yet (a ``LlamaBackend`` before
                ``start()``).
        """
        if self._model is None:
            raise BackendUnavailable(
                f"{self._name} not available: start() it first", backend=self._name
            )
        return self._model

    def available(self) -> bool:
        """True from the time the model is bound until the adapter is closed."""
        return self._model is not None and not self._closed

    @staticmethod
    def _options(opts: GenOpts | None) -> dict[str, Any]:
        """Only the fields ``opts`` sets, so the model's own defaults fill in the rest."""
        if opts is None:
            return {}
        if not isinstance(opts, GenOpts):
            raise ConfigError("opts", f"must be a GenOpts or None, got {type(opts).__name__}")
        return opts.to_options()

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        """Complete ``prompt``; ``opts=None`` keeps the model's defaults."""
        return await self.model.generate(prompt, **self._options(opts)).collect()

    async def chat(self, messages: Sequence[MessageLike], opts: GenOpts | None = None) -> Result:
        """Reply to ``messages``."""
        return await self.model.chat(messages, **self._options(opts)).collect()

    async def generate_stream(
        self, prompt: str, opts: GenOpts | None, callback: TokenCallback
    ) -> Result:
        """Deprecated: stream ``prompt``'s completion into ``callback`` (sync or async)."""
        warnings.warn(
            _STREAMING_DEPRECATION.format(name="InferenceAdapter.generate_stream"),
            DeprecationWarning,
            stacklevel=2,
        )
        _check_callback(callback)
        return await _pump(self.model.generate(prompt, **self._options(opts)), callback)

    async def chat_stream(
        self, messages: Sequence[MessageLike], opts: GenOpts | None, callback: TokenCallback
    ) -> Result:
        """Deprecated: stream the reply to ``messages`` into ``callback`` (sync or async)."""
        warnings.warn(
            _STREAMING_DEPRECATION.format(name="InferenceAdapter.chat_stream"),
            DeprecationWarning,
            stacklevel=2,
        )
        _check_callback(callback)
        return await _pump(self.model.chat(messages, **self._options(opts)), callback)

    async def aclose(self) -> None:
        """Close the wrapped model. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._model is not None:
                await self._model.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} over {self._model!r}>"


def _check_callback(callback: object) -> None:
    if not callable(callback):
        raise ConfigError("callback", f"must be callable, got {type(callback).__name__}")


class BackendTextModel(BaseTextModel):
    """Any go-ml :class:`Backend` as a TextModel.

    Each call yields one Token holding the whole reply (``id`` -1), as go-ml's HTTPTextModel
    does; metrics are the backend's, when it reports them. ``classify`` is not supported;
    ``batch_generate`` runs one prompt at a time, since a string backend need not be safe for
    concurrent use. ``aclose`` closes the backend when it has ``aclose``.
    """

    batch_concurrency = 1
    # go-ml's per-request model override (GenOpts.model), for a backend that serves several.
    call_options = frozenset({"model"})

    def __init__(self, backend: Backend, *, model: str = "") -> None:
        if not isinstance(backend, Backend):
            raise ConfigError("backend", f"must be a Backend, got {type(backend).__name__}")
        super().__init__(model_type=backend.name or "backend")
        self._backend = backend
        self._model_name = model

    @property
    def backend(self) -> Backend:
        """The wrapped Backend."""
        return self._backend

    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        return self._one_reply(lambda opts: self._backend.generate(prompt, opts), context)

    def _stream_chat(self, messages: list[Message], context: StreamContext) -> AsyncIterator[Token]:
        return self._one_reply(lambda opts: self._backend.chat(messages, opts), context)

    async def _one_reply(
        self, call: Callable[[GenOpts], Awaitable[Result]], context: StreamContext
    ) -> AsyncIterator[Token]:
        _refuse_what_genopts_cannot_carry(context.config)
        model = context.options.get("model", self._model_name)
        result = await call(GenOpts.from_config(context.config, model=model))
        # Zeros mean "unknown" (a string backend reports no token counts); the stream still
        # fills in the client-side timings.
        context.metrics = result.metrics if result.metrics is not None else GenerateMetrics()
        if result.finish_reason in ("stop", "length"):
            context.finish_reason = result.finish_reason
        if result.text:
            yield Token(id=-1, text=result.text)

    def _check_call_options(self, options: dict[str, Any]) -> dict[str, Any]:
        string("model", options.get("model", ""))
        return options

    async def _aclose(self) -> None:
        aclose = getattr(self._backend, "aclose", None)
        if aclose is not None:
            await aclose()


# GenerateConfig fields a go-ml string Backend cannot be given (GenOpts has no place for them),
# with their "not asked for" values; the deadlines need none, the TokenStream enforces them.
_NOT_IN_GENOPTS: Final = {
    "seed": None,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "logprobs": False,
    "top_logprobs": 0,
    "return_logits": False,
}


def _refuse_what_genopts_cannot_carry(config: GenerateConfig) -> None:
    for name, unset in _NOT_IN_GENOPTS.items():
        if getattr(config, name) != unset:
            raise NotSupported(
                f"{name}: a go-ml string Backend takes only GenOpts' fields; use a TextModel"
            )


#: go-ml's name for an HTTP Backend seen as a TextModel.
HTTPTextModel = BackendTextModel
#: go-ml's name for a llama-server Backend seen as a TextModel.
LlamaTextModel = BackendTextModel


def as_text_model(target: TextModel | Backend) -> TextModel:
    """The TextModel behind ``target``, for code above the backends that takes either.

    This is the one place a go-ml Backend becomes a TextModel, so everything above it streams
    and sees every GenerateConfig field (seed, deadlines, penalties):

    - a TextModel is returned as it is;
    - a Backend that wraps a TextModel and calls it as it is (an :class:`InferenceAdapter`,
      and so an ``HTTPBackend`` or ``ChatAdapter``, or a running ``LlamaBackend``) gives that
      model back: no call goes through GenOpts (an adapter subclass that overrides
      ``generate`` or ``chat`` stays a Backend, as below);
    - any other Backend is wrapped in a :class:`BackendTextModel` (one token per reply).

    Raises:
        ConfigError: ``target`` is neither a TextModel nor a Backend.
        BackendUnavailable: a ``LlamaBackend`` that is not started.

    Example:
        >>> from goml_async.testing import ScriptedModel
        >>> model = ScriptedModel(["hi"])
        >>> as_text_model(InferenceAdapter(model)) is model
        True
    """
    if isinstance(target, type):
        raise ConfigError("model", f"must be an instance, got the class {target.__name__}")
    if isinstance(target, TextModel):
        return target
    if isinstance(target, Backend):
        inner = _wrapped(target)
        return inner if inner is not None else BackendTextModel(target)
    raise ConfigError("model", f"must be a TextModel or a Backend, got {type(target).__name__}")


def _wrapped(backend: Backend) -> TextModel | None:
    """The TextModel a Backend wraps and calls as it is, if any.

    An InferenceAdapter (HTTPBackend, ChatAdapter, LlamaBackend) calls its ``model`` as it is;
    a subclass that overrides ``generate`` or ``chat`` does something of its own there, so it
    is kept as a Backend, as is any other Backend.
    """
    kind = type(backend)
    if not isinstance(backend, InferenceAdapter):
        return None
    if kind.generate is not InferenceAdapter.generate or kind.chat is not InferenceAdapter.chat:
        return None
    return backend.model  # BackendUnavailable for a LlamaBackend that is not started
