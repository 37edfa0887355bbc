"""The backend registry and :func:`load_model`: named ways of loading models, imported on use.

A backend is registered either as an object (:func:`register_backend`) or lazily by import path
(:func:`register_lazy_backend`), so ``import goml_async`` never imports MLX, llama.cpp or any
other optional dependency. Asking for a backend whose extra is missing raises
:class:`~goml_async.errors.BackendUnavailable` with the exact ``pip install`` line; a name that
is not registered raises :class:`~goml_async.errors.UnknownBackendError`.

:func:`load_model` picks the backend from what a path is (a URL, a ``.gguf`` file, an MLX
folder); :func:`load_default_model` loads the bundled model. The bundled model's file
(:mod:`goml_async._bundled`) and the scans of model folders (:mod:`goml_async.discovery`) live
in their own modules and are re-exported here, where they have always been importable.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio

from ._bundled import BUNDLED_MODEL_FILE, bundled_model_path
from .discovery import discover_gguf_models, discover_models
from .errors import BackendUnavailable, ConfigError, ModelLoadError, UnknownBackendError
from .model import TextModel
from .settings import GomlSettings, current_settings
from .types import LoadConfig

__all__ = [
    "BUNDLED_MODEL_FILE",
    "ModelBackend",
    "bundled_model_path",
    "default_backend",
    "discover_gguf_models",
    "discover_models",
    "get_backend",
    "list_backends",
    "load_default_model",
    "load_model",
    "register_backend",
    "register_lazy_backend",
]


@runtime_checkable
class ModelBackend(Protocol):
    """A named way of loading models (go-inference's ``Backend``)."""

    @property
    def name(self) -> str:
        """The registry name, e.g. ``"llama"``."""
        ...

    def available(self) -> bool:
        """Whether this backend can load models on this machine now."""
        ...

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> TextModel:
        """Load the model at ``path`` (a file, folder or URL)."""
        ...


@dataclass(frozen=True, slots=True)
class _LazyBackend:
    name: str
    target: str  # "package.module:attribute": a ModelBackend, or a zero-argument factory of one
    requires: tuple[str, ...]
    install_hint: str | None


_lock = threading.Lock()
_backends: dict[str, ModelBackend | _LazyBackend] = {}


def register_backend(backend: ModelBackend) -> None:
    """Register a backend object; a later one with the same name replaces the earlier."""
    if isinstance(backend, type) or not isinstance(backend, ModelBackend):
        raise ConfigError("backend", f"must be a ModelBackend instance, got {backend!r}")
    _check_name(backend.name)
    with _lock:
        _backends[backend.name] = backend


def register_lazy_backend(
    name: str, target: str, *, requires: tuple[str, ...] = (), install_hint: str | None = None
) -> None:
    """Register a backend imported on first use.

    Args:
        name: the registry name.
        target: ``"package.module:attribute"``; the attribute is a ModelBackend or a
            zero-argument callable returning one.
        requires: top-level modules that must be importable (the backend's extra).
        install_hint: the command that installs them, shown when they are missing.
    """
    _check_name(name)
    module, sep, attribute = target.partition(":")
    if not sep or not module or not attribute:
        raise ConfigError("target", f"must look like 'package.module:attribute', got {target!r}")
    with _lock:
        _backends[name] = _LazyBackend(name, target, tuple(requires), install_hint)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name", f"a backend name must be a non-empty str, got {name!r}")


def list_backends() -> list[str]:
    """Names of every registered backend, sorted (installed or not)."""
    with _lock:
        return sorted(_backends)


def get_backend(name: str) -> ModelBackend:
    """Return the backend called ``name``, importing it on first use.

    Raises:
        UnknownBackendError: the name is not registered (the message lists the known names).
        BackendUnavailable: its extra is not installed (the message has the pip install line).
    """
    _check_name(name)
    with _lock:
        entry = _backends.get(name)
    if entry is None:
        raise UnknownBackendError(name, list_backends())
    if not isinstance(entry, _LazyBackend):
        return entry
    missing = [module for module in entry.requires if importlib.util.find_spec(module) is None]
    if missing:
        raise BackendUnavailable(
            f"the {name!r} backend needs {', '.join(missing)}, which is not installed",
            backend=name,
            install_hint=entry.install_hint,
        )
    module_name, _, attribute = entry.target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(
            f"the {name!r} backend could not be imported from {entry.target}: {exc}",
            backend=name,
            install_hint=entry.install_hint,
        ) from exc
    # A class satisfies the runtime Protocol check too, so classes are always instantiated.
    if isinstance(found, type) or not isinstance(found, ModelBackend):
        if not callable(found):
            raise BackendUnavailable(
                f"{entry.target} is not a ModelBackend or a factory of one", backend=name
            )
        try:
            found = found()
        except Exception as exc:
            raise BackendUnavailable(
                f"the {name!r} backend factory {entry.target} failed: {exc}",
                backend=name,
                install_hint=entry.install_hint,
            ) from exc
    backend = found
    if not isinstance(backend, ModelBackend):
        raise BackendUnavailable(f"{entry.target} is not a ModelBackend", backend=name)
    with _lock:
        if _backends.get(name) is entry:
            _backends[name] = backend
    return backend


def _apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def default_backend(settings: GomlSettings | None = None) -> ModelBackend:
    """The backend used when none is named.

    ``settings.default_backend`` (``GOML_DEFAULT_BACKEND``) when set; otherwise the first
    available of ``mlx`` (on Apple silicon), ``llama``, then any other, by name.

    Raises:
        BackendUnavailable: no backend is installed and available.
    """
    chosen = (settings or current_settings()).default_backend
    if chosen:
        return get_backend(chosen)
    order = (["mlx"] if _apple_silicon() else []) + ["llama"]
    order += [name for name in list_backends() if name not in order]
    reasons: list[str] = []
    for name in order:
        try:
            backend = get_backend(name)
        except BackendUnavailable as exc:
            reasons.append(str(exc))
            continue
        if backend.available():
            return backend
        reasons.append(f"the {name!r} backend is registered but not available here")
    detail = "; ".join(reasons) if reasons else "no backend is registered"
    raise BackendUnavailable(
        f"no backend installed: {detail}", install_hint="pip install 'goml_async[llama]'"
    )


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _infer_backend(path: str) -> str:
    """Pick a backend from what ``path`` is: URL -> http, .gguf -> llama, MLX folder -> mlx."""
    scheme = _SCHEME.match(path)
    if scheme is not None:
        if scheme.group(1).lower() in ("http", "https"):
            return "http"
        raise ModelLoadError(
            path,
            f"{scheme.group(1)}:// URLs are not supported: give the http:// or https:// base "
            "URL of an OpenAI-compatible server, a .gguf file or an MLX model folder",
        )
    target = Path(path).expanduser()
    if not target.exists():
        raise ModelLoadError(path, "no such file or directory")
    if target.is_file():
        if target.suffix.lower() == ".gguf":
            return "llama"
        raise ModelLoadError(path, "a model file must be a .gguf (or give a folder or a URL)")
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return "mlx"
    raise ModelLoadError(path, "a model folder needs config.json and at least one *.safetensors")


_LOAD_FIELDS = frozenset(LoadConfig.__dataclass_fields__)


async def load_model(
    path_or_url: str | None = None, backend: str | None = None, **options: Any
) -> TextModel:
    """Load a model and return it as a TextModel.

    A folder with config.json + *.safetensors goes to MLX, a ``.gguf`` file to llama, an
    ``http(s)://`` URL to the HTTP backend; ``backend=`` overrides. With no ``path_or_url``,
    the server named by ``GOML_BASE_URL`` or ``OPENAI_BASE_URL`` is used, as openai-python
    does. LoadConfig fields (``context_len``, ``gpu_layers``, ``parallel_slots``,
    ``adapter_path``) are taken from ``options``; the rest pass through to the backend (for a
    URL: ``model``, ``api_key``, deadlines, ``probe_timeout``, ``probe=False`` ...).

    Example:
        ```python
        async with await load_model("models/smollm2.gguf", context_len=2048) as model:
            print((await model.generate("Hi").collect()).text)
        ```

    Raises:
        ModelLoadError: the file or folder is missing or not a model.
        BackendUnavailable: the backend is unknown or its extra is not installed.
    """
    if path_or_url is None:
        path_or_url = current_settings().server_url()
        if path_or_url is None:
            raise ConfigError(
                "path_or_url",
                "none given, and neither GOML_BASE_URL nor OPENAI_BASE_URL is set (give a "
                "path, a URL, or use load_default_model() for the bundled model)",
            )
    if not isinstance(path_or_url, str | Path) or not str(path_or_url):
        raise ConfigError("path_or_url", f"must be a non-empty path or URL, got {path_or_url!r}")
    path = str(path_or_url)
    load_options = {key: options.pop(key) for key in list(options) if key in _LOAD_FIELDS}
    if backend is not None:
        load_options["backend"] = backend
    config = LoadConfig(**load_options)
    name = config.backend
    if name is None:
        name = await anyio.to_thread.run_sync(_infer_backend, path)
    chosen = get_backend(name)
    if not chosen.available():
        why = getattr(chosen, "unavailable_reason", lambda: None)()
        raise BackendUnavailable(
            f"the {name!r} backend is not available on this machine" + (f": {why}" if why else ""),
            backend=name,
        )
    return await chosen.load_model(path, config, **options)


async def load_default_model(backend: str | None = None, **options: Any) -> TextModel:
    """Load the bundled default model, SmolLM2-135M-Instruct, on llama (or ``backend``).

    On ``backend="mlx"`` the GGUF is converted once into a float32 MLX folder in the cache.

    Raises:
        UnknownBackendError: no backend of that name is registered (checked first).
        BackendUnavailable: the backend cannot run here.
        ModelLoadError: the bundled model wheel is not installed.
    """
    name = backend or "llama"
    known = list_backends()
    if name not in known:
        raise UnknownBackendError(
            name,
            known,
            message=f"no backend installed: the bundled default model needs the {name!r} "
            f"backend, and the registered backends are: {', '.join(known) or 'none'}",
        )
    chosen = get_backend(name)
    if not chosen.available():
        why = getattr(chosen, "unavailable_reason", lambda: None)()
        raise BackendUnavailable(
            f"no backend installed: the bundled default model needs the {name!r} backend, "
            f"which cannot run here{': ' + why if why else ''}",
            backend=name,
        )
    if name == "mlx":
        # The bundled GGUF, converted once into an MLX folder in the cache (a few seconds).
        from .convert.gguf_to_mlx import default_mlx_model

        path = await anyio.to_thread.run_sync(default_mlx_model)
    else:
        path = await anyio.to_thread.run_sync(bundled_model_path)
    return await load_model(str(path), backend=name, **options)


def _register_builtin_backends() -> None:
    """The backends that ship with goml_async, imported only when first used."""
    register_lazy_backend("http", "goml_async.backends.http:HTTPModelBackend", requires=("httpx",))
    register_lazy_backend(
        "mlx",
        "goml_async.backends.mlx:MLXModelBackend",
        requires=("mlx", "mlx_lm"),
        install_hint="pip install 'goml_async[mlx]'",
    )
    # Available where a llama-server binary or the xllamacpp launcher is (checked on use).
    register_lazy_backend("llama", "goml_async.backends.llama:LlamaModelBackend")


_register_builtin_backends()
