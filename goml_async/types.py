"""Value types shared by every backend: tokens, messages, configs, metrics and results.

All types are frozen dataclasses validated on construction: an invalid value raises
:class:`~goml_async.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, TypeAlias, TypedDict

from ._validate import integer, non_empty_str, number_between, seconds, string
from .errors import ConfigError, GomlError
from .messages import Message, MessageLike, Role, coerce_messages
from .structured._format import ResponseFormat, ResponseFormatLike, normalize_response_format
from .structured._grammar import grammar_for
from .tools import (
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceLike,
    ToolLike,
    normalize_tool_choice,
    normalize_tools,
)

__all__ = [
    "BatchResult",
    "ClassifyResult",
    "DiscoveredModel",
    "FinishReason",
    "GenOpts",
    "GenerateConfig",
    "GenerateMetrics",
    "GenerateOptions",
    "LoadConfig",
    "Message",
    "MessageLike",
    "ModelInfo",
    "Result",
    "Role",
    "Token",
    "TopLogprob",
    "coerce_messages",
    "resolve_config",
]

FinishReason: TypeAlias = Literal[
    "stop", "length", "stop_sequence", "tool_calls", "cancelled", "error"
]


# -- validation helpers ---------------------------------------------------------------------------


def _tuple_of(
    name: str, value: object, kind: type, *, allow_empty_items: bool = True
) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            name, f"must be a sequence of {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    items = tuple(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, kind):
            raise ConfigError(
                name, f"items must be {kind.__name__}, got {type(item).__name__} {item!r}"
            )
        if not allow_empty_items and not item:
            raise ConfigError(
                name, "empty strings are not allowed (an empty stop would match at once)"
            )
    return items


# -- tokens and messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """One of the most likely tokens at a position (``GenerateConfig.top_logprobs``).

    Attributes:
        text: the token's text.
        logprob: its log-probability.
        id: its ID in the model's vocabulary; -1 when the backend does not expose IDs.
    """

    text: str
    logprob: float
    id: int = -1


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token.

    Attributes:
        id: the token ID in the model's vocabulary; -1 when the backend does not expose IDs.
        text: the decoded text of the token (may be empty or a fragment of a character sequence).
        logprob: the log-probability of the token, when the backend reports it.
        top_logprobs: the most likely tokens at this position, most likely first, when
            ``GenerateConfig.top_logprobs`` asked for them (empty otherwise).
    """

    id: int
    text: str
    logprob: float | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


# -- configs --------------------------------------------------------------------------------------

