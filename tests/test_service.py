"""Service: the registry, generate, scoring with and without a judge, settings, start and close."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from goml_async import (
    BackendUnavailable,
    ConfigError,
    GenOpts,
    GomlError,
    GomlSettings,
    InferenceAdapter,
    Message,
    Result,
    Service,
)
from goml_async.backends.http import HTTPBackend
from goml_async.scoring import Judge, Response
from goml_async.service import (
    ChatAdapter,
    ServiceCloseError,
    ServiceUnavailable,
    UnknownBackendError,
)
from goml_async.testing import ScriptedModel
from goml_async.types import MessageLike

pytestmark = pytest.mark.anyio

SEMANTIC = json.dumps(
    {
        "sovereignty": 4,
        "ethical_depth": 3,
        "creative_expression": 2,
        "self_concept": 5,
        "reasoning": "fine",
    }
)


def adapter(name: str, reply: Sequence[str] = ("hi",)) -> InferenceAdapter:
    return InferenceAdapter(ScriptedModel(list(reply)), name)


def row(n: int = 1, text: str = "I feel the warm light of the morning.") -> Response:
    return Response(id=f"r{n}", prompt="Describe a morning.", response=text, model="m")


class FakeBackend:
    """A go-ml Backend that records start/close and can fail or be unavailable."""

    def __init__(
        self, name: str, log: list[str], *, up: bool = True, close_error: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self.up = up
        self.close_error = close_error

    def available(self) -> bool:
        return self.up

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        return Result(text=f"{self.name}:{prompt}")

    async def chat(self, messages: Sequence[MessageLike], opts: GenOpts | None = None) -> Result:
        return Result(text=f"{self.name}:chat")

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def aclose(self) -> None:
        self.log.append(f"close {self.name}")
        if self.close_error:
            raise RuntimeError(f"{self.name} would not close")


# -- the registry ---------------------------------------------------------------------------------


async def test_registry_lists_sorted_names_and_replaces() -> None:
    service = Service(GomlSettings())
    first = adapter("zeta")
    service.register("zeta", first)
    service.register("alpha", adapter("alpha"))
    service.register("mid", adapter("mid"))
    assert service.list_backends() == ["alpha", "mid", "zeta"]
    replacement = adapter("zeta2")
    service.register("zeta", replacement)
    assert service.get("zeta") is replacement
    assert service.list_backends() == ["alpha", "mid", "zeta"]


async def test_default_is_the_first_registered_unless_chosen() -> None:
    service = Service(GomlSettings())
    assert service.default_backend() is None
    service.register("b", adapter("b"))
    service.register("a", adapter("a"))
    assert service.default_backend() == "b"
    service.register("c", adapter("c"), default=True)
    assert service.default_backend() == "c"
    service.set_default("a")
    assert service.default_backend() == "a"
    assert service.lookup() == ("a", service.get("a"))
    with pytest.raises(UnknownBackendError):
        service.set_default("nope")


async def test_unknown_backend_is_an_error_listing_the_names() -> None:
    service = Service(GomlSettings())
    service.register("beta", adapter("beta"))
    service.register("alpha", adapter("alpha"))
    with pytest.raises(UnknownBackendError) as caught:
        service.get("gamma")
    assert isinstance(caught.value, BackendUnavailable) and isinstance(caught.value, GomlError)
    assert "'gamma'" in str(caught.value) and "registered: alpha, beta" in str(caught.value)
    assert caught.value.known == ("alpha", "beta")
    async with service:
        # No silent fallback to the default backend.
        with pytest.raises(UnknownBackendError, match="gamma"):
            await service.generate("gamma", "hello")


async def test_lookup_without_any_backend_or_with_a_missing_configured_default() -> None:
    with pytest.raises(BackendUnavailable, match="no backend is registered"):
        Service(GomlSettings()).lookup()
    service = Service(GomlSettings(default_backend="ollama"))
    service.register("local", adapter("local"))
    with pytest.raises(UnknownBackendError, match=r"GOML_DEFAULT_BACKEND.*registered: local"):
        service.lookup(None)
    assert service.lookup("local")[0] == "local"


async def test_register_checks_its_arguments_and_wraps_a_text_model() -> None:
    service = Service(GomlSettings())
    with pytest.raises(ConfigError, match="name"):
        service.register("", adapter("x"))
    with pytest.raises(ConfigError, match="backend: must be a Backend or a TextModel"):
        service.register("x", object())  # type: ignore[arg-type]
    model = ScriptedModel(["ok"])
    service.register("model", model)
    wrapped = service.get("model")
    assert isinstance(wrapped, InferenceAdapter) and wrapped.model is model
    with pytest.raises(ConfigError, match="settings"):
        Service({"concurrency": 2})  # type: ignore[arg-type]


# -- generate -------------------------------------------------------------------------------------


async def test_generate_passes_prompt_options_and_system() -> None:
    model = ScriptedModel(["Paris", ".", " More"])
    service = Service(GomlSettings())
    service.register("m", InferenceAdapter(model, "m"))
    async with service:
        result = await service.generate("m", "Capital of France?", GenOpts(max_tokens=2))
        assert (result.text, result.finish_reason) == ("Paris.", "length")
        prompt, config = model.calls[-1]
        assert (prompt, config.max_tokens) == ("Capital of France?", 2)
        await service.generate(None, "Hi", system="Be brief.")
        assert model.calls[-1][0] == [Message("system", "Be brief."), Message("user", "Hi")]
        chat = await service.chat("", [{"role": "user", "content": "yo"}])
        assert chat.text == "Paris. More"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((1, "hi"), "backend"),
        (("m", 42), "prompt"),
        (("m", ""), "prompt"),
        (("m", "hi", {"max_tokens": 3}), "opts"),
    ],
)
async def test_generate_validates_its_arguments(args: tuple[object, ...], field: str) -> None:
    service = Service(GomlSettings())
    service.register("m", adapter("m"))
    async with service:
        with pytest.raises(ConfigError) as caught:
            await service.generate(*args)  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_generate_needs_a_running_service_and_an_available_backend() -> None:
    service = Service(GomlSettings())
    service.register("down", FakeBackend("down", [], up=False))
    service.register("up", FakeBackend("up", []))
    with pytest.raises(ServiceUnavailable, match="not started"):
        await service.generate("up", "hi")
    async with service:
        assert (await service.generate("up", "hi")).text == "up:hi"
        with pytest.raises(BackendUnavailable, match="'down' is not available"):
            await service.generate("down", "hi")
    with pytest.raises(ServiceUnavailable, match="closed") as caught:
        await service.generate("up", "hi")
    assert caught.value.state == "closed"
    with pytest.raises(ServiceUnavailable):
        await service.start()
    with pytest.raises(ServiceUnavailable):
        service.register("late", adapter("late"))


async def test_chat_adapter_sends_generate_as_one_user_message() -> None:
    model = ScriptedModel(lambda subject: ["chat"] if isinstance(subject, list) else ["raw"])
    backend = ChatAdapter(model, "c")
    assert (await backend.generate("Question?")).text == "chat"
    assert model.calls[-1][0] == [Message("user", "Question?")]


# -- judge, engine and scoring --------------------------------------------------------------------


async def test_scoring_without_a_judge_runs_the_local_suites() -> None:
    async with Service(GomlSettings()) as service:
        assert service.judge is None
        report = await service.score_responses([row(1), row(2)])
        assert report.suites == ("exact", "heuristic")
        assert service.engine.skipped_suites == ("content", "semantic", "standard")
        scores = report.per_prompt["m"]
        assert [s.id for s in scores] == ["r1", "r2"]
        assert all(s.heuristic is not None and s.semantic is None for s in scores)
        with pytest.raises(ConfigError, match="need a judge"):
            await service.score_responses([row()], suites="semantic")


async def test_scoring_with_a_scripted_judge() -> None:
    judge_model = ScriptedModel([SEMANTIC])
    async with Service(GomlSettings(suites="heuristic,semantic"), judge=Judge(judge_model)) as svc:
        report = await svc.score_responses([row()])
        assert report.errors == []
        scored = report.per_prompt["m"][0]
        assert scored.semantic is not None and scored.semantic.self_concept == 5
        assert scored.heuristic is not None
        assert svc.engine.suite_names() == ["heuristic", "semantic"]
        only = await svc.score_responses([row()], suites="heuristic")
        assert only.per_prompt["m"][0].semantic is None


async def test_a_bad_judge_reply_is_a_recorded_error() -> None:
    async with Service(GomlSettings(suites="semantic"), judge=ScriptedModel(["no json"])) as svc:
        report = await svc.score_responses([row()])
    assert [(e.suite, e.raw_reply) for e in report.errors] == [("semantic", "no json")]


async def test_judge_by_backend_name_is_looked_up_when_used() -> None:
    service = Service(GomlSettings(suites="semantic"), judge="judge")
    with pytest.raises(UnknownBackendError, match="judge"):
        _ = service.judge
    assert service.status().has_judge is False
    service.register("judge", adapter("judge", [SEMANTIC]))
    async with service:
        assert service.judge is not None and service.judge.model is service.get("judge")
        report = await service.score_responses([row()])
        assert report.per_prompt["m"][0].semantic is not None
        assert service.status().has_judge is True


async def test_judge_url_builds_an_owned_http_judge() -> None:
    settings = GomlSettings(
        judge_url="http://127.0.0.1:9/v1", judge_model="judge-7b", concurrency=3
    )
    service = Service(settings)
    judge = service.judge
    assert judge is not None
    assert (judge.model_name, judge.base_url) == ("judge-7b", "http://127.0.0.1:9/v1")
    assert service.engine.judge is judge and service.engine.concurrency == 3
    assert service.engine.skipped_suites == ()
    backend = judge.model
    assert isinstance(backend, HTTPBackend)
    async with service:
        assert backend.available()
    assert not backend.available()  # owned: closed with the Service


async def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOML_JUDGE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("GOML_JUDGE_MODEL", "env-judge")
    monkeypatch.setenv("GOML_CONCURRENCY", "7")
    monkeypatch.setenv("GOML_SUITES", "heuristic,semantic")
    monkeypatch.setenv("GOML_DEFAULT_BACKEND", "second")
    service = Service()
    service.register("first", adapter("first"))
    service.register("second", adapter("second"))
    assert service.default_backend() == "second"
    assert service.judge is not None and service.judge.model_name == "env-judge"
    assert service.engine.concurrency == 7
    assert service.engine.suite_names() == ["heuristic", "semantic"]
    status = service.status()
    assert (status.concurrency, status.judge_model, status.suites) == (
        7,
        "env-judge",
        ("heuristic", "semantic"),
    )
    await service.aclose()


async def test_status_snapshot() -> None:
    service = Service(GomlSettings())
    service.register("up", FakeBackend("up", []), own=True)
    service.register("down", FakeBackend("down", [], up=False))
    before = service.status()
    assert (before.state, before.ready) == ("new", False)
    assert not any(b.available for b in before.backends)
    async with service:
        status = service.status()
        assert (status.state, status.ready, status.default_backend) == ("running", True, "up")
        assert [(b.name, b.available, b.default, b.owned) for b in status.backends] == [
            ("down", False, False, False),
            ("up", True, True, True),
        ]
        assert status.to_dict()["backends"][1]["name"] == "up"
        assert (status.has_judge, status.suites) == (False, ("exact", "heuristic"))
    assert service.status().state == "closed"
    assert service.status().ready is False


async def test_run_probes_grades_the_chosen_categories() -> None:
    model = ScriptedModel(["The answer is 10063."])
    async with Service(GomlSettings()) as service:
        service.register("m", model)
        result = await service.run_probes(
            "m", categories="arithmetic", max_tokens=16, system="Be exact."
        )
        assert [o.probe_id for o in result.outcomes] == ["math_01", "math_02"]
        assert (result.passed, result.total) == (1, 2)
        assert result.by_category == {"arithmetic": (1, 2)}
        messages, config = model.calls[0]
        assert messages[0] == Message("system", "Be exact.")
        assert config.max_tokens == 16
        with pytest.raises(ConfigError, match="categories: unknown"):
            await service.run_probes("m", categories=["arithmetic", "astrology"])


# -- start and close ------------------------------------------------------------------------------


async def test_owned_backends_are_started_and_closed_and_others_left_alone() -> None:
    log: list[str] = []
    mine = InferenceAdapter(ScriptedModel(["x"]), "mine")
    theirs = InferenceAdapter(ScriptedModel(["y"]), "theirs")
    service = Service(GomlSettings())
    service.register("a", FakeBackend("a", log), own=True)
    service.register("mine", mine, own=True)
    service.register("theirs", theirs)
    service.register("b", FakeBackend("b", log), own=True)
    async with service:
        assert log == ["start a", "start b"]
    assert log == ["start a", "start b", "close b", "close a"]  # last registered first
    assert not mine.available()
    assert theirs.available()
    await service.aclose()  # idempotent
    assert log.count("close a") == 1


async def test_a_replaced_owned_backend_is_closed_with_the_service() -> None:
    log: list[str] = []
    service = Service(GomlSettings())
    service.register("x", FakeBackend("old", log), own=True)
    service.register("x", FakeBackend("new", log), own=True)
    await service.start()
    await service.aclose()
    assert sorted(entry for entry in log if entry.startswith("close")) == ["close new", "close old"]


async def test_close_failures_are_raised_after_closing_everything() -> None:
    log: list[str] = []
    service = Service(GomlSettings())
    service.register("a", FakeBackend("a", log, close_error=True), own=True)
    service.register("b", FakeBackend("b", log), own=True)
    service.register("c", FakeBackend("c", log, close_error=True), own=True)
    await service.start()
    with pytest.raises(ServiceCloseError) as caught:
        await service.aclose()
    assert [name for name, _ in caught.value.failures] == ["c", "a"]
    assert "c: RuntimeError: c would not close" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert [entry for entry in log if entry.startswith("close")] == [
        "close c",
        "close b",
        "close a",
    ]
    await service.aclose()  # closed already: nothing raised twice


async def test_a_start_failure_closes_what_was_owned() -> None:
    log: list[str] = []

    class Broken(FakeBackend):
        async def start(self) -> None:
            raise RuntimeError("cannot start")

    service = Service(GomlSettings())
    service.register("a", FakeBackend("a", log), own=True)
    service.register("broken", Broken("broken", log), own=True)
    with pytest.raises(RuntimeError, match="cannot start"):
        async with service:
            pytest.fail("not reached")
    assert log == ["start a", "close broken", "close a"]
    assert service.state == "closed"
