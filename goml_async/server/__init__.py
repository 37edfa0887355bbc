"""An OpenAI-compatible HTTP server for any TextModel (``goml serve``).

``create_app`` builds an ASGI app; run it with any ASGI server, or use ``goml serve``, which
also loads the model and shuts down gracefully. Importing this package needs no extra; building
the app needs the ``server`` extra (Starlette, uvicorn): without it, ``create_app`` raises
:class:`~goml_async.errors.BackendUnavailable` with the ``pip install`` line.

Example:
    ```python
    import uvicorn
    from goml_async import load_default_model
    from goml_async.server import create_app

    model = await load_default_model()
    app = create_app(model, max_concurrency=2, api_key="secret")
    await uvicorn.Server(uvicorn.Config(app, port=8090)).serve()
    await model.aclose()
    ```
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, ConfigError
from ..model import TextModel, parallel_slots
from .limits import ServerConfig

if TYPE_CHECKING:
    from .app import ServerApp

__all__ = ["INSTALL_HINT", "ServerConfig", "create_app", "require_server_extra"]

#: The command that installs what the server needs.
INSTALL_HINT = "pip install 'goml_async[server]'"


def require_server_extra(*modules: str) -> None:
    """Raise BackendUnavailable with the pip hint unless ``modules`` (default: starlette) import.

    Raises:
        BackendUnavailable: a module of the ``server`` extra is not installed.
    """
    missing = [name for name in modules or ("starlette",) if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailable(
            f"the server needs {', '.join(missing)}, which is not installed",
            backend="server",
            install_hint=INSTALL_HINT,
        )


def create_app(
    model: TextModel,
    config: ServerConfig | None = None,
    *,
    routes: Sequence[Any] | Callable[[Any], Sequence[Any]] = (),
    **options: Any,
) -> ServerApp:
    """Serve ``model`` in OpenAI's format as an ASGI app.

    Args:
        model: any TextModel (llama, MLX, HTTP, ScriptedModel, ...). The app does not close it.
        config: the limits; keyword ``options`` (the :class:`ServerConfig` fields:
            ``model_name``, ``aliases``, ``max_concurrency``, ``max_queue``,
            ``queue_timeout``, ``max_tokens``, ``timeout``, ``max_context``,
            ``max_body_bytes``, ``api_key``, ``retry_after``, ``static_dir``,
            ``allowed_hosts``, ``allowed_origins``) override it. Without a config or a
            ``max_concurrency``, the app serves as many requests at once as the model decodes
            together (its :attr:`~goml_async.model.BaseTextModel.parallel_slots`).
        routes: extra Starlette routes served beside the OpenAI ones, or a function of the
            app that returns them (``goml serve`` adds
            :func:`~goml_async.server.ml_routes.ml_mount` with ``admit=app.admit``).

    Returns:
        A :class:`~goml_async.server.app.ServerApp`.

    Raises:
        ConfigError: an invalid or unknown option.
        BackendUnavailable: the ``server`` extra is not installed.

    Example:
        ```python
        app = create_app(model, model_name="smollm2", max_tokens=512)
        ```
    """
    if not isinstance(model, TextModel):
        raise ConfigError("model", f"must be a TextModel, got {type(model).__name__}")
    if config is None and "max_concurrency" not in options:
        options["max_concurrency"] = parallel_slots(model)
    base = config if config is not None else ServerConfig()
    if not isinstance(base, ServerConfig):
        raise ConfigError("config", f"must be a ServerConfig, got {type(base).__name__}")
    known = ServerConfig.__dataclass_fields__
    for name in options:
        if name not in known:
            raise ConfigError(name, f"unknown server option (known: {', '.join(sorted(known))})")

    resolved = replace(base, **options) if options else base
    require_server_extra("starlette")
    from .app import ServerApp

    return ServerApp(model, resolved, routes)