#: The most ``top_logprobs`` one position may ask for (OpenAI's own limit).
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True, slots=True)
class GenerateConfig:
    """Sampling and stopping options for one generation.

    0 means "off" for ``top_k``, ``top_p``, ``repeat_penalty``, ``presence_penalty`` and
    ``frequency_penalty``; ``max_tokens=0`` means no
    client-side cap (the backend's own limit applies). ``stop_sequences`` are cut on the client
    side: no text from a stop sequence onwards is ever delivered, even when it is split across
    tokens.

    The three deadlines, in seconds (None = none): ``first_token_timeout`` from the start of the
    stream to its first token (connecting and retries included), ``idle_timeout`` between two
    tokens, ``total_timeout`` for the whole stream. Each raises
    :class:`~goml_async.errors.GenerationTimeout` carrying the partial text.

    ``response_format`` constrains the output: ``{"type": "json_object"}``,
    ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``,
    ``{"type": "regex", "pattern": ...}``, ``{"type": "choice", "choices": [...]}``, or a
    pydantic model class; ``{"type": "text"}`` or None leave it free. It is stored validated,
    as a :class:`~goml_async.structured.ResponseFormat`. The stream checks the text as it
    arrives and raises :class:`~goml_async.errors.SchemaViolation` at the first byte that
    breaks the format, or at the end when the document is incomplete or invalid.

    ``tools`` (OpenAI's ``{"type": "function", "function": {...}}`` shapes, for ``chat``) are
    the functions the model may call, and ``tool_choice`` (``"auto"``, the default with tools,
    ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name": ...}}``) whether
    it must; both are stored validated (:func:`~goml_async.tools.normalize_tools`).

    ``prompt_cache=False`` has llama.cpp compute the whole prompt afresh instead of reusing a
    prefix a slot holds from an earlier request (its ``cache_prompt``): the setting that makes
    its greedy output independent of what ran before (see the llama.cpp concurrency page), and
    what scoring uses. MLX's prompt cache is exact either way; an OpenAI-compatible server keeps
    its own policy (a llama-server behind ``HTTPModel`` takes ``extra_body={"cache_prompt":
    False}``).

    Example:
        >>> GenerateConfig(max_tokens=32, stop_sequences=["\\n\\n"]).max_tokens
        32
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    repeat_penalty: float = 0.0
    stop_tokens: Sequence[int] = ()
    stop_sequences: Sequence[str] = ()
    seed: int | None = None
    return_logits: bool = False
    first_token_timeout: float | None = None
    idle_timeout: float | None = None
    total_timeout: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: ResponseFormatLike | None = None
    tools: Sequence[ToolLike] = ()
    tool_choice: ToolChoiceLike | None = None
    prompt_cache: bool = True

    def __post_init__(self) -> None:
        integer("max_tokens", self.max_tokens, minimum=0)
        for name in ("first_token_timeout", "idle_timeout", "total_timeout"):
            object.__setattr__(self, name, seconds(name, getattr(self, name), allow_none=True))
        integer("top_k", self.top_k, minimum=0)
        set_ = object.__setattr__
        set_(self, "temperature", number_between("temperature", self.temperature, 0.0))
        set_(self, "top_p", number_between("top_p", self.top_p, 0.0, 1.0))
        set_(self, "repeat_penalty", number_between("repeat_penalty", self.repeat_penalty, 0.0))
        set_(self, "stop_tokens", _tuple_of("stop_tokens", self.stop_tokens, int))
        set_(
            self,
            "stop_sequences",
            _tuple_of("stop_sequences", self.stop_sequences, str, allow_empty_items=False),
        )
        if self.seed is not None:
            integer("seed", self.seed, minimum=0)
        if not isinstance(self.return_logits, bool):
            raise ConfigError("return_logits", f"must be a bool, got {self.return_logits!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            set_(self, name, number_between(name, getattr(self, name), -2.0, 2.0))
        for name in ("logprobs", "prompt_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be a bool, got {getattr(self, name)!r}")
        integer("top_logprobs", self.top_logprobs, minimum=0)
        if self.top_logprobs > MAX_TOP_LOGPROBS:
            raise ConfigError(
                "top_logprobs", f"must be <= {MAX_TOP_LOGPROBS}, got {self.top_logprobs}"
            )
        if self.top_logprobs and not self.logprobs:
            set_(self, "logprobs", True)
        fmt = normalize_response_format(self.response_format)
        if fmt is not None:
            # Compiled (and cached) now, so a format that cannot be enforced fails here.
            grammar_for(fmt, surrounding_whitespace=fmt.is_json)
        set_(self, "response_format", fmt)
        tools = normalize_tools(self.tools)
        set_(self, "tools", tools)
        set_(self, "tool_choice", normalize_tool_choice(self.tool_choice, tools))
        if tools and fmt is not None:
            raise ConfigError("tools", "tools and a response_format together are not supported yet")

    @property
    def tool_specs(self) -> tuple[Tool, ...]:
        """The validated ``tools`` (empty: none)."""
        return tuple(tool for tool in self.tools if isinstance(tool, Tool))

    @property
    def choice(self) -> ToolChoice | None:
        """The validated ``tool_choice`` (None without tools and without a choice)."""
        choice = self.tool_choice
        return choice if isinstance(choice, ToolChoice) else None

    @property
    def calls_tools(self) -> bool:
        """True when the model may call tools (tools given, ``tool_choice`` not ``none``)."""
        choice = self.choice
        return bool(self.tools) and choice is not None and choice.mode != "none"

    @property
    def structured(self) -> ResponseFormat | None:
        """The validated ``response_format`` (None: unconstrained text)."""
        fmt = self.response_format
        return fmt if isinstance(fmt, ResponseFormat) else None

    @property
    def has_deadlines(self) -> bool:
        """True when any of the three deadlines is set."""
        return (
            self.first_token_timeout is not None
            or self.idle_timeout is not None
            or self.total_timeout is not None
        )

    def with_options(self, **options: Any) -> GenerateConfig:
        """A copy with ``options`` applied; an unknown option raises ConfigError naming it."""
        if not options:
            return self
        for name in options:
            if name not in _CONFIG_FIELDS:
                close = difflib.get_close_matches(name, _CONFIG_FIELDS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(sorted(_CONFIG_FIELDS))
                raise ConfigError(name, f"unknown generation option{hint} (known: {known})")
        return replace(self, **options)


class GenerateOptions(TypedDict, total=False):
    """The keyword options of ``generate``/``chat``/``classify``/``batch_generate``: the fields
    of :class:`GenerateConfig`, each optional (a type checker then catches a misspelt option).

    Example:
        ```python
        def ask(model: TextModel, prompt: str, **options: Unpack[GenerateOptions]) -> TokenStream:
            return model.generate(prompt, **options)
        ```
    """

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    repeat_penalty: float
    stop_tokens: Sequence[int]
    stop_sequences: Sequence[str]
    seed: int | None
    return_logits: bool
    first_token_timeout: float | None
    idle_timeout: float | None
    total_timeout: float | None
    presence_penalty: float
    frequency_penalty: float
    logprobs: bool
    top_logprobs: int
    response_format: ResponseFormatLike | None
    tools: Sequence[ToolLike]
    tool_choice: ToolChoiceLike | None
    prompt_cache: bool


_CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(GenerateConfig))
_DEFAULT_CONFIG = GenerateConfig()


def resolve_config(config: GenerateConfig | None, options: Mapping[str, Any]) -> GenerateConfig:
    """Combine a config object and per-call keyword options (the keywords win)."""
    if config is None:
        config = _DEFAULT_CONFIG
    elif not isinstance(config, GenerateConfig):
        raise ConfigError("config", f"must be a GenerateConfig, got {type(config).__name__}")
    return config.with_options(**options)


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """How to load a model.

    Attributes:
        backend: force a backend by name (``"mlx"``, ``"llama"``, ``"http"``); None picks one.
        context_len: context window in tokens; 0 keeps the model's default.
        gpu_layers: layers to offload to the GPU; -1 means all.
        parallel_slots: sequences the model decodes together (MLX continuous batching,
            llama-server ``--parallel``); more concurrent streams wait in line, first come
            first served. 0 picks the backend's default (8 on MLX, 4 on llama.cpp).
        adapter_path: a LoRA adapter to apply at load time.
    """

    backend: str | None = None
    context_len: int = 0
    gpu_layers: int = -1
    parallel_slots: int = 0
    adapter_path: str | None = None

    def __post_init__(self) -> None:
        non_empty_str("backend", self.backend, allow_none=True)
        integer("context_len", self.context_len, minimum=0)
        integer("gpu_layers", self.gpu_layers, minimum=-1)
        integer("parallel_slots", self.parallel_slots, minimum=0)
        if self.adapter_path is not None:
            if not isinstance(self.adapter_path, str | os.PathLike):
                raise ConfigError("adapter_path", f"must be a path, got {self.adapter_path!r}")
            object.__setattr__(self, "adapter_path", os.fspath(self.adapter_path))


#: The GenOpts fields that map one to one onto GenerateConfig fields (``model`` does not).
_GENOPTS_SAMPLING = (
    "temperature",
    "max_tokens",
    "top_k",
    "top_p",
    "repeat_penalty",
    "stop_tokens",
    "stop_sequences",
)


@dataclass(frozen=True, slots=True)
class GenOpts:
    """go-ml's name for the options of the string-level :class:`~goml_async.compat.Backend` API.

    A zero field means "not set": :meth:`to_config` keeps the model's default for it. ``model``
    is a per-request model override that HTTP backends honour and local models ignore.
    """

    temperature: float = 0.0
    max_tokens: int = 0
    model: str = ""
    top_k: int = 0
    top_p: float = 0.0
    repeat_penalty: float = 0.0
    stop_tokens: Sequence[int] = ()
    stop_sequences: Sequence[str] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "temperature", number_between("temperature", self.temperature, 0.0))
        integer("max_tokens", self.max_tokens, minimum=0)
        string("model", self.model)
        integer("top_k", self.top_k, minimum=0)
        set_(self, "top_p", number_between("top_p", self.top_p, 0.0, 1.0))
        set_(self, "repeat_penalty", number_between("repeat_penalty", self.repeat_penalty, 0.0))
        set_(self, "stop_tokens", _tuple_of("stop_tokens", self.stop_tokens, int))
        set_(
            self,
            "stop_sequences",
            _tuple_of("stop_sequences", self.stop_sequences, str, allow_empty_items=False),
        )

    @classmethod
    def from_config(cls, config: GenerateConfig, *, model: str = "") -> GenOpts:
        """The GenOpts that carries ``config``'s fields (for string backends)."""
        return cls(
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            model=model,
            top_k=config.top_k,
            top_p=config.top_p,
            repeat_penalty=config.repeat_penalty,
            stop_tokens=config.stop_tokens,
            stop_sequences=config.stop_sequences,
        )

    @classmethod
    def default(cls) -> GenOpts:
        """The default options: temperature 0.1 and nothing else set."""
        return cls(temperature=0.1)

    def to_config(self, base: GenerateConfig | None = None) -> GenerateConfig:
        """Map onto a GenerateConfig, starting from ``base`` (default: GenerateConfig()).

        Only non-zero fields are applied; ``model`` is not part of a GenerateConfig.
        """
        return resolve_config(base, self.to_options())

    def to_options(self) -> dict[str, Any]:
        """The non-zero fields as GenerateConfig keyword options (``model`` left out).

        Passing these to ``TextModel.generate(prompt, **options)`` keeps the model's own
        defaults for every field that is not set.
        """
        return {name: value for name in _GENOPTS_SAMPLING if (value := getattr(self, name))}


