"""Tool calling: a round trip (the model calls a tool, the tool answers, the model replies),
streamed tool-call deltas, and a fail-closed case.

    python examples/tool_calling.py                   # the bundled SmolLM2-135M-Instruct
    python examples/tool_calling.py --model models/other.gguf
    python examples/tool_calling.py --model http://127.0.0.1:8080/v1 --model-name qwen3

Each section prints a ``== title`` line, then what happened. The tools are OpenAI's shapes;
every call's arguments are checked against its tool's parameters before the reply returns,
and a reply that does not meet ``tool_choice`` raises SchemaViolation instead of returning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import goml_async
from goml_async import Message, SchemaViolation, TextModel, ToolCall, ToolCallDelta

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def get_weather(city: str, unit: str) -> str:
    """The tool itself: a stand-in for a real weather service."""
    degrees = 18 if unit == "celsius" else 64
    return f"{degrees} degrees {unit} and sunny in {city}"


def run_tool(call: ToolCall) -> str:
    """Run the call the model made (its arguments were validated against the parameters)."""
    arguments: dict[str, Any] = call.parsed_arguments()
    return get_weather(**arguments)


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
        print("== a round trip: a required call, the tool's result, the answer")
        ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
        first = await model.chat(ask, tools=[WEATHER], tool_choice="required", max_tokens=64)
        (call,) = first.tool_calls
        print(f"{first.finish_reason}: {call.name}({call.arguments})")
        result = run_tool(call)
        print(f"tool: {result}")
        history = [
            *ask,
            first.to_message(),
            Message("tool", result, tool_call_id=call.id),
            # The bundled 135M model tends to repeat its call as text right after a tool
            # result; a short user turn asks it for the answer (larger models need none).
            Message("user", "Now answer my question in one sentence."),
        ]
        answer = await model.chat(history, max_tokens=48)
        print(f"answer: {answer.text.strip()}")

        print("== streamed: tool-call deltas arrive beside the text tokens")
        named = {"type": "function", "function": {"name": "get_weather"}}
        ask = [{"role": "user", "content": "Is it cold in Oslo?"}]
        async with model.chat(ask, tools=[WEATHER], tool_choice=named, max_tokens=64) as stream:
            async for event in stream.events():
                if isinstance(event, ToolCallDelta):
                    print(f"delta {event.index}: name={event.name} {event.arguments!r}")
                else:
                    print(event.text, end="", flush=True)
        print(f"calls: {json.dumps([c.to_openai() for c in stream.tool_calls])}")

        print("== fail closed: a call that cannot be finished in 3 tokens")
        try:
            await model.chat(ask, tools=[WEATHER], tool_choice="required", max_tokens=3)
        except SchemaViolation as exc:
            print(f"SchemaViolation: {exc}")
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
