"""The judge on local models: MLX (the tiny random model) and llama.cpp (the tiny GGUF), and its
default cap on the bundled SmolLM2.

Random weights cannot produce a valid verdict, so every call must end in a JudgeError that keeps
exactly what the model said; a scorer that returned a null or a default here would be hiding a
failure. The real-model judge run is in test_scoring_llama.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import goml_async
from goml_async import GenOpts, JudgeError
from goml_async.scoring import Engine, Judge, Response
from goml_async.scoring.judge import DEFAULT_JUDGE_MAX_TOKENS

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    # One backend is enough here: the stream core is covered on both elsewhere, and each
    # parameter would load the model again.
    return "asyncio"


@pytest.mark.parametrize("backend", ["mlx", "llama"])
async def test_judge_over_a_local_model_records_the_raw_reply(
    backend: str, tiny_mlx: Path, tiny_gguf: Path
) -> None:
    path = tiny_mlx if backend == "mlx" else tiny_gguf
    async with await goml_async.load_model(str(path), backend=backend) as model:
        # GenOpts() leaves the model's greedy default in place, so replies are repeatable. In
        # free text (structured=False), so the reply can be compared with judge.ask's; the
        # schema-constrained judge is tested in test_judge_structured.py.
        judge = Judge(model, opts=GenOpts(), max_tokens=8, structured=False)
        with pytest.raises(JudgeError) as info:
            await judge.score_semantic("Say hi.", "Hi!")
        reply = info.value.raw_reply
        # The same greedy call again gives the same reply: the raw text is the model's own.
        again = await judge.ask(_semantic_prompt("Say hi.", "Hi!"))
        assert reply == again

        # One call at a time: llama.cpp batches concurrent requests, and batched greedy decoding
        # is not bit-for-bit repeatable.
        engine = Engine(judge, concurrency=1, suites="heuristic,semantic")
        report = await engine.score_all(
            [Response(id=str(i), prompt="p", response="r", model="m") for i in range(3)]
        )
        expected = await judge.ask(_semantic_prompt("p", "r"))
    assert report.scored_count == 3 and report.error_count == 3
    # The prompt is the same for the three rows, so the (greedy) reply is too: each error
    # carries the same raw reply, which may be empty when the random model ends at once.
    assert {(error.suite, error.raw_reply) for error in report.errors} == {("semantic", expected)}
    assert all(row.heuristic is not None for row in report.per_prompt["m"])


def _semantic_prompt(prompt: str, response: str) -> str:
    from goml_async.scoring.prompts import format_semantic

    return format_semantic(prompt, response)


@pytest.mark.timeout(300)
async def test_the_default_cap_stops_a_judge_that_rambles(bundled_gguf: Path) -> None:
    # Asked for a long story, the bundled model writes far past the cap unless stopped.
    async with await goml_async.load_model(str(bundled_gguf), backend="llama") as model:
        judge = Judge(model)
        assert judge.max_tokens == DEFAULT_JUDGE_MAX_TOKENS == 256
        reply = await judge.ask("Write a very long story, of 3000 words, about a dragon who sings.")
        metrics = model.metrics()
    # Counted by llama.cpp itself: the server stopped at the cap.
    assert metrics is not None and metrics.generated_tokens == 256
    assert reply.strip()
