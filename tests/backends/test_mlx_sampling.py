"""Penalties, log-probabilities and unsupported options on the MLX backend, on the tiny model.

References are computed here, independently of the backend: the same folder loaded again with
mlx-lm, one full forward pass per position (no cache, no chunks), and numpy for the softmax and
the penalties.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest

from goml_async import NotSupported, Token
from goml_async.backends.mlx import MLXModel, load_mlx_model

pytestmark = pytest.mark.anyio

TOLERANCE = 1e-4


@pytest.fixture
async def tiny(tiny_mlx: Path) -> Any:
    model = await load_mlx_model(tiny_mlx)
    yield model
    await model.aclose()


@pytest.fixture(scope="module")
def reference(tiny_mlx: Path) -> Any:
    """The tiny model loaded once more, outside the backend."""
    return mlx_lm.load(str(tiny_mlx))[0]


def _log_softmax(reference: Any, ids: list[int]) -> np.ndarray:
    """The model's own log-probabilities of the token after ``ids``, in float64."""
    logits = np.array(reference(mx.array(ids)[None])[0, -1].astype(mx.float32), dtype=np.float64)
    top = logits.max()
    log_probs: np.ndarray = logits - (top + np.log(np.exp(logits - top).sum()))
    return log_probs


def _greedy_openai(
    reference: Any, prompt: list[int], count: int, presence: float, frequency: float
) -> list[int]:
    """Greedy decoding with OpenAI's penalties: logit -= presence*(c>0) + frequency*c."""
    generated: list[int] = []
    counts: Counter[int] = Counter()
    for _ in range(count):
        scores = _log_softmax(reference, prompt + generated)
        for token, seen in counts.items():
            scores[token] -= presence + frequency * seen
        chosen = int(np.argmax(scores))
        generated.append(chosen)
        counts[chosen] += 1
    return generated


def _check_logprobs(reference: Any, prompt: list[int], tokens: list[Token], top: int) -> None:
    """Each token's logprob and top_logprobs are the model's own distribution there."""
    for index, token in enumerate(tokens):
        expected = _log_softmax(reference, prompt + [t.id for t in tokens[:index]])
        assert token.logprob == pytest.approx(expected[token.id], abs=TOLERANCE)
        assert len(token.top_logprobs) == top
        ranked = np.argsort(-expected)[:top]
        assert [t.id for t in token.top_logprobs] == ranked.tolist()
        for entry in token.top_logprobs:
            assert entry.logprob == pytest.approx(expected[entry.id], abs=TOLERANCE)
        values = [t.logprob for t in token.top_logprobs]
        assert values == sorted(values, reverse=True)


# -- penalties ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "presence", "frequency"),
    [
        ("json dumps", 0.0, 2.0),
        ("json dumps", 2.0, 0.0),
        ("hello there", 0.5, 1.0),
        ("hello there", -2.0, 0.0),
    ],
)
async def test_presence_and_frequency_penalties_follow_openai(
    tiny: MLXModel, reference: Any, prompt: str, presence: float, frequency: float
) -> None:
    ids = tiny._tokenizer.encode(prompt)
    tokens = [
        t.id
        async for t in tiny.generate(
            prompt, max_tokens=24, presence_penalty=presence, frequency_penalty=frequency
        )
    ]
    assert tokens == _greedy_openai(reference, ids, 24, presence, frequency)


async def test_a_frequency_penalty_stops_the_greedy_repetition(tiny: MLXModel) -> None:
    plain = [t.id async for t in tiny.generate("json dumps", max_tokens=24)]
    assert len(set(plain)) == 1  # the tiny model repeats one token greedily
    penalised = [
        t.id async for t in tiny.generate("json dumps", max_tokens=24, frequency_penalty=2)
    ]
    assert len(set(penalised)) > 12
    assert max(Counter(penalised).values()) <= 2
    # A negative presence penalty makes repetition more likely, not less.
    mixed = [t.id async for t in tiny.generate("hello there", max_tokens=24)]
    encouraged = [
        t.id async for t in tiny.generate("hello there", max_tokens=24, presence_penalty=-2)
    ]
    assert len(set(encouraged)) <= len(set(mixed))


async def test_penalties_do_not_count_the_prompt(tiny: MLXModel, reference: Any) -> None:
    """OpenAI's penalties count generated tokens only (mlx-lm's own count the prompt too)."""
    plain = [t.id async for t in tiny.generate("json dumps", max_tokens=1)]
    prompt = "json dumps" + tiny._tokenizer.decode([plain[0]]) * 10  # the greedy token, often
    ids = tiny._tokenizer.encode(prompt)
    likeliest = int(np.argmax(_log_softmax(reference, ids)))
    assert likeliest in ids[-20:]  # a penalty that counted the prompt would push it down
    first = [t.id async for t in tiny.generate(prompt, max_tokens=1, presence_penalty=2)]
    assert first == _greedy_openai(reference, ids, 1, 2.0, 0.0) == [likeliest]


# -- log-probabilities ----------------------------------------------------------------------------


async def test_top_logprobs_are_the_models_own_most_likely_tokens(
    tiny: MLXModel, reference: Any
) -> None:
    prompt = "hello there"
    tokens = [t async for t in tiny.generate(prompt, max_tokens=14, top_logprobs=5)]
    _check_logprobs(reference, tiny._tokenizer.encode(prompt), tokens, 5)
    for token in tokens:  # greedy: the chosen token is the most likely one
        assert token.top_logprobs[0].id == token.id
        assert token.top_logprobs[0].logprob == token.logprob
        assert all(t.text == tiny._tokenizer.decode([t.id]) for t in token.top_logprobs)
    chat = [
        t async for t in tiny.chat([{"role": "user", "content": "hi"}], max_tokens=3, logprobs=True)
    ]
    assert all(t.logprob is not None and t.top_logprobs == () for t in chat)


