"""Structured output on a real llama-server with the bundled SmolLM2: through LlamaModel (the
server's own json_schema and GBNF grammar) and through HTTPModel on the same server's /v1.

One server serves the whole module (started once, on a thread of its own), so the schema set
runs on both anyio backends without a server start per test; the module runs twice, on the
built llama-server and on the xllamacpp launcher.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pydantic
import pytest
from model_fixtures import module_llama_server, shared_llama
from structured_schemas import SCHEMAS

from goml_async import ConfigError, SchemaViolation
from goml_async.backends.http import HTTPModel
from goml_async.backends.llama import LlamaModel
from goml_async.backends.llama_server import LlamaServer
from goml_async.testing import FakeOpenAIServer, Script

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SLOTS = 4


@pytest.fixture(scope="module", params=["llama-server", "launcher"])
def server(request: pytest.FixtureRequest, bundled_gguf: Path) -> Iterator[LlamaServer]:
    """The module's server: the built llama-server, then the xllamacpp launcher."""
    yield from module_llama_server(request, bundled_gguf, SLOTS)


@pytest.fixture
async def llama(server: LlamaServer, bundled_gguf: Path) -> AsyncIterator[LlamaModel]:
    async with await shared_llama(server, bundled_gguf) as model:
        yield model


@pytest.fixture
async def http(server: LlamaServer) -> AsyncIterator[HTTPModel]:
    async with HTTPModel(server.base_url + "/v1", generate_endpoint="chat") as model:
        yield model


def schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


async def run_schema_set(model: HTTPModel) -> list[str]:
    """Every schema of the set on ``model``; the names of those whose output did not validate."""
    failures: list[str] = []
    limiter = anyio.CapacityLimiter(SLOTS)

    async def one(name: str, prompt: str, schema: dict[str, Any]) -> None:
        async with limiter:
            try:
                result = await model.chat(
                    [{"role": "user", "content": f"{prompt} Answer in JSON."}],
                    max_tokens=96,
                    response_format=schema_format(name, schema),
                )
            except SchemaViolation as exc:
                failures.append(f"{name}: {exc}")
                return
        # An independent check of what the stream already validated.
        jsonschema.validate(json.loads(result.text), schema)
        assert result.parsed == json.loads(result.text)

    async with anyio.create_task_group() as group:
        for name, prompt, schema in SCHEMAS:
            group.start_soon(one, name, prompt, schema)
    return failures


async def test_every_schema_validates_on_llama(llama: LlamaModel) -> None:
    assert len(SCHEMAS) >= 30
    failures = await run_schema_set(llama)
    print(f"llama: {len(SCHEMAS) - len(failures)}/{len(SCHEMAS)} schema-valid")
    assert failures == []


async def test_every_schema_validates_over_http(http: HTTPModel) -> None:
    failures = await run_schema_set(http)
    print(f"http: {len(SCHEMAS) - len(failures)}/{len(SCHEMAS)} schema-valid")
    assert failures == []


async def test_native_completion_route_takes_the_schema_too(llama: LlamaModel) -> None:
    name, _, schema = SCHEMAS[0]
    result = await llama.generate(
        "A person, as JSON:", max_tokens=64, response_format=schema_format(name, schema)
    )
    jsonschema.validate(result.parsed, schema)


@pytest.mark.parametrize("route", ["generate", "chat"])
async def test_regex_and_choice(llama: LlamaModel, route: str) -> None:
    formats: list[tuple[dict[str, Any], str | None]] = [
        ({"type": "regex", "pattern": r"[A-Z]{2}-\d{3}"}, r"^[A-Z]{2}-[0-9]{3}$"),
        ({"type": "choice", "choices": ["yes", "no", 'maybe "so"']}, None),
    ]
    for fmt, check in formats:
        if route == "generate":
            result = await llama.generate("The answer:", max_tokens=16, response_format=fmt)
        else:
            messages = [{"role": "user", "content": "Answer."}]
            result = await llama.chat(messages, max_tokens=16, response_format=fmt)
        assert result.parsed == result.text
        if check is None:
            assert result.text in fmt["choices"]
        else:
            assert re.fullmatch(check, result.text), result.text


async def test_json_object(llama: LlamaModel, http: HTTPModel) -> None:
    messages = [{"role": "user", "content": 'Reply with {"ok": true} and nothing else.'}]
    for model in (llama, http):
        result = await model.chat(messages, max_tokens=200, response_format={"type": "json_object"})
        assert isinstance(result.parsed, dict)


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=16)
    population: int = pydantic.Field(ge=0, le=100_000_000)


async def test_pydantic_class_gives_an_instance(llama: LlamaModel, http: HTTPModel) -> None:
    messages = [{"role": "user", "content": "Describe Paris as JSON."}]
    for model in (llama, http):
        result = await model.chat(messages, max_tokens=64, response_format=City)
        assert isinstance(result.parsed, City)


async def test_streaming_tokens_arrive_and_the_end_validates(llama: LlamaModel) -> None:
    name, prompt, schema = next(entry for entry in SCHEMAS if entry[0] == "mixed")
    texts: list[str] = []
    async with llama.chat(
        [{"role": "user", "content": prompt}],
        max_tokens=96,
        response_format=schema_format(name, schema),
    ) as stream:
        async for token in stream:
            texts.append(token.text)
    assert len(texts) > 3
    assert stream.finish_reason == "stop"
    jsonschema.validate(json.loads("".join(texts)), schema)
    assert stream.parsed == json.loads("".join(texts))


# -- fail closed ----------------------------------------------------------------------------------


async def test_a_schema_the_model_cannot_finish_is_a_violation(llama: LlamaModel) -> None:
    # Satisfiable, so no compile-time error: the long enum value cannot fit in 3 tokens, and
    # the end of the stream finds the document incomplete.
    schema = {"enum": ["a rather long answer that takes many tokens to write out in full"]}
    with pytest.raises(SchemaViolation, match="ended before") as caught:
        await llama.generate("Answer:", max_tokens=3, response_format=schema_format("e", schema))
    assert caught.value.partial_text.startswith('"a')
    assert llama.err() is caught.value


async def test_unsupported_keyword_fails_before_any_request(llama: LlamaModel) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 7}}}
    with pytest.raises(ConfigError) as caught:
        llama.chat([{"role": "user", "content": "hi"}], response_format=schema_format("m", schema))
    assert caught.value.field == "response_format.json_schema.schema.properties.n.multipleOf"


async def test_http_refuses_goml_only_formats() -> None:
    async with HTTPModel("http://127.0.0.1:9/v1") as model:
        with pytest.raises(ConfigError, match="regex output is not supported on the http"):
            model.chat(
                [{"role": "user", "content": "hi"}],
                response_format={"type": "regex", "pattern": "a"},
            )


async def test_a_server_that_ignores_the_schema_raises_with_the_partial_text() -> None:
    reply = ['{"name"', ': "Ann"', ', "age": ', '"old"', "}"]
    schema = SCHEMAS[0][2]
    with FakeOpenAIServer(Script(tokens=reply)) as fake:
        async with HTTPModel(fake.base_url) as model:
            delivered: list[str] = []
            with pytest.raises(SchemaViolation) as caught:
                async for token in model.chat(
                    [{"role": "user", "content": "hi"}], response_format=schema_format("p", schema)
                ):
                    delivered.append(token.text)
        sent = fake.requests[-1].json["response_format"]
    assert delivered == reply[:3]
    assert caught.value.partial_text == '{"name": "Ann", "age": '
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["required"] == [
        "name",
        "age",
    ]
