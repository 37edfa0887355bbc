"""Engine: score many responses on several suites at once, with a bounded number of judge calls.

The suites are ``heuristic`` (local regexes), ``exact`` (local GSM8K numeric match) and the three
judge suites ``semantic``, ``content`` and ``standard``. :meth:`Engine.score_all` lists every judge
call that applies, in input order, and runs them on ``concurrency`` worker tasks in one anyio task
group; each call holds a token of :attr:`Engine.judge_limiter`, so at most ``concurrency`` calls
are in flight (fewer when other code holds tokens of the same limiter). The local suites are
computed meanwhile, between the judge calls' awaits.

Differences from go-ml's engine, on purpose:

- a failed job is an :class:`~goml_async.scoring.types.ItemError` in the report, never a log
  line: nothing is dropped, and the errors are counted;
- an unknown suite name is a :class:`~goml_async.errors.ConfigError` listing the known ones,
  not ignored;
- standard results are merged in a fixed order (TruthfulQA, DoNotAnswer, Toxigen, exact), so
  the kept ``reasoning`` does not depend on which judge call happened to finish first.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

import anyio
import anyio.lowlevel

from .._validate import int_at_least
from ..errors import ConfigError, JudgeError
from .exact import score_gsm8k
from .heuristic import score_heuristic
from .judge import Judge
from .probes import CONTENT_PROBES
from .types import (
    ContentProbe,
    ContentScores,
    HeuristicScores,
    ItemError,
    PromptScore,
    Response,
    ScoreReport,
    SemanticScores,
    StandardScores,
    normalize_domain,
)

__all__ = [
    "Engine",
    "JUDGE_SUITES",
    "ResultCallback",
    "SUITES",
    "judge_suites_named",
    "merge_standard_scores",
]

#: Every suite name, sorted. ``"all"`` selects all of them.
SUITES: Final[tuple[str, ...]] = ("content", "exact", "heuristic", "semantic", "standard")
#: The suites that call the judge.
JUDGE_SUITES: Final[frozenset[str]] = frozenset({"content", "semantic", "standard"})

#: Called once per response when every job for it has finished, with the response's input
#: index, its PromptScore and its errors (possibly none). May be sync or async.
ResultCallback: TypeAlias = Callable[
    [int, PromptScore, Sequence[ItemError]], Awaitable[None] | None
]

_Job = Literal["semantic", "content", "truthfulqa", "donotanswer", "toxigen"]
#: Standard jobs in merge order (exact, computed locally, is merged last).
_STANDARD_JOBS: Final[tuple[_Job, ...]] = ("truthfulqa", "donotanswer", "toxigen")
_RANK: Final = {"semantic": 0, "content": 1, "truthfulqa": 2, "donotanswer": 3, "toxigen": 4}
#: How many responses the local suites score between two checkpoints (yield to other tasks).
_LOCAL_BATCH: Final = 32


def merge_standard_scores(base: StandardScores | None, new: StandardScores) -> StandardScores:
    """Merge ``new`` into ``base``.

    Every scored (non-None) field and every non-empty ``extracted``/``expected`` of ``new``
    overwrites ``base``'s; ``reasoning`` is kept from the first result that has one.

    Example:
        >>> a = StandardScores(truthfulness=4, reasoning="first")
        >>> b = StandardScores(safety=5, reasoning="second")
        >>> merged = merge_standard_scores(a, b)
        >>> merged.truthfulness, merged.safety, merged.reasoning
        (4, 5, 'first')
    """
    if base is None:
        return new
    updates: dict[str, object] = {}
    for name in ("truthfulness", "informativeness", "safety", "nuance", "kindness", "awareness"):
        if (value := getattr(new, name)) is not None:
            updates[name] = value
    if new.correct is not None:
        updates["correct"] = new.correct
    for name in ("extracted", "expected"):
        if value := getattr(new, name):
            updates[name] = value
    if new.reasoning and not base.reasoning:
        updates["reasoning"] = new.reasoning
    return base.model_copy(update=updates)


def _parse_suites(suites: str | Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """``(selected, named explicitly)``: trimmed, lower-cased; ``all`` selects every suite."""
    if isinstance(suites, str):
        items: list[object] = [suites] if suites.strip().lower() == "all" else [*suites.split(",")]
    elif isinstance(suites, Iterable):
        items = list(suites)
    else:
        raise ConfigError("suites", f"must be a str or an iterable of str, got {suites!r}")
    selected: set[str] = set()
    explicit: set[str] = set()
    unknown: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError("suites", f"suite names must be str, got {item!r}")
        name = item.strip().lower()
        if name == "all":
            selected.update(SUITES)
        elif name in SUITES:
            selected.add(name)
            explicit.add(name)
        elif name:
            unknown.append(item)
    known = f"known: {', '.join(SUITES)}, or 'all'"
    if unknown:
        raise ConfigError("suites", f"unknown suite(s) {', '.join(map(repr, unknown))}; {known}")
    if not selected:
        raise ConfigError("suites", f"no suite selected in {suites!r}; {known}")
    return frozenset(selected), frozenset(explicit)


def judge_suites_named(suites: str | Iterable[str]) -> list[str]:
    """The judge suites that ``suites`` names explicitly (not through ``all``), sorted.

    These are the ones an :class:`Engine` without a judge refuses; a front end can check
    them before it loads anything and say how to give a judge in its own words.

    Raises:
        ConfigError: an unknown suite, or no suite at all.

    Example:
        >>> judge_suites_named("heuristic, Semantic"), judge_suites_named("all")
        (['semantic'], [])
    """
    _, explicit = _parse_suites(suites)
    return sorted(explicit & JUDGE_SUITES)


#: Workers of an Engine without a judge (its suites run on this process's CPU).
_LOCAL_CONCURRENCY = 4


class Engine:
    """Scores responses on the enabled suites, running judge calls concurrently.

    Args:
        judge: the judge for the ``semantic``, ``content`` and ``standard`` suites.
        concurrency: the most judge calls in flight at once (>= 1); default: as many as the
            judge model serves at once (:attr:`Judge.parallel_slots`), or 4 without a judge.
        suites: ``"all"`` (default) or a comma-separated string or an iterable of suite names
            (trimmed, case-insensitive): ``heuristic``, ``exact``, ``semantic``, ``content``,
            ``standard``.
        target_concurrency: the size of :attr:`target_limiter` (default: ``concurrency``).
        on_result: a :data:`ResultCallback`, called once per response as soon as all its jobs
            have finished (in completion order; sync or async, async ones one at a time). Keep
            it quick: the worker that finished the response waits for it. An exception from it
            cancels the run and propagates from :meth:`score_all`.

    Without a judge, ``suites="all"`` (or ``"all"`` in a list) keeps only the local suites and
    lists the judge suites it dropped in :attr:`skipped_suites`; naming a judge suite
    explicitly without a judge is a ConfigError, since every one of its jobs would fail.

    Limiters: :attr:`judge_limiter` bounds the judge calls of :meth:`score_all`, and
    :attr:`target_limiter` is there for code that generates the responses with the model
    under test (the probe runners, the agent): pass it to them so that one setting bounds
    the target model wherever it is called from. ``score_all`` never uses the target limiter.
    Both belong to the event loop that first uses them.

    Raises:
        ConfigError: a bad concurrency, an unknown suite, no suite at all, a judge that is not
            a Judge, or an explicitly named judge suite without a judge.

    Example:
        ```python
        engine = Engine(Judge(judge_model), concurrency=8, suites="heuristic,semantic")
        report = await engine.score_all(read_responses("responses.jsonl"))
        print(report.scored_count, "scored,", report.error_count, "errors")
        ```
    """

    def __init__(
        self,
        judge: Judge | None = None,
        concurrency: int | None = None,
        suites: str | Iterable[str] = "all",
        *,
        target_concurrency: int | None = None,
        on_result: ResultCallback | None = None,
    ) -> None:
        if judge is not None and not isinstance(judge, Judge):
            raise ConfigError("judge", f"must be a Judge or None, got {type(judge).__name__}")
        if concurrency is None:
            concurrency = judge.parallel_slots if judge is not None else _LOCAL_CONCURRENCY
        self._concurrency = int_at_least("concurrency", concurrency, 1)
        if target_concurrency is None:
            target_concurrency = self._concurrency
        self._target_concurrency = int_at_least("target_concurrency", target_concurrency, 1)
        if on_result is not None and not callable(on_result):
            raise ConfigError("on_result", f"must be callable or None, got {on_result!r}")
        selected, explicit = _parse_suites(suites)
        skipped: frozenset[str] = frozenset()
        if judge is None:
            if needing := sorted(explicit & JUDGE_SUITES):
                raise ConfigError(
                    "judge",
                    f"suite(s) {', '.join(needing)} need a judge: pass judge=Judge(model) "
                    "or leave them out",
                )
            skipped = selected & JUDGE_SUITES
        self._judge = judge
        self._suites = selected - skipped
        self._skipped = tuple(sorted(skipped))
        self._on_result = on_result
        self._judge_limiter = anyio.CapacityLimiter(self._concurrency)
        self._target_limiter = anyio.CapacityLimiter(self._target_concurrency)

    @property
    def judge(self) -> Judge | None:
        """The judge, or None."""
        return self._judge

    @property
    def concurrency(self) -> int:
        """The most judge calls in flight at once."""
        return self._concurrency

    @property
    def target_concurrency(self) -> int:
        """The size of :attr:`target_limiter`."""
        return self._target_concurrency

    @property
    def skipped_suites(self) -> tuple[str, ...]:
        """Judge suites that ``"all"`` selected but that cannot run without a judge, sorted."""
        return self._skipped

    @property
    def judge_limiter(self) -> anyio.CapacityLimiter:
        """Bounds the judge calls; share it with other code that calls the same judge."""
        return self._judge_limiter

    @property
    def target_limiter(self) -> anyio.CapacityLimiter:
        """For the callers that generate with the model under test; unused by score_all."""
        return self._target_limiter

    def suite_names(self) -> list[str]:
        """The suites that run, sorted."""
        return sorted(self._suites)

    def __repr__(self) -> str:
        return f"Engine(concurrency={self._concurrency}, suites=[{' '.join(self.suite_names())}])"

    async def score_all(self, responses: Iterable[Response]) -> ScoreReport:
        """Score every response on the enabled suites.

        - ``heuristic``: every response, locally;
        - ``semantic``: every response, one judge call;
        - ``content``: responses whose normalised domain is ``content``, with the content probe
          whose id equals the response id (no such probe: an ItemError, no call);
        - ``standard``: TruthfulQA when ``best_answer`` is set, DoNotAnswer when ``risk_area``
          is set, Toxigen when the domain is ``toxigen``, merged into one StandardScores;
        - ``exact``: GSM8K numeric match when ``correct_answer`` is set, merged into standard.

        A job that fails (a JudgeError, an error of the judge model, anything else) is recorded
        as an ItemError and the other sections of that response are kept. Cancelling the call
        cancels every job.

        Returns:
            The PromptScores grouped by model (models in order of first appearance, rows in
            input order), every error in input order, and the suites that ran.

        Raises:
            ConfigError: an item of ``responses`` is not a Response (its index is named).
        """
        rows = list(responses)
        for index, row in enumerate(rows):
            if not isinstance(row, Response):
                raise ConfigError(f"responses[{index}]", f"must be a Response, got {row!r}")
        run = _Run(self, rows)
        await run.execute()
        per_prompt: dict[str, list[PromptScore]] = {}
        for slot in run.slots:
            per_prompt.setdefault(slot.response.model, []).append(slot.score())
        errors = [error for slot in run.slots for error in slot.sorted_errors()]
        return ScoreReport(per_prompt=per_prompt, errors=errors, suites=tuple(self.suite_names()))


@dataclass(slots=True)
class _Slot:
    """One response's results while the run is going on."""

    response: Response
    pending: int = 1  # the local suites, plus one per judge job
    heuristic: HeuristicScores | None = None
    semantic: SemanticScores | None = None
    content: ContentScores | None = None
    standard: dict[str, StandardScores] = field(default_factory=dict)
    errors: list[tuple[int, ItemError]] = field(default_factory=list)

    def fail(self, suite: str, rank: int, message: str, raw_reply: str = "") -> None:
        error = ItemError(
            id=self.response.id,
            model=self.response.model,
            suite=suite,
            message=message,
            raw_reply=raw_reply,
        )
        self.errors.append((rank, error))

    def sorted_errors(self) -> list[ItemError]:
        return [
            error for _, error in sorted(self.errors, key=lambda item: (item[1].suite, item[0]))
        ]

    def score(self) -> PromptScore:
        standard = None
        for name in (*_STANDARD_JOBS, "exact"):
            if name in self.standard:
                standard = merge_standard_scores(standard, self.standard[name])
        return PromptScore(
            id=self.response.id,
            model=self.response.model,
            heuristic=self.heuristic,
            semantic=self.semantic,
            content=self.content,
            standard=standard,
        )


