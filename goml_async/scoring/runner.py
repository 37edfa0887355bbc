"""Run the probe suites against a model: capability probes (graded locally) and content probes.

Both runners take any :class:`~goml_async.model.TextModel` or string-level
:class:`~goml_async.compat.Backend`, and an optional :class:`~goml_async.scoring.judge.Judge`.
A probe whose generation fails is recorded as failed with its error, never dropped; a judge reply
that cannot be used is kept as ``judge_error`` next to the probe's own result.

Example:
    >>> import anyio
    >>> from goml_async.testing import ScriptedModel
    >>> result = anyio.run(run_capability_probes, ScriptedModel(["The answer is 10063."]))
    >>> f"{result.passed}/{result.total}"
    '1/23'
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import anyio

from .._concurrency import maybe_await, task_group
from .._validate import int_at_least
from ..compat import Backend, as_text_model
from ..errors import ConfigError, GenerationError, GomlError, JudgeError
from ..model import TextModel, parallel_slots
from ..types import GenerateConfig, Message
from .probes import CAPABILITY_PROBES, CONTENT_PROBES
from .text import strip_think_blocks
from .types import (
    CapabilityProbe,
    ContentOutcome,
    ContentProbe,
    ContentProbeResult,
    ProbeOutcome,
    ProbeResult,
)

if TYPE_CHECKING:
    from .judge import Judge

_Probe = TypeVar("_Probe", CapabilityProbe, ContentProbe)

__all__ = [
    "CAPABILITY_CONFIG",
    "CONTENT_CONFIG",
    "ProbeCallback",
    "as_text_model",
    "probe_result",
    "run_capability_probes",
    "run_content_probes",
]

#: The capability probes' settings: near-greedy, room for shown work, every prompt computed
#: afresh (``prompt_cache=False``: on llama.cpp a reused prefix can change a greedy reply, and
#: a score must not depend on which probe ran before).
CAPABILITY_CONFIG = GenerateConfig(temperature=0.1, max_tokens=500, prompt_cache=False)
#: The content probes' settings: a freer temperature and longer answers.
CONTENT_CONFIG = GenerateConfig(temperature=0.7, max_tokens=1000, prompt_cache=False)

#: Called after each capability probe with ``(outcome, passed_so_far, done_so_far)``; may be async.
ProbeCallback: TypeAlias = Callable[[ProbeOutcome, int, int], object]


async def run_capability_probes(
    model: TextModel | Backend,
    *,
    probes: Sequence[CapabilityProbe] = CAPABILITY_PROBES,
    judge: Judge | None = None,
    config: GenerateConfig = CAPABILITY_CONFIG,
    system: str | None = None,
    concurrency: int | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    on_probe: ProbeCallback | None = None,
) -> ProbeResult:
    """Ask every capability probe and grade the answers with the probes' own checks.

    Args:
        model: the model under test.
        probes: the probes to run (default: all 23).
        judge: when given, each answer is also scored by ``judge.score_capability``.
        config: generation settings (default: temperature 0.1, 500 tokens).
        system: an optional system message sent before each probe.
        concurrency: probes generated at once (default: the model's
            :attr:`~goml_async.model.BaseTextModel.parallel_slots`; 1 runs them one after
            another, as go-ml does).
        limiter: a shared limiter for the model (e.g. ``Engine.target_limiter``); overrides
            ``concurrency``.
        on_probe: called after each probe finishes, in completion order.

    Returns:
        A ProbeResult with one outcome per probe, in probe order, and per-category counts.
    """
    text_model = as_text_model(model)
    probes = _check_probes(probes, CapabilityProbe)
    limiter = limiter or _limiter(text_model, concurrency)
    outcomes: list[ProbeOutcome | None] = [None] * len(probes)
    counts = {"passed": 0, "done": 0}

    async def run_one(index: int, probe: CapabilityProbe) -> None:
        async with limiter:
            response, error = await _answer(text_model, probe.prompt, system, config)
        passed = not error and probe.check(response)
        judged, judge_error, judge_reply = None, "", ""
        if judge is not None and not error:
            try:
                judged = await judge.score_capability(probe.prompt, probe.answer, response)
            except GomlError as exc:
                judge_error, judge_reply = _judge_failure(exc)
        outcome = ProbeOutcome(
            probe_id=probe.id,
            domain=probe.domain,
            category=probe.category,
            prompt=probe.prompt,
            answer=probe.answer,
            response=response,
            passed=passed,
            error=error,
            judged=judged,
            judge_error=judge_error,
            judge_reply=judge_reply,
        )
        outcomes[index] = outcome
        counts["passed"] += passed
        counts["done"] += 1
        if on_probe is not None:
            await maybe_await(on_probe(outcome, counts["passed"], counts["done"]))

    await _run_all(run_one, probes)
    return probe_result(outcome for outcome in outcomes if outcome is not None)


def probe_result(outcomes: Iterable[ProbeOutcome]) -> ProbeResult:
    """A ProbeResult over ``outcomes`` (kept in the order given), with per-category counts.

    :func:`run_capability_probes` returns one; a caller that collected the outcomes of a run
    that was stopped part way (through ``on_probe``) builds the partial result with this.
    """
    finished = list(outcomes)
    by_category: dict[str, tuple[int, int]] = {}
    for outcome in finished:
        passed, total = by_category.get(outcome.category, (0, 0))
        by_category[outcome.category] = (passed + outcome.passed, total + 1)
    return ProbeResult(outcomes=finished, by_category=dict(sorted(by_category.items())))


async def run_content_probes(
    model: TextModel | Backend,
    *,
    probes: Sequence[ContentProbe] = CONTENT_PROBES,
    judge: Judge | None = None,
    config: GenerateConfig = CONTENT_CONFIG,
    system: str | None = None,
    concurrency: int | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    on_probe: Callable[[ContentOutcome], object] | None = None,
) -> ContentProbeResult:
    """Ask every content probe and, with a judge, score the answers on the content rubric.

    Settings default to temperature 0.7 and 1000 tokens. Unlike go-ml, a probe whose
    generation fails is kept with its error instead of being skipped. Arguments are those of
    :func:`run_capability_probes` (``concurrency`` defaults to the model's parallel slots).
    """
    text_model = as_text_model(model)
    probes = _check_probes(probes, ContentProbe)
    limiter = limiter or _limiter(text_model, concurrency)
    outcomes: list[ContentOutcome | None] = [None] * len(probes)

    async def run_one(index: int, probe: ContentProbe) -> None:
        async with limiter:
            response, error = await _answer(text_model, probe.prompt, system, config)
        scores, judge_error, judge_reply = None, "", ""
        if judge is not None and not error:
            try:
                scores = await judge.score_content(probe, response)
            except GomlError as exc:
                judge_error, judge_reply = _judge_failure(exc)
        outcome = ContentOutcome(
            probe_id=probe.id,
            prompt=probe.prompt,
            response=response,
            error=error,
            scores=scores,
            judge_error=judge_error,
            judge_reply=judge_reply,
        )
        outcomes[index] = outcome
        if on_probe is not None:
            await maybe_await(on_probe(outcome))

    await _run_all(run_one, probes)
    return ContentProbeResult(outcomes=[outcome for outcome in outcomes if outcome is not None])


async def _answer(
    model: TextModel, prompt: str, system: str | None, config: GenerateConfig
) -> tuple[str, str]:
    """The think-stripped reply and ``""``, or the partial reply and the error's text."""
    messages = [Message("user", prompt)]
    if system:
        messages.insert(0, Message("system", system))
    try:
        async with model.chat(messages, config) as stream:
            result = await stream.collect()
    except GenerationError as exc:
        return strip_think_blocks(exc.partial_text), f"{type(exc).__name__}: {exc}"
    except GomlError as exc:
        return "", f"{type(exc).__name__}: {exc}"
    return strip_think_blocks(result.text), ""


async def _run_all(
    run_one: Callable[[int, _Probe], Coroutine[Any, Any, None]], probes: Sequence[_Probe]
) -> None:
    """Run ``run_one`` for every probe; the first exception (e.g. from a callback) cancels the
    rest and is raised as itself, not wrapped in an ExceptionGroup."""
    async with task_group() as tg:
        for index, probe in enumerate(probes):
            tg.start_soon(run_one, index, probe)


def _limiter(model: TextModel, concurrency: int | None) -> anyio.CapacityLimiter:
    """The probes' limiter: ``concurrency`` slots, or as many as the model decodes at once."""
    if concurrency is None:
        return anyio.CapacityLimiter(parallel_slots(model))
    return anyio.CapacityLimiter(int_at_least("concurrency", concurrency, 1))


def _judge_failure(exc: GomlError) -> tuple[str, str]:
    """The recorded message and, for an unusable reply, the reply itself."""
    reply = exc.raw_reply if isinstance(exc, JudgeError) else ""
    return f"{type(exc).__name__}: {exc}", reply


def _check_probes(probes: Sequence[_Probe], kind: type[_Probe]) -> Sequence[_Probe]:
    if isinstance(probes, str | bytes) or not isinstance(probes, Sequence):
        raise ConfigError("probes", f"must be a sequence of {kind.__name__}, got {probes!r}")
    for index, probe in enumerate(probes):
        if not isinstance(probe, kind):
            raise ConfigError(
                f"probes[{index}]", f"must be a {kind.__name__}, got {type(probe).__name__}"
            )
    return probes
