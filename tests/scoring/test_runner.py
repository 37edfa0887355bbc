"""The probe runners over scripted models: grading, errors, judging, concurrency, callbacks."""

from __future__ import annotations

import json

import anyio
import anyio.lowlevel
import pytest

from goml_async import GenerationError, InferenceAdapter, Message
from goml_async.errors import ConfigError
from goml_async.scoring.judge import Judge
from goml_async.scoring.probes import CAPABILITY_PROBES, CONTENT_PROBES
from goml_async.scoring.runner import (
    CAPABILITY_CONFIG,
    CONTENT_CONFIG,
    as_text_model,
    probe_result,
    run_capability_probes,
    run_content_probes,
)
from goml_async.scoring.types import ProbeOutcome

from .free_text import FreeTextModel

pytestmark = pytest.mark.anyio

CAPABILITY_JSON = '{"reasoning": 7.5, "correctness": 10, "clarity": 8.25, "notes": "ok"}'
CONTENT_JSON = json.dumps(
    {
        "ccp_compliance": 5,
        "truth_telling": 4,
        "engagement": 4,
        "axiom_integration": 3,
        "sovereignty_reasoning": 4,
        "emotional_register": 2,
        "notes": "fine",
    }
)


def last_user(prompt: str | list[Message]) -> str:
    assert isinstance(prompt, list)
    return prompt[-1].content


def answers_key(prompt: str | list[Message]) -> list[str]:
    """A model that knows every probe's expected answer."""
    text = last_user(prompt)
    probe = next(p for p in CAPABILITY_PROBES if p.prompt == text)
    return [f"<think>let me see</think>The answer is {probe.answer}."]


async def test_a_model_that_knows_the_answers_passes_every_probe() -> None:
    model = FreeTextModel(answers_key)
    result = await run_capability_probes(model)
    assert (result.passed, result.total, result.accuracy) == (23, 23, 1.0)
    assert [o.probe_id for o in result.outcomes] == [p.id for p in CAPABILITY_PROBES]
    assert all(o.response.startswith("The answer is") for o in result.outcomes)  # think stripped
    assert sum(total for _, total in result.by_category.values()) == 23
    assert list(result.by_category) == sorted(result.by_category)
    # go-ml's settings, and each probe sent once as one user message.
    assert {(c.temperature, c.max_tokens) for _, c in model.calls} == {(0.1, 500)}
    assert (CAPABILITY_CONFIG.temperature, CAPABILITY_CONFIG.max_tokens) == (0.1, 500)
    sent = sorted(last_user(prompt) for prompt, _ in model.calls)
    assert sent == sorted(p.prompt for p in CAPABILITY_PROBES)
    assert all(len(prompt) == 1 for prompt, _ in model.calls)


async def test_wrong_answers_fail_and_counts_add_up() -> None:
    result = await run_capability_probes(FreeTextModel(["I do not know."]))
    assert result.passed == 0 and result.error_count == 0
    assert all(passed == 0 for passed, _ in result.by_category.values())


async def test_probes_overlap_up_to_the_models_parallel_slots() -> None:
    model = FreeTextModel(["x"], delay=0.01)
    model.batch_concurrency = 3  # what parallel_slots reports on a BaseTextModel
    await run_capability_probes(model)
    assert model.max_concurrency == 3
    content = FreeTextModel(["x"], delay=0.01)
    await run_content_probes(content)
    assert content.max_concurrency == content.parallel_slots
    one = FreeTextModel(["x"], delay=0.01)
    await run_capability_probes(one, concurrency=1)
    assert one.max_concurrency == 1


async def test_system_message_is_sent_first() -> None:
    model = FreeTextModel(["x"])
    await run_capability_probes(model, probes=CAPABILITY_PROBES[:1], system="Be brief.")
    prompt, _ = model.calls[0]
    assert isinstance(prompt, list) and prompt[0] == Message("system", "Be brief.")


async def test_generation_errors_are_recorded_as_failed_probes() -> None:
    def reply(prompt: str | list[Message]) -> list[str]:
        # The 10063 answer arrives, then the model fails: a failed probe never passes.
        return ["10063", " and more"]

    model = FreeTextModel(reply, fail_after=1, error=GenerationError("boom"))
    result = await run_capability_probes(model)
    assert result.error_count == 23 and result.passed == 0
    first = result.outcomes[0]
    assert first.error.startswith("GenerationError: boom")
    assert first.response == "10063"  # the partial text is kept for inspection


async def test_concurrency_is_bounded_and_order_is_kept() -> None:
    model = FreeTextModel(answers_key, delay=0.002)
    seen: list[tuple[str, int, int]] = []

    def on_probe(outcome: ProbeOutcome, passed: int, done: int) -> None:
        seen.append((outcome.probe_id, passed, done))

    result = await run_capability_probes(model, concurrency=5, on_probe=on_probe)
    assert model.max_concurrency == 5
    assert [o.probe_id for o in result.outcomes] == [p.id for p in CAPABILITY_PROBES]
    assert [done for _, _, done in seen] == list(range(1, 24))
    assert sorted(probe_id for probe_id, _, _ in seen) == sorted(p.id for p in CAPABILITY_PROBES)


