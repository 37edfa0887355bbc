"""The MLX half of bench_structured.py: constrained decoding against unconstrained on MLX.

The bundled SmolLM2-135M-Instruct converted to MLX (float32, ``default_mlx_model()``), the
same prompt and schema as the llama.cpp half, alternating rounds; tok/s is the stream's own
decode rate (tokens after the first / decode time). Then the per-token cost of the mask
itself: the constrained reply's token IDs fed to a fresh ``GrammarProcessor`` one by one
(consume the token, compute the bitmask, build the mask row), timed over many repeats.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import _report

from goml_async import GenerateMetrics, SchemaViolation


@dataclass(frozen=True, slots=True)
class MLXRun:
    """One MLX reply: its decode rate and its token IDs."""

    decode_tps: float
    tokens: int
    ids: tuple[int, ...]


def missing() -> str | None:
    """Why the MLX half cannot run here, or None."""
    try:
        import mlx.core  # noqa: F401
        import mlx_lm  # noqa: F401
    except ImportError as exc:
        return f"not measured: mlx / mlx-lm are not installed ({exc})"
    return None


async def _one(model: Any, prompt: str, fmt: Any, max_tokens: int) -> MLXRun:
    options: dict[str, Any] = {"max_tokens": max_tokens}
    if fmt is not None:
        options["response_format"] = fmt
    ids: list[int] = []
    async with model.chat([{"role": "user", "content": prompt}], **options) as stream:
        async for token in stream:
            ids.append(token.id)
    metrics = stream.metrics or GenerateMetrics()
    return MLXRun(metrics.decode_tokens_per_sec, metrics.generated_tokens, tuple(ids))


async def measure_mlx(
    prompt: str, fmt: Any, rounds: int, max_tokens: int
) -> tuple[dict[str, list[MLXRun]], float]:
    """Alternating rounds of each case, and the mask's median ns per token."""
    from goml_async.backends.mlx import load_mlx_model
    from goml_async.backends.mlx_convert import default_mlx_model

    async with await load_mlx_model(default_mlx_model()) as model:
        with contextlib.suppress(SchemaViolation):  # 8 tokens cut the document short
            await _one(model, prompt, fmt, 8)  # the grammar tokenizer is built once, untimed
        cases: dict[str, Callable[[], Awaitable[MLXRun]]] = {
            "json_schema": lambda: _one(model, prompt, fmt, max_tokens),
            "unconstrained": lambda: _one(model, prompt, None, max_tokens),
        }
        samples = await _report.round_robin(cases, rounds)
        runs = {name: list(found) for name, found in samples.items()}
        mask_ns = mask_ns_per_token(model, fmt, runs["json_schema"][0].ids, 50)
    return runs, mask_ns


def mask_ns_per_token(model: Any, fmt: Any, ids: Sequence[int], repeat: int) -> float:
    """Median ns per token of the constrained decoder's own work (consume + mask)."""
    import mlx.core as mx

    from goml_async.backends._mlx_grammar import GrammarProcessor
    from goml_async.structured import normalize_response_format

    resolved = normalize_response_format(fmt)
    assert resolved is not None
    tokenizer = model._grammar.get()
    width = model.info().vocab_size
    logits = mx.zeros((1, width))
    per_token = []
    for _ in range(repeat):
        processor = GrammarProcessor(resolved, tokenizer)
        history = mx.array([0])
        started = time.perf_counter_ns()
        masked = processor(history, logits)  # the first step feeds nothing
        mx.eval(masked)
        for token_id in ids[:-1]:
            mx.eval(processor(mx.array([token_id]), logits))
        per_token.append((time.perf_counter_ns() - started) / max(1, len(ids)))
    return statistics.median(per_token)


def summary(runs: dict[str, list[MLXRun]], mask_ns: float) -> tuple[float, str]:
    """The decode ratio and a line that says it all."""
    schema = statistics.median(run.decode_tps for run in runs["json_schema"])
    plain = statistics.median(run.decode_tps for run in runs["unconstrained"])
    ratio = schema / plain if plain else 0.0
    tokens = statistics.median(run.tokens for run in runs["json_schema"])
    share = mask_ns / (1e9 / schema) if schema else 0.0
    line = (
        f"SmolLM2-135M-Instruct (MLX, float32): JSON schema {schema:.1f} tok/s against "
        f"unconstrained {plain:.1f} tok/s = {ratio:.3f}x (median of {len(runs['json_schema'])} "
        f"alternating rounds, {tokens:.0f} constrained tokens); the mask (consume the token, "
        f"compute the llguidance bitmask, build the row) {mask_ns / 1000:.0f} us per token, "
        f"{share:.1%} of a constrained decode step"
    )
    return ratio, line
