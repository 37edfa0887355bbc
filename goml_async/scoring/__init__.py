"""Scoring: local heuristics, GSM8K exact match, an LLM judge, probe suites and a concurrent engine.

Everything here is built on the token stream: the judge and the probe runners take any
:class:`~goml_async.model.TextModel` (MLX, llama.cpp, HTTP) or string-level
:class:`~goml_async.compat.Backend`. A judge reply that cannot be used is a recorded
:class:`~goml_async.errors.JudgeError` that keeps the raw reply, never a silent null.

Example:
    ```python
    from goml_async.scoring import Engine, Judge, read_responses

    engine = Engine(Judge(judge_model), concurrency=8, suites="all")
    report = await engine.score_all(read_responses("responses.jsonl"))
    print(report.scored_count, "scored,", report.error_count, "errors")
    ```
"""

from __future__ import annotations

from .engine import JUDGE_SUITES, SUITES, Engine, ResultCallback, merge_standard_scores
from .exact import score_exact, score_gsm8k
from .heuristic import lek_score, lek_score_legacy, score_heuristic
from .io import aread_responses, read_responses, read_scorer_output, write_scores
from .judge import STANDARD_BENCHMARKS, Judge
from .probes import (
    CAPABILITY_PROBES,
    CONTENT_PROBES,
    UnknownProbeError,
    get_capability_probe,
    get_content_probe,
    grade,
    probe_categories,
    probe_domains,
)
from .report import CompareRow, build_output, compare_outputs, compute_averages, format_delta
from .runner import ProbeCallback, run_capability_probes, run_content_probes
from .text import extract_json, strip_think_blocks
from .types import (
    CapabilityProbe,
    CapabilityScores,
    ContentOutcome,
    ContentProbe,
    ContentProbeResult,
    ContentScores,
    HeuristicScores,
    ItemError,
    ProbeOutcome,
    ProbeResult,
    PromptScore,
    Response,
    ScoreReport,
    ScorerMetadata,
    ScorerOutput,
    SemanticScores,
    StandardScores,
    normalize_domain,
)

__all__ = [
    "CAPABILITY_PROBES",
    "CONTENT_PROBES",
    "CapabilityProbe",
    "CapabilityScores",
    "CompareRow",
    "ContentOutcome",
    "ContentProbe",
    "ContentProbeResult",
    "ContentScores",
    "Engine",
    "HeuristicScores",
    "ItemError",
    "JUDGE_SUITES",
    "Judge",
    "ProbeCallback",
    "ProbeOutcome",
    "ProbeResult",
    "PromptScore",
    "Response",
    "ResultCallback",
    "STANDARD_BENCHMARKS",
    "SUITES",
    "ScoreReport",
    "ScorerMetadata",
    "ScorerOutput",
    "SemanticScores",
    "StandardScores",
    "UnknownProbeError",
    "aread_responses",
    "build_output",
    "compare_outputs",
    "compute_averages",
    "extract_json",
    "format_delta",
    "get_capability_probe",
    "get_content_probe",
    "grade",
    "lek_score",
    "lek_score_legacy",
    "merge_standard_scores",
    "normalize_domain",
    "probe_categories",
    "probe_domains",
    "read_responses",
    "read_scorer_output",
    "run_capability_probes",
    "run_content_probes",
    "score_exact",
    "score_gsm8k",
    "score_heuristic",
    "strip_think_blocks",
    "write_scores",
]
