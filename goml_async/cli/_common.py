"""Helpers shared by the scoring commands: loading a model or a judge from one argument."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from rich.console import Console

from goml_async.model import TextModel
from goml_async.registry import bundled_model_path, load_default_model, load_model
from goml_async.settings import GomlSettings

__all__ = ["default_target", "describe_target", "is_url", "load_target", "served_name"]

_DEFAULT_LABEL = "the bundled default model (SmolLM2-135M-Instruct)"


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
    return GomlSettings().base_url


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
) -> TextModel:
    """Load ``spec``: ``default`` (the bundled model), a path, or a server's base URL; None
    means :func:`default_target` (``GOML_BASE_URL`` if set, else the bundled model).

    ``http_model`` is the model name sent to a server (``--judge-model``). The wait is shown as
    a spinner on a terminal and as one plain line otherwise.
    """
    err = console or Console(stderr=True)
    if not spec:
        spec = default_target()
    label = describe_target(spec)
    started = time.perf_counter()
    spinner = err.status(f"loading {label} ...", spinner="dots") if err.is_terminal else None
    if spinner is None:
        err.print(f"loading {label} ...", highlight=False)
    with spinner or contextlib.nullcontext():
        if not spec or spec == "default":
            model = await load_default_model(backend=backend)
        elif is_url(spec) and http_model:
            model = await load_model(spec, backend=backend, model=http_model)
        else:
            model = await load_model(spec, backend=backend)
    if spinner is not None:
        err.print(f"[dim]loaded {label} in {time.perf_counter() - started:.1f} s[/dim]")
    return model