async def test_logprobs_ignore_penalties_and_temperature(tiny: MLXModel, reference: Any) -> None:
    """Reported logprobs are the model's distribution, not the one the sampler drew from."""
    prompt = "json dumps"
    ids = tiny._tokenizer.encode(prompt)
    options: list[dict[str, Any]] = [
        {"frequency_penalty": 2.0},
        {"repeat_penalty": 1.5},
        {"temperature": 0.7, "seed": 3, "presence_penalty": 1.0},
    ]
    for extra in options:
        stream = tiny.generate(prompt, max_tokens=10, top_logprobs=3, **extra)
        tokens = [t async for t in stream]
        _check_logprobs(reference, ids, tokens, 3)
        assert any(t.id != t.top_logprobs[0].id for t in tokens), extra  # the penalty chose


async def test_without_top_logprobs_each_token_still_has_its_logprob(tiny: MLXModel) -> None:
    tokens = [t async for t in tiny.generate("hello", max_tokens=4)]
    assert all(t.logprob is not None and t.top_logprobs == () for t in tokens)


# -- classify -------------------------------------------------------------------------------------


async def test_classify_reports_logprobs_and_honours_seed_and_top_p(
    tiny: MLXModel, reference: Any
) -> None:
    [result] = await tiny.classify(["hello there"], top_logprobs=4)
    expected = _log_softmax(reference, tiny._tokenizer.encode("hello there"))
    assert result.token.id == int(np.argmax(expected))
    assert result.token.logprob == pytest.approx(expected[result.token.id], abs=TOLERANCE)
    assert [t.id for t in result.token.top_logprobs] == np.argsort(-expected)[:4].tolist()
    # top_p keeps the smallest set of tokens holding that much probability: here, one.
    top_p = float(np.exp(expected.max())) / 2
    for seed in range(6):
        [nucleus] = await tiny.classify(["hello there"], temperature=1.0, top_p=top_p, seed=seed)
        assert nucleus.token.id == result.token.id
    drawn = [
        (await tiny.classify(["hello there"], temperature=1.0, seed=5))[0].token.id
        for _ in range(2)
    ]
    assert drawn[0] == drawn[1]


# -- batch ----------------------------------------------------------------------------------------


async def test_a_batch_honours_penalties_logprobs_stop_tokens_and_seed(tiny: MLXModel) -> None:
    prompts = ["hello there", "json dumps"]
    options: dict[str, Any] = {"max_tokens": 12, "frequency_penalty": 1.5, "top_logprobs": 3}
    batch = await tiny.batch_generate(prompts, **options)
    for prompt, result in zip(prompts, batch, strict=True):
        single = [t async for t in tiny.generate(prompt, **options)]
        assert [t.id for t in result.tokens] == [t.id for t in single]
        for mine, theirs in zip(result.tokens, single, strict=True):
            assert mine.logprob == pytest.approx(theirs.logprob, abs=TOLERANCE)
            assert [t.id for t in mine.top_logprobs] == [t.id for t in theirs.top_logprobs]
    greedy = [t.id async for t in tiny.generate("hello there", max_tokens=16)]
    stop_at = next(token for token in greedy if token != greedy[0])
    [stopped] = await tiny.batch_generate(["hello there"], max_tokens=16, stop_tokens=[stop_at])
    assert [t.id for t in stopped.tokens] == greedy[: greedy.index(stop_at)]
    sampled = [
        [t.id for t in (await tiny.batch_generate(prompts, temperature=1.0, seed=11))[1].tokens]
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


async def test_a_batch_with_stop_sequences_cuts_each_reply(tiny: MLXModel) -> None:
    full = await tiny.generate("def ", max_tokens=12).collect()
    stop = full.text[len(full.text) // 2 :][:2]
    expected = await tiny.generate("def ", max_tokens=12, stop_sequences=[stop]).collect()
    assert expected.text != full.text
    [result] = await tiny.batch_generate(["def "], max_tokens=12, stop_sequences=[stop])
    assert result.error is None
    assert "".join(t.text for t in result.tokens) == expected.text


# -- what MLX cannot honour -----------------------------------------------------------------------


async def test_options_mlx_cannot_honour_are_refused_by_name(tiny: MLXModel) -> None:
    with pytest.raises(NotSupported, match="return_logits"):
        await tiny.generate("hello", max_tokens=2, return_logits=True).collect()
    with pytest.raises(NotSupported, match="return_logits"):
        await tiny.chat([{"role": "user", "content": "hi"}], return_logits=True).collect()
    with pytest.raises(NotSupported, match="return_logits"):
        await tiny.batch_generate(["hello"], max_tokens=2, return_logits=True)
    refused: list[dict[str, Any]] = [
        {"stop_tokens": [1]},
        {"stop_sequences": ["x"]},
        {"first_token_timeout": 5.0},
        {"idle_timeout": 5.0},
        {"total_timeout": 5.0},
    ]
    for option in refused:
        [name] = option
        with pytest.raises(NotSupported, match=name):
            await tiny.classify(["hello"], **option)
