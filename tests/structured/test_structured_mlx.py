"""Constrained decoding on MLX: the schema set on SmolLM2, the mechanics on the tiny model.

The tiny model has random weights: unconstrained, it never writes a date, a choice or JSON,
so every valid document it produces here is the grammar's doing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from processes import until
from structured_schemas import SCHEMAS

from goml_async import LoadConfig, NotSupported, SchemaViolation
from goml_async.backends.mlx import MLXModel, load_mlx_model

pytestmark = [pytest.mark.anyio]

DATE = {"type": "regex", "pattern": r"[0-9]{4}-[0-9]{2}-[0-9]{2}"}
SMALL = {
    "type": "json_schema",
    "json_schema": {
        "name": "small",
        "schema": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0, "maximum": 99},
                "c": {"enum": ["x", "y"]},
            },
            "required": ["n", "c"],
            "additionalProperties": False,
        },
    },
}
PROMPTS = ("def ", "import json", "class Foo(object):", "return self")


def schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.mark.slow
@pytest.mark.timeout(400)  # SmolLM2 on two shared cores: 33 documents, 8 at a time
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # SmolLM2 on MLX decodes ~12 tok/s here;
# the loop mechanics run on both loops with the tiny model above
async def test_every_schema_validates_on_smollm2(smollm2_mlx: Path) -> None:
    failures: list[str] = []

    async def one(model: MLXModel, name: str, prompt: str, schema: dict[str, Any]) -> None:
        messages = [{"role": "user", "content": f"{prompt} Answer in JSON."}]
        try:
            result = await model.chat(
                messages, max_tokens=96, response_format=schema_format(name, schema)
            )
        except SchemaViolation as exc:
            failures.append(f"{name}: {exc}")
            return
        jsonschema.validate(json.loads(result.text), schema)  # independent of the stream's check
        assert result.parsed == json.loads(result.text)

    # All at once: 8 decode together in the batch, the rest wait for a slot.
    async with await load_mlx_model(smollm2_mlx) as model, anyio.create_task_group() as group:
        for name, prompt, schema in SCHEMAS:
            group.start_soon(one, model, name, prompt, schema)
    print(f"mlx: {len(SCHEMAS) - len(failures)}/{len(SCHEMAS)} schema-valid")
    assert len(SCHEMAS) >= 30
    assert failures == []


async def test_the_grammar_makes_a_random_model_write_valid_documents(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx) as model:
        plain = await model.generate("def ", max_tokens=12)
        assert not re.fullmatch(DATE["pattern"], plain.text)
        date = await model.generate("def ", max_tokens=16, response_format=DATE)
        assert re.fullmatch(DATE["pattern"], date.text), date.text
        assert date.finish_reason == "stop"
        choice = await model.chat(
            [{"role": "user", "content": "pick"}],
            max_tokens=8,
            response_format={"type": "choice", "choices": ["alpha", "beta", "gamma"]},
        )
        assert choice.parsed in ("alpha", "beta", "gamma")
        small = await model.generate("x = ", max_tokens=200, response_format=SMALL)
        assert small.parsed["c"] in ("x", "y") and 0 <= small.parsed["n"] <= 99


async def test_constrained_streams_batched_equal_each_alone(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx) as model:
        alone = [
            (await model.generate(p, max_tokens=64, response_format=SMALL)).text for p in PROMPTS
        ]
        together: dict[str, str] = {}

        async def one(prompt: str) -> None:
            together[prompt] = (
                await model.generate(prompt, max_tokens=64, response_format=SMALL)
            ).text

        async with anyio.create_task_group() as group:
            for prompt in PROMPTS:
                group.start_soon(one, prompt)
        assert [together[p] for p in PROMPTS] == alone
        assert model._scheduler.peak_live == len(PROMPTS)  # they did decode together


async def test_a_paused_stream_keeps_its_place_in_the_grammar(tiny_mlx: Path) -> None:
    """A slow reader's sequence leaves the batch and rejoins (its matcher rolls back the step
    computed ahead): the document is still valid and the same as when read at once."""
    fmt = {"type": "regex", "pattern": r"([a-z]{2}[0-9]){30}"}
    async with await load_mlx_model(tiny_mlx) as model:
        expected = (await model.generate("def ", max_tokens=200, response_format=fmt)).text
        slow_text: list[str] = []

        async def slow() -> None:
            async with model.generate("def ", max_tokens=200, response_format=fmt) as stream:
                async for token in stream:
                    slow_text.append(token.text)
                    if len(slow_text) == 20:  # stop reading until the sequence has paused
                        await until(lambda: model._scheduler.pauses > 0, 60)

        async def busy(prompt: str) -> None:
            await model.generate(prompt, max_tokens=150)

        async with anyio.create_task_group() as group:
            group.start_soon(slow)
            for prompt in PROMPTS[1:]:
                group.start_soon(busy, prompt)
        assert model._scheduler.pauses > 0  # it did leave the batch and rejoin
        assert "".join(slow_text) == expected
        assert re.fullmatch(fmt["pattern"], expected)


async def test_batch_generate_constrains_every_prompt(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx, LoadConfig(parallel_slots=2)) as model:
        results = await model.batch_generate(list(PROMPTS), max_tokens=16, response_format=DATE)
    for result in results:
        assert result.error is None
        assert re.fullmatch(DATE["pattern"], result.text), result.text


async def test_a_document_cut_by_max_tokens_is_a_violation(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx) as model:
        with pytest.raises(SchemaViolation, match="ended before") as caught:
            await model.generate(
                "def ", max_tokens=3, response_format={"type": "regex", "pattern": "[a-z]{40}"}
            )
        assert re.fullmatch("[a-z]*", caught.value.partial_text)
        # The model goes on serving after the violation.
        assert re.fullmatch(
            DATE["pattern"],
            (await model.generate("def ", max_tokens=16, response_format=DATE)).text,
        )


async def test_classify_refuses_a_response_format(tiny_mlx: Path) -> None:
    async with await load_mlx_model(tiny_mlx) as model:
        with pytest.raises(NotSupported, match="response_format"):
            await model.classify(["def "], response_format=DATE)
