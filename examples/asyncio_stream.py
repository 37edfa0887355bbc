"""Stream, collect, stop, time out, cancel and run generations side by side with plain asyncio.

    python examples/asyncio_stream.py                      # the bundled SmolLM2-135M-Instruct
    python examples/asyncio_stream.py --max-tokens 96      # longer answers
    python examples/asyncio_stream.py --model models/other.gguf
    python examples/asyncio_stream.py --model http://127.0.0.1:8080/v1 --model-name qwen3

Each section prints a ``== title`` line, then what the stream returned: the text, the finish
reason (``stop``, ``length``, ``stop_sequence``, ``cancelled`` or ``error``) and metrics. The
bundled model is small (135M parameters): its answers are short and sometimes wrong, and it
needs the system message below to answer at all well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import goml_async
from goml_async import GenerateMetrics, GenerationTimeout, Message, TextModel, TokenStream

SYSTEM = Message("system", "You are a helpful assistant.")


def ask(question: str) -> list[Message]:
    """A chat with the system message and one user question."""
    return [SYSTEM, Message("user", question)]


def finished(metrics: GenerateMetrics | None) -> GenerateMetrics:
    """The metrics of a finished stream (they are None only while it runs)."""
    assert metrics is not None
    return metrics


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


async def load(spec: str | None, model_name: str) -> TextModel:
    """The bundled model (no ``--model``), a local model file, or an OpenAI-compatible URL."""
    if spec is None:
        return await goml_async.load_default_model()
    if spec.startswith(("http://", "https://")):
        return await goml_async.load_model(spec, model=model_name)
    return await goml_async.load_model(spec)


async def stream_tokens(model: TextModel, max_tokens: int) -> None:
    section("streaming tokens with async for")
    stream = model.chat(ask("What is the capital of France?"), max_tokens=max_tokens)
    async for token in stream:
        print(token.text, end="", flush=True)  # each token as soon as the model produces it
    print()
    # After the loop the stream knows how it ended and what it cost.
    metrics = finished(stream.metrics)
    print(f"finish_reason={stream.finish_reason} tokens={metrics.generated_tokens}")


async def collect_with_metrics(model: TextModel, max_tokens: int) -> None:
    section("collect() and metrics")
    result = await model.chat(ask("Name three colours."), max_tokens=max_tokens).collect()
    m = finished(result.metrics)
    print(result.text.strip())
    print(
        f"finish_reason={result.finish_reason} prompt_tokens={m.prompt_tokens} "
        f"generated_tokens={m.generated_tokens} time_to_first_token={m.time_to_first_token:.2f}s "
        f"decode={m.decode_tokens_per_sec:.1f} tok/s total={m.total_seconds:.2f}s"
    )


async def stop_sequences(model: TextModel) -> None:
    section("stop sequences")
    question = ask("Count from 1 to 10, one number per line.")
    result = await model.chat(question, max_tokens=64, stop_sequences=["5"]).collect()
    # No text from the stop sequence onwards is ever delivered. llama-server applies the stop
    # itself and reports "stop"; when a server does not, the stream cuts the text on the client
    # and reports "stop_sequence".
    print(repr(result.text))
    print(f"finish_reason={result.finish_reason} ('5' in text: {'5' in result.text})")


async def deadline(model: TextModel) -> None:
    section("a deadline: total_timeout")
    question = ask("Write a long story about a lighthouse keeper and a storm.")
    try:
        result = await model.chat(question, max_tokens=1024, total_timeout=2.0).collect()
    except GenerationTimeout as exc:
        # The partial text comes with the error; generation has been stopped at the source.
        print(f"GenerationTimeout: deadline={exc.deadline} after {exc.seconds:g}s")
        if exc.tokens_generated:
            print(f"kept {exc.tokens_generated} tokens: {exc.partial_text.strip()!r}")
        else:  # a busy machine may not even have read the prompt in time
            print("the deadline passed before the first token")
    else:  # a fast machine may finish the whole story in time
        print(f"finished in time: finish_reason={result.finish_reason}")


async def cancel_early(model: TextModel) -> None:
    section("cancelling a stream early: break")
    stream = model.chat(ask("Tell me a story about a cat."), max_tokens=256)
    async with stream:  # leaving the block closes the stream: generation stops at the source
        count = 0
        async for token in stream:
            print(token.text, end="", flush=True)
            count += 1
            if count == 5:
                break
    print(f"\nfinish_reason={stream.finish_reason} after {count} tokens")

    section("cancelling a stream early: task cancellation")
    stream = model.chat(ask("Tell me a story about a dog."), max_tokens=256)
    some_tokens = asyncio.Event()

    async def consume(stream: TokenStream) -> None:
        count = 0
        try:
            async for token in stream:
                print(token.text, end="", flush=True)
                count += 1
                if count == 5:
                    some_tokens.set()
        finally:
            some_tokens.set()  # also when the reply was shorter than that

    task = asyncio.create_task(consume(stream))
    await some_tokens.wait()
    task.cancel()  # as a timeout or a closed client connection would
    with contextlib.suppress(asyncio.CancelledError):
        await task
    print(f"\nfinish_reason={stream.finish_reason} text={stream.text!r}")


async def side_by_side(model: TextModel, max_tokens: int) -> None:
    section("two generations at once with asyncio.gather")
    started = time.perf_counter()
    fruit, animal = await asyncio.gather(
        model.chat(ask("Name a fruit and its colour."), max_tokens=max_tokens).collect(),
        model.chat(ask("Name an animal that lives in the sea."), max_tokens=max_tokens).collect(),
    )
    wall = time.perf_counter() - started
    print(f"1: {fruit.text.strip()}")
    print(f"2: {animal.text.strip()}")
    each = finished(fruit.metrics).total_seconds + finished(animal.metrics).total_seconds
    print(f"wall time {wall:.2f}s for {each:.2f}s of generation")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (32)")
    parser.add_argument(
        "--model", metavar="PATH|URL", help="a model file or an OpenAI-compatible server URL"
    )
    parser.add_argument("--model-name", default="", help="model name sent to a server URL")
    args = parser.parse_args()

    print("loading", args.model or "the bundled SmolLM2-135M-Instruct", "...", flush=True)
    # ``async with`` closes the model at the end, and with it the llama-server it started.
    async with await load(args.model, args.model_name) as model:
        await stream_tokens(model, args.max_tokens)
        await collect_with_metrics(model, args.max_tokens)
        await stop_sequences(model)
        await deadline(model)
        await cancel_early(model)
        await side_by_side(model, args.max_tokens)
    print("\ndone")


if __name__ == "__main__":
    asyncio.run(main())
