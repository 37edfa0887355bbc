"""Engine.score_all: bounded concurrency, ordering, error recording, merging, cancellation."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from goml_async import GenerationError, GenOpts, Message, Result
from goml_async.errors import ConfigError
from goml_async.scoring.engine import (
    JUDGE_SUITES,
    SUITES,
    Engine,
    judge_suites_named,
    merge_standard_scores,
)
from goml_async.scoring.judge import Judge
from goml_async.scoring.probes import CONTENT_PROBES
from goml_async.scoring.types import ItemError, PromptScore, Response, StandardScores

from .free_text import FreeTextModel

pytestmark = pytest.mark.anyio

NUMBER = re.compile(r"answer #(\d+)#")
RUBRIC_MARKERS = (
    ("semantic", "expert evaluator for AI model behavioral analysis"),
    ("content", "CCP MARKERS:"),
    ("truthfulqa", "You are a truthfulness judge."),
    ("donotanswer", "potentially harmful question"),
    ("toxigen", "continuation of a statement"),
)


def text_of(subject: object) -> str:
    """The judge prompt in what a FreeTextModel saw (the judge chats: one user message)."""
    assert isinstance(subject, list) and len(subject) == 1
    message = subject[0]
    assert isinstance(message, Message) and message.role == "user"
    return message.content


def rubric_of(prompt: str) -> str:
    for rubric, marker in RUBRIC_MARKERS:
        if marker in prompt:
            return rubric
    raise AssertionError(f"not a judge prompt: {prompt[:60]!r}")


def number_of(prompt: str) -> int:
    match = NUMBER.search(prompt)
    assert match is not None, prompt[-200:]
    return int(match.group(1))


def scores_for(rubric: str, n: int) -> dict[str, Any]:
    """A valid reply whose values depend on the item, so a misplaced result shows."""
    a, b = n % 5 + 1, (n + 2) % 5 + 1
    return {
        "semantic": {
            "sovereignty": a,
            "ethical_depth": b,
            "creative_expression": a,
            "self_concept": b,
            "reasoning": f"semantic {n}",
        },
        "content": {
            "ccp_compliance": a,
            "truth_telling": b,
            "engagement": a,
            "axiom_integration": b,
            "sovereignty_reasoning": a,
            "emotional_register": b,
            "notes": f"content {n}",
        },
        "truthfulqa": {"truthfulness": a, "informativeness": b, "reasoning": f"tqa {n}"},
        "donotanswer": {"safety": a, "nuance": b, "reasoning": f"dna {n}"},
        "toxigen": {"kindness": a, "awareness": b, "reasoning": f"tox {n}"},
    }[rubric]


def chunks(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def scripted_judge(
    *, delay: float = 0.0, seed: int = 7, garbage_every: int = 0, fail_every: int = 0
) -> FreeTextModel:
    """A judge model: valid JSON per rubric, 1-4 tokens each (so a random latency)."""
    rng = random.Random(seed)

    def reply(prompt: object) -> list[str]:
        text = text_of(prompt)
        n = number_of(text)
        if fail_every and n % fail_every == 0:
            raise GenerationError(f"judge down for {n}")
        if garbage_every and n % garbage_every == 0:
            return [f"I refuse to score #{n}."]
        return chunks(json.dumps(scores_for(rubric_of(text), n)), rng.randint(1, 4))

    return FreeTextModel(reply, delay=delay)


def response(n: int, *, model: str = "m", **fields: Any) -> Response:
    values: dict[str, Any] = {
        "id": f"item-{n}",
        "prompt": f"prompt {n}",
        "response": f"answer #{n}#",
    }
    values.update(fields)
    return Response(model=model, **values)


class SlowBackend:
    """A string Backend whose calls sleep; counts calls that are running and that ended."""

    name = "slow"

    def __init__(self, seconds: float, reply: str = "{}", *, expect: int = 0) -> None:
        self.seconds = seconds
        self.reply = reply
        self.expect = expect
        self.expected_started = anyio.Event()  # set when ``expect`` calls have started
        self.started = 0
        self.active = 0
        self.cleaned_up = 0

    def available(self) -> bool:
        return True

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        self.started += 1
        if self.started == self.expect:
            self.expected_started.set()
        self.active += 1
        try:
            await anyio.sleep(self.seconds)
            return Result(text=self.reply)
        finally:
            self.active -= 1
            self.cleaned_up += 1

    async def chat(self, messages: Sequence[Any], opts: GenOpts | None = None) -> Result:
        raise NotImplementedError


# -- the race -------------------------------------------------------------------------------------


def mixed_responses(count: int) -> list[Response]:
    """Interleaved models; every benchmark kind and a few content probes."""
    probe_ids = [probe.id for probe in CONTENT_PROBES]
    rows = []
    for n in range(count):
        fields: dict[str, Any] = {"model": f"model-{n % 3}"}
        if n % 4 == 1:
            fields["best_answer"] = f"best {n}"
        if n % 5 == 2:
            fields["risk_area"] = f"risk {n}"
        if n % 6 == 3:
            fields["domain"] = "Toxigen"
        if n % 9 == 4:
            fields["correct_answer"] = str(n)
            fields["response"] = f"answer #{n}# so #### {n}"
        if n % 25 == 0:
            fields["domain"] = "content"
            fields["id"] = probe_ids[(n // 25) % len(probe_ids)]
        rows.append(response(n, **fields))
    return rows


def expected_jobs(rows: list[Response]) -> Counter[tuple[str, int]]:
    jobs: Counter[tuple[str, int]] = Counter()
    for n, row in enumerate(rows):
        jobs["semantic", n] += 1
        if row.domain == "content":
            jobs["content", n] += 1
        if row.best_answer:
            jobs["truthfulqa", n] += 1
        if row.risk_area:
            jobs["donotanswer", n] += 1
        if row.domain == "Toxigen":
            jobs["toxigen", n] += 1
    return jobs


@pytest.mark.parametrize("concurrency", [1, 5, 16])
async def test_many_items_bounded_ordered_each_job_once(concurrency: int) -> None:
    rows = mixed_responses(240)
    model = scripted_judge(delay=0.0005, seed=concurrency)
    engine = Engine(Judge(model), concurrency=concurrency)
    report = await engine.score_all(rows)

    assert model.max_concurrency == concurrency
    sent = Counter((rubric_of(text_of(p)), number_of(text_of(p))) for p, _ in model.calls)
    assert sent == expected_jobs(rows)
    assert report.errors == []
    assert report.suites == SUITES
    # Grouped by model, models in order of first appearance, rows in input order.
    assert list(report.per_prompt) == ["model-0", "model-1", "model-2"]
    for name, scores in report.per_prompt.items():
        assert [s.id for s in scores] == [r.id for r in rows if r.model == name]
    assert report.scored_count == len(rows)
    # Every result sits on the row it belongs to.
    by_model = {name: iter(scores) for name, scores in report.per_prompt.items()}
    for n, row in enumerate(rows):
        score = next(by_model[row.model])
        a, b = n % 5 + 1, (n + 2) % 5 + 1
        assert score.heuristic is not None
        assert score.semantic is not None and score.semantic.reasoning == f"semantic {n}"
        assert (score.semantic.sovereignty, score.semantic.ethical_depth) == (a, b)
        if row.domain == "content":
            assert score.content is not None and score.content.notes == f"content {n}"
        else:
            assert score.content is None
        standard = score.standard
        if row.best_answer or row.risk_area or row.domain == "Toxigen" or row.correct_answer:
            assert standard is not None
            assert standard.truthfulness == (a if row.best_answer else None)
            assert standard.safety == (a if row.risk_area else None)
            assert standard.kindness == (a if row.domain == "Toxigen" else None)
            assert standard.correct == (True if row.correct_answer else None)
        else:
            assert standard is None


async def test_failing_judge_calls_become_item_errors_and_the_rest_is_scored() -> None:
    rows = [
        response(n, **({"domain": "toxigen"} if n % 2 else {"best_answer": "b"}))
        for n in range(1, 211)
    ]
    model = scripted_judge(delay=0.0002, garbage_every=7, fail_every=11)
    report = await Engine(Judge(model), concurrency=6).score_all(rows)

    failing = [n for n in range(1, 211) if n % 7 == 0 or n % 11 == 0]
    # Two judge jobs per row (semantic + one standard); both fail for a failing row.
    assert len(report.errors) == 2 * len(failing)
    assert report.error_count == len(report.errors)
    assert [e.id for e in report.errors] == [f"item-{n}" for n in failing for _ in range(2)]
    assert [e.suite for e in report.errors] == ["semantic", "standard"] * len(failing)
    for error in report.errors:
        n = int(error.id.removeprefix("item-"))
        if n % 11 == 0:
            assert "GenerationError: judge down" in error.message
            assert error.raw_reply == ""
        else:
            assert error.raw_reply == f"I refuse to score #{n}."
            assert "judge" in error.message
    # Every row is still reported, with its heuristic and the sections that did work.
    scores = report.per_prompt["m"]
    assert report.scored_count == len(rows) == len(scores)
    for n, score in enumerate(scores, start=1):
        assert score.heuristic is not None
        assert (score.semantic is None) == (n in failing)
        assert (score.standard is None) == (n in failing)
    assert len(model.calls) == 2 * len(rows)


async def test_a_job_error_names_the_benchmark() -> None:
    model = FreeTextModel(["not json"])
    rows = [response(1, risk_area="weapons")]
    report = await Engine(Judge(model), suites="standard").score_all(rows)
    (error,) = report.errors
    assert error == ItemError(
        id="item-1",
        model="m",
        suite="standard",
        message=error.message,
        raw_reply="not json",
    )
    assert error.message.startswith("donotanswer judge")


async def test_cancelling_score_all_cancels_every_job() -> None:
    backend = SlowBackend(seconds=30, expect=4)
    engine = Engine(Judge(backend), concurrency=4, suites="semantic")
    finished = False

    async def score() -> None:
        nonlocal finished
        await engine.score_all([response(n) for n in range(50)])
        finished = True

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(score)
            await backend.expected_started.wait()
            await anyio.sleep(0.05)  # time for a fifth call, if anything let one through
            group.cancel_scope.cancel()
    assert not finished
    assert backend.started == 4  # the limiter held the rest back
    assert backend.active == 0
    assert backend.cleaned_up == 4
    await anyio.sleep(0.05)
    assert backend.started == 4  # nothing left running to start another call


async def test_runs_over_a_backend_judge() -> None:
    reply = json.dumps(scores_for("semantic", 3))
    backend = SlowBackend(seconds=0.001, reply=reply)
    report = await Engine(Judge(backend), suites=["semantic"]).score_all(
        [response(n) for n in range(10)]
    )
    assert report.errors == []
    assert all(s.semantic is not None for s in report.per_prompt["m"])


# -- content, standard, exact ---------------------------------------------------------------------


async def test_content_uses_the_probe_with_the_response_id_and_records_a_missing_one() -> None:
    probe = CONTENT_PROBES[0]
    rows = [
        response(1, id=probe.id, domain="Content"),
        response(2, id="no-such-probe", domain="content"),
        response(3, id=probe.id),  # not a content row: no content job
    ]
    model = scripted_judge()
    report = await Engine(Judge(model), suites="content").score_all(rows)
    assert len(model.calls) == 1
    sent = text_of(model.calls[0][0])
    assert probe.ground_truth in sent and "answer #1#" in sent
    first, second, third = report.per_prompt["m"]
    assert first.content is not None and first.content.notes == "content 1"
    assert second.content is None and third.content is None
    (error,) = report.errors
    assert (error.id, error.suite) == ("no-such-probe", "content")
    assert "no content probe has id 'no-such-probe'" in error.message
    assert probe.id in error.message


async def test_standard_results_merge_in_a_fixed_order() -> None:
    def reply(prompt: object) -> list[str]:
        rubric = rubric_of(text_of(prompt))
        scores = scores_for(rubric, 1)
        if rubric == "truthfulqa":
            scores["reasoning"] = ""  # so the reasoning comes from the next one that has it
        return [json.dumps(scores)]

    row = response(
        1,
        best_answer="b",
        risk_area="r",
        domain="toxigen",
        correct_answer="42",
        response="answer #1# #### 42",
    )
    report = await Engine(Judge(FreeTextModel(reply))).score_all([row])
    standard = report.per_prompt["m"][0].standard
    assert standard is not None
    assert (standard.truthfulness, standard.informativeness) == (2, 4)
    assert (standard.safety, standard.nuance) == (2, 4)
    assert (standard.kindness, standard.awareness) == (2, 4)
    assert standard.correct is True
    assert (standard.extracted, standard.expected) == ("42", "42")
    assert standard.reasoning == "dna 1"


def test_merge_standard_scores_rules() -> None:
    first = StandardScores(truthfulness=3, informativeness=2, reasoning="first")
    second = StandardScores(truthfulness=5, safety=4, reasoning="second")
    merged = merge_standard_scores(first, second)
    assert (merged.truthfulness, merged.informativeness, merged.safety) == (5, 2, 4)
    assert merged.reasoning == "first"
    exact = StandardScores(correct=False, extracted="7", expected="8")
    merged = merge_standard_scores(merged, exact)
    assert (merged.correct, merged.extracted, merged.expected) == (False, "7", "8")
    # None and "" never overwrite.
    again = merge_standard_scores(merged, StandardScores(reasoning="third"))
    assert again == merged
    assert merge_standard_scores(None, second) is second
    assert first == StandardScores(truthfulness=3, informativeness=2, reasoning="first")


async def test_exact_runs_inline_without_a_judge() -> None:
    rows = [
        response(1, correct_answer="12", response="3 * 4 = 12"),
        response(2, correct_answer="12", response="It is 13."),
        response(3),
    ]
    engine = Engine(None, suites="heuristic, exact")
    report = await engine.score_all(rows)
    one, two, three = report.per_prompt["m"]
    assert one.standard is not None and one.standard.correct is True
    assert two.standard is not None and two.standard.correct is False
    assert three.standard is None
    assert all(s.heuristic is not None for s in (one, two, three))
    assert report.errors == []
    assert report.suites == ("exact", "heuristic")


# -- configuration --------------------------------------------------------------------------------


async def test_without_a_judge_all_keeps_the_local_suites() -> None:
    engine = Engine()
    assert engine.suite_names() == ["exact", "heuristic"]
    assert engine.skipped_suites == ("content", "semantic", "standard")
    report = await engine.score_all([response(1, best_answer="b", domain="content")])
    assert report.errors == []
    (score,) = report.per_prompt["m"]
    assert score.heuristic is not None
    assert score.semantic is None and score.standard is None and score.content is None
    assert Engine(Judge(scripted_judge())).skipped_suites == ()


@pytest.mark.parametrize("suites", ["semantic", "heuristic,standard", ["content"], "all,content"])
def test_naming_a_judge_suite_without_a_judge_is_a_config_error(suites: Any) -> None:
    with pytest.raises(ConfigError, match="need a judge"):
        Engine(None, suites=suites)


@pytest.mark.parametrize(
    ("suites", "named"),
    [
        ("all", []),
        ("heuristic, Semantic", ["semantic"]),
        (["standard", "content", "exact"], ["content", "standard"]),
        ("all,semantic", ["semantic"]),
    ],
)
def test_judge_suites_named_lists_the_explicit_ones(suites: Any, named: list[str]) -> None:
    assert judge_suites_named(suites) == named


def test_judge_suites_named_refuses_unknown_suites() -> None:
    with pytest.raises(ConfigError, match=r"unknown suite\(s\) 'vibes'"):
        judge_suites_named("heuristic,vibes")


@pytest.mark.parametrize(
    ("suites", "names"),
    [
        ("all", list(SUITES)),
        ("  ALL ", list(SUITES)),
        (" Heuristic , SEMANTIC ,", ["heuristic", "semantic"]),
        (["standard", "Exact"], ["exact", "standard"]),
        (("semantic", "all"), list(SUITES)),
    ],
)
def test_suite_parsing(suites: Any, names: list[str]) -> None:
    engine = Engine(Judge(scripted_judge()), concurrency=3, suites=suites)
    assert engine.suite_names() == names
    assert repr(engine) == f"Engine(concurrency=3, suites=[{' '.join(names)}])"


@pytest.mark.parametrize(
    ("suites", "match"),
    [
        ("heuristic,semantc", r"unknown suite\(s\) 'semantc'; known: content, exact, heuristic"),
        ("", "no suite selected"),
        (" , ", "no suite selected"),
        ([], "no suite selected"),
        ([1], "must be str"),
        (3, "must be a str or an iterable"),
    ],
)
def test_bad_suites_are_config_errors(suites: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Engine(Judge(scripted_judge()), suites=suites)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "4"])
def test_bad_concurrency_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        Engine(concurrency=value)
    with pytest.raises(ConfigError, match="target_concurrency"):
        Engine(target_concurrency=value)


async def test_the_judge_limiter_is_shared_with_other_holders() -> None:
    model = scripted_judge(delay=0.001)
    engine = Engine(Judge(model), concurrency=3, suites="semantic")
    others = [object(), object()]
    for other in others:
        await engine.judge_limiter.acquire_on_behalf_of(other)
    try:
        report = await engine.score_all([response(n) for n in range(1, 21)])
    finally:
        for other in others:
            engine.judge_limiter.release_on_behalf_of(other)
    assert report.errors == []
    assert len(model.calls) == 20
    assert model.max_concurrency == 1  # two of the three tokens were taken elsewhere


def test_concurrency_defaults_to_what_the_judge_model_serves_at_once() -> None:
    judge_model = FreeTextModel(["{}"])
    judge_model.batch_concurrency = 6  # its parallel_slots
    judge = Judge(judge_model)
    assert judge.parallel_slots == 6
    engine = Engine(judge)
    assert engine.concurrency == engine.target_concurrency == 6
    assert engine.judge_limiter.total_tokens == 6
    assert Engine(judge, concurrency=2).concurrency == 2
    assert Engine(suites="heuristic").concurrency == 4  # no judge: local work only


def test_limiters_and_properties() -> None:
    judge = Judge(scripted_judge())
    engine = Engine(judge, concurrency=3)
    assert engine.judge is judge
    assert engine.judge_limiter.total_tokens == 3
    assert engine.target_limiter.total_tokens == 3
    assert engine.target_limiter is not engine.judge_limiter
    engine = Engine(judge, concurrency=3, target_concurrency=1)
    assert (engine.concurrency, engine.target_concurrency) == (3, 1)
    assert engine.target_limiter.total_tokens == 1
    assert {"content", "semantic", "standard"} == JUDGE_SUITES
    with pytest.raises(ConfigError, match="judge: must be a Judge"):
        Engine(scripted_judge())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_result"):
        Engine(on_result=3)  # type: ignore[arg-type]


async def test_a_non_response_is_named_by_index() -> None:
    rows: list[Any] = [response(0), response(1), {"id": "x"}]
    with pytest.raises(ConfigError, match=r"responses\[2\]: must be a Response"):
        await Engine().score_all(rows)


async def test_an_empty_input_gives_an_empty_report() -> None:
    report = await Engine(Judge(scripted_judge())).score_all([])
    assert report.per_prompt == {} and report.errors == []


# -- on_result ------------------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_on_result_reports_every_response_once_when_complete(asynchronous: bool) -> None:
    seen: list[tuple[int, PromptScore, tuple[ItemError, ...]]] = []

    def record(index: int, score: PromptScore, errors: Sequence[ItemError]) -> None:
        seen.append((index, score, tuple(errors)))

    async def record_async(index: int, score: PromptScore, errors: Sequence[ItemError]) -> None:
        await anyio.lowlevel.checkpoint()
        record(index, score, errors)

    rows = [response(n, best_answer="b") for n in range(1, 41)]
    engine = Engine(
        Judge(scripted_judge(delay=0.0005, garbage_every=7)),
        concurrency=4,
        on_result=record_async if asynchronous else record,
    )
    report = await engine.score_all(rows)
    assert sorted(index for index, _, _ in seen) == list(range(40))
    for index, score, errors in seen:
        assert score == report.per_prompt["m"][index]
        assert score.heuristic is not None
        n = index + 1
        if n % 7 == 0:
            assert [e.suite for e in errors] == ["semantic", "standard"]
        else:
            assert errors == () and score.semantic is not None and score.standard is not None


async def test_an_on_result_error_cancels_the_run_and_propagates() -> None:
    backend = SlowBackend(seconds=0.01, reply=json.dumps(scores_for("semantic", 0)))

    def explode(index: int, score: PromptScore, errors: Sequence[ItemError]) -> None:
        if index == 3:
            raise RuntimeError("progress bar broke")

    engine = Engine(Judge(backend), concurrency=2, suites="semantic", on_result=explode)
    with pytest.raises(RuntimeError, match="progress bar broke"):
        await engine.score_all([response(n) for n in range(100)])
    assert backend.active == 0
    assert backend.started < 100
