"""Every GenerateConfig field reaches the backend, from every entry point above the backends.

The Service, the probe runners and the judge stream from the TextModel itself (a go-ml Backend
wrapping one is lifted once, by ``as_text_model``), so nothing is lost on the way: not the
seed, not the deadlines, not a zero. The model here records the config of every call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from goml_async import GenerateConfig, GomlSettings, InferenceAdapter, Service
from goml_async.compat import Backend, BackendTextModel, as_text_model
from goml_async.scoring import Judge
from goml_async.scoring.probes import CAPABILITY_PROBES, CONTENT_PROBES
from goml_async.scoring.runner import run_capability_probes, run_content_probes
from goml_async.service import ChatAdapter
from goml_async.testing import ScriptedModel
from goml_async.types import TopLogprob

pytestmark = pytest.mark.anyio

#: A value other than the default for every field.
EVERY_FIELD = GenerateConfig(
    max_tokens=7,
    temperature=0.3,
    top_k=5,
    top_p=0.5,
    repeat_penalty=1.2,
    stop_tokens=(99,),
    stop_sequences=("zz",),
    seed=7,
    return_logits=True,
    first_token_timeout=50.0,
    idle_timeout=40.0,
    total_timeout=60.0,
    presence_penalty=0.1,
    frequency_penalty=0.2,
    logprobs=True,
    top_logprobs=1,
    # Any text at all (the scripted replies differ), but a format every wrapper must pass on.
    response_format={"type": "regex", "pattern": "(?s).*"},
    prompt_cache=False,
)
#: Fields EVERY_FIELD leaves at their defaults: tools cannot go with a response_format (and
#: only with chat); tests/tools checks that they reach the backend.
NOT_IN_EVERY_FIELD = {"tools", "tool_choice"}
JUDGE_REPLY = '{"reasoning": 3, "correctness": 4, "clarity": 5, "notes": "ok"}'


def test_every_field_differs_from_the_default() -> None:
    default = GenerateConfig()
    same = [
        f.name
        for f in dataclasses.fields(GenerateConfig)
        if getattr(EVERY_FIELD, f.name) == getattr(default, f.name)
    ]
    assert same == sorted(NOT_IN_EVERY_FIELD, reverse=True)


def recording(reply: str = "ok") -> ScriptedModel:
    return ScriptedModel(
        [reply], logprobs=[-0.5], top_logprobs=[[TopLogprob(id=1, text=reply, logprob=-0.5)]]
    )


def configs(model: ScriptedModel) -> list[GenerateConfig]:
    assert model.calls, "the model was never called"
    return [config for _, config in model.calls]


Wrap = Callable[[ScriptedModel], Any]
WRAPPINGS: dict[str, Wrap] = {
    "model": lambda model: model,
    "InferenceAdapter": lambda model: InferenceAdapter(model, "m"),
    "ChatAdapter": lambda model: ChatAdapter(model, "m"),
}


@pytest.mark.parametrize("wrap", WRAPPINGS.values(), ids=WRAPPINGS.keys())
async def test_service_generate_and_chat(wrap: Wrap) -> None:
    model = recording()
    async with Service(GomlSettings()) as service:
        service.register("m", wrap(model))
        await service.generate("m", "hi", config=EVERY_FIELD)
        await service.generate("m", "hi", config=EVERY_FIELD, system="Be brief.")
        await service.chat("m", [{"role": "user", "content": "hi"}], config=EVERY_FIELD)
        # prompt_as_chat is an attribute a TextModel may have (the protocol does not ask for it).
        stored = service.model("m")
        assert stored is model or getattr(stored, "prompt_as_chat", False)
    assert configs(model) == [EVERY_FIELD] * 3


async def test_service_run_probes_keeps_every_field_but_the_two_it_sets() -> None:
    model = recording()
    async with Service(GomlSettings()) as service:
        service.register("m", InferenceAdapter(model, "m"))
        await service.run_probes("m", categories="arithmetic", config=EVERY_FIELD)
    expected = EVERY_FIELD.with_options(max_tokens=500, temperature=0.1)
    assert set(configs(model)) == {expected}


@pytest.mark.parametrize("wrap", WRAPPINGS.values(), ids=WRAPPINGS.keys())
async def test_the_probe_runners(wrap: Wrap) -> None:
    model = recording()
    await run_capability_probes(wrap(model), probes=CAPABILITY_PROBES[:2], config=EVERY_FIELD)
    await run_content_probes(wrap(model), probes=CONTENT_PROBES[:1], config=EVERY_FIELD)
    assert configs(model) == [EVERY_FIELD] * 3


@pytest.mark.parametrize("wrap", WRAPPINGS.values(), ids=WRAPPINGS.keys())
async def test_the_judge(wrap: Wrap) -> None:
    model = recording(JUDGE_REPLY)
    judge = Judge(wrap(model), config=EVERY_FIELD)
    await judge.score_capability("q", "a", "r")
    assert configs(model) == [EVERY_FIELD]


def test_a_backend_wrapping_a_model_is_lifted_to_that_model() -> None:
    model = recording()
    assert as_text_model(model) is model
    assert as_text_model(InferenceAdapter(model)) is model
    chat = as_text_model(ChatAdapter(model))
    assert getattr(chat, "prompt_as_chat", False) and chat.model_type == model.model_type


class OwnGenerate(InferenceAdapter):
    """An adapter that does something of its own in generate: it stays a Backend."""

    async def generate(self, prompt: str, opts: Any = None) -> Any:
        return await super().generate(prompt.upper(), opts)


def test_an_adapter_with_its_own_generate_stays_a_backend() -> None:
    adapter = OwnGenerate(recording())
    lifted = as_text_model(adapter)
    assert isinstance(lifted, BackendTextModel) and lifted.backend is adapter
    assert isinstance(adapter, Backend)


class StringBackend:
    """A go-ml string Backend of its own (no TextModel inside)."""

    name = "strings"

    def available(self) -> bool:
        return True

    async def generate(self, prompt: str, opts: Any = None) -> Any:
        from goml_async import Result

        return Result(text="ok")

    async def chat(self, messages: Any, opts: Any = None) -> Any:
        return await self.generate("", opts)


@pytest.mark.parametrize(
    "field", ["seed", "presence_penalty", "frequency_penalty", "logprobs", "return_logits"]
)
async def test_a_string_backend_refuses_what_genopts_cannot_carry(field: str) -> None:
    from goml_async import NotSupported

    model = as_text_model(StringBackend())
    value = {"seed": 7, "logprobs": True, "return_logits": True}.get(field, 0.5)
    changes: dict[str, Any] = {field: value}
    with pytest.raises(NotSupported, match=field):
        await model.generate("hi", dataclasses.replace(GenerateConfig(), **changes))
    assert (await model.generate("hi", temperature=0.2, max_tokens=3)).text == "ok"
