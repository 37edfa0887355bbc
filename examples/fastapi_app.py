"""A FastAPI app that streams the bundled default model's replies as Server-Sent Events.

Run it with ``uvicorn examples.fastapi_app:app`` or ``python examples/fastapi_app.py --port 8000``,
then:

    curl -N "http://127.0.0.1:8000/ask?question=What+is+the+capital+of+France%3F"
    curl -N "http://127.0.0.1:8000/ask/openai?question=Name+three+colours"

``/ask`` sends each token as ``data: <text>`` (for a browser's EventSource); ``/ask/openai``
sends OpenAI chat chunks ending with ``data: [DONE]``. A client that disconnects stops the
generation. The model (SmolLM2-135M-Instruct on llama.cpp) is loaded once, in the lifespan.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Query, Request

from goml_async import TextModel, load_default_model
from goml_async.integrations.fastapi import (
    TokenStreamResponse,
    openai_sse_response,
    text_sse_response,
)

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model when the server starts; close it (and llama-server) when it stops."""
    async with await load_default_model() as model:
        app.state.model = model
        yield


app = FastAPI(title="goml_async example", lifespan=lifespan)


def _model(request: Request) -> TextModel:
    model: TextModel = request.app.state.model
    return model


@app.get("/ask")
async def ask(
    request: Request,
    question: str = Query(..., max_length=2000),
    max_tokens: int = Query(128, ge=1, le=512),
) -> TokenStreamResponse:
    """Each token as ``data: <text>``; then ``event: done`` with the finish reason and usage."""
    messages = [SYSTEM, {"role": "user", "content": question}]
    return text_sse_response(_model(request).chat(messages, max_tokens=max_tokens))


@app.get("/ask/openai")
async def ask_openai(
    request: Request,
    question: str = Query(..., max_length=2000),
    max_tokens: int = Query(128, ge=1, le=512),
) -> TokenStreamResponse:
    """OpenAI ``chat.completion.chunk`` events, the usage chunk, then ``data: [DONE]``."""
    messages = [SYSTEM, {"role": "user", "content": question}]
    stream = _model(request).chat(messages, max_tokens=max_tokens)
    return openai_sse_response(stream, model="SmolLM2-135M-Instruct")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the example FastAPI app with uvicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
