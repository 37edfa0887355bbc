"""llama.cpp and MLX on the same weights: the same greedy token IDs and log-probabilities.

``tiny_gguf`` and ``tiny_mlx`` hold the same float32 weights and tokenizer. Greedy IDs must be
identical. Log-probabilities agree within ``TOLERANCE``: llama-server keeps the attention keys
and values in float16 (its default cache type; relative rounding 2**-11, about 5e-4) where
mlx-lm keeps float32, and the two sum float32 products in different orders. On this model that
moves log-probabilities by at most 3.0e-4 (measured on these prompts, both servers); the
tolerance leaves about 7x room without letting a real difference through: the top two
tokens of a position differ by 0.03 to 0.3 here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from model_fixtures import require

from goml_async import TextModel, load_model

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOLERANCE = 2e-3
PROMPTS = [
    "def f(x):",
    "import os\nimport sys\n",
    "The quick brown fox",
    "class A:\n    def __init__(self):",
    "return json.dumps(",
]


@pytest.fixture
async def llama(tiny_gguf: Path, llama_binary: dict[str, Any]) -> AsyncIterator[TextModel]:
    async with await load_model(str(tiny_gguf), threads=2, **llama_binary) as model:
        yield model


@pytest.fixture
async def mlx(tiny_mlx: Path) -> AsyncIterator[TextModel]:
    require("mlx_lm")
    async with await load_model(str(tiny_mlx)) as model:
        yield model


def log_softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    total = top + math.log(math.fsum(math.exp(value - top) for value in logits))
    return [value - total for value in logits]


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_greedy_generation_matches(llama: TextModel, mlx: TextModel, prompt: str) -> None:
    on_llama = [token async for token in llama.generate(prompt, max_tokens=24, logprobs=True)]
    on_mlx = [token async for token in mlx.generate(prompt, max_tokens=24)]
    assert len(on_llama) == len(on_mlx) == 24
    assert [t.id for t in on_llama] == [t.id for t in on_mlx]
    assert "".join(t.text for t in on_llama) == "".join(t.text for t in on_mlx)
    for ours, theirs in zip(on_llama, on_mlx, strict=True):
        assert ours.logprob is not None
        assert theirs.logprob is not None
        assert ours.logprob == pytest.approx(theirs.logprob, abs=TOLERANCE)


async def test_greedy_chat_matches(llama: TextModel, mlx: TextModel) -> None:
    messages = [{"role": "user", "content": "import os"}]
    on_llama = [token async for token in llama.chat(messages, max_tokens=12, logprobs=True)]
    on_mlx = [token async for token in mlx.chat(messages, max_tokens=12)]
    assert [t.id for t in on_llama] == [t.id for t in on_mlx]
    for ours, theirs in zip(on_llama, on_mlx, strict=True):
        assert ours.logprob == pytest.approx(theirs.logprob, abs=TOLERANCE)


async def test_classify_matches(llama: TextModel, mlx: TextModel) -> None:
    on_llama = await llama.classify(PROMPTS, return_logits=True)
    on_mlx = await mlx.classify(PROMPTS, return_logits=True)
    for ours, theirs in zip(on_llama, on_mlx, strict=True):
        assert (ours.token.id, ours.token.text) == (theirs.token.id, theirs.token.text)
        assert ours.logits is not None
        assert theirs.logits is not None
        # llama.cpp's logits are log-probabilities: MLX's raw logits, normalised.
        expected = log_softmax(list(theirs.logits))
        assert max(abs(a - b) for a, b in zip(ours.logits, expected, strict=True)) < TOLERANCE