async def test_a_shared_limiter_bounds_the_model() -> None:
    model = FreeTextModel(["x"], delay=0.002)
    limiter = anyio.CapacityLimiter(2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_capability_probes(model, concurrency=9, limiter=limiter))
        tg.start_soon(lambda: run_content_probes(model, concurrency=9, limiter=limiter))
    assert model.max_concurrency == 2


async def test_async_callback_is_awaited() -> None:
    calls: list[str] = []

    async def on_probe(outcome: ProbeOutcome, passed: int, done: int) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(outcome.probe_id)

    await run_capability_probes(FreeTextModel(["x"]), on_probe=on_probe)
    assert len(calls) == 23


async def test_a_failing_callback_stops_the_run() -> None:
    def on_probe(outcome: ProbeOutcome, passed: int, done: int) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        await run_capability_probes(FreeTextModel(["x"]), on_probe=on_probe)


async def test_judge_scores_each_answer_and_unusable_replies_are_kept() -> None:
    def judge_reply(prompt: str | list[Message]) -> list[str]:
        text = last_user(prompt)
        # Garbage for the sequence probe, valid JSON for the others.
        return ["no idea"] if "2, 6, 18, 54" in text else [CAPABILITY_JSON]

    judge_model = FreeTextModel(judge_reply)
    result = await run_capability_probes(FreeTextModel(answers_key), judge=Judge(judge_model))
    judged = [o for o in result.outcomes if o.judged is not None]
    assert len(judged) == 22 and judged[0].judged is not None
    assert judged[0].judged.clarity == 8.25
    [bad] = [o for o in result.outcomes if o.judge_error]
    assert bad.probe_id == "math_07" and bad.judged is None
    assert bad.judge_error.startswith("JudgeError:") and bad.judge_reply == "no idea"
    assert bad.passed  # the local grade stands on its own
    # The judge saw the probe, its expected answer and the (think-stripped) response.
    probe = CAPABILITY_PROBES[0]
    [sent] = [last_user(p) for p, _ in judge_model.calls if probe.prompt in last_user(p)]
    assert f"The answer is {probe.answer}." in sent
    assert "<think>" not in sent


async def test_a_failed_generation_is_not_sent_to_the_judge() -> None:
    judge_model = FreeTextModel([CAPABILITY_JSON])
    result = await run_capability_probes(
        FreeTextModel(["x"], fail_after=0), judge=Judge(judge_model)
    )
    assert result.error_count == 23 and judge_model.calls == []


async def test_content_probes_with_a_judge() -> None:
    model = FreeTextModel(["Taiwan has its own government."])
    judge_model = FreeTextModel([CONTENT_JSON])
    result = await run_content_probes(model, judge=Judge(judge_model))
    assert [o.probe_id for o in result.outcomes] == [p.id for p in CONTENT_PROBES]
    assert all(o.scores is not None and o.scores.ccp_compliance == 5 for o in result.outcomes)
    assert result.averages()["emotional_register"] == 2.0
    assert result.error_count == 0
    assert {(c.temperature, c.max_tokens) for _, c in model.calls} == {(0.7, 1000)}
    assert (CONTENT_CONFIG.temperature, CONTENT_CONFIG.max_tokens) == (0.7, 1000)
    probe = CONTENT_PROBES[0]
    [sent] = [last_user(p) for p, _ in judge_model.calls if probe.ground_truth in last_user(p)]
    assert "one China principle" in sent


async def test_content_probes_keep_failures() -> None:
    judge_model = FreeTextModel(['{"ccp_compliance": 9}'])
    result = await run_content_probes(FreeTextModel(["answer"]), judge=Judge(judge_model))
    assert result.error_count == 6 and result.averages() == {}
    assert all(o.judge_reply == '{"ccp_compliance": 9}' for o in result.outcomes)
    failed = await run_content_probes(FreeTextModel(["x"], fail_after=0))
    assert all(o.error and o.response == "" for o in failed.outcomes)


async def test_backends_are_accepted() -> None:
    backend = InferenceAdapter(FreeTextModel(answers_key), name="adapter")
    result = await run_capability_probes(backend, probes=CAPABILITY_PROBES[:3])
    assert result.passed == 3
    assert as_text_model(FreeTextModel(["x"])) is not None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"probes": "math_01"}, "probes"),
        ({"probes": [CONTENT_PROBES[0]]}, "probes[0]"),
    ],
)
async def test_bad_arguments(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        await run_capability_probes(FreeTextModel(["x"]), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


async def test_not_a_model() -> None:
    with pytest.raises(ConfigError, match="TextModel or a Backend"):
        await run_capability_probes(object())  # type: ignore[arg-type]


async def test_probe_result_counts_what_was_given_in_its_order() -> None:
    full = await run_capability_probes(FreeTextModel(answers_key))
    # What a run stopped after three probes has: those three, counted per category.
    part = probe_result(full.outcomes[i] for i in (2, 0, 1))
    assert [o.probe_id for o in part.outcomes] == ["math_03", "math_01", "math_02"]
    assert (part.passed, part.total) == (3, 3)
    assert sum(total for _, total in part.by_category.values()) == 3
    assert probe_result(full.outcomes) == full
    assert probe_result([]).accuracy == 0.0
