"""goml_async: an async-first inference SDK.

One primitive, a stream of tokens, over local and remote language models::

    async for token in model.generate("Once upon a time"):
        print(token.text, end="")

``import goml_async`` needs none of the optional extras; backends are imported on first use.
"""

from __future__ import annotations

from ._version import __version__
from .compat import (
    Backend,
    BackendTextModel,
    HTTPTextModel,
    InferenceAdapter,
    LlamaTextModel,
    StreamingBackend,
    TokenCallback,
    as_text_model,
)
from .errors import (
    APIConnectionError,
    APIStatusError,
    BackendUnavailable,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    GomlError,
    JudgeError,
    LifecycleError,
    ModelLoadError,
    NotSupported,
    SchemaViolation,
    ServiceCloseError,
    ServiceUnavailable,
    SinkError,
    StreamInterrupted,
    TransportError,
    UnknownBackendError,
    UnknownProbeError,
)
from .model import BaseTextModel, TextModel, parallel_slots, prompt_as_chat
from .registry import (
    ModelBackend,
    bundled_model_path,
    default_backend,
    discover_gguf_models,
    discover_models,
    get_backend,
    list_backends,
    load_default_model,
    load_model,
    register_backend,
    register_lazy_backend,
)
from .retry import RetryPolicy
from .service import Service
from .settings import GomlSettings
from .stream import StopSequenceCutter, StreamContext, TokenSource, TokenStream
from .tools import Tool, ToolCall, ToolCallDelta, ToolChoice
from .types import (
    BatchResult,
    ClassifyResult,
    DiscoveredModel,
    FinishReason,
    GenerateConfig,
    GenerateMetrics,
    GenerateOptions,
    GenOpts,
    LoadConfig,
    Message,
    MessageLike,
    ModelInfo,
    Result,
    Role,
    Token,
    TopLogprob,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "Backend",
    "BackendTextModel",
    "BackendUnavailable",
    "BaseTextModel",
    "BatchResult",
    "ClassifyResult",
    "ConfigError",
    "DiscoveredModel",
    "FinishReason",
    "GenOpts",
    "GenerateConfig",
    "GenerateMetrics",
    "GenerateOptions",
    "GenerationError",
    "GenerationTimeout",
    "GomlError",
    "GomlSettings",
    "HTTPTextModel",
    "InferenceAdapter",
    "JudgeError",
    "LifecycleError",
    "LlamaTextModel",
    "LoadConfig",
    "Message",
    "MessageLike",
    "ModelBackend",
    "ModelInfo",
    "ModelLoadError",
    "NotSupported",
    "Result",
    "RetryPolicy",
    "Role",
    "SchemaViolation",
    "Service",
    "ServiceCloseError",
    "ServiceUnavailable",
    "SinkError",
    "StopSequenceCutter",
    "StreamContext",
    "StreamInterrupted",
    "StreamingBackend",
    "TextModel",
    "Token",
    "TokenCallback",
    "TokenSource",
    "TokenStream",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "TopLogprob",
    "TransportError",
    "UnknownBackendError",
    "UnknownProbeError",
    "__version__",
    "as_text_model",
    "bundled_model_path",
    "default_backend",
    "discover_gguf_models",
    "discover_models",
    "get_backend",
    "list_backends",
    "load_default_model",
    "load_model",
    "parallel_slots",
    "prompt_as_chat",
    "register_backend",
    "register_lazy_backend",
]
