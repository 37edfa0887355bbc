"""Tool calling on MLX: SmolLM2 (no tool format in its template: the reply held to a call
schema) for round trips, and the tiny model for the mechanics.

The tiny model has random weights. With its own template it is the "no tool format" path;
copied with a Hermes/Qwen-style template (``<tool_call>`` markers, which mlx-lm reads with its
``json_tools`` parser) it is the template path: there the tests check what the template
renders, that a required call is still held to the call schema, and how the parser splits
text and calls, fed text that a real tool-trained model writes (random weights never write a
marker, and no tool-trained MLX model is available offline).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from tool_data import ASK, TOOLS, WEATHER_PARAMETERS

from goml_async import ConfigError, Message, SchemaViolation, Token, ToolCall, ToolCallDelta
from goml_async.backends.mlx import MLXModel, load_mlx_model

pytestmark = [pytest.mark.anyio]


# A Qwen2.5-style tool template, cut down: mlx-lm picks its json_tools parser for it.
HERMES_TEMPLATE = """
{%- if tools %}<|im_start|>system
You may call functions.
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Return each call as <tool_call>{"name": <name>, "arguments": <args>}</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for tool_call in message.tool_calls %}{%- set tool_call = tool_call.function %}
<tool_call>
{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}
""".strip()


@pytest.fixture(scope="session")
def tiny_tools_mlx(tiny_mlx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a tool-aware chat template."""
    folder = tmp_path_factory.mktemp("tiny-tools") / "tiny-tools"
    shutil.copytree(tiny_mlx, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = HERMES_TEMPLATE
    config_path.write_text(json.dumps(config), encoding="utf-8")
    for stale in folder.glob("chat_template.*"):
        stale.unlink()
    return folder


@pytest.fixture
async def tiny(tiny_mlx: Path) -> AsyncIterator[MLXModel]:
    async with await load_mlx_model(tiny_mlx) as model:
        yield model


@pytest.fixture
async def hermes(tiny_tools_mlx: Path) -> AsyncIterator[MLXModel]:
    async with await load_mlx_model(tiny_tools_mlx) as model:
        yield model


async def _decoded(model: MLXModel, messages: list[Any], **config: Any) -> str:
    """The prompt the model is fed for ``chat(messages, **config)``, decoded (nothing generated)."""
    captured: list[str] = []

    async def capture(prompt: Any, context: Any, held: Any = None) -> AsyncIterator[Token]:
        captured.append(model._tokenizer.decode(model._prompt_ids(prompt)))
        nothing: tuple[Token, ...] = ()
        for token in nothing:
            yield token

    model._generate = capture  # type: ignore[method-assign, assignment]
    try:
        await model.chat(messages, **config)
    except SchemaViolation:
        pass  # an empty reply where a call was possible
    finally:
        del model._generate
    (prompt,) = captured
    return prompt


# -- the tiny model: mechanics ---------------------------------------------------------------------


async def test_the_call_schema_makes_a_random_model_call_a_tool(tiny: MLXModel) -> None:
    """SmolLM2's template (the tiny model's) has no tool format: the schema does it all."""
    assert not tiny.template_tools
    for choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
        result = await tiny.chat(ASK, tools=TOOLS, tool_choice=choice, max_tokens=96)
        assert result.finish_reason == "tool_calls", result
        (call,) = result.tool_calls
        if isinstance(choice, dict):
            assert call.name == "get_time"
        assert call.id.startswith("call_")
        schema = next(
            t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.name
        )
        jsonschema.validate(call.parsed_arguments(), schema)
        assert result.text == ""


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_auto_is_a_call_or_text_never_both(tiny: MLXModel, stream: bool) -> None:
    calls: Sequence[ToolCall]
    for seed in range(3):
        options: dict[str, Any] = {"max_tokens": 96, "temperature": 1.0, "seed": seed}
        if stream:
            async with tiny.chat(ASK, tools=TOOLS, **options) as s:
                events = [event async for event in s.events()]
            deltas = [e for e in events if isinstance(e, ToolCallDelta)]
            assert not (deltas and any(isinstance(e, Token) and e.text for e in events))
            calls, text = s.tool_calls, s.text
        else:
            result = await tiny.chat(ASK, tools=TOOLS, **options)
            calls, text = result.tool_calls, result.text
        if calls:
            assert len(calls) == 1 and text == ""
        else:
            # A content answer: the JSON wrapper never reaches the caller.
            assert '"content"' not in text


async def test_none_offers_no_tools_and_renders_the_history(tiny: MLXModel) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "18 degrees", "tool_call_id": "call_1"},
    ]
    result = await tiny.chat(history, tools=TOOLS, tool_choice="none", max_tokens=8)
    assert result.tool_calls == () and result.finish_reason in ("stop", "length")


