"""The Service's value types and helpers (re-exported by :mod:`goml_async.service`).

Its errors are defined in :mod:`goml_async.errors` and re-exported here under their old path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._concurrency import maybe_await
from .compat import Backend, InferenceAdapter
from .errors import (  # defined in errors.py; re-exported here, where they used to live
    ConfigError,
    GomlError,
    ServiceCloseError,
    ServiceUnavailable,
    UnknownBackendError,
)
from .model import TextModel, prompt_as_chat
from .types import GenerateConfig, GenOpts

if TYPE_CHECKING:
    from .scoring.judge import Judge

__all__ = [
    "BackendStatus",
    "ChatAdapter",
    "JudgeSpec",
    "ServiceCloseError",
    "ServiceState",
    "ServiceStatus",
    "ServiceUnavailable",
    "UnknownBackendError",
    "as_judge",
    "available",
    "call_optional",
    "call_options",
    "check_config",
    "check_opts",
    "check_text",
    "model_of",
    "parse_categories",
]

#: ``new`` (not started), ``running`` or ``closed``.
ServiceState: TypeAlias = Literal["new", "running", "closed"]
#: What ``Service(judge=...)`` takes: a Judge, a model to wrap in one, or a registered
#: backend's name.
JudgeSpec: TypeAlias = "Judge | TextModel | Backend | str"


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """One registered backend: its name, whether it can serve now, and its model if known."""

    name: str
    available: bool
    default: bool
    owned: bool
    model: str


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A snapshot of a Service, as :meth:`Service.status` returns it.

    ``ready`` is true while the Service runs and at least one backend is available;
    ``suites`` are the scoring suites that run, ``skipped_suites`` those that need the judge
    it does not have.
    """

    state: ServiceState
    ready: bool
    backends: tuple[BackendStatus, ...]
    default_backend: str | None
    has_judge: bool
    judge_model: str
    suites: tuple[str, ...]
    skipped_suites: tuple[str, ...]
    concurrency: int

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready data."""
        return dataclasses.asdict(self)


class ChatAdapter(InferenceAdapter):
    """A TextModel as a Backend whose ``generate(prompt)`` is a chat with one user message.

    So the model's chat template applies (an instruct model asked a question through a raw
    completion often answers nothing). It is an
    :class:`~goml_async.compat.InferenceAdapter` over :func:`~goml_async.model.prompt_as_chat`
    of the model; ``chat`` and everything else behave as in InferenceAdapter.
    """

    def __init__(self, model: TextModel, name: str = "") -> None:
        super().__init__(prompt_as_chat(model), name)


def check_text(field: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value.strip():
        wanted = "a non-empty str" + (" or None" if optional else "")
        raise ConfigError(field, f"must be {wanted}, got {value!r}")


def check_config(config: object) -> None:
    if config is not None and not isinstance(config, GenerateConfig):
        raise ConfigError(
            "config", f"must be a GenerateConfig or None, got {type(config).__name__}"
        )


def call_options(name: str, model: TextModel, opts: GenOpts | None) -> dict[str, Any]:
    """A GenOpts as keyword options of ``model``'s calls: the non-zero fields, and
    ``model`` for a backend that takes it per call (HTTP); refused by one that serves one."""
    if opts is None:
        return {}
    options = opts.to_options()
    if opts.model:
        if "model" not in getattr(model, "call_options", ()):
            raise ConfigError(
                "model",
                f"backend {name!r} serves one model and cannot be asked for {opts.model!r}",
            )
        options["model"] = opts.model
    return options


def check_opts(opts: object) -> None:
    if opts is not None and not isinstance(opts, GenOpts):
        raise ConfigError("opts", f"must be a GenOpts or None, got {type(opts).__name__}")


def model_of(backend: object) -> str:
    """The model name behind a backend when it says (its ``model_name``, or its model's)."""
    name = getattr(backend, "model_name", "")
    if isinstance(name, str) and name:
        return name
    try:
        inner = getattr(backend, "model", None)  # LlamaBackend.model raises when not running
    except GomlError:
        return ""
    name = getattr(inner, "model_name", "")
    return name if isinstance(name, str) else ""


async def call_optional(backend: object, *methods: str) -> None:
    """Call the first of ``methods`` that ``backend`` has, awaiting it if it is async."""
    for method in methods:
        call = getattr(backend, method, None)
        if callable(call):
            await maybe_await(call())
            return


def available(backend: Backend) -> bool:
    try:
        return bool(backend.available())
    except Exception:  # a broken availability check means "cannot serve now"
        return False


def as_judge(model: Judge | TextModel | Backend) -> Judge:
    from .scoring.judge import Judge

    return model if isinstance(model, Judge) else Judge(model)


def parse_categories(
    categories: str | Iterable[str] | None, known: Sequence[str]
) -> frozenset[str] | None:
    """The wanted categories (None: all); an unknown one is a ConfigError listing the known."""
    if categories is None:
        return None
    if isinstance(categories, str):
        categories = categories.split(",")
    items = list(categories) if isinstance(categories, Iterable) else None
    if items is None or not all(isinstance(item, str) for item in items):
        raise ConfigError("categories", f"must be a str or str names, got {categories!r}")
    names = {item.strip().lower() for item in items if item.strip()}
    unknown = sorted(names - set(known))
    if unknown:
        raise ConfigError("categories", f"unknown {unknown}; known: {', '.join(known)}")
    return frozenset(names) or None
