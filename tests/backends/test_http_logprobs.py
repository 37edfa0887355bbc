"""HTTPModel's log-probabilities from servers other than llama.cpp.

OpenAI and vLLM may put several tokens, each with its log-probability, in one SSE chunk, which
llama.cpp never does; those replies come from an httpx transport that answers with the
recorded SSE body. A server that ignores ``logprobs`` is the loopback FakeOpenAIServer.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import pytest

from goml_async import NotSupported, Token, TopLogprob
from goml_async.backends.http import HTTPModel
from goml_async.testing import FakeOpenAIServer, Script

pytestmark = pytest.mark.anyio


def sse(*payloads: object) -> bytes:
    events = [f"data: {json.dumps(payload)}\n\n" for payload in payloads]
    return "".join([*events, "data: [DONE]\n\n"]).encode()


# OpenAI's legacy completions shape: two tokens in the first chunk, one in the second.
LEGACY = sse(
    {
        "choices": [
            {
                "index": 0,
                "text": " Paris",
                "finish_reason": None,
                "logprobs": {
                    "tokens": [" Par", "is"],
                    "token_logprobs": [-0.25, -0.01],
                    "top_logprobs": [{" Par": -0.25, " Lyon": -3.0}, {"is": -0.01, "ry": -5.5}],
                    "text_offset": [0, 4],
                },
            }
        ]
    },
    {
        "choices": [
            {
                "index": 0,
                "text": ".",
                "finish_reason": "stop",
                "logprobs": {
                    "tokens": ["."],
                    "token_logprobs": [-0.5],
                    "top_logprobs": [{".": -0.5, "!": -1.5}],
                    "text_offset": [6],
                },
            }
        ]
    },
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}},
)


def replying(body: bytes, seen: list[dict[str, object]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx.MockTransport(handler)


async def test_every_token_of_a_chunk_of_several_is_streamed() -> None:
    seen: list[dict[str, object]] = []
    model = HTTPModel("http://server.test/v1", transport=replying(LEGACY, seen))
    async with model:
        stream = model.generate("The capital of France is", top_logprobs=1)
        tokens = [token async for token in stream]
    assert seen[0]["logprobs"] == 1
    assert tokens == [
        Token(-1, " Par", -0.25, (TopLogprob(" Par", -0.25),)),
        Token(-1, "is", -0.01, (TopLogprob("is", -0.01),)),
        Token(-1, ".", -0.5, (TopLogprob(".", -0.5),)),
    ]
    assert stream.text == " Paris."
    assert stream.metrics is not None
    assert stream.metrics.generated_tokens == 3


async def test_alternatives_are_cut_to_what_was_asked() -> None:
    model = HTTPModel("http://server.test/v1", transport=replying(LEGACY, []))
    async with model:
        tokens = [token async for token in model.generate("x", logprobs=True)]
    assert [token.top_logprobs for token in tokens] == [(), (), ()]
    assert [token.logprob for token in tokens] == [-0.25, -0.01, -0.5]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_a_server_that_ignores_logprobs_fails_closed(
    endpoint: Literal["completions", "chat"],
) -> None:
    with FakeOpenAIServer(Script(tokens=["Hi", "!"])) as server:
        model = HTTPModel(server.base_url, generate_endpoint=endpoint)
        async with model:
            with pytest.raises(NotSupported, match="without log-probabilities"):
                await model.generate("hello", logprobs=True).collect()
            # Without logprobs the same server is fine.
            assert (await model.generate("hello").collect()).text == "Hi!"