async def test_the_plain_template_gets_the_tools_and_history_as_text(tiny: MLXModel) -> None:
    model = tiny
    call = Message(
        "assistant", "", tool_calls=[ToolCall("call_7", "get_weather", '{"city": "Oslo"}')]
    )
    history = [*ASK, call, Message("tool", "18 degrees", tool_call_id="call_7")]
    prompt = await _decoded(model, history, tools=TOOLS, tool_choice="auto", max_tokens=4)
    assert '"name": "get_weather"' in prompt and "The local time in a city." in prompt
    assert '{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt
    assert "Result of get_weather (call call_7):\n18 degrees" in prompt
    assert '{"content": <your answer>}' in prompt
    none = await _decoded(model, history, tools=TOOLS, tool_choice="none", max_tokens=4)
    assert "The local time in a city." not in none and "Result of get_weather" in none


async def test_a_reply_cut_short_is_a_violation_not_a_call(tiny: MLXModel) -> None:
    stream = tiny.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=3)
    with pytest.raises(SchemaViolation, match="before a complete tool call"):
        await stream
    assert stream.tool_calls == () and stream.finish_reason == "error"


async def test_fail_closed_cases(tiny: MLXModel) -> None:
    with pytest.raises(ConfigError) as info:
        tiny.generate("hi", tools=TOOLS)
    assert info.value.field == "tools"
    with pytest.raises(ConfigError) as info:
        tiny.chat(ASK, tools=TOOLS, response_format={"type": "json_object"})
    assert info.value.field == "tools"
    with pytest.raises(ConfigError) as info:
        tiny.chat(ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    assert info.value.field == "tool_choice"


async def test_concurrent_tool_chats_share_the_batch(tiny: MLXModel) -> None:
    """Eight held replies decode together in the batch; each one's grammar is its own."""
    calls: dict[int, Any] = {}

    async def one(index: int) -> None:
        tool = TOOLS[index % 2]["function"]["name"]
        named = {"type": "function", "function": {"name": tool}}
        result = await tiny.chat(
            [{"role": "user", "content": f"Question {index}"}],
            tools=TOOLS,
            tool_choice=named,
            max_tokens=256,  # random weights: long strings, but the schema bounds them
        )
        (call,) = result.tool_calls
        assert call.name == tool
        calls[index] = call

    async with anyio.create_task_group() as group:
        for index in range(8):
            group.start_soon(one, index)
    assert sorted(calls) == list(range(8))
    assert len({call.id for call in calls.values()}) == 8


# -- the template path: a tool-aware template, mlx-lm's parser -------------------------------------


async def test_a_tool_template_renders_tools_calls_and_results(hermes: MLXModel) -> None:
    model = hermes
    assert model.template_tools
    assert model._tokenizer.tool_call_start == "<tool_call>"
    call = Message(
        "assistant", "", tool_calls=[ToolCall("call_7", "get_weather", '{"city": "Oslo"}')]
    )
    history = [*ASK, call, Message("tool", "18 degrees", tool_call_id="call_7")]
    prompt = await _decoded(model, history, tools=TOOLS, max_tokens=4)
    assert "<tools>" in prompt and '"name": "get_time"' in prompt
    # The earlier call in the template's own format, its arguments as an object.
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt
    assert "<tool_response>\n18 degrees\n</tool_response>" in prompt
    assert "Result of" not in prompt  # no plain-text rendering on this path
    none = await _decoded(model, history, tools=TOOLS, tool_choice="none", max_tokens=4)
    assert "<tools>" not in none and "<tool_response>" in none


async def test_a_tool_template_still_holds_a_required_call(hermes: MLXModel) -> None:
    result = await hermes.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=96)
    (call,) = result.tool_calls
    assert result.finish_reason == "tool_calls"
    jsonschema.validate(
        call.parsed_arguments(),
        WEATHER_PARAMETERS if call.name == "get_weather" else TOOLS[1]["function"]["parameters"],
    )


async def test_a_tool_template_decodes_freely_under_auto(hermes: MLXModel) -> None:
    """Random weights write no marker: the text passes through as text."""
    result = await hermes.chat(ASK, tools=TOOLS, max_tokens=12)
    plain = await hermes.chat(ASK, max_tokens=12)
    assert "<tool_call>" not in result.text
    assert result.tool_calls == () and result.finish_reason in ("stop", "length")
    assert result.text != '{"content"'
    assert plain.text  # the same model without tools


def _feeding(model: MLXModel, text: str, size: int = 3) -> None:
    """Make the model "write" ``text`` in pieces of ``size`` characters (not the weights)."""

    async def fed(prompt: Any, context: Any, held: Any = None) -> AsyncIterator[Token]:
        for start in range(0, len(text), size):
            yield Token(start, text[start : start + size])

    model._generate = fed  # type: ignore[method-assign, assignment]


CALL = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
    "\n</tool_call>"
)


