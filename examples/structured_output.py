"""Structured output: a pydantic class, a JSON schema streamed, a choice, and a fail-closed case.

    python examples/structured_output.py                   # the bundled SmolLM2-135M-Instruct
    python examples/structured_output.py --model models/other.gguf
    python examples/structured_output.py --model http://127.0.0.1:8080/v1 --model-name qwen3

Each section prints a ``== title`` line, then the validated result. The output is constrained
on the backend (llama.cpp's grammar, an OpenAI-compatible server's ``response_format``) and
checked by goml as it streams: a reply that breaks the format raises SchemaViolation instead
of returning.
"""

from __future__ import annotations

import argparse
import asyncio

import pydantic

import goml_async
from goml_async import SchemaViolation, TextModel


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    country: str = pydantic.Field(max_length=20)
    population: int = pydantic.Field(ge=0, le=100_000_000)


BOOK = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "year": {"type": "integer", "minimum": 1500, "maximum": 2030},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    },
    "required": ["title", "year", "tags"],
    "additionalProperties": False,
}


async def open_model(model: str | None, model_name: str) -> TextModel:
    """The bundled model (no ``--model``), a local model file, or an OpenAI-compatible URL."""
    if model is None:
        return await goml_async.load_default_model()
    if model.startswith(("http://", "https://")):
        return await goml_async.load_model(model, model=model_name)
    return await goml_async.load_model(model)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", metavar="PATH|URL", help="a model file or a server URL")
    parser.add_argument("--model-name", default="", help="model name sent to a server URL")
    args = parser.parse_args()

    async with await open_model(args.model, args.model_name) as model:
        print("== a pydantic class: Result.parsed is an instance")
        ask = [{"role": "user", "content": "Describe Paris as JSON."}]
        result = await model.chat(ask, max_tokens=80, response_format=City)
        print(repr(result.parsed))

        print("== a JSON schema, streamed: tokens arrive, the end is validated")
        book = {"type": "json_schema", "json_schema": {"name": "book", "schema": BOOK}}
        ask = [{"role": "user", "content": "Describe a famous novel as JSON."}]
        async with model.chat(ask, max_tokens=96, response_format=book) as stream:
            async for token in stream:
                print(token.text, end="", flush=True)
        print(f"\nparsed: {stream.parsed!r}")

        print("== a choice")
        ask = [{"role": "user", "content": "Is water wet? Answer yes or no."}]
        choice = {"type": "choice", "choices": ["yes", "no"]}
        print((await model.chat(ask, max_tokens=4, response_format=choice)).parsed)

        print("== fail closed: a document that cannot be finished in 3 tokens")
        try:
            await model.chat(ask, max_tokens=3, response_format=book)
        except SchemaViolation as exc:
            print(f"SchemaViolation: partial_text={exc.partial_text!r}")
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