# -- results and metrics --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenerateMetrics:
    """Measurements of one finished generation.

    Token counts come from the backend where it reports them; ``time_to_first_token`` is
    measured on the client. Rates are tokens per second; memory is in bytes.
    ``cached_tokens`` counts the prompt tokens served from a prompt cache (0 when none were,
    or the backend cannot tell).
    """

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    time_to_first_token: float = 0.0
    prefill_tokens_per_sec: float = 0.0
    decode_tokens_per_sec: float = 0.0
    peak_memory_bytes: int = 0
    active_memory_bytes: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Static facts about a loaded model; 0 means unknown (``quant_bits=0``: unquantised)."""

    architecture: str = ""
    vocab_size: int = 0
    num_layers: int = 0
    hidden_size: int = 0
    quant_bits: int = 0
    quant_group: int = 0


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    """The token sampled at the last prompt position; ``logits`` when ``return_logits`` is set."""

    token: Token
    logits: Sequence[float] | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One prompt's outcome in a batch: its tokens, or the error that stopped it."""

    tokens: Sequence[Token] = ()
    error: GomlError | None = None

    @property
    def text(self) -> str:
        """The generated text."""
        return "".join(token.text for token in self.tokens)


@dataclass(frozen=True, slots=True)
class Result:
    """A whole completion: the text, its metrics and why it ended.

    ``parsed`` is the validated document when the call had a ``response_format``: the
    pydantic instance when a model class was given, the JSON value for the JSON formats, the
    text for ``regex`` and ``choice``; None without a ``response_format``. ``tool_calls``
    are the calls the model made, their arguments validated against the tools' parameters
    (``finish_reason`` is then ``"tool_calls"``).
    """

    text: str
    metrics: GenerateMetrics | None = None
    finish_reason: FinishReason | None = None
    parsed: Any = None
    tool_calls: Sequence[ToolCall] = ()

    def to_message(self) -> Message:
        """The reply as an assistant Message (with its tool calls), to extend the chat with."""
        return Message("assistant", self.text, tool_calls=self.tool_calls)

    @property
    def content(self) -> str:
        """Alias of :attr:`text` (go-ml's name for it, ``Result.Content``)."""
        return self.text


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    """A model found by :func:`~goml_async.registry.discover_models` (an MLX folder) or
    :func:`~goml_async.registry.discover_gguf_models` (a GGUF file).

    ``size_bytes`` is the weights' size on disk; ``format`` is ``"mlx"`` or ``"gguf"``.
    """

    path: str
    model_type: str = ""
    quant_bits: int = 0
    quant_group: int = 0
    num_files: int = 0
    size_bytes: int = 0
    format: str = "mlx"
