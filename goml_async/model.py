"""The TextModel protocol and BaseTextModel, the base class every backend builds on.

A backend implements one primitive, a token source (``_stream_prompt`` and ``_stream_chat``:
async generators of :class:`~goml_async.types.Token`), plus ``_aclose``. Config resolution,
input validation, the TokenStream, ``metrics()``/``err()`` bookkeeping, ``batch_generate`` and
``async with`` come from here, once for every backend.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, Unpack, runtime_checkable

import anyio
from anyio.abc import AsyncResource

from ._validate import string
from .errors import ConfigError, GenerationError, GomlError, NotSupported
from .stream import StreamContext, StreamItem, TokenSource, TokenStream
from .structured import ResponseFormat
from .types import (
    BatchResult,
    ClassifyResult,
    GenerateConfig,
    GenerateMetrics,
    GenerateOptions,
    Message,
    MessageLike,
    ModelInfo,
    Token,
    coerce_messages,
    resolve_config,
)

__all__ = ["BaseTextModel", "TextModel", "parallel_slots", "prompt_as_chat"]


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
        self, prompt: str, config: GenerateConfig | None = None, **options: Unpack[GenerateOptions]
    ) -> TokenStream:
        """Stream a completion of ``prompt``."""
        ...

    def chat(
        self,
        messages: Iterable[MessageLike],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> TokenStream:
        """Stream the assistant's reply to ``messages`` (the model's chat template applies)."""
        ...

    async def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> list[ClassifyResult]:
        """Prefill each prompt and sample the token at its last position."""
        ...

    async def batch_generate(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
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
        string(f"prompts[{index}]", prompt)
    return list(prompts)


class BaseTextModel(AsyncResource):
    """Shared behaviour of every TextModel; subclasses supply the token sources.

    Subclasses implement :meth:`_stream_prompt`, and :meth:`_stream_chat` when the model has a
    chat template; they may override :meth:`classify`, :meth:`batch_generate`, :meth:`info` and
    :meth:`_aclose`. A backend with options of its own per call (HTTP's ``model=``) names them
    in :attr:`call_options` and checks them in :meth:`_check_call_options`; its hooks read
    them from ``context.options``.

    Args:
        model_type: a short name for the model's kind.
        default_config: the GenerateConfig of a call that passes none.
        prompt_as_chat: ``generate(prompt)`` sends the prompt as one user message through the
            chat template (what chat-only servers and instruct models want) instead of as a raw
            completion.
    """

    #: Concurrency of the default :meth:`batch_generate`.
    batch_concurrency: int = 4
    #: Keyword options of ``generate``/``chat`` that are this backend's own, not GenerateConfig
    #: fields; they reach the token source on ``context.options``.
    call_options: ClassVar[frozenset[str]] = frozenset()
    #: The ``response_format`` types this backend can enforce (``json_object``,
    #: ``json_schema``, ``regex``, ``choice``). A call asking for another fails up front with a
    #: ConfigError naming ``response_format``: the default is none, so a backend that cannot
    #: constrain its output never streams unconstrained text under a schema. (Every stream
    #: with a format also checks the text, whatever the backend.)
    response_formats: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``chat`` can offer the model ``tools`` (and take ``tool`` messages and
    #: assistant messages with ``tool_calls``). The default is no: such a call fails up front
    #: with a ConfigError naming ``tools`` (or ``messages``), never a reply that ignored them.
    supports_tools: ClassVar[bool] = False

    def __init__(
        self,
        *,
        model_type: str,
        default_config: GenerateConfig | None = None,
        prompt_as_chat: bool = False,
    ) -> None:
        if not isinstance(prompt_as_chat, bool):
            raise ConfigError("prompt_as_chat", f"must be a bool, got {prompt_as_chat!r}")
        self._model_type = model_type
        self._default_config = default_config
        self._prompt_as_chat = prompt_as_chat
        self._last_metrics = GenerateMetrics()
        self._last_error: BaseException | None = None
        self._closed = False

    @property
    def model_type(self) -> str:
        """A short name for the model's kind."""
        return self._model_type

    @property
    def prompt_as_chat(self) -> bool:
        """Whether ``generate(prompt)`` sends the prompt as one user message."""
        return self._prompt_as_chat

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has been called."""
        return self._closed

    @property
    def parallel_slots(self) -> int:
        """How many streams this model serves at once; more wait in line, first come first served.

        Code that sends a model many requests (probes, scoring, the agent, a server) runs this
        many at a time unless told otherwise. Backends that batch report their slot count; the
        default is :attr:`batch_concurrency`.
        """
        return max(1, self.batch_concurrency)

    # -- the primitive ----------------------------------------------------------------------------

    @abstractmethod
    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[StreamItem]:
        """Yield the tokens of a completion of ``prompt`` (read the config from ``context``)."""

    def _stream_chat(
        self, messages: list[Message], context: StreamContext
    ) -> AsyncIterator[StreamItem]:
        """Yield the tokens of the reply to ``messages`` (and its tool-call deltas, if any)."""
        raise NotSupported(f"the {self._model_type} model has no chat template")

    async def _aclose(self) -> None:
        """Release the backend's resources (called once)."""

    # -- public API -------------------------------------------------------------------------------

    def generate(
        self, prompt: str, config: GenerateConfig | None = None, **options: Unpack[GenerateOptions]
    ) -> TokenStream:
        """Stream a completion of ``prompt``.

        Example:
            ```python
            async for token in model.generate("Once upon a time", max_tokens=32):
                print(token.text, end="")
            ```
        """
        string("prompt", prompt)
        if (
            "tools" in options
            or "tool_choice" in options
            or (isinstance(config, GenerateConfig) and config.tools)
        ):
            raise ConfigError("tools", "tool calling needs chat(messages, tools=[...])")
        if self._prompt_as_chat:
            return self.chat([Message("user", prompt)], config, **options)
        return self._open_stream(
            lambda context: self._stream_prompt(prompt, context), config, options
        )

    def chat(
        self,
        messages: Iterable[MessageLike],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> TokenStream:
        """Stream the assistant's reply to ``messages`` (Messages or role/content dicts)."""
        conversation = coerce_messages(messages)
        if not self.supports_tools:
            for message in conversation:
                if message.role == "tool" or message.tool_calls:
                    raise ConfigError(
                        "messages",
                        f"tool calls and tool results are not supported on the "
                        f"{self._model_type} backend yet",
                    )
        return self._open_stream(
            lambda context: self._stream_chat(conversation, context), config, options
        )

    async def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> list[ClassifyResult]:
        """Not supported unless the backend overrides it."""
        raise NotSupported(f"the {self._model_type} backend cannot classify")

    async def batch_generate(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
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

    # -- helpers ----------------------------------------------------------------------------------

    def _open_stream(
        self, source: TokenSource, config: GenerateConfig | None, options: Mapping[str, Any]
    ) -> TokenStream:
        """A TokenStream over ``source`` that reports to this model when it finishes.

        ``options`` are the call's keywords: this backend's :attr:`call_options` go to the
        source on ``context.options``, the rest are GenerateConfig fields.
        """
        own: dict[str, Any] = {}
        if self.call_options and options:
            own = {name: options[name] for name in self.call_options if name in options}
            if own:
                options = {name: value for name, value in options.items() if name not in own}
                own = self._check_call_options(own)
        resolved = self._resolve(config, options)
        fmt = resolved.structured
        if fmt is not None and fmt.type not in self.response_formats:
            raise ConfigError(
                "response_format",
                f"{fmt.type} output is not supported on the {self._model_type} backend yet",
            )
        if fmt is not None:
            self._check_response_format(fmt)
        if resolved.tools:
            if not self.supports_tools:
                raise ConfigError(
                    "tools", f"tool calling is not supported on the {self._model_type} backend yet"
                )
            self._check_tools(resolved)
        return TokenStream(source, config=resolved, on_finish=self._record, options=own)

    def _check_response_format(self, fmt: ResponseFormat) -> None:
        """Raise ConfigError when this backend cannot enforce ``fmt`` (a type it supports)."""

    def _check_tools(self, config: GenerateConfig) -> None:
        """Raise ConfigError when this backend cannot offer ``config.tools`` as asked."""

    def _check_call_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validate the call's own options (those in :attr:`call_options`); return them."""
        return options

    def _resolve(self, config: GenerateConfig | None, options: Mapping[str, Any]) -> GenerateConfig:
        if self._closed:
            raise GenerationError(f"the {self._model_type} model is closed")
        return resolve_config(config if config is not None else self._default_config, options)

    def _record(self, stream: TokenStream) -> None:
        self._last_metrics = stream.metrics or GenerateMetrics()
        self._last_error = stream.error

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self._model_type}{state}>"


def parallel_slots(model: TextModel) -> int:
    """How many requests to run on ``model`` at once: its :attr:`BaseTextModel.parallel_slots`,
    or 1 for a TextModel that does not say (it may not be safe for concurrent use).

    Example:
        >>> from goml_async.testing import ScriptedModel
        >>> parallel_slots(ScriptedModel(["hi"])) >= 1
        True
    """
    slots = getattr(model, "parallel_slots", 1)
    return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else 1


def prompt_as_chat(model: TextModel) -> TextModel:
    """``model`` with ``generate(prompt)`` sent as one user message through its chat template.

    This is the switch for a model built elsewhere (a model you build takes
    ``prompt_as_chat=True``, as ``HTTPModel(generate_endpoint="chat")`` does): an instruct model
    asked a bare question through a raw completion often answers nothing, and the Service and
    the judge send prompts this way too. The result is ``model``
    itself when it already works so, else a view that shares everything else with it (``chat``,
    ``classify``, ``batch_generate``, ``info``, metrics, closing, its other attributes).

    Example:
        >>> from goml_async.testing import ScriptedModel
        >>> model = ScriptedModel(["Paris"])
        >>> view = prompt_as_chat(model)
        >>> view.prompt_as_chat, prompt_as_chat(view) is view
        (True, True)
    """
    if not isinstance(model, TextModel) or isinstance(model, type):
        raise ConfigError("model", f"must be a TextModel, got {type(model).__name__}")
    if getattr(model, "prompt_as_chat", False) is True:
        return model
    return _PromptAsChat(model)


class _PromptAsChat(AsyncResource):
    """The view :func:`prompt_as_chat` returns."""

    prompt_as_chat = True

    def __init__(self, model: TextModel) -> None:
        self._model = model

    @property
    def model_type(self) -> str:
        return self._model.model_type

    def generate(
        self, prompt: str, config: GenerateConfig | None = None, **options: Unpack[GenerateOptions]
    ) -> TokenStream:
        string("prompt", prompt)
        return self._model.chat([Message("user", prompt)], config, **options)

    def chat(
        self,
        messages: Iterable[MessageLike],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> TokenStream:
        return self._model.chat(messages, config, **options)

    async def classify(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> list[ClassifyResult]:
        return await self._model.classify(prompts, config, **options)

    async def batch_generate(
        self,
        prompts: Sequence[str],
        config: GenerateConfig | None = None,
        **options: Unpack[GenerateOptions],
    ) -> list[BatchResult]:
        return await self._model.batch_generate(prompts, config, **options)

    def info(self) -> ModelInfo:
        return self._model.info()

    def metrics(self) -> GenerateMetrics:
        return self._model.metrics()

    def err(self) -> BaseException | None:
        return self._model.err()

    async def aclose(self) -> None:
        await self._model.aclose()

    def __getattr__(self, name: str) -> Any:
        # Everything else is the model's own (model_name, base_url, server, ...).
        return getattr(self._model, name)

    def __repr__(self) -> str:
        return f"<prompt_as_chat {self._model!r}>"
