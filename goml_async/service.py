"""Service: named backends, a default backend, and the judge and scoring engine, in one object.

The facade that the REST routes (:mod:`goml_async.server.ml_routes`) and the MCP tools
(:mod:`goml_async.mcp`) call, with no silent fallbacks. An unknown backend name is an
:class:`UnknownBackendError` listing the registered names, never the default backend in its
place; without a judge the local scoring suites still run; owned backends are started and
closed with it, and every close is attempted.

Example:
    ```python
    async with Service() as service:
        model = await load_default_model()
        service.register("smollm2", ChatAdapter(model, "smollm2"), own=True)
        result = await service.generate("smollm2", "Hi", GenOpts(max_tokens=16), system="Be kind.")
    ```
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import anyio
from anyio.abc import AsyncResource

from ._service_parts import (
    BackendStatus,
    ChatAdapter,
    JudgeSpec,
    ServiceCloseError,
    ServiceState,
    ServiceStatus,
    ServiceUnavailable,
    UnknownBackendError,
    as_judge,
    available,
    call_optional,
    call_options,
    check_config,
    check_opts,
    check_text,
    model_of,
    parse_categories,
)
from .compat import Backend, InferenceAdapter, as_text_model
from .errors import BackendUnavailable, ConfigError, GomlError
from .model import TextModel
from .settings import GomlSettings, current_settings
from .types import GenerateConfig, GenOpts, Message, MessageLike, Result

if TYPE_CHECKING:
    from .scoring.engine import Engine
    from .scoring.judge import Judge
    from .scoring.runner import ProbeCallback
    from .scoring.types import ProbeResult, Response, ScoreReport

__all__ = [
    "BackendStatus",
    "ChatAdapter",
    "JudgeSpec",
    "Service",
    "ServiceCloseError",
    "ServiceState",
    "ServiceStatus",
    "ServiceUnavailable",
    "UnknownBackendError",
]


@dataclass(slots=True)
class _Entry:
    backend: Backend
    owned: bool
    started: bool = False
    model: TextModel | None = None  # the TextModel behind ``backend``, lifted once on first use

    def text_model(self) -> TextModel:
        if self.model is None:
            self.model = as_text_model(self.backend)
        return self.model


class Service(AsyncResource):
    """Named backends, a default backend, a judge and a scoring engine.

    Args:
        settings: default backend name (``GOML_DEFAULT_BACKEND``), judge URL and model
            (``GOML_JUDGE_URL``, ``GOML_JUDGE_MODEL``), scoring ``concurrency`` and ``suites``;
            default :func:`~goml_async.settings.current_settings` (the environment).
        judge: the judge, overriding ``judge_url``: a :class:`~goml_async.scoring.Judge`, a
            TextModel or Backend to wrap in one (not owned), or the name of a registered
            backend (looked up when the judge is used), e.g. ``Service(judge="judge")`` after
            ``register("judge", ...)``. With neither, there is no judge and only the local
            suites score.

    A ``judge_url`` judge is an :class:`~goml_async.backends.http.HTTPBackend` for
    ``judge_model`` that the Service owns. The default backend is the one set by
    ``register(..., default=True)``/:meth:`set_default`, else ``settings.default_backend``,
    else the first one registered.

    Example:
        ```python
        async with Service(GomlSettings(judge_url="http://127.0.0.1:8080/v1")) as service:
            service.register("local", InferenceAdapter(model, "local"))
            result = await service.generate("local", "Hello")
            report = await service.score_responses(rows)
        ```
    """

    def __init__(self, settings: GomlSettings | None = None, *, judge: JudgeSpec | None = None):
        if settings is None:
            settings = current_settings()
        elif not isinstance(settings, GomlSettings):
            raise ConfigError("settings", f"must be GomlSettings, got {type(settings).__name__}")
        self._settings = settings
        self._entries: dict[str, _Entry] = {}
        self._retired: list[tuple[str, Backend]] = []
        self._default: str | None = None
        self._state: ServiceState = "new"
        self._judge_backend: Backend | None = None  # owned: built from judge_url
        self._judge_name: str | None = None
        self._judge: Judge | None = None
        self._engine: tuple[Judge | None, Engine] | None = None
        if isinstance(judge, str):
            check_text("judge", judge)
            self._judge_name = judge
        elif judge is not None:
            self._judge = as_judge(judge)
        elif settings.judge_url:
            from .backends.http import HTTPBackend

            self._judge_backend = HTTPBackend(settings.judge_url, settings.judge_model)
            self._judge = as_judge(self._judge_backend)

    # -- the registry -----------------------------------------------------------------------------

    @property
    def settings(self) -> GomlSettings:
        """The settings the Service was built with."""
        return self._settings

    @property
    def state(self) -> ServiceState:
        """``new``, ``running`` or ``closed``."""
        return self._state

    def register(
        self, name: str, backend: Backend | TextModel, *, own: bool = False, default: bool = False
    ) -> None:
        """Add ``backend`` as ``name``, replacing any backend of that name.

        Args:
            name: the backend's name.
            backend: a Backend, or a TextModel (wrapped in an InferenceAdapter).
            own: the Service starts it (if it has ``start()``, when the Service starts) and
                closes it; otherwise it stays the caller's. A replaced owned backend is closed
                with the Service.
            default: make it the default backend.

        Raises:
            ConfigError: a bad name or backend.
            ServiceUnavailable: the Service is closed.
        """
        check_text("name", name)
        if isinstance(backend, TextModel):
            backend = InferenceAdapter(backend, name)
        elif isinstance(backend, type) or not isinstance(backend, Backend):
            raise ConfigError(
                "backend", f"must be a Backend or a TextModel, got {type(backend).__name__}"
            )
        if self._state == "closed":
            raise ServiceUnavailable("closed")
        old = self._entries.get(name)
        if old is not None and old.owned and old.backend is not backend:
            self._retired.append((name, old.backend))
        self._entries[name] = _Entry(backend, bool(own))
        if default:
            self._default = name

    def get(self, name: str) -> Backend:
        """The backend registered as ``name``.

        Raises:
            UnknownBackendError: no such backend (the message lists the registered ones).
        """
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownBackendError(name, self.list_backends())
        return entry.backend

    def list_backends(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def default_backend(self) -> str | None:
        """The default backend's name (see the class docs), or None when there is none."""
        if self._default is not None:
            return self._default
        if self._settings.default_backend:
            return self._settings.default_backend
        return next(iter(self._entries), None)

    def model_name(self, name: str) -> str:
        """The model behind the backend ``name`` when it says which, else ``""``.

        Raises:
            UnknownBackendError: no such backend.
        """
        return model_of(self.get(name))

    def model(self, name: str | None = None) -> TextModel:
        """The TextModel behind the backend ``name`` (None or ``""``: the default backend).

        A TextModel registered as it is comes back as it is; a Backend that wraps one (an
        InferenceAdapter, a ChatAdapter, a running LlamaBackend) gives back what it wraps, and
        any other Backend comes back as a :class:`~goml_async.compat.BackendTextModel`.

        Raises:
            UnknownBackendError: no such backend.
            BackendUnavailable: no backend is registered (and ``name`` is None).
        """
        chosen, _ = self.lookup(name)
        return self._entries[chosen].text_model()

    def set_default(self, name: str) -> None:
        """Make the registered backend ``name`` the default.

        Raises:
            UnknownBackendError: no such backend.
        """
        self.get(name)
        self._default = name

    def lookup(self, name: str | None = None) -> tuple[str, Backend]:
        """``(name, backend)`` for ``name``, or for the default backend when it is None or ``""``.

        Raises:
            UnknownBackendError: ``name`` (or the configured default) is not registered.
            BackendUnavailable: no name was given and no backend is registered.
        """
        if name is not None and not isinstance(name, str):
            raise ConfigError("backend", f"must be a str or None, got {type(name).__name__}")
        if name:
            return name, self.get(name)
        chosen = self.default_backend()
        if chosen is None:
            raise BackendUnavailable("no backend is registered with the Service")
        if chosen not in self._entries:
            where = "the default, GOML_DEFAULT_BACKEND" if self._default is None else "the default"
            raise UnknownBackendError(chosen, self.list_backends(), configured=where)
        return chosen, self._entries[chosen].backend

    # -- judge and engine -------------------------------------------------------------------------

    @property
    def judge(self) -> Judge | None:
        """The judge, or None when there is none.

        Raises:
            UnknownBackendError: the judge is a backend name that is not registered.
        """
        if self._judge_name is not None:
            backend = self.get(self._judge_name)
            if self._judge is None or self._judge.model is not backend:
                self._judge = as_judge(backend)
        return self._judge

    @property
    def engine(self) -> Engine:
        """The scoring Engine: the judge, ``settings.scoring_concurrency`` (None: the judge's
        parallel slots) and ``settings.suites``.

        Raises:
            ConfigError: the settings name a judge suite and there is no judge.
        """
        judge = self.judge
        if self._engine is None or self._engine[0] is not judge:
            from .scoring.engine import Engine

            engine = Engine(judge, self._settings.scoring_concurrency, self._settings.suites)
            self._engine = (judge, engine)
        return self._engine[1]

    # -- work -------------------------------------------------------------------------------------

    def _usable(self, name: str | None) -> tuple[str, TextModel]:
        if self._state != "running":
            raise ServiceUnavailable(self._state)
        chosen, backend = self.lookup(name)
        if not available(backend):
            raise BackendUnavailable(f"backend {chosen!r} is not available now", backend=chosen)
        return chosen, self._entries[chosen].text_model()

    async def generate(
        self,
        name: str | None,
        prompt: str,
        opts: GenOpts | None = None,
        *,
        system: str | None = None,
        config: GenerateConfig | None = None,
    ) -> Result:
        """Complete ``prompt`` on the backend ``name`` (None or ``""``: the default backend).

        The call streams from the TextModel behind the backend (see :meth:`model`), so every
        field of ``config`` reaches it; ``opts`` gives the same options in the string-level
        API's form (a :class:`~goml_async.types.GenOpts`).

        Args:
            name: the backend's name.
            prompt: the prompt, a non-empty str.
            opts: string-level options: its non-zero fields apply over ``config``; its
                ``model`` asks an HTTP backend for another model (a ConfigError for a backend
                that serves one).
            system: when given, the call is a chat: this system message, then ``prompt``.
            config: the call's GenerateConfig; None keeps the backend's defaults.

        Raises:
            ConfigError: a bad argument.
            UnknownBackendError: no backend of that name (never a silent fallback).
            BackendUnavailable: the Service is not running or the backend is not available.
            GenerationError: the backend failed.
        """
        check_text("prompt", prompt)
        check_opts(opts)
        check_config(config)
        check_text("system", system, optional=True)
        chosen, model = self._usable(name)
        options = call_options(chosen, model, opts)
        if system is not None:
            conversation = [Message("system", system), Message("user", prompt)]
            return await model.chat(conversation, config, **options)
        return await model.generate(prompt, config, **options)

    async def chat(
        self,
        name: str | None,
        messages: Sequence[MessageLike],
        opts: GenOpts | None = None,
        *,
        config: GenerateConfig | None = None,
    ) -> Result:
        """Reply to ``messages`` on the backend ``name``; options and errors as :meth:`generate`."""
        check_opts(opts)
        check_config(config)
        chosen, model = self._usable(name)
        return await model.chat(messages, config, **call_options(chosen, model, opts))

    async def score_responses(
        self, responses: Iterable[Response], *, suites: str | Iterable[str] | None = None
    ) -> ScoreReport:
        """Score ``responses`` with :attr:`engine` (``suites``: other suites, same judge).

        Without a judge, ``"all"`` scores the local suites only; the report's ``suites`` and
        ``engine.skipped_suites`` say which ran and which were skipped.

        Raises:
            ServiceUnavailable: the Service is not running.
            ConfigError: a bad suite, or a judge suite named without a judge.
        """
        if self._state != "running":
            raise ServiceUnavailable(self._state)
        engine = self.engine
        if suites is not None:
            from .scoring.engine import Engine

            engine = Engine(self.judge, self._settings.scoring_concurrency, suites)
        return await engine.score_all(responses)

    async def run_probes(
        self,
        name: str | None = None,
        *,
        categories: str | Iterable[str] | None = None,
        max_tokens: int = 500,
        temperature: float = 0.1,
        system: str | None = None,
        on_probe: ProbeCallback | None = None,
        config: GenerateConfig | None = None,
    ) -> ProbeResult:
        """Ask the capability probes on backend ``name`` and grade the answers.

        Args:
            name: the backend (None: the default).
            categories: only these probe categories (a comma-separated str or names).
            max_tokens: the cap on each answer.
            temperature: the sampling temperature.
            system: a system message sent before each probe.
            on_probe: called after each probe, as by
                :func:`~goml_async.scoring.runner.run_capability_probes`.
            config: the probes' GenerateConfig (default
                :data:`~goml_async.scoring.runner.CAPABILITY_CONFIG`); its
                ``max_tokens`` and ``temperature`` are replaced by the two arguments above.

        Raises:
            ConfigError: an unknown category or a bad option.
            UnknownBackendError, BackendUnavailable: as :meth:`generate`.
        """
        from .scoring.probes import CAPABILITY_PROBES, probe_categories
        from .scoring.runner import CAPABILITY_CONFIG, run_capability_probes

        wanted = parse_categories(categories, probe_categories())
        check_config(config)
        base = CAPABILITY_CONFIG if config is None else config
        config = base.with_options(max_tokens=max_tokens, temperature=temperature)
        check_text("system", system, optional=True)
        _, model = self._usable(name)
        probes = [p for p in CAPABILITY_PROBES if wanted is None or p.category in wanted]
        return await run_capability_probes(
            model, probes=probes, config=config, system=system, on_probe=on_probe
        )

    def status(self) -> ServiceStatus:
        """A snapshot: state, readiness, each backend's availability, judge and suites."""
        default = self.default_backend()
        backends = tuple(
            BackendStatus(
                name=name,
                available=self._state == "running" and available(entry.backend),
                default=name == default,
                owned=entry.owned,
                model=model_of(entry.backend),
            )
            for name, entry in sorted(self._entries.items())
        )
        try:
            judge = self.judge
        except UnknownBackendError:
            judge = None
        concurrency = self._settings.concurrency
        try:
            engine = self.engine
            suites, skipped = tuple(engine.suite_names()), engine.skipped_suites
            concurrency = engine.concurrency
        except GomlError:
            suites, skipped = (), ()
        return ServiceStatus(
            state=self._state,
            ready=self._state == "running" and any(b.available for b in backends),
            backends=backends,
            default_backend=default,
            has_judge=judge is not None,
            judge_model=judge.model_name if judge is not None else "",
            suites=suites,
            skipped_suites=skipped,
            concurrency=concurrency,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def _owned(self) -> list[tuple[str, Backend]]:
        owned = [(name, e.backend) for name, e in self._entries.items() if e.owned]
        owned += self._retired
        if self._judge_backend is not None:
            owned.append(("judge", self._judge_backend))
        return owned

    async def start(self) -> Self:
        """Start every owned backend that has ``start()``; idempotent while running.

        If one fails to start, the owned backends are closed and the error is raised.

        Raises:
            ServiceUnavailable: the Service is closed.
        """
        if self._state == "closed":
            raise ServiceUnavailable("closed")
        if self._state == "running":
            return self
        try:
            for entry in self._entries.values():
                if entry.owned and not entry.started:
                    await call_optional(entry.backend, "start")
                    entry.started = True
        except BaseException as exc:
            try:
                await self.aclose()
            except ServiceCloseError as close_error:
                exc.add_note(str(close_error))
            raise
        self._state = "running"
        return self

    async def aclose(self) -> None:
        """Close every owned backend (the last registered first). Idempotent.

        Every close is attempted, shielded from cancellation.

        Raises:
            ServiceCloseError: some closes failed (each is listed; the first is the cause).
        """
        if self._state == "closed":
            return
        self._state = "closed"
        failures: list[tuple[str, Exception]] = []
        with anyio.CancelScope(shield=True):
            for name, backend in reversed(self._owned()):
                try:
                    await call_optional(backend, "aclose", "close")
                except Exception as exc:
                    failures.append((name, exc))
        if failures:
            raise ServiceCloseError(failures) from failures[0][1]

    async def __aenter__(self) -> Self:
        return await self.start()

    def __repr__(self) -> str:
        return f"<Service {self._state} backends={self.list_backends()}>"
