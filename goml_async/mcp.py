"""MCP tools over a :class:`~goml_async.service.Service`, on the official ``mcp`` SDK.

Five tools, each with a typed JSON schema for its arguments and its result:

- ``ml_generate``: generate text with a backend -> ``{response, backend, model, finish_reason}``;
- ``ml_score``: score one response on the ``heuristic``, ``semantic`` and ``content`` suites;
- ``ml_probe``: run the capability probes on a backend **and grade them** (go-ml only returned
  the raw answers) -> totals, accuracy, per category and per probe; when the request carries a
  ``progressToken`` (in its ``_meta``), a progress notification follows each probe;
- ``ml_status``: the Service's readiness, backends, judge and suites;
- ``ml_backends``: the Service's backends (go-ml listed its global registry instead).

A failure (an unknown backend, a judge suite without a judge, a generation error) comes back as
an MCP tool error (``isError``) whose text says what was wrong; it never ends the session. A
client's ``notifications/cancelled`` for a call (the SDK's clients send one when the caller
gives up or its read timeout passes) cancels the tool: the generation in progress stops at the
model, and no further probe starts.
``goml mcp`` serves these tools over stdio or streamable HTTP. This module needs the ``mcp``
extra (``pip install 'goml_async[mcp]'``).

Example:
    ```python
    async with Service() as service:
        service.register("local", InferenceAdapter(model, "local"))
        server = create_mcp_server(service)
        await server.run_stdio_async()
    ```
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Final, Literal, TypeAlias, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

# pydantic builds schemas from typing_extensions' TypedDict only, before Python 3.12.
from typing_extensions import TypedDict

from ._service_parts import parse_categories
from ._version import __version__
from .errors import ConfigError, GomlError
from .scoring.probes import CAPABILITY_PROBES, CONTENT_PROBES, get_content_probe, probe_categories
from .scoring.types import ProbeOutcome, Response
from .service import Service
from .types import GenOpts

__all__ = [
    "BackendInfo",
    "BackendsResult",
    "GenerateResult",
    "ProbeCategory",
    "ProbeItem",
    "ProbeReport",
    "ScoreError",
    "ScoreResult",
    "StatusResult",
    "TOOL_NAMES",
    "create_mcp_server",
]

#: The tools :func:`create_mcp_server` registers.
TOOL_NAMES: Final = ("ml_backends", "ml_generate", "ml_probe", "ml_score", "ml_status")
#: The suites ``ml_score`` runs.
_SCORE_SUITES: Final = ("heuristic", "semantic", "content")
_JUDGED: Final = frozenset({"semantic", "content"})
_LogLevel: TypeAlias = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LOG_LEVELS: Final[dict[str, _LogLevel]] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}


class GenerateResult(TypedDict):
    """What ``ml_generate`` returns."""

    response: str
    backend: str
    model: str
    finish_reason: str | None


class ScoreError(TypedDict):
    """A suite that failed in ``ml_score``; ``raw_reply`` keeps an unusable judge reply."""

    suite: str
    message: str
    raw_reply: str


class ScoreResult(TypedDict):
    """What ``ml_score`` returns: one object per suite that ran (None otherwise)."""

    suites: list[str]
    skipped_suites: list[str]
    heuristic: dict[str, Any] | None
    semantic: dict[str, Any] | None
    content: dict[str, Any] | None
    errors: list[ScoreError]


class ProbeItem(TypedDict):
    """One graded capability probe."""

    id: str
    category: str
    passed: bool
    response: str
    error: str


class ProbeCategory(TypedDict):
    """Passed and total probes of one category."""

    passed: int
    total: int


class ProbeReport(TypedDict):
    """What ``ml_probe`` returns."""

    backend: str
    total: int
    passed: int
    accuracy: float
    by_category: dict[str, ProbeCategory]
    results: list[ProbeItem]


class BackendInfo(TypedDict):
    """One backend of the Service."""

    name: str
    available: bool
    default: bool
    owned: bool
    model: str


class BackendsResult(TypedDict):
    """What ``ml_backends`` returns."""

    backends: list[BackendInfo]
    default: str | None


class StatusResult(TypedDict):
    """What ``ml_status`` returns (a :class:`~goml_async.service.ServiceStatus`)."""

    state: str
    ready: bool
    backends: list[BackendInfo]
    default_backend: str | None
    has_judge: bool
    judge_model: str
    suites: list[str]
    skipped_suites: list[str]
    concurrency: int


_Backend = Annotated[
    str, Field(description="Backend name from ml_backends; empty for the default backend.")
]
_Temperature = Annotated[
    float, Field(ge=0.0, description="Sampling temperature; 0 keeps the backend's default.")
]


@contextmanager
def _tool_errors() -> Iterator[None]:
    """goml_async errors become MCP tool errors carrying their message."""
    try:
        yield
    except GomlError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from exc


def _parse_score_suites(suites: str) -> tuple[list[str], frozenset[str]]:
    """``(suites in order, suites named explicitly)``; ``all`` selects the three."""
    names = {part.strip().lower() for part in suites.split(",") if part.strip()}
    explicit = frozenset(names - {"all"})
    unknown = sorted(explicit - set(_SCORE_SUITES))
    if unknown or not names:
        raise ToolError(
            f"unknown suite(s) {unknown or [suites]}; ml_score runs: {', '.join(_SCORE_SUITES)} "
            "(comma-separated), or all"
        )
    wanted = set(_SCORE_SUITES) if "all" in names else explicit
    return [name for name in _SCORE_SUITES if name in wanted], explicit


def _dump(section: BaseModel | None) -> dict[str, Any] | None:
    return None if section is None else section.model_dump()


def _system_field(default: str | None, sent_before: str) -> Any:
    """The ``system`` argument, whose description shows the server's default message."""
    shown = f"the server's default ({default!r})" if default else "none (the server has none)"
    return Field("", description=f"System message sent before {sent_before}; empty for {shown}.")