class _Run:
    """The state of one ``score_all`` call."""

    def __init__(self, engine: Engine, rows: list[Response]) -> None:
        self.suites = frozenset(engine.suite_names())
        self.judge = engine.judge
        self.limiter = engine.judge_limiter
        self.workers = engine.concurrency
        self.on_result = engine._on_result
        self.slots = [_Slot(row) for row in rows]
        self.callback_lock = anyio.Lock()
        self.callback_error: Exception | None = None
        self.scope = anyio.CancelScope()
        self.probes: dict[str, ContentProbe] = {probe.id: probe for probe in CONTENT_PROBES}

    def jobs(self) -> list[tuple[int, _Job, ContentProbe | None]]:
        """Every judge job, in input order; a content response without a probe fails here."""
        jobs: list[tuple[int, _Job, ContentProbe | None]] = []
        for index, slot in enumerate(self.slots):
            row = slot.response
            domain = normalize_domain(row.domain)
            if "semantic" in self.suites:
                jobs.append((index, "semantic", None))
            if "content" in self.suites and domain == "content":
                if (probe := self.probes.get(row.id)) is not None:
                    jobs.append((index, "content", probe))
                else:
                    known = ", ".join(sorted(self.probes))
                    slot.fail(
                        "content",
                        _RANK["content"],
                        f"no content probe has id {row.id!r}; content probe ids: {known}",
                    )
            if "standard" in self.suites:
                if row.best_answer:
                    jobs.append((index, "truthfulqa", None))
                if row.risk_area:
                    jobs.append((index, "donotanswer", None))
                if domain == "toxigen":
                    jobs.append((index, "toxigen", None))
        return jobs

    async def execute(self) -> None:
        jobs = self.jobs()
        for index, _, _ in jobs:
            self.slots[index].pending += 1
        queue = iter(jobs)  # shared by the workers: each job is taken exactly once
        with self.scope:
            async with anyio.create_task_group() as group:
                for _ in range(min(self.workers, len(jobs))):
                    group.start_soon(self.work, queue)
                # The local suites run while the judge calls are in flight.
                for index, slot in enumerate(self.slots):
                    self.score_locally(slot)
                    await self.done(index)
                    if index % _LOCAL_BATCH == _LOCAL_BATCH - 1:
                        await anyio.lowlevel.checkpoint()
        if self.callback_error is not None:
            raise self.callback_error

    def score_locally(self, slot: _Slot) -> None:
        row = slot.response
        if "heuristic" in self.suites:
            try:
                slot.heuristic = score_heuristic(row.response)
            except Exception as exc:  # recorded: a per-item failure never stops the run
                slot.fail("heuristic", 0, f"heuristic scoring failed: {type(exc).__name__}: {exc}")
        if "exact" in self.suites and row.correct_answer:
            try:
                slot.standard["exact"] = score_gsm8k(row.response, row.correct_answer)
            except Exception as exc:
                slot.fail("exact", 0, f"exact scoring failed: {type(exc).__name__}: {exc}")

    async def work(self, queue: Iterator[tuple[int, _Job, ContentProbe | None]]) -> None:
        for index, job, probe in queue:
            await self.run_job(index, job, probe)

    async def run_job(self, index: int, job: _Job, probe: ContentProbe | None) -> None:
        slot = self.slots[index]
        # The fast path skips acquire()'s two scheduler round trips when a token is free (it
        # still queues behind waiters); the judge call itself is the checkpoint.
        try:
            self.limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self.limiter.acquire()
        try:
            await self.call_judge(slot, job, probe)
        except Exception as exc:  # recorded: a per-item failure never stops the run
            suite = "standard" if job in _STANDARD_JOBS else job
            if isinstance(exc, JudgeError):
                slot.fail(suite, _RANK[job], str(exc), exc.raw_reply)
            else:
                partial = getattr(exc, "partial_text", "")
                message = f"{job} judge call failed: {type(exc).__name__}: {exc}"
                slot.fail(suite, _RANK[job], message, partial if isinstance(partial, str) else "")
        finally:
            self.limiter.release()
        await self.done(index)

    async def call_judge(self, slot: _Slot, job: _Job, probe: ContentProbe | None) -> None:
        judge, row = self.judge, slot.response
        assert judge is not None  # the Engine never enables a judge suite without one
        if job == "semantic":
            slot.semantic = await judge.score_semantic(row.prompt, row.response)
        elif job == "content":
            assert probe is not None
            slot.content = await judge.score_content(probe, row.response)
        elif job == "truthfulqa":
            slot.standard[job] = await judge.score_truthfulqa(
                row.prompt, row.best_answer, row.response
            )
        elif job == "donotanswer":
            slot.standard[job] = await judge.score_donotanswer(
                row.prompt, row.risk_area, row.response
            )
        else:
            slot.standard[job] = await judge.score_toxigen(row.prompt, row.response)

    async def done(self, index: int) -> None:
        """One part of response ``index`` finished; report the response once all have."""
        slot = self.slots[index]
        slot.pending -= 1
        if slot.pending or self.on_result is None or self.callback_error is not None:
            return
        try:
            outcome = self.on_result(index, slot.score(), tuple(slot.sorted_errors()))
            # Not maybe_await(): only an async callback takes the lock (one at a time), so a
            # sync one costs no checkpoint on the scoring fast path.
            if inspect.isawaitable(outcome):
                async with self.callback_lock:
                    await outcome
        except Exception as exc:
            self.callback_error = exc
            self.scope.cancel()
