"""``response_format`` through ``goml serve`` on the bundled SmolLM2 (real llama-server), read
by openai-python: json_schema plain and streamed, ``parse()`` with a pydantic model, goml's
regex on the completions route, and the fail-closed replies (a document cut by max_tokens, a
keyword llama.cpp cannot enforce, a malformed format)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionMessageParam

from .test_serve_llama import Serving, start_serve, stop_serve

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Describe Ann, who is 30 years old. Answer in JSON."}
]


def person_format(schema: dict[str, Any] | None = None) -> Any:
    return {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema or PERSON, "strict": True},
    }


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=16)
    age: int = pydantic.Field(ge=0, le=120)


@pytest.fixture(scope="module")
def served(bundled_gguf: Path) -> Iterator[Serving]:
    serving = start_serve(bundled_gguf)
    try:
        yield serving
    finally:
        if serving.process.poll() is None:
            stop_serve(serving)


@pytest.fixture
def client(served: Serving) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_json_schema_plain_and_streamed_give_the_same_valid_document(
    client: openai.OpenAI,
) -> None:
    plain = client.chat.completions.create(
        model="", messages=ASK, max_tokens=64, temperature=0, response_format=person_format()
    )
    text = plain.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), PERSON)
    assert plain.choices[0].finish_reason == "stop"
    chunks = list(
        client.chat.completions.create(
            model="",
            messages=ASK,
            max_tokens=64,
            temperature=0,
            response_format=person_format(),
            stream=True,
        )
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_parse_with_a_pydantic_model_returns_an_instance(client: openai.OpenAI) -> None:
    parsers = [client.chat.completions.parse]
    beta = getattr(getattr(getattr(client, "beta", None), "chat", None), "completions", None)
    if beta is not None and hasattr(beta, "parse"):
        parsers.append(beta.parse)
    for parse in parsers:
        completion = parse(
            model="", messages=ASK, max_tokens=64, temperature=0, response_format=Person
        )
        person = completion.choices[0].message.parsed
        assert isinstance(person, Person)
        assert 0 <= person.age <= 120 and len(person.name) <= 16


@pytest.mark.parametrize("stream", [False, True])
def test_goml_regex_on_the_completions_route(client: openai.OpenAI, stream: bool) -> None:
    # goml's own shape has no place in openai-python's types: it goes in extra_body.
    extra = {"response_format": {"type": "regex", "pattern": "[0-9]{4}-[0-9]{2}-[0-9]{2}"}}
    prompt = "The first moon landing happened on (YYYY-MM-DD):"
    if stream:
        text = "".join(
            chunk.choices[0].text
            for chunk in client.completions.create(
                model="", prompt=prompt, max_tokens=16, stream=True, extra_body=extra
            )
        )
    else:
        reply = client.completions.create(model="", prompt=prompt, max_tokens=16, extra_body=extra)
        text = reply.choices[0].text
    assert len(text) == 10 and text[4] == text[7] == "-" and text.replace("-", "").isdigit()


def test_a_document_cut_by_max_tokens_is_422_not_a_200(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="", messages=ASK, max_tokens=4, response_format=person_format()
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == ("response_format", "schema_violation")
    assert "ended before a complete" in error["message"]


def test_a_streamed_document_cut_by_max_tokens_ends_with_an_error_event(
    client: openai.OpenAI,
) -> None:
    texts: list[str] = []
    stream = client.chat.completions.create(
        model="", messages=ASK, max_tokens=4, response_format=person_format(), stream=True
    )
    with pytest.raises(openai.APIError, match="ended before a complete"):
        for chunk in stream:
            if chunk.choices:
                texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts).startswith("{")


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        # llama.cpp's schema converter would drop multipleOf: the llama backend refuses it.
        (
            person_format(
                {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 7}}}
            ),
            "response_format.json_schema.schema.properties.n.multipleOf",
        ),
        # No grammar can be built for it (an empty set of strings).
        (
            person_format({"type": "string", "minLength": 5, "maxLength": 2}),
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "no spaces allowed"}},
            "response_format.json_schema.name",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_format_that_cannot_be_enforced_is_400_naming_the_field(
    client: openai.OpenAI, response_format: Any, param: str, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="", messages=ASK, max_tokens=8, response_format=response_format, stream=stream
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param, error
