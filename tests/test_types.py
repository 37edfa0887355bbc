"""Tests for goml_async.types: validation, defaults, normalisation and the GenOpts mapping."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from goml_async.errors import ConfigError, GenerationError
from goml_async.types import (
    BatchResult,
    ClassifyResult,
    DiscoveredModel,
    GenerateConfig,
    GenerateMetrics,
    GenOpts,
    LoadConfig,
    Message,
    ModelInfo,
    Result,
    Token,
    coerce_messages,
    resolve_config,
)

# -- Token ----------------------------------------------------------------------------------------


def test_token_fields_and_default_logprob() -> None:
    token = Token(id=7, text="hi")
    assert (token.id, token.text, token.logprob) == (7, "hi", None)
    assert Token(1, "a", -0.5).logprob == -0.5


def test_tokens_compare_by_value() -> None:
    assert Token(1, "a") == Token(1, "a")
    assert Token(1, "a") != Token(2, "a")


# -- Message --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["system", "user", "assistant"])
def test_message_accepts_the_three_roles(role: Any) -> None:
    message = Message(role, "text")
    assert message.role == role
    assert message.to_dict() == {"role": role, "content": "text"}


@pytest.mark.parametrize("role", ["robot", "User", "", "function"])
def test_message_rejects_other_roles(role: Any) -> None:
    with pytest.raises(ConfigError, match="must be one of system, user, assistant") as info:
        Message(role, "text")
    assert info.value.field == "role"


def test_message_content_must_be_a_str() -> None:
    with pytest.raises(ConfigError, match="must be a str") as info:
        Message("user", 5)  # type: ignore[arg-type]
    assert info.value.field == "content"


def test_message_coerce_from_dict() -> None:
    assert Message.coerce({"role": "user", "content": "hi"}) == Message("user", "hi")


def test_message_coerce_returns_a_message_unchanged() -> None:
    message = Message("assistant", "ok")
    assert Message.coerce(message) is message


@pytest.mark.parametrize(
    ("value", "missing"),
    [({"role": "user"}, "content"), ({"content": "hi"}, "role"), ({}, "role")],
)
def test_message_coerce_names_missing_keys(value: dict[str, Any], missing: str) -> None:
    with pytest.raises(ConfigError, match=f"needs the key.*{missing}") as info:
        Message.coerce(value)
    assert info.value.field == "messages"


@pytest.mark.parametrize("value", ["user: hi", 3, None, ("user", "hi")])
def test_message_coerce_rejects_non_mappings(value: Any) -> None:
    with pytest.raises(ConfigError, match="must be a Message or a dict") as info:
        Message.coerce(value)
    assert info.value.field == "messages"


def test_message_coerce_validates_dict_values() -> None:
    with pytest.raises(ConfigError) as info:
        Message.coerce({"role": "wizard", "content": "hi"})
    assert info.value.field == "role"
    with pytest.raises(ConfigError) as info:
        Message.coerce({"role": "user", "content": ["hi"]})
    assert info.value.field == "content"


def test_coerce_messages_mixes_messages_and_dicts() -> None:
    result = coerce_messages([Message("system", "be brief"), {"role": "user", "content": "hi"}])
    assert result == [Message("system", "be brief"), Message("user", "hi")]


def test_coerce_messages_accepts_any_iterable() -> None:
    result = coerce_messages(iter([{"role": "user", "content": "hi"}]))
    assert result == [Message("user", "hi")]


def test_coerce_messages_rejects_an_empty_list() -> None:
    with pytest.raises(ConfigError, match="at least one message") as info:
        coerce_messages([])
    assert info.value.field == "messages"


@pytest.mark.parametrize(
    "value",
    ["hello", b"hello", {"role": "user", "content": "hi"}, 42],
    ids=["str", "bytes", "dict", "int"],
)
def test_coerce_messages_rejects_non_lists(value: Any) -> None:
    with pytest.raises(ConfigError, match="must be a list of messages") as info:
        coerce_messages(value)
    assert info.value.field == "messages"


# -- GenerateConfig -------------------------------------------------------------------------------


def test_generate_config_defaults_match_the_design() -> None:
    config = GenerateConfig()
    assert config.max_tokens == 256
    assert config.temperature == 0.0
    assert config.top_k == 0
    assert config.top_p == 0.0
    assert config.repeat_penalty == 0.0
    assert config.stop_tokens == ()
    assert config.stop_sequences == ()
    assert config.seed is None
    assert config.return_logits is False
    assert config.first_token_timeout is None
    assert config.idle_timeout is None
    assert config.total_timeout is None
    assert not config.has_deadlines
    assert [f.name for f in dataclasses.fields(GenerateConfig)] == [
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "repeat_penalty",
        "stop_tokens",
        "stop_sequences",
        "seed",
        "return_logits",
        "first_token_timeout",
        "idle_timeout",
        "total_timeout",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "prompt_cache",
    ]
    assert config.response_format is None
    assert config.prompt_cache is True
    assert config.presence_penalty == config.frequency_penalty == 0.0
    assert config.logprobs is False
    assert config.top_logprobs == 0


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("presence_penalty", 2.5, "between -2.0 and 2.0"),
        ("frequency_penalty", -2.01, "between -2.0 and 2.0"),
        ("presence_penalty", float("nan"), "between -2.0 and 2.0"),
        ("logprobs", 1, "must be a bool"),
        ("top_logprobs", 21, "<= 20"),
        ("top_logprobs", -1, ">= 0"),
        ("top_logprobs", True, "must be an int"),
    ],
)
def test_generate_config_checks_penalties_and_logprobs(
    field: str, value: object, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        GenerateConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field


def test_top_logprobs_implies_logprobs() -> None:
    assert GenerateConfig(top_logprobs=5).logprobs is True
    assert GenerateConfig(logprobs=True).top_logprobs == 0


def test_generate_config_normalises_lists_to_tuples() -> None:
    config = GenerateConfig(stop_tokens=[2, 3], stop_sequences=["\n\n", "END"])
    assert config.stop_tokens == (2, 3)
    assert isinstance(config.stop_tokens, tuple)
    assert config.stop_sequences == ("\n\n", "END")
    assert isinstance(config.stop_sequences, tuple)
    # Tuples make the config hashable, so it can key a cache.
    assert hash(config) == hash(GenerateConfig(stop_tokens=(2, 3), stop_sequences=("\n\n", "END")))


def test_generate_config_converts_numbers_to_float() -> None:
    config = GenerateConfig(temperature=1, top_p=1, repeat_penalty=2)
    assert isinstance(config.temperature, float)
    assert isinstance(config.top_p, float)
    assert isinstance(config.repeat_penalty, float)


def test_generate_config_accepts_boundary_values() -> None:
    config = GenerateConfig(max_tokens=0, top_p=1.0, seed=0, return_logits=True)
    assert (config.max_tokens, config.top_p, config.seed, config.return_logits) == (
        0,
        1.0,
        0,
        True,
    )


_INVALID_CONFIG_VALUES: list[tuple[str, Any]] = [
    ("max_tokens", -1),
    ("max_tokens", 1.5),
    ("max_tokens", True),
    ("max_tokens", "3"),
    ("temperature", -0.1),
    ("temperature", math.nan),
    ("temperature", math.inf),
    ("temperature", -math.inf),
    ("temperature", "0.5"),
    ("top_k", -1),
    ("top_k", 2.0),
    ("top_p", -0.01),
    ("top_p", 1.01),
    ("repeat_penalty", -1.0),
    ("stop_tokens", "abc"),
    ("stop_tokens", [1, "2"]),
    ("stop_tokens", [True]),
    ("stop_tokens", 5),
    ("stop_sequences", "END"),
    ("stop_sequences", ["END", ""]),
    ("stop_sequences", ["END", 3]),
    ("seed", -1),
    ("seed", 1.0),
    ("return_logits", 1),
    ("return_logits", "yes"),
]


@pytest.mark.parametrize(("field", "value"), _INVALID_CONFIG_VALUES)
def test_generate_config_rejects_invalid_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: ") as info:
        GenerateConfig(**{field: value})
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("field", "value"), _INVALID_CONFIG_VALUES)
def test_with_options_validates_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        GenerateConfig().with_options(**{field: value})
    assert info.value.field == field


def test_with_options_returns_an_updated_copy() -> None:
    base = GenerateConfig(max_tokens=10)
    updated = base.with_options(temperature=0.5, stop_sequences=["x"])
    assert updated == GenerateConfig(max_tokens=10, temperature=0.5, stop_sequences=("x",))
    assert base == GenerateConfig(max_tokens=10)
    assert base.with_options() is base


def test_with_options_unknown_key_suggests_the_close_match() -> None:
    with pytest.raises(ConfigError, match="did you mean 'max_tokens'") as info:
        GenerateConfig().with_options(max_token=5)
    assert info.value.field == "max_token"
    assert "unknown generation option" in str(info.value)


def test_with_options_unknown_key_without_close_match_lists_known_names() -> None:
    with pytest.raises(ConfigError, match=r"\(known: first_token_timeout, .*max_tokens") as info:
        GenerateConfig().with_options(frobnicate=True)
    assert info.value.field == "frobnicate"
    assert "did you mean" not in str(info.value)


def test_resolve_config_defaults() -> None:
    assert resolve_config(None, {}) == GenerateConfig()


def test_resolve_config_keywords_win_over_the_config() -> None:
    config = GenerateConfig(max_tokens=5, temperature=0.5)
    resolved = resolve_config(config, {"temperature": 0.9, "seed": 3})
    assert resolved == GenerateConfig(max_tokens=5, temperature=0.9, seed=3)


def test_resolve_config_keeps_the_config_without_keywords() -> None:
    config = GenerateConfig(top_k=40)
    assert resolve_config(config, {}) == config


@pytest.mark.parametrize("config", [{"max_tokens": 5}, "greedy", GenOpts()])
def test_resolve_config_rejects_other_config_types(config: Any) -> None:
    with pytest.raises(ConfigError, match="must be a GenerateConfig") as info:
        resolve_config(config, {})
    assert info.value.field == "config"


def test_resolve_config_rejects_unknown_keywords() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, {"temprature": 0.5})
    assert info.value.field == "temprature"
    assert "did you mean 'temperature'" in str(info.value)


# -- LoadConfig -----------------------------------------------------------------------------------


def test_load_config_defaults_match_the_design() -> None:
    config = LoadConfig()
    assert config.backend is None
    assert config.context_len == 0
    assert config.gpu_layers == -1
    assert config.parallel_slots == 0
    assert config.adapter_path is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backend", ""),
        ("backend", 3),
        ("context_len", -1),
        ("context_len", 1.5),
        ("context_len", "2048"),
        ("gpu_layers", -2),
        ("gpu_layers", True),
        ("parallel_slots", -1),
        ("parallel_slots", None),
        ("adapter_path", 3),
        ("adapter_path", b"/adapters/x"),
    ],
)
def test_load_config_rejects_invalid_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: ") as info:
        LoadConfig(**{field: value})
    assert info.value.field == field


def test_load_config_accepts_valid_values() -> None:
    config = LoadConfig(backend="llama", context_len=4096, gpu_layers=0, parallel_slots=4)
    assert (config.backend, config.context_len, config.gpu_layers, config.parallel_slots) == (
        "llama",
        4096,
        0,
        4,
    )


def test_load_config_adapter_path_becomes_str(tmp_path: Path) -> None:
    config = LoadConfig(adapter_path=tmp_path / "adapter")  # type: ignore[arg-type]
    assert config.adapter_path == str(tmp_path / "adapter")
    assert isinstance(config.adapter_path, str)


# -- GenOpts --------------------------------------------------------------------------------------


def test_genopts_default_is_go_mls_default_gen_opts() -> None:
    opts = GenOpts.default()
    assert opts == GenOpts(temperature=0.1)
    assert opts.temperature == 0.1
    assert opts.max_tokens == 0
    assert opts.model == ""
    assert opts.top_k == 0
    assert opts.top_p == 0.0
    assert opts.repeat_penalty == 0.0
    assert opts.stop_tokens == ()
    assert opts.stop_sequences == ()


def test_genopts_zero_value_is_all_zero() -> None:
    opts = GenOpts()
    assert (opts.temperature, opts.max_tokens, opts.model, opts.top_k) == (0.0, 0, "", 0)
    assert (opts.top_p, opts.repeat_penalty, opts.stop_tokens, opts.stop_sequences) == (
        0.0,
        0.0,
        (),
        (),
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -1.0),
        ("temperature", math.nan),
        ("max_tokens", -1),
        ("max_tokens", 2.5),
        ("model", 3),
        ("top_k", -1),
        ("top_p", 1.5),
        ("top_p", -0.5),
        ("repeat_penalty", -0.1),
        ("stop_tokens", "abc"),
        ("stop_tokens", ["a"]),
        ("stop_sequences", "END"),
        ("stop_sequences", [""]),
    ],
)
def test_genopts_rejects_invalid_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: ") as info:
        GenOpts(**{field: value})
    assert info.value.field == field


def test_genopts_normalises_lists_to_tuples() -> None:
    opts = GenOpts(stop_tokens=[1], stop_sequences=["x"])
    assert opts.stop_tokens == (1,)
    assert opts.stop_sequences == ("x",)


#: Every GenOpts field that maps onto a GenerateConfig field, with a non-zero value and its zero.
_GENOPTS_MAPPING: list[tuple[str, Any, Any]] = [
    ("temperature", 0.7, 0.0),
    ("max_tokens", 64, 0),
    ("top_k", 40, 0),
    ("top_p", 0.9, 0.0),
    ("repeat_penalty", 1.1, 0.0),
    ("stop_tokens", (2, 7), ()),
    ("stop_sequences", ("\n\n", "END"), ()),
]
_GENOPTS_ONLY = {"model"}
_BASE = GenerateConfig(
    max_tokens=99,
    temperature=0.3,
    top_k=5,
    top_p=0.5,
    repeat_penalty=1.3,
    stop_tokens=(9,),
    stop_sequences=("STOP",),
    seed=11,
    return_logits=True,
)


def test_genopts_mapping_covers_every_field() -> None:
    genopts_fields = {f.name for f in dataclasses.fields(GenOpts)}
    config_fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    mapped = {field for field, _, _ in _GENOPTS_MAPPING}
    assert mapped | _GENOPTS_ONLY == genopts_fields
    assert mapped <= config_fields
    assert not _GENOPTS_ONLY & config_fields


@pytest.mark.parametrize(("field", "value", "zero"), _GENOPTS_MAPPING)
def test_genopts_non_zero_field_lands_in_the_config(field: str, value: Any, zero: Any) -> None:
    config = GenOpts(**{field: value}).to_config()
    assert getattr(config, field) == value
    # Every other field keeps the GenerateConfig default.
    assert config == dataclasses.replace(GenerateConfig(), **{field: value})


@pytest.mark.parametrize(("field", "value", "zero"), _GENOPTS_MAPPING)
def test_genopts_non_zero_field_overrides_the_base(field: str, value: Any, zero: Any) -> None:
    config = GenOpts(**{field: value}).to_config(base=_BASE)
    assert config == dataclasses.replace(_BASE, **{field: value})


@pytest.mark.parametrize(("field", "value", "zero"), _GENOPTS_MAPPING)
def test_genopts_zero_field_keeps_the_default(field: str, value: Any, zero: Any) -> None:
    config = GenOpts(**{field: zero}).to_config()
    assert getattr(config, field) == getattr(GenerateConfig(), field)
    assert config == GenerateConfig()


@pytest.mark.parametrize(("field", "value", "zero"), _GENOPTS_MAPPING)
def test_genopts_zero_field_keeps_the_base_value(field: str, value: Any, zero: Any) -> None:
    config = GenOpts(**{field: zero}).to_config(base=_BASE)
    assert getattr(config, field) == getattr(_BASE, field)
    assert config == _BASE


@pytest.mark.parametrize(("field", "value", "zero"), _GENOPTS_MAPPING)
def test_genopts_to_options_has_only_non_zero_fields(field: str, value: Any, zero: Any) -> None:
    assert GenOpts(**{field: value}).to_options() == {field: value}
    assert GenOpts(**{field: zero}).to_options() == {}


def test_genopts_to_options_leaves_out_model() -> None:
    assert GenOpts(model="gpt-4o-mini", top_k=3).to_options() == {"top_k": 3}


def test_genopts_model_does_not_reach_the_config() -> None:
    config = GenOpts(model="gpt-4o-mini").to_config()
    assert config == GenerateConfig()
    assert not hasattr(config, "model")


def test_genopts_default_maps_to_temperature_0_1() -> None:
    assert GenOpts.default().to_config() == GenerateConfig(temperature=0.1)


def test_genopts_to_config_rejects_a_bad_base() -> None:
    with pytest.raises(ConfigError) as info:
        GenOpts().to_config(base={"max_tokens": 1})  # type: ignore[arg-type]
    assert info.value.field == "config"


def test_genopts_from_config_round_trip() -> None:
    config = GenerateConfig(
        max_tokens=64,
        temperature=0.7,
        top_k=40,
        top_p=0.9,
        repeat_penalty=1.1,
        stop_tokens=(2,),
        stop_sequences=("END",),
    )
    opts = GenOpts.from_config(config, model="m")
    assert opts == GenOpts(
        temperature=0.7,
        max_tokens=64,
        model="m",
        top_k=40,
        top_p=0.9,
        repeat_penalty=1.1,
        stop_tokens=(2,),
        stop_sequences=("END",),
    )
    assert opts.to_config() == config


def test_genopts_from_default_config_round_trip() -> None:
    opts = GenOpts.from_config(GenerateConfig())
    assert opts.model == ""
    assert opts.to_config() == GenerateConfig()


def test_genopts_from_config_keeps_seed_only_through_the_base() -> None:
    # GenOpts has no seed or return_logits; pass the original config as base to keep them.
    config = GenerateConfig(seed=3, return_logits=True, temperature=0.2)
    assert GenOpts.from_config(config).to_config(base=config) == config
    assert GenOpts.from_config(config).to_config().seed is None


# -- results --------------------------------------------------------------------------------------


def test_result_content_aliases_text() -> None:
    result = Result("Paris", finish_reason="stop")
    assert result.content == "Paris"
    assert result.content == result.text
    assert result.metrics is None


def test_batch_result_text_joins_tokens() -> None:
    batch = BatchResult(tokens=[Token(0, "Par"), Token(1, "is"), Token(2, "")])
    assert batch.text == "Paris"
    assert batch.error is None
    assert BatchResult().text == ""


def test_batch_result_keeps_its_error() -> None:
    error = GenerationError("boom")
    assert BatchResult(error=error).error is error


def test_metrics_and_info_default_to_zero() -> None:
    metrics = GenerateMetrics()
    assert all(getattr(metrics, f.name) == 0 for f in dataclasses.fields(GenerateMetrics))
    info = ModelInfo()
    assert info.architecture == ""
    assert (info.vocab_size, info.num_layers, info.hidden_size) == (0, 0, 0)
    assert (info.quant_bits, info.quant_group) == (0, 0)


_INSTANCES: list[Any] = [
    Token(1, "a"),
    Message("user", "hi"),
    GenerateConfig(),
    LoadConfig(),
    GenOpts(),
    GenerateMetrics(),
    ModelInfo(),
    ClassifyResult(Token(1, "a")),
    BatchResult(),
    Result("x"),
    DiscoveredModel("/models/x"),
]


@pytest.mark.parametrize("instance", _INSTANCES, ids=lambda obj: type(obj).__name__)
def test_dataclasses_are_frozen(instance: Any) -> None:
    field = dataclasses.fields(instance)[0].name
    before = getattr(instance, field)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, field, before)
    assert getattr(instance, field) == before


@pytest.mark.parametrize("instance", _INSTANCES, ids=lambda obj: type(obj).__name__)
def test_dataclasses_use_slots(instance: Any) -> None:
    assert hasattr(type(instance), "__slots__")
    assert not hasattr(instance, "__dict__")


@pytest.mark.parametrize("field", ["first_token_timeout", "idle_timeout", "total_timeout"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "5", True])
def test_deadlines_must_be_positive_seconds(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        GenerateConfig(**{field: value})  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize("field", ["first_token_timeout", "idle_timeout", "total_timeout"])
def test_any_deadline_turns_timing_on(field: str) -> None:
    config = GenerateConfig(**{field: 2})  # type: ignore[arg-type]
    assert config.has_deadlines
    assert getattr(config, field) == 2.0
