"""The compatibility layer: go-ml's adapter cases, deprecated callbacks, string backends."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol

import anyio
import anyio.lowlevel
import pytest

from goml_async import (
    Backend,
    BackendTextModel,
    ConfigError,
    GenerateConfig,
    GenerateMetrics,
    GenerationError,
    GenOpts,
    HTTPTextModel,
    InferenceAdapter,
    LlamaTextModel,
    Message,
    MessageLike,
    NotSupported,
    Result,
    StreamingBackend,
    TextModel,
)
from goml_async.testing import ScriptedModel

pytestmark = pytest.mark.anyio

deprecated = pytest.mark.filterwarnings("ignore:InferenceAdapter.*deprecated:DeprecationWarning")


# -- go-ml's adapter cases ------------------------------------------------------------------------


async def test_generate_returns_the_whole_reply_with_metrics() -> None:
    adapter = InferenceAdapter(ScriptedModel(["The", " answer", " is", " 42"]), "mlx")
    result = await adapter.generate("question?")
    assert result.text == "The answer is 42"
    assert result.content == result.text
    assert result.finish_reason == "stop"
    assert result.metrics is not None
    assert result.metrics.generated_tokens == 4
    assert result.metrics.prompt_tokens == 1
    assert adapter.name == "mlx"
    assert adapter.available()


async def test_chat_passes_messages_to_the_model() -> None:
    model = ScriptedModel(lambda subject: ["you said ", str(len(subject))])
    adapter = InferenceAdapter(model)
    messages: list[MessageLike] = [
        {"role": "system", "content": "be brief"},
        Message("user", "hi"),
    ]
    result = await adapter.chat(messages)
    assert result.text == "you said 2"
    assert model.calls[0][0] == [Message("system", "be brief"), Message("user", "hi")]
    assert adapter.name == "scripted"


@deprecated
async def test_streaming_calls_the_callback_once_per_token() -> None:
    adapter = InferenceAdapter(ScriptedModel(["a", "b", "c", "d"]), "mlx")
    seen: list[str] = []
    result = await adapter.generate_stream("p", None, seen.append)
    assert seen == ["a", "b", "c", "d"]
    assert result.text == "abcd"


@deprecated
async def test_an_async_callback_is_awaited() -> None:
    adapter = InferenceAdapter(ScriptedModel(["x", "y"]))
    seen: list[str] = []

    async def callback(text: str) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(text)

    await adapter.generate_stream("p", GenOpts(), callback)
    assert seen == ["x", "y"]


@deprecated
async def test_a_callback_error_stops_generation_and_is_reraised() -> None:
    model = ScriptedModel(["a", "b", "c", "d"])
    adapter = InferenceAdapter(model)
    seen: list[str] = []

    class Enough(Exception):
        pass

    def callback(text: str) -> None:
        seen.append(text)
        if len(seen) == 2:
            raise Enough("stop here")

    with pytest.raises(Enough, match="stop here"):
        await adapter.generate_stream("p", None, callback)
    assert seen == ["a", "b"]
    assert model.max_concurrency == 1
    assert model._open == 0  # the model's stream was closed, not left running
    assert model.metrics().generated_tokens == 2


@deprecated
async def test_cancellation_propagates_through_the_callback_stream() -> None:
    model = ScriptedModel(["a", "b", "c"], delay=0.2)
    adapter = InferenceAdapter(model)
    seen: list[str] = []
    with anyio.move_on_after(0.3) as scope:
        await adapter.generate_stream("p", None, seen.append)
    assert scope.cancelled_caught
    assert seen == ["a"]
    assert model._open == 0


async def test_cancellation_propagates_through_generate() -> None:
    model = ScriptedModel(["a", "b"], delay=5)
    adapter = InferenceAdapter(model)
    with anyio.move_on_after(0.1) as scope:
        await adapter.generate("p")
    assert scope.cancelled_caught
    assert model._open == 0


async def test_empty_output() -> None:
    adapter = InferenceAdapter(ScriptedModel([]))
    result = await adapter.generate("p")
    assert (result.text, result.finish_reason) == ("", "stop")


@deprecated
async def test_empty_output_never_calls_the_callback() -> None:
    seen: list[str] = []
    result = await InferenceAdapter(ScriptedModel([])).generate_stream("p", None, seen.append)
    assert (seen, result.text) == ([], "")


async def test_model_error_after_partial_output_keeps_the_partial_text() -> None:
    model = ScriptedModel(["Par", "tial", "never"], fail_after=2)
    with pytest.raises(GenerationError, match="after 2 token") as caught:
        await InferenceAdapter(model).generate("p")
    assert caught.value.partial_text == "Partial"
    assert caught.value.tokens_generated == 2
    assert model.err() is caught.value


@deprecated
async def test_model_error_while_streaming_keeps_the_partial_text() -> None:
    model = ScriptedModel(["Par", "tial", "never"], fail_after=2)
    seen: list[str] = []
    with pytest.raises(GenerationError) as caught:
        await InferenceAdapter(model).generate_stream("p", None, seen.append)
    assert seen == ["Par", "tial"]
    assert caught.value.partial_text == "Partial"


# -- stop sequences and options -------------------------------------------------------------------


async def test_stop_sequences_are_cut_in_whole_replies() -> None:
    adapter = InferenceAdapter(ScriptedModel(["4", "2", "\n\n", "Q:", " more"]))
    result = await adapter.generate("p", GenOpts(stop_sequences=["\n\nQ:"]))
    assert result.text == "42"
    assert result.finish_reason == "stop_sequence"


@deprecated
async def test_stop_sequence_split_across_tokens_while_streaming() -> None:
    adapter = InferenceAdapter(ScriptedModel(["Hello", " wor", "ld<", "|end", "|> junk"]))
    seen: list[str] = []
    result = await adapter.generate_stream("p", GenOpts(stop_sequences=["<|end|>"]), seen.append)
    assert "".join(seen) == "Hello world"
    assert result.text == "Hello world"
    assert all("<" not in text for text in seen)


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (None, GenerateConfig()),
        (GenOpts(), GenerateConfig()),
        (GenOpts.default(), GenerateConfig(temperature=0.1)),
        (
            GenOpts(temperature=0.5, max_tokens=7, model="ignored", top_k=3, top_p=0.9,
                    repeat_penalty=1.1, stop_tokens=[5], stop_sequences=["x"]),
            GenerateConfig(temperature=0.5, max_tokens=7, top_k=3, top_p=0.9, repeat_penalty=1.1,
                           stop_tokens=(5,), stop_sequences=("x",)),
        ),
    ],
)  # fmt: skip
async def test_genopts_reach_the_model_as_a_generate_config(
    opts: GenOpts | None, expected: GenerateConfig
) -> None:
    model = ScriptedModel(["ok"])
    await InferenceAdapter(model).generate("p", opts)
    assert model.calls == [("p", expected)]


async def test_invalid_opts_are_rejected() -> None:
    adapter = InferenceAdapter(ScriptedModel(["x"]))
    with pytest.raises(ConfigError) as caught:
        await adapter.generate("p", {"temperature": 1})  # type: ignore[arg-type]
    assert caught.value.field == "opts"


async def test_invalid_constructor_arguments() -> None:
    with pytest.raises(ConfigError) as caught:
        InferenceAdapter("not a model")  # type: ignore[arg-type]
    assert caught.value.field == "model"
    with pytest.raises(ConfigError) as caught:
        InferenceAdapter(ScriptedModel(["x"]), name=3)  # type: ignore[arg-type]
    assert caught.value.field == "name"


@deprecated
async def test_a_non_callable_callback_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        await InferenceAdapter(ScriptedModel(["x"])).generate_stream("p", None, "nope")  # type: ignore[arg-type]
    assert caught.value.field == "callback"


# -- deprecation ----------------------------------------------------------------------------------


async def test_generate_stream_warns_and_names_the_replacement() -> None:
    adapter = InferenceAdapter(ScriptedModel(["x"]))
    with pytest.warns(DeprecationWarning, match=r"TextModel\.generate") as record:
        await adapter.generate_stream("p", None, lambda text: None)
    assert record[0].filename == __file__  # the warning points at the caller


async def test_chat_stream_warns() -> None:
    adapter = InferenceAdapter(ScriptedModel(["x"]))
    with pytest.warns(DeprecationWarning, match=r"TextModel\.generate"):
        await adapter.chat_stream([Message("user", "hi")], None, lambda text: None)


def test_subclassing_streaming_backend_warns() -> None:
    with pytest.warns(DeprecationWarning, match="StreamingBackend"):

        class Legacy(StreamingBackend):
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class StillAProtocol(StreamingBackend, Protocol):  # protocols extending it don't warn
            pass

    assert StillAProtocol is not None


async def test_the_adapter_satisfies_both_protocols() -> None:
    adapter = InferenceAdapter(ScriptedModel(["x"]))
    assert isinstance(adapter, Backend)
    assert isinstance(adapter, StreamingBackend)
    assert isinstance(adapter.model, TextModel)


async def test_the_adapter_owns_its_model() -> None:
    model = ScriptedModel(["x"])
    async with InferenceAdapter(model) as adapter:
        assert adapter.available()
    assert model.closed
    assert not adapter.available()
    await adapter.aclose()  # idempotent


# -- BackendTextModel -----------------------------------------------------------------------------


class EchoBackend:
    """A go-ml string backend: whole replies only."""

    def __init__(self, reply: str = "pong", *, fail: Exception | None = None) -> None:
        self.reply = reply
        self.fail = fail
        self.seen: list[tuple[str | list[Message], GenOpts | None]] = []
        self.closed = False
        self.active = 0
        self.max_active = 0

    @property
    def name(self) -> str:
        return "echo"

    def available(self) -> bool:
        return not self.closed

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        return await self._answer(prompt, opts)

    async def chat(self, messages: Sequence[MessageLike], opts: GenOpts | None = None) -> Result:
        return await self._answer([Message.coerce(m) for m in messages], opts)

    async def _answer(self, subject: str | list[Message], opts: GenOpts | None) -> Result:
        self.seen.append((subject, opts))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await anyio.sleep(0.01)
            if self.fail is not None:
                raise self.fail
            metrics = GenerateMetrics(prompt_tokens=3, generated_tokens=5)
            return Result(self.reply, metrics, "stop")
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        self.closed = True


async def test_backend_text_model_yields_one_token_with_the_whole_reply() -> None:
    backend = EchoBackend("The capital is Paris.")
    model = BackendTextModel(backend, model="smol")
    tokens = [token async for token in model.generate("capital?", max_tokens=12, top_k=4)]
    assert [(t.id, t.text) for t in tokens] == [(-1, "The capital is Paris.")]
    prompt, opts = backend.seen[0]
    assert prompt == "capital?"
    assert opts == GenOpts(max_tokens=12, top_k=4, model="smol")
    assert model.metrics().generated_tokens == 5
    assert model.metrics().time_to_first_token > 0
    assert model.model_type == "echo"
    assert model.info().architecture == "echo"
    assert model.err() is None


async def test_backend_text_model_chat() -> None:
    backend = EchoBackend("hi!")
    model = BackendTextModel(backend)
    result = await model.chat([{"role": "user", "content": "hello"}]).collect()
    assert result.text == "hi!"
    assert backend.seen[0][0] == [Message("user", "hello")]


async def test_backend_text_model_records_errors() -> None:
    model = BackendTextModel(EchoBackend(fail=GenerationError("server said no")))
    with pytest.raises(GenerationError, match="server said no"):
        await model.generate("x").collect()
    assert isinstance(model.err(), GenerationError)
    ok = BackendTextModel(EchoBackend())
    await ok.generate("x").collect()
    assert ok.err() is None


async def test_backend_text_model_cannot_classify() -> None:
    with pytest.raises(NotSupported, match="cannot classify"):
        await BackendTextModel(EchoBackend()).classify(["x"])


async def test_backend_text_model_batches_one_at_a_time_in_order() -> None:
    backend = EchoBackend()
    model = BackendTextModel(backend)
    results = await model.batch_generate(["a", "b", "c"])
    assert [r.text for r in results] == ["pong"] * 3
    assert [subject for subject, _ in backend.seen] == ["a", "b", "c"]
    assert backend.max_active == 1


async def test_backend_text_model_closes_the_backend() -> None:
    backend = EchoBackend()
    async with BackendTextModel(backend):
        pass
    assert backend.closed


async def test_go_ml_aliases_name_the_same_class() -> None:
    assert HTTPTextModel is BackendTextModel
    assert LlamaTextModel is BackendTextModel
    with pytest.raises(ConfigError) as caught:
        BackendTextModel(object())  # type: ignore[arg-type]
    assert caught.value.field == "backend"


async def test_round_trip_adapter_over_backend_text_model() -> None:
    inner = EchoBackend("round trip")
    adapter = InferenceAdapter(BackendTextModel(inner), "again")
    result = await adapter.generate("x", GenOpts(max_tokens=3))
    assert result.text == "round trip"
    assert inner.seen[0][1] == GenOpts(max_tokens=3)


class DefaultsModel(ScriptedModel):
    """A model whose own defaults differ from GenerateConfig()'s."""

    def __init__(self) -> None:
        super().__init__(["a", "b", "c", "d"])
        self._default_config = GenerateConfig(max_tokens=2, temperature=0.3)


async def test_unset_genopts_fields_keep_the_model_defaults() -> None:
    model = DefaultsModel()
    adapter = InferenceAdapter(model)
    assert (await adapter.generate("x")).text == "ab"
    assert (await adapter.generate("x", GenOpts(max_tokens=3))).text == "abc"
    assert [config for _, config in model.calls] == [
        GenerateConfig(max_tokens=2, temperature=0.3),
        GenerateConfig(max_tokens=3, temperature=0.3),
    ]
