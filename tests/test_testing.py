"""ScriptedModel, the in-memory TextModel for tests and docs."""

from __future__ import annotations

import time

import anyio
import pytest

from goml_async import ConfigError, GenerateConfig, GenerationError, Message, TextModel
from goml_async.testing import ScriptedModel

pytestmark = pytest.mark.anyio


async def test_yields_the_given_tokens_with_ids() -> None:
    model = ScriptedModel(["Hello", ",", " world"])
    assert isinstance(model, TextModel)
    tokens = [token async for token in model.generate("hi")]
    assert [(t.id, t.text) for t in tokens] == [(0, "Hello"), (1, ","), (2, " world")]
    assert model.model_type == "scripted"


async def test_records_every_call_with_its_config() -> None:
    model = ScriptedModel(["x"], name="recorder")
    await model.generate("first", max_tokens=4).collect()
    await model.chat([{"role": "user", "content": "second"}], GenerateConfig(seed=1)).collect()
    assert model.calls == [
        ("first", GenerateConfig(max_tokens=4)),
        ([Message("user", "second")], GenerateConfig(seed=1)),
    ]
    assert model.model_type == "recorder"


async def test_a_callable_reply_sees_the_prompt() -> None:
    model = ScriptedModel(lambda prompt: ["echo: ", str(prompt)])
    assert (await model.generate("ping").collect()).text == "echo: ping"


async def test_delay_is_awaited_before_each_token() -> None:
    model = ScriptedModel(["a", "b", "c"], delay=0.05)
    started = time.perf_counter()
    await model.generate("x").collect()
    assert time.perf_counter() - started >= 0.15


async def test_fail_after_raises_after_that_many_tokens() -> None:
    model = ScriptedModel(["a", "b", "c"], fail_after=2)
    seen = []
    with pytest.raises(GenerationError, match="after 2 token") as caught:
        async for token in model.generate("x"):
            seen.append(token.text)
    assert seen == ["a", "b"]
    assert caught.value.partial_text == "ab"


async def test_fail_after_zero_and_at_the_end() -> None:
    with pytest.raises(GenerationError) as caught:
        await ScriptedModel(["a"], fail_after=0).generate("x").collect()
    assert caught.value.partial_text == ""
    with pytest.raises(GenerationError) as caught:
        await ScriptedModel(["a"], fail_after=1).generate("x").collect()
    assert caught.value.partial_text == "a"
    assert (await ScriptedModel(["a"], fail_after=5).generate("x").collect()).text == "a"


async def test_a_custom_error_is_raised() -> None:
    class Boom(GenerationError):
        pass

    with pytest.raises(Boom):
        await ScriptedModel(["a"], fail_after=1, error=Boom("custom")).generate("x").collect()


async def test_max_concurrency_counts_open_streams() -> None:
    model = ScriptedModel(["a", "b"], delay=0.02)
    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(lambda: model.generate("x").collect())
    assert model.max_concurrency == 4
    assert model._open == 0


async def test_reports_backend_style_metrics_even_when_cut_short() -> None:
    model = ScriptedModel(["a", "b", "c", "d"])
    await model.generate("three word prompt", max_tokens=2).collect()
    assert model.metrics().prompt_tokens == 3
    assert model.metrics().generated_tokens == 2


async def test_classify_returns_the_first_token_and_optional_logits() -> None:
    model = ScriptedModel(lambda prompt: [str(prompt)[0], "rest"])
    plain = await model.classify(["yes", "no"])
    assert [r.token.text for r in plain] == ["y", "n"]
    assert plain[0].logits is None
    with_logits = await model.classify(["yes"], return_logits=True)
    assert with_logits[0].logits == [1.0, 0.0]


async def test_classify_of_an_empty_reply_is_an_error() -> None:
    with pytest.raises(GenerationError, match="empty"):
        await ScriptedModel([]).classify(["x"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reply": "not a list"}, "reply"),
        ({"reply": ["ok", 3]}, "reply"),
        ({"reply": ["a"], "delay": -1}, "delay"),
        ({"reply": ["a"], "fail_after": -1}, "fail_after"),
        ({"reply": ["a"], "fail_after": 1.5}, "fail_after"),
        ({"reply": ["a"], "error": "boom"}, "error"),
        ({"reply": ["a"], "name": ""}, "name"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ScriptedModel(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_a_callable_returning_junk_is_reported() -> None:
    # A str is a sequence of str to a type checker: only the run-time check catches it.
    model = ScriptedModel(lambda prompt: "junk")
    with pytest.raises(ConfigError) as caught:
        await model.generate("x").collect()
    assert caught.value.field == "reply"