def _probe_count(categories: str) -> int:
    """How many capability probes ``categories`` selects (ConfigError for an unknown one)."""
    wanted = parse_categories(categories or None, probe_categories())
    return sum(1 for probe in CAPABILITY_PROBES if wanted is None or probe.category in wanted)


def create_mcp_server(
    service: Service,
    *,
    name: str = "goml",
    system: str | None = None,
    probe_max_tokens: int = 128,
    log_level: str = "WARNING",
) -> MCPServer[Any]:
    """An MCP server with the five ``ml_*`` tools over ``service``.

    Args:
        service: the Service to call; it must be running while the server serves.
        name: the server name announced to clients.
        system: the default system message of ``ml_generate`` and ``ml_probe`` (instruct
            models such as SmolLM2 answer well only with one); the tools' schemas show it.
            ``goml mcp`` passes the same default as ``goml generate`` and ``goml chat``.
        probe_max_tokens: the default ``max_tokens`` of ``ml_probe``.
        log_level: the SDK's log level (logs go to stderr).

    Returns:
        An ``mcp.server.mcpserver.MCPServer``: ``await server.run_stdio_async()``, or mount
        ``server.streamable_http_app()``.
    """
    if not isinstance(service, Service):
        raise ConfigError("service", f"must be a Service, got {type(service).__name__}")
    level = _LOG_LEVELS.get(str(log_level).upper())
    if level is None:
        known = ", ".join(_LOG_LEVELS)
        raise ConfigError("log_level", f"must be one of {known}, got {log_level!r}")
    server: MCPServer[Any] = MCPServer(
        name,
        version=__version__,
        instructions="Generate with, score and probe the language models of a goml_async "
        "Service. Call ml_backends first to see the backends.",
        log_level=level,
    )
    default_system = system or None

    async def ml_generate(
        prompt: Annotated[str, Field(min_length=1, description="The prompt to answer.")],
        backend: _Backend = "",
        model: Annotated[
            str, Field(description="Model to request from an HTTP backend; empty for its own.")
        ] = "",
        temperature: _Temperature = 0.0,
        max_tokens: Annotated[
            int, Field(ge=0, description="Most tokens to generate; 0 keeps the backend default.")
        ] = 0,
        system: str = _system_field(default_system, "the prompt"),
    ) -> GenerateResult:
        with _tool_errors():
            chosen, _ = service.lookup(backend or None)
            opts = GenOpts(temperature=temperature, max_tokens=max_tokens, model=model)
            result = await service.generate(chosen, prompt, opts, system=system or default_system)
            used_model = model or service.model_name(chosen) or chosen
        return GenerateResult(
            response=result.text,
            backend=chosen,
            model=used_model,
            finish_reason=result.finish_reason,
        )

    async def ml_score(
        prompt: Annotated[str, Field(description="The prompt the response answers.")],
        response: Annotated[str, Field(description="The response to score.")],
        suites: Annotated[
            str,
            Field(
                description="Comma-separated: heuristic (local), semantic (needs a judge), "
                "content (needs a judge and probe_id), or all."
            ),
        ] = "heuristic",
        probe_id: Annotated[
            str,
            Field(
                description="For the content suite: the content probe the response answers ("
                + ", ".join(p.id for p in CONTENT_PROBES)
                + ")."
            ),
        ] = "",
    ) -> ScoreResult:
        wanted, explicit = _parse_score_suites(suites)
        with _tool_errors():
            if probe_id:
                get_content_probe(probe_id)
            judge = service.judge
        if "content" in explicit and not probe_id:
            raise ToolError(
                "the content suite scores an answer to one of the content probes: pass "
                f"probe_id (one of {', '.join(p.id for p in CONTENT_PROBES)}). To run "
                "probes against a backend, use the ml_probe tool."
            )
        if judge is None and (needing := sorted(_JUDGED & explicit)):
            raise ToolError(
                f"the {' and '.join(needing)} suite needs a judge and this server has none: "
                "set GOML_JUDGE_URL (and GOML_JUDGE_MODEL) for goml mcp, or use "
                "suites=heuristic"
            )
        skipped = [
            suite
            for suite in wanted
            if (suite in _JUDGED and judge is None) or (suite == "content" and not probe_id)
        ]
        ran = [suite for suite in wanted if suite not in skipped]
        row = Response(
            id=probe_id or "ml_score",
            prompt=prompt,
            response=response,
            model="mcp",
            domain="content" if probe_id else "",
        )
        with _tool_errors():
            report = await service.score_responses([row], suites=ran)
        scored = report.per_prompt["mcp"][0]
        sections = {suite: getattr(scored, suite) for suite in _SCORE_SUITES}
        errors = [
            ScoreError(suite=e.suite, message=e.message, raw_reply=e.raw_reply)
            for e in report.errors
        ]
        if ran and all(sections[suite] is None for suite in ran):
            raise ToolError("; ".join(f"{e['suite']}: {e['message']}" for e in errors))
        return ScoreResult(
            suites=ran,
            skipped_suites=skipped,
            heuristic=_dump(sections["heuristic"]),
            semantic=_dump(sections["semantic"]),
            content=_dump(sections["content"]),
            errors=errors,
        )

    async def ml_probe(
        ctx: Context,
        backend: _Backend = "",
        categories: Annotated[
            str,
            Field(
                description="Comma-separated probe categories; empty for all 23 probes ("
                + ", ".join(probe_categories())
                + ")."
            ),
        ] = "",
        max_tokens: Annotated[
            int, Field(ge=1, le=8192, description="Most tokens per answer.")
        ] = probe_max_tokens,
        temperature: _Temperature = 0.1,
        system: str = _system_field(default_system, "each probe"),
    ) -> ProbeReport:
        with _tool_errors():
            chosen, _ = service.lookup(backend or None)
            total = _probe_count(categories)

            async def progress(outcome: ProbeOutcome, passed: int, done: int) -> None:
                # A no-op unless the client sent a progressToken.
                mark = "pass" if outcome.passed else ("error" if outcome.error else "fail")
                message = f"{outcome.probe_id}: {mark} ({passed}/{done} passed)"
                await ctx.report_progress(done, total, message)

            result = await service.run_probes(
                chosen,
                categories=categories or None,
                max_tokens=max_tokens,
                temperature=temperature,
                system=system or default_system,
                on_probe=progress,
            )
        return ProbeReport(
            backend=chosen,
            total=result.total,
            passed=result.passed,
            accuracy=round(result.accuracy, 4),
            by_category={
                category: ProbeCategory(passed=passed, total=total)
                for category, (passed, total) in result.by_category.items()
            },
            results=[
                ProbeItem(
                    id=outcome.probe_id,
                    category=outcome.category,
                    passed=outcome.passed,
                    response=outcome.response,
                    error=outcome.error,
                )
                for outcome in result.outcomes
            ],
        )

    async def ml_status() -> StatusResult:
        return cast(StatusResult, service.status().to_dict())

    async def ml_backends() -> BackendsResult:
        status = service.status().to_dict()
        return BackendsResult(backends=status["backends"], default=status["default_backend"])

    server.add_tool(
        ml_generate,
        structured_output=True,
        description="Generate text with one of the Service's backends (the default when "
        "backend is empty). Returns the response, the backend and model used, and why it "
        "stopped.",
    )
    server.add_tool(
        ml_score,
        structured_output=True,
        description="Score one response: heuristic (local regex scores and the LEK composite), "
        "semantic (a judge's 1-5 scores) and content (a judge's scores for an answer to a "
        "content probe). Judge failures are listed in errors.",
    )
    server.add_tool(
        ml_probe,
        structured_output=True,
        description="Ask a backend the capability probes (math, logic, reasoning, code, word) "
        "and grade each answer with the probe's own check. Returns passed/total, accuracy, "
        "per-category counts and every answer; sends a progress notification after each probe "
        "when the request has a progressToken.",
    )
    server.add_tool(
        ml_status,
        structured_output=True,
        description="The Service's state: ready, backends with availability, default backend, "
        "judge, scoring suites and concurrency.",
    )
    server.add_tool(
        ml_backends,
        structured_output=True,
        description="The Service's backends with their availability and model, and the "
        "default backend.",
    )
    return server
