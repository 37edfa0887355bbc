"""The backend-independent core: response_format shapes, the StreamChecker and the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest

from goml_async import BaseTextModel, ConfigError, GenerateConfig, SchemaViolation
from goml_async.backends._llama_grammar import check_schema, choice_to_gbnf, regex_to_gbnf
from goml_async.stream import StreamContext
from goml_async.structured import (
    MAX_SCHEMA_DEPTH,
    ResponseFormat,
    StreamChecker,
    grammar_for,
    new_matcher,
    normalize_response_format,
)
from goml_async.testing import ScriptedModel
from goml_async.types import Token

PERSON = {
    "type": "object",
    "properties": {"nick": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["age"],
}


def schema_format(schema: dict[str, Any]) -> ResponseFormat:
    fmt = normalize_response_format(
        {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    )
    assert fmt is not None
    return fmt


# -- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("json", "response_format"),
        ({"kind": "json_object"}, "response_format.type"),
        ({"type": "yaml"}, "response_format.type"),
        ({"type": "json_object", "schema": {}}, "response_format.schema"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a"}},
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": []}},
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "strict": "yes"}},
            "response_format.json_schema.strict",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "strin"}}},
            "response_format.json_schema.schema.type",
        ),
        ({"type": "regex"}, "response_format.pattern"),
        ({"type": "regex", "pattern": "x" * 5000}, "response_format.pattern"),
        ({"type": "choice", "choices": "ab"}, "response_format.choices"),
        ({"type": "choice", "choices": ["a", ""]}, "response_format.choices[1]"),
        ({"type": "choice", "choices": ["a", "a"]}, "response_format.choices"),
        (int, "response_format"),
    ],
)
def test_malformed_shapes_name_the_field(value: Any, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GenerateConfig(response_format=value)
    assert caught.value.field == field


def test_text_and_none_are_unconstrained() -> None:
    assert GenerateConfig(response_format={"type": "text"}).response_format is None
    assert GenerateConfig().structured is None


def test_hostile_sizes_are_refused() -> None:
    deep: dict[str, Any] = {"type": "array"}
    for _ in range(MAX_SCHEMA_DEPTH + 1):
        deep = {"type": "array", "items": deep}
    with pytest.raises(ConfigError, match="nests deeper"):
        schema_format(deep)
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
    with pytest.raises(ConfigError, match="larger than"):
        schema_format(huge)


def test_unsupported_keyword_is_named_with_its_place() -> None:
    with pytest.raises(ConfigError) as caught:
        GenerateConfig(response_format=schema_format({"type": "array", "uniqueItems": True}))
    assert caught.value.field == "response_format.json_schema.schema.uniqueItems"


def test_unsatisfiable_schema_is_a_config_error_up_front() -> None:
    # llguidance proves it empty at compile time, before any request.
    with pytest.raises(ConfigError, match="minLength"):
        GenerateConfig(
            response_format=schema_format({"type": "string", "minLength": 5, "maxLength": 2})
        )


def test_required_properties_come_first() -> None:
    text = schema_format(PERSON).schema_json
    assert text.index('"age"') < text.index('"nick"')


# -- the checker ----------------------------------------------------------------------------------


def test_first_bad_byte_raises_with_the_text_before_the_chunk() -> None:
    checker = StreamChecker(schema_format(PERSON))
    checker.feed('{"age": ')
    with pytest.raises(SchemaViolation) as caught:
        checker.feed("4x}")
    assert caught.value.offset == len('{"age": 4')
    assert caught.value.partial_text == '{"age": '


def test_split_multibyte_utf8_is_checked_byte_by_byte() -> None:
    checker = StreamChecker(schema_format({"type": "string", "maxLength": 3}))
    encoded = '"é"'.encode()
    checker.feed(encoded[:2])  # '"' and the first byte of é
    assert checker.text == '"'
    checker.feed(encoded[2:])
    assert checker.finish() == "é"


def test_accept_at_end_and_incomplete_document() -> None:
    fmt = schema_format(PERSON)
    checker = StreamChecker(fmt)
    checker.feed(' {"age": 3, "nick": "x"}\n')
    assert checker.finish() == {"age": 3, "nick": "x"}
    checker = StreamChecker(fmt)
    checker.feed('{"age": 3')
    with pytest.raises(SchemaViolation, match="ended before"):
        checker.finish()


def test_choice_and_regex() -> None:
    choice = normalize_response_format({"type": "choice", "choices": ["yes", "no"]})
    assert choice is not None
    checker = StreamChecker(choice)
    checker.feed("y")
    with pytest.raises(SchemaViolation):
        checker.feed("o")
    regex = normalize_response_format({"type": "regex", "pattern": "[0-9]{3}"})
    assert regex is not None
    checker = StreamChecker(regex)
    checker.feed("12")
    with pytest.raises(SchemaViolation):
        checker.feed("34")


class Pet(pydantic.BaseModel):
    name: str
    legs: int


def test_pydantic_class_parses_to_an_instance() -> None:
    fmt = normalize_response_format(Pet)
    assert fmt is not None and fmt.model is Pet
    checker = StreamChecker(fmt)
    checker.feed('{"name": "Rex", "legs": 4}')
    assert checker.finish() == Pet(name="Rex", legs=4)


def test_a_matcher_for_any_tokenizer() -> None:
    # What a constrained decoder uses: the grammar and a fresh matcher per sequence.
    fmt = schema_format(PERSON)
    assert grammar_for(fmt)
    matcher = new_matcher(fmt)
    assert matcher.try_consume_tokens(list(b'{"age":1}')) == 9
    assert matcher.is_accepting()


# -- the stream -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_stops_at_the_first_bad_token_and_records_it() -> None:
    model = ScriptedModel(['{"age"', ": 4", "2", "}", " and more"])
    delivered: list[str] = []
    with pytest.raises(SchemaViolation) as caught:
        async for token in model.generate("x", response_format=schema_format(PERSON)):
            delivered.append(token.text)
    assert delivered == ['{"age"', ": 4", "2", "}"]
    assert caught.value.partial_text == '{"age": 42}'
    assert caught.value.tokens_generated == 5
    assert model.err() is caught.value


@pytest.mark.anyio
async def test_a_truncated_document_is_no_success() -> None:
    model = ScriptedModel(['{"age"', ": 4", "2", "}"])
    with pytest.raises(SchemaViolation, match="ended before"):
        await model.generate("x", max_tokens=2, response_format=schema_format(PERSON))
    result = await model.generate("x", response_format=schema_format(PERSON))
    assert result.parsed == {"age": 42}


@pytest.mark.anyio
async def test_result_parsed_is_none_without_a_format() -> None:
    assert (await ScriptedModel(["hi"]).generate("x")).parsed is None


class NoFormats(BaseTextModel):
    def __init__(self) -> None:
        super().__init__(model_type="plain")

    async def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        yield Token(0, "{}")


@pytest.mark.anyio
async def test_a_backend_that_cannot_enforce_fails_closed_up_front() -> None:
    # The default of BaseTextModel.response_formats (the MLX backend's, for now).
    with pytest.raises(ConfigError) as caught:
        NoFormats().generate("x", response_format={"type": "json_object"})
    assert caught.value.field == "response_format"
    assert "not supported on the plain backend" in str(caught.value)


# -- llama.cpp's side -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "integer", "multipleOf": 3}, "multipleOf"),
        ({"type": "number", "minimum": 0}, "minimum"),
        (
            {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
            "properties.a.format",
        ),
        ({"type": "string", "pattern": "[a-z]+"}, "pattern"),
        ({"type": "array", "minItems": 1}, "minItems"),
        ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "properties.a.not"),
    ],
)
def test_llama_refuses_what_its_converter_ignores(schema: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_schema(schema_format(schema))
    assert caught.value.field == f"response_format.json_schema.schema.{field}"


def test_regex_subset_to_gbnf() -> None:
    assert regex_to_gbnf("[0-9]{3}-(?:ab|c)+") == ('root ::= [0-9]{3} "\\x2D" ("a" "b" | "c")+\n')
    assert regex_to_gbnf(r"\d\.x?") == 'root ::= [0-9] "\\x2E" "x"?\n'
    for bad in ("^a", "a$", "(?=a)", r"(a)\1", "a*?", r"\bx", r"[^\d]"):
        with pytest.raises(ConfigError) as caught:
            regex_to_gbnf(bad)
        assert caught.value.field == "response_format.pattern"
    assert choice_to_gbnf(("yes", 'a "b"')) == 'root ::= "yes" | "a\\x20\\x22b\\x22"\n'
