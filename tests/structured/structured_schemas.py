"""The JSON schemas every backend must meet: nested objects, arrays, enums, numbers, optional
fields and patterns. Each is written in the subset llama.cpp's grammar enforces in full, with
bounded strings and arrays so that the small test model finishes within a few dozen tokens."""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "maxLength": 16}
SHORT = {"type": "string", "maxLength": 8}


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    """A closed object schema."""
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


#: (name, prompt, schema)
SCHEMAS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "person",
        "Give a person's name and age.",
        obj(["name", "age"], name=NAME, age={"type": "integer", "minimum": 0, "maximum": 120}),
    ),
    ("boolean", "Is the sky blue?", obj(["answer"], answer={"type": "boolean"})),
    ("colour_enum", "Pick a colour.", obj(["colour"], colour={"enum": ["red", "green", "blue"]})),
    ("int_enum", "Pick a number.", obj(["n"], n={"enum": [1, 2, 3]})),
    ("const", "Say the version.", obj(["version"], version={"const": "1.0"})),
    ("number", "Give a temperature.", obj(["celsius"], celsius={"type": "number"})),
    (
        "bounded_int",
        "Rate it from 1 to 5.",
        obj(["stars"], stars={"type": "integer", "minimum": 1, "maximum": 5}),
    ),
    (
        "negative_int",
        "Give a temperature below zero.",
        obj(["t"], t={"type": "integer", "minimum": -50, "maximum": -1}),
    ),
    (
        "exclusive",
        "Give a percentage.",
        obj(["p"], p={"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100}),
    ),
    (
        "string_list",
        "List two fruits.",
        obj(["fruits"], fruits={"type": "array", "items": SHORT, "minItems": 1, "maxItems": 3}),
    ),
    (
        "int_list",
        "List some numbers.",
        obj(
            ["values"],
            values={
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 9},
                "maxItems": 4,
            },
        ),
    ),
    (
        "tuple",
        "Give a point.",
        # A pair. Not prefixItems: JSON Schema lets more items follow a prefix, which
        # llama.cpp's grammar does not (it refuses prefixItems beside items), so the set uses
        # what every backend reads alike.
        obj(
            ["point"],
            point={
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 99},
                "minItems": 2,
                "maxItems": 2,
            },
        ),
    ),
    (
        "nested",
        "Describe a city.",
        obj(["city"], city=obj(["name", "country"], name=NAME, country=NAME)),
    ),
    (
        "deep_nested",
        "Describe an address.",
        obj(
            ["a"],
            a=obj(
                ["b"], b=obj(["c"], c=obj(["zip"], zip={"type": "string", "pattern": "^[0-9]{5}$"}))
            ),
        ),
    ),
    (
        "optional_field",
        "Give a name and maybe a nickname.",
        obj(["name"], name=NAME, nickname=SHORT),
    ),
    (
        "all_optional",
        "Give any details.",
        obj([], x={"type": "integer", "minimum": 0, "maximum": 9}, y=SHORT),
    ),
    (
        "nullable",
        "Give a middle name or null.",
        obj(["middle"], middle={"type": ["string", "null"], "maxLength": 8}),
    ),
    (
        "any_of",
        "Give an id.",
        obj(["id"], id={"anyOf": [{"type": "integer", "minimum": 0, "maximum": 999}, SHORT]}),
    ),
    (
        "pattern_code",
        "Give a product code.",
        obj(["code"], code={"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}),
    ),
    (
        "pattern_hex",
        "Give a colour in hex.",
        obj(["hex"], hex={"type": "string", "pattern": "^#[0-9a-f]{6}$"}),
    ),
    ("date", "Give a date.", obj(["day"], day={"type": "string", "format": "date"})),
    ("uuid", "Give an id.", obj(["id"], id={"type": "string", "format": "uuid"})),
    (
        "min_length",
        "Give a word.",
        obj(["word"], word={"type": "string", "minLength": 3, "maxLength": 10}),
    ),
    (
        "objects_list",
        "List two people.",
        obj(
            ["people"],
            people={
                "type": "array",
                "items": obj(["name"], name=SHORT),
                "minItems": 1,
                "maxItems": 2,
            },
        ),
    ),
    (
        "matrix",
        "Give a small matrix.",
        obj(
            ["rows"],
            rows={
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 9},
                    "maxItems": 2,
                },
                "maxItems": 2,
            },
        ),
    ),
    (
        "refs",
        "Give two points.",
        {
            "$defs": {"pt": obj(["x"], x={"type": "integer", "minimum": 0, "maximum": 9})},
            **obj(["a", "b"], a={"$ref": "#/$defs/pt"}, b={"$ref": "#/$defs/pt"}),
        },
    ),
    (
        "top_array",
        "List colours.",
        {"type": "array", "items": {"enum": ["red", "blue"]}, "minItems": 1, "maxItems": 3},
    ),
    ("top_string", "Name a fruit.", {"type": "string", "maxLength": 12}),
    ("top_integer", "Give a number.", {"type": "integer", "minimum": 0, "maximum": 1000}),
    ("top_enum", "Yes or no?", {"enum": ["yes", "no"]}),
    (
        "mixed",
        "Describe a book.",
        obj(
            ["title", "year", "tags", "available"],
            title=NAME,
            year={"type": "integer", "minimum": 1500, "maximum": 2030},
            tags={"type": "array", "items": SHORT, "maxItems": 2},
            available={"type": "boolean"},
        ),
    ),
    (
        "nested_optional",
        "Give an id and maybe a tag.",
        obj(
            ["id"],
            id={"type": "integer", "minimum": 0, "maximum": 99},
            meta=obj([], tag=SHORT),
        ),
    ),
    ("null", "Say nothing.", obj(["nothing"], nothing={"type": "null"})),
]
