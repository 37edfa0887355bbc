"""``classify`` and ``batch_generate`` of the MLX backend: the calls that return whole results.

Both run through the model's scheduler like streams do (``_mlx_scheduler``): each prompt is a
sequence that waits for a slot, prefills in paced chunks between the other sequences' steps,
and then either samples one token (classify, :func:`classify_last`) or decodes in the shared
batch (batch_generate), with its own penalties and log-probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import mlx.core as mx
from mlx_lm.generate import generation_stream

from ..types import ClassifyResult, GenerateConfig
from ._mlx_sampling import Decoding, token_at

__all__ = ["BATCH_FALLBACK_FIELDS", "classify_last"]

#: Options a batch cannot honour: with any of them set, the prompts run as ordinary streams
#: (a ``response_format`` is constrained there, and each reply checked and validated).
BATCH_FALLBACK_FIELDS = (
    "stop_sequences",
    "first_token_timeout",
    "idle_timeout",
    "total_timeout",
    "response_format",
)


def classify_last(
    model: Any,
    cache: list[Any],
    ids: list[int],
    plan: Decoding,
    config: GenerateConfig,
    *,
    side: Any,
    piece: Callable[[int], str],
) -> ClassifyResult:
    """On the worker: with ``ids[:-1]`` in ``cache``, run the last token and sample the next."""
    with mx.stream(generation_stream):
        logits = model(mx.array(ids[-1:])[None], cache=cache)[:, -1, :]
        processed = logits
        for processor in plan.processors:
            processed = processor(mx.array(ids), processed)
        # The sampler gets log-probabilities, as in mlx-lm's generate_step.
        logprobs = processed - mx.logsumexp(processed, axis=-1, keepdims=True)
        token_id = cast(int, plan.sampler(logprobs).item())
    own = plan.model_logprobs(logprobs.reshape(-1))
    token = token_at(token_id, piece(token_id), own, plan, piece, side)
    values = logits[0].astype(mx.float32).tolist() if config.return_logits else None
    return ClassifyResult(token=token, logits=values)
