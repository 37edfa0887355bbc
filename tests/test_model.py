"""BaseTextModel: validation, bookkeeping and batch generation shared by every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Unpack

import anyio
import pytest

from goml_async import (
    BaseTextModel,
    ConfigError,
    GenerateConfig,
    GenerationError,
    Message,
    NotSupported,
    StreamContext,
    TextModel,
    Token,
    TokenStream,
    parallel_slots,
    prompt_as_chat,
)
from goml_async.testing import ScriptedModel
from goml_async.types import GenerateOptions, MessageLike

pytestmark = pytest.mark.anyio


class PromptOnly(BaseTextModel):
    """A backend with no chat template and no classify: only the primitive."""

    def __init__(self) -> None:
        super().__init__(model_type="prompt-only", default_config=GenerateConfig(max_tokens=3))
        self.closed_calls = 0

    async def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        for index, char in enumerate(prompt):
            yield Token(index, char.upper())

    async def _aclose(self) -> None:
        self.closed_calls += 1


async def test_the_primitive_is_enough_for_a_text_model() -> None:
    model = PromptOnly()
    assert isinstance(model, TextModel)
    result = await model.generate("abcdef").collect()
    assert result.text == "ABC"  # the model's default config (max_tokens=3) applies
    assert result.finish_reason == "length"
    assert (await model.generate("abcdef", max_tokens=5).collect()).text == "ABCDE"
    assert model.info().architecture == "prompt-only"
    assert "prompt-only" in repr(model)


async def test_chat_without_a_template_is_not_supported() -> None:
    with pytest.raises(NotSupported, match="chat template"):
        await PromptOnly().chat([{"role": "user", "content": "hi"}]).collect()


async def test_classify_is_not_supported_by_default() -> None:
    with pytest.raises(NotSupported, match="cannot classify"):
        await PromptOnly().classify(["x"])


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda m: m.generate(42), "prompt"),
        (lambda m: m.generate("x", config={"max_tokens": 1}), "config"),
        (lambda m: m.generate("x", max_token=3), "max_token"),
        (lambda m: m.generate("x", temperature=-1), "temperature"),
        (lambda m: m.chat("hello"), "messages"),
        (lambda m: m.chat([]), "messages"),
        (lambda m: m.chat([{"role": "robot", "content": "x"}]), "role"),
        (lambda m: m.chat([{"role": "user"}]), "messages"),
    ],
)
async def test_bad_input_raises_config_error_naming_the_field(call: object, field: str) -> None:
    model = ScriptedModel(["x"])
    with pytest.raises(ConfigError) as caught:
        call(model)  # type: ignore[operator]
    assert caught.value.field == field
    assert model.calls == []  # nothing was started


async def test_bad_batch_input_names_the_item() -> None:
    model = ScriptedModel(["x"])
    with pytest.raises(ConfigError) as caught:
        await model.batch_generate(["ok", 3])  # type: ignore[list-item]
    assert caught.value.field == "prompts[1]"
    with pytest.raises(ConfigError) as caught:
        await model.batch_generate("not a list")
    assert caught.value.field == "prompts"


async def test_metrics_and_err_describe_the_last_finished_call() -> None:
    model = ScriptedModel(lambda prompt: ["ok"] if prompt == "good" else ["x", "y"])
    await model.generate("good").collect()
    assert model.err() is None
    assert model.metrics().generated_tokens == 1

    failing = ScriptedModel(["a", "b"], fail_after=1)
    with pytest.raises(GenerationError):
        await failing.generate("bad").collect()
    assert isinstance(failing.err(), GenerationError)
    await ScriptedModel(["z"]).generate("other").collect()
    assert isinstance(failing.err(), GenerationError)  # per model, not global


async def test_a_closed_model_refuses_new_work() -> None:
    model = PromptOnly()
    async with model:
        pass
    assert model.closed
    await model.aclose()
    assert model.closed_calls == 1  # aclose is idempotent
    with pytest.raises(GenerationError, match="closed"):
        model.generate("x")


async def test_batch_generate_keeps_input_order_and_records_errors_per_item() -> None:
    def reply(prompt: object) -> list[str]:
        if prompt == "boom":
            raise GenerationError("cannot answer boom")
        return [str(prompt), "!"]

    model = ScriptedModel(reply, delay=0.01)
    results = await model.batch_generate(["one", "boom", "three"], max_tokens=5)
    assert [r.text for r in results] == ["one!", "", "three!"]
    assert [r.error is None for r in results] == [True, False, True]
    assert isinstance(results[1].error, GenerationError)
    assert [prompt for prompt, _ in model.calls] == ["one", "boom", "three"]
    assert all(config.max_tokens == 5 for _, config in model.calls)


async def test_batch_generate_respects_its_concurrency_limit() -> None:
    model = ScriptedModel(["a", "b"], delay=0.02)
    model.batch_concurrency = 3
    results = await model.batch_generate([f"p{i}" for i in range(10)])
    assert len(results) == 10
    assert model.max_concurrency == 3


def test_parallel_slots_default_to_the_batch_concurrency() -> None:
    model = ScriptedModel(["a"])
    assert model.parallel_slots == model.batch_concurrency == parallel_slots(model)
    model.batch_concurrency = 6
    assert parallel_slots(model) == 6
    assert parallel_slots(prompt_as_chat(model)) == 6  # the view is the model's
    model.batch_concurrency = 0
    assert parallel_slots(model) == 1


def test_parallel_slots_of_a_model_that_does_not_say_is_one() -> None:
    class Bare:
        model_type = "bare"
        parallel_slots = "many"  # not a count: ignored

    assert parallel_slots(Bare()) == 1  # type: ignore[arg-type]


async def test_batch_generate_of_nothing() -> None:
    assert await ScriptedModel(["a"]).batch_generate([]) == []


async def test_batch_generate_is_cancelled_as_a_whole() -> None:
    model = ScriptedModel(["a"], delay=5)
    with anyio.move_on_after(0.1) as scope:
        await model.batch_generate(["x", "y"])
    assert scope.cancelled_caught
    assert model._open == 0


class VoiceOptions(GenerateOptions, total=False):
    """WithOwnOptions' keyword options: GenerateConfig's fields and its own ``voice``."""

    voice: str


class WithOwnOptions(BaseTextModel):
    """A backend with a per-call option of its own (``voice=``) and a chat template."""

    call_options = frozenset({"voice"})

    if TYPE_CHECKING:  # the signatures with this backend's own option, as a backend declares it

        def generate(
            self,
            prompt: str,
            config: GenerateConfig | None = None,
            **options: Unpack[VoiceOptions],
        ) -> TokenStream: ...

        def chat(
            self,
            messages: Iterable[MessageLike],
            config: GenerateConfig | None = None,
            **options: Unpack[VoiceOptions],
        ) -> TokenStream: ...

    def __init__(self, *, prompt_as_chat: bool = False) -> None:
        super().__init__(model_type="own-options", prompt_as_chat=prompt_as_chat)
        self.seen: list[tuple[str, dict[str, object], GenerateConfig]] = []

    def _check_call_options(self, options: dict[str, object]) -> dict[str, object]:
        if not isinstance(options.get("voice"), str):
            raise ConfigError("voice", "must be a str")
        return options

    async def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        self.seen.append(("prompt:" + prompt, dict(context.options), context.config))
        yield Token(0, "p")

    async def _stream_chat(
        self, messages: list[Message], context: StreamContext
    ) -> AsyncIterator[Token]:
        self.seen.append(("chat:" + messages[-1].content, dict(context.options), context.config))
        yield Token(0, "c")


async def test_a_backends_own_call_options_reach_its_source_apart_from_the_config() -> None:
    model = WithOwnOptions()
    await model.generate("hi", voice="low", seed=7)
    await model.chat([{"role": "user", "content": "yo"}], voice="high")
    await model.generate("plain")
    (first, options, config), (second, chat_options, _), (_, no_options, _) = model.seen
    assert (first, options, config.seed) == ("prompt:hi", {"voice": "low"}, 7)
    assert (second, chat_options, no_options) == ("chat:yo", {"voice": "high"}, {})


async def test_call_options_are_checked_and_others_stay_config_errors() -> None:
    model = WithOwnOptions()
    with pytest.raises(ConfigError, match="voice"):
        model.generate("hi", voice=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="volume"):
        # Neither a GenerateConfig field nor declared:
        model.generate("hi", volume=3)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="voice"):
        # Declared by another backend only:
        PromptOnly().generate("hi", voice="low")  # type: ignore[call-arg]


async def test_prompt_as_chat_sends_generate_as_one_user_message() -> None:
    model = WithOwnOptions(prompt_as_chat=True)
    assert model.prompt_as_chat
    result = await model.generate("hello", voice="low", max_tokens=4)
    assert result.text == "c"
    assert [(kind, options, config.max_tokens) for kind, options, config in model.seen] == [
        ("chat:hello", {"voice": "low"}, 4)
    ]
    with pytest.raises(ConfigError, match="prompt_as_chat"):
        BaseTextModel.__init__(model, model_type="x", prompt_as_chat="yes")  # type: ignore[arg-type]
