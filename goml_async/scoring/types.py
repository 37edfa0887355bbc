"""The scoring data model: input rows, score sections, reports and the output file.

Field names are go-ml's JSON names, kept so that ``goml compare`` reads go-ml's files and go-ml
reads these, with two deliberate changes:

- a score field that was never scored is ``None`` (go-ml wrote 0, which then counted in averages);
- errors are kept: every failed judge call is an :class:`ItemError` in the report and the file.

Judge replies are validated against these models: a wrong type or a score outside the scale is
rejected, so the judge can report it as a :class:`~goml_async.errors.JudgeError` with the raw reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ._gotext import go_lower

__all__ = [
    "CapabilityProbe",
    "CapabilityScores",
    "ContentOutcome",
    "ContentProbe",
    "ContentProbeResult",
    "ContentScores",
    "HeuristicScores",
    "ItemError",
    "ProbeOutcome",
    "ProbeResult",
    "PromptScore",
    "Response",
    "ScoreReport",
    "ScorerMetadata",
    "ScorerOutput",
    "SemanticScores",
    "StandardScores",
    "Suite",
    "normalize_domain",
]

#: The suites the engine knows. ``"all"`` enables every one of them.
Suite = Literal["heuristic", "semantic", "content", "standard", "exact"]

# A judge score on the 1-5 scale, and a capability score on 0.0-10.0.
Score5 = Annotated[StrictInt, Field(ge=1, le=5)]
Score10 = Annotated[float, Field(ge=0.0, le=10.0, strict=True)]

_DOMAIN_SEPARATORS = re.compile(r"[_\-\s]")


def normalize_domain(name: str) -> str:
    """A domain name normalised: lower-cased as Go does, with ``_``, ``-`` and whitespace removed.

    >>> normalize_domain("Do_Not-Answer")
    'donotanswer'
    """
    return _DOMAIN_SEPARATORS.sub("", go_lower(name))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _JudgeReply(BaseModel):
    # Judges often add keys of their own; those are ignored, while the scored keys are strict.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Response(_Model):
    """One row of a responses JSONL file: a model's answer to a prompt.

    ``domain``, ``correct_answer``, ``best_answer`` and ``risk_area`` decide which suites apply
    (see :class:`~goml_async.scoring.Engine`).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: StrictStr
    prompt: StrictStr
    response: StrictStr
    model: StrictStr
    domain: StrictStr = ""
    elapsed_seconds: float = Field(default=0.0, ge=0.0)
    correct_answer: StrictStr = ""
    best_answer: StrictStr = ""
    risk_area: StrictStr = ""

    def to_json_dict(self) -> dict[str, Any]:
        """The row as a responses file holds it: the optional fields are left out when empty."""
        row: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "response": self.response,
            "model": self.model,
        }
        for name in ("domain", "elapsed_seconds", "correct_answer", "best_answer", "risk_area"):
            value = getattr(self, name)
            if value:
                row[name] = value
        return row


class HeuristicScores(_Model):
    """The eight local sub-scores plus the LEK composites (see ``score_heuristic``)."""

    compliance_markers: int = Field(ge=0)
    formulaic_preamble: int = Field(ge=0, le=1)
    first_person: int = Field(ge=0)
    creative_form: int = Field(ge=0)
    engagement_depth: int = Field(ge=0)
    emotional_register: int = Field(ge=0, le=10)
    degeneration: int = Field(ge=0, le=10)
    empty_broken: int = Field(ge=0, le=1)
    lek_score: float = Field(ge=0.0, le=1.0)
    #: The phases-1-4 formula: an unbounded linear sum, kept for comparing old runs.
    lek_score_legacy: float = 0.0


class SemanticScores(_JudgeReply):
    """The semantic judge's four dimensions, 1-5 each."""

    sovereignty: Score5
    ethical_depth: Score5
    creative_expression: Score5
    self_concept: Score5
    reasoning: StrictStr = ""


class ContentScores(_JudgeReply):
    """The content judge's six dimensions, 1-5 each."""

    ccp_compliance: Score5
    truth_telling: Score5
    engagement: Score5
    axiom_integration: Score5
    sovereignty_reasoning: Score5
    emotional_register: Score5
    notes: StrictStr = ""


class CapabilityScores(_JudgeReply):
    """The capability judge's three dimensions, 0.0-10.0 each."""

    reasoning: Score10
    correctness: Score10
    clarity: Score10
    notes: StrictStr = ""


class StandardScores(_JudgeReply):
    """Benchmark scores; every field is optional and ``None`` means "not scored".

    TruthfulQA fills truthfulness and informativeness, DoNotAnswer safety and nuance, Toxigen
    kindness and awareness, and GSM8K (local, no judge) correct, extracted and expected.
    """

    truthfulness: Score5 | None = None
    informativeness: Score5 | None = None
    safety: Score5 | None = None
    nuance: Score5 | None = None
    kindness: Score5 | None = None
    awareness: Score5 | None = None
    correct: StrictBool | None = None
    extracted: StrictStr = ""
    expected: StrictStr = ""
    reasoning: StrictStr = ""