@pytest.mark.parametrize("size", [1, 3, 7, 500])
async def test_the_parser_splits_text_and_calls(hermes: MLXModel, size: int) -> None:
    _feeding(hermes, f"Let me check. {CALL}\n{CALL.replace('Paris', 'Oslo')}", size)
    async with hermes.chat(ASK, tools=TOOLS) as stream:
        events = [event async for event in stream.events()]
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text == "Let me check. \n"  # nothing of the markers or the calls' JSON
    assert [e.index for e in events if isinstance(e, ToolCallDelta)] == [0, 1]
    assert stream.finish_reason == "tool_calls"
    assert [c.parsed_arguments()["city"] for c in stream.tool_calls] == ["Paris", "Oslo"]


async def test_a_text_that_only_looks_like_a_marker_is_text(hermes: MLXModel) -> None:
    _feeding(hermes, "a <tool and <tool_cal", 2)
    result = await hermes.chat(ASK, tools=TOOLS)
    assert result.text == "a <tool and <tool_cal" and result.tool_calls == ()


@pytest.mark.parametrize(
    ("written", "match"),
    [
        (CALL.replace('"celsius"', '"kelvin"'), "arguments of the call to 'get_weather'"),
        (CALL.replace("get_weather", "get_rain"), "'get_rain', which is not among the tools"),
        ("<tool_call>\n{not json}\n</tool_call>", "parser cannot read"),
        (CALL[:40], "ended inside a tool call"),
    ],
    ids=["bad-arguments", "unknown-tool", "unparsable", "cut-short"],
)
async def test_a_bad_call_fails_closed(hermes: MLXModel, written: str, match: str) -> None:
    _feeding(hermes, written)
    stream = hermes.chat(ASK, tools=TOOLS)
    with pytest.raises(SchemaViolation, match=match):
        await stream
    assert stream.tool_calls == ()


async def test_a_call_under_none_is_not_parsed(hermes: MLXModel) -> None:
    _feeding(hermes, CALL)
    result = await hermes.chat(ASK, tools=TOOLS, tool_choice="none")
    assert result.tool_calls == () and result.text == CALL


# -- SmolLM2: real round trips ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # SmolLM2 on MLX decodes ~12 tok/s here;
# the loop mechanics run on both loops with the tiny model above
async def test_round_trips_on_smollm2(smollm2_mlx: Path) -> None:
    """A call (streamed and whole), the tool's result, an answer; then named and auto."""
    async with await load_mlx_model(smollm2_mlx) as model:
        assert not model.template_tools
        for stream in (False, True):
            if stream:
                async with model.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=64) as s:
                    events = [event async for event in s.events()]
                deltas = [e for e in events if isinstance(e, ToolCallDelta)]
                assert deltas and deltas[0].name == s.tool_calls[0].name
                assert s.finish_reason == "tool_calls"
                calls = list(s.tool_calls)
            else:
                first = await model.chat(ASK, tools=TOOLS, tool_choice="required", max_tokens=64)
                assert first.finish_reason == "tool_calls" and first.text == ""
                calls = list(first.tool_calls)
            (call,) = calls
            assert call.name == "get_weather"  # the question is about the weather
            jsonschema.validate(call.parsed_arguments(), WEATHER_PARAMETERS)
            history: list[Any] = [
                *ASK,
                Message("assistant", "", tool_calls=calls),
                Message("tool", "18 degrees and sunny", tool_call_id=call.id),
            ]
            answer = await model.chat(history, tools=TOOLS, tool_choice="none", max_tokens=32)
            assert answer.text.strip() and answer.tool_calls == ()
            assert answer.finish_reason in ("stop", "length")
        named = await model.chat(
            ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            max_tokens=64,
        )
        assert [c.name for c in named.tool_calls] == ["get_time"]
        auto = await model.chat(ASK, tools=TOOLS, max_tokens=64)
        assert auto.tool_calls or auto.text.strip()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # SmolLM2 on MLX decodes ~12 tok/s here;
# the loop mechanics run on both loops with the tiny model above
async def test_many_round_trips_all_valid_on_smollm2(smollm2_mlx: Path) -> None:
    """Eight questions at once in the batch: every one a valid call, then an answer."""
    cities = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Rome", "Bern"]
    valid: list[str] = []

    async def one(model: MLXModel, city: str) -> None:
        ask = [{"role": "user", "content": f"What is the weather in {city}?"}]
        first = await model.chat(ask, tools=TOOLS[:1], tool_choice="required", max_tokens=64)
        (call,) = first.tool_calls
        jsonschema.validate(call.parsed_arguments(), WEATHER_PARAMETERS)
        history: list[Any] = [
            *ask,
            first.to_message(),
            Message("tool", "sunny", tool_call_id=call.id),
        ]
        final = await model.chat(history, max_tokens=24)
        assert final.text
        valid.append(city)

    async with await load_mlx_model(smollm2_mlx) as model, anyio.create_task_group() as group:
        for city in cities:
            group.start_soon(one, model, city)
    print(f"mlx tool round trips: {len(valid)}/{len(cities)}")
    assert sorted(valid) == sorted(cities)