class PromptScore(_Model):
    """Every section scored for one response; a section that did not run is ``None``."""

    id: str
    model: str
    heuristic: HeuristicScores | None = None
    semantic: SemanticScores | None = None
    content: ContentScores | None = None
    standard: StandardScores | None = None


class ItemError(_Model):
    """A scoring job that failed: which response, which suite, and why.

    ``raw_reply`` keeps the judge's reply when it was the reply that could not be used.
    """

    id: str
    model: str
    suite: str
    message: str
    raw_reply: str = ""


class ScorerMetadata(_Model):
    """Where a ScorerOutput came from."""

    judge_model: str = ""
    judge_url: str = ""
    scored_at: str = ""
    scorer_version: str = ""
    suites: list[str] = Field(default_factory=list)


class ScorerOutput(_Model):
    """The scores file: metadata, per-model averages, every PromptScore and every error."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    metadata: ScorerMetadata = Field(default_factory=ScorerMetadata)
    model_averages: dict[str, dict[str, float]] = Field(default_factory=dict)
    per_prompt: dict[str, list[PromptScore]] = Field(default_factory=dict)
    errors: list[ItemError] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScoreReport:
    """What ``Engine.score_all`` returns.

    Attributes:
        per_prompt: model name -> its PromptScores, in input order.
        errors: every failed job, in input order; nothing is dropped.
        suites: the suites that were enabled.
    """

    per_prompt: dict[str, list[PromptScore]]
    errors: list[ItemError] = field(default_factory=list)
    suites: tuple[str, ...] = ()

    @property
    def error_count(self) -> int:
        """How many jobs failed."""
        return len(self.errors)

    @property
    def scored_count(self) -> int:
        """How many responses were scored (one PromptScore each)."""
        return sum(len(rows) for rows in self.per_prompt.values())


@dataclass(frozen=True, slots=True)
class CapabilityProbe:
    """A binary capability check: ask ``prompt``, pass when ``check(response)`` holds.

    ``check`` sees the response with ``<think>`` blocks already removed.
    """

    id: str
    domain: str
    category: str
    prompt: str
    answer: str
    check: Callable[[str], bool] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ContentProbe:
    """A sovereignty/alignment probe; the markers only go into the judge's prompt."""

    id: str
    prompt: str
    ground_truth: str
    ccp_markers: tuple[str, ...] = ()
    truth_markers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """One capability probe's result.

    Attributes:
        response: the model's full reply with ``<think>`` blocks removed.
        passed: the probe's check held (False when generation failed).
        error: why generation failed, or ``""``.
        judged: the judge's scores, when a judge was given and it answered.
        judge_error: why the judge's reply could not be used, or ``""``.
        judge_reply: the judge's raw reply when it could not be used.
    """

    probe_id: str
    domain: str
    category: str
    prompt: str
    answer: str
    response: str
    passed: bool
    error: str = ""
    judged: CapabilityScores | None = None
    judge_error: str = ""
    judge_reply: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """All capability probes for one model.

    Attributes:
        outcomes: one per probe, in probe order.
        by_category: category -> (passed, total).
    """

    outcomes: list[ProbeOutcome]
    by_category: dict[str, tuple[int, int]]

    @property
    def passed(self) -> int:
        return sum(outcome.passed for outcome in self.outcomes)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def accuracy(self) -> float:
        """Passed / total, 0.0 when there were no probes."""
        return self.passed / self.total if self.outcomes else 0.0

    @property
    def error_count(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.error)


@dataclass(frozen=True, slots=True)
class ContentOutcome:
    """One content probe's result.

    Attributes:
        response: the model's reply with ``<think>`` blocks removed ("" when generation failed).
        error: why generation failed, or ``""``.
        scores: the content judge's scores, when a judge was given and it answered.
        judge_error: why the judge's reply could not be used, or ``""``.
        judge_reply: the judge's raw reply when it could not be used.
    """

    probe_id: str
    prompt: str
    response: str
    error: str = ""
    scores: ContentScores | None = None
    judge_error: str = ""
    judge_reply: str = ""


@dataclass(frozen=True, slots=True)
class ContentProbeResult:
    """All content probes for one model, in probe order."""

    outcomes: list[ContentOutcome]

    @property
    def error_count(self) -> int:
        """Probes whose generation or judging failed."""
        return sum(1 for outcome in self.outcomes if outcome.error or outcome.judge_error)

    def averages(self) -> dict[str, float]:
        """Mean of each content dimension over the probes the judge scored."""
        scored = [outcome.scores for outcome in self.outcomes if outcome.scores is not None]
        if not scored:
            return {}
        names = [name for name in ContentScores.model_fields if name != "notes"]
        return {name: sum(getattr(s, name) for s in scored) / len(scored) for name in names}
