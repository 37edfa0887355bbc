"""``classify`` and ``batch_generate`` of the MLX backend: the calls that return whole results.

Both run on the worker inside one ``MLXWorker.call`` and check between steps whether their caller
left. ``classify`` prefills in paced chunks. ``mlx_lm.batch_generate`` runs a whole batch in one
call: no way to stop it, and no per-sequence logits processors. Driving its ``BatchGenerator``
directly gives both: between two steps (one prefill chunk or one decoding step of the whole
batch) the worker checks its caller, and each sequence gets its own penalties and
log-probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, generation_stream
from mlx_lm.models.cache import make_prompt_cache

from ..errors import GenerationError
from ..types import BatchResult, ClassifyResult, GenerateConfig, Token
from ._mlx_prefill import MIN_CHUNK, PrefillPacer, prefill
from ._mlx_sampling import Decoding, decoding, token_at
from ._mlx_worker import ConsumerGone

__all__ = ["BATCH_FALLBACK_FIELDS", "classify_prompt", "run_batch"]

#: Options a batch cannot honour: with any of them set, the prompts run as ordinary streams.
BATCH_FALLBACK_FIELDS = ("stop_sequences", "first_token_timeout", "idle_timeout", "total_timeout")

#: ``max_tokens=0`` means no cap; BatchGenerator needs a number.
_NO_CAP = 2**31 - 1


def classify_prompt(
    model: Any,
    ids: list[int],
    config: GenerateConfig,
    *,
    pacer: PrefillPacer,
    stopped: Callable[[], bool],
    side: Any,
    piece: Callable[[int], str],
) -> ClassifyResult:
    """On the worker: prefill ``ids`` and sample the token after them.

    Raises:
        ConsumerGone: ``stopped()`` became true between two prefill chunks.
    """
    cache = make_prompt_cache(model)
    prefill(model, cache, ids[:-1], pacer, stopped)
    plan = decoding(config, prompt_tokens=len(ids), side=side)
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


def run_batch(
    model: Any,
    prompts: Sequence[list[int]],
    config: GenerateConfig,
    *,
    eos_token_ids: Sequence[int],
    pacer: PrefillPacer,
    stopped: Callable[[], bool],
    side: Any,
    piece: Callable[[int], str],
) -> list[BatchResult]:
    """On the worker: generate for every prompt together, in input order.

    A prompt that encodes to no tokens gets its own error; the others still run.

    Raises:
        ConsumerGone: ``stopped()`` became true between two steps.
    """
    results = [
        BatchResult(error=GenerationError("the prompt encodes to no tokens: nothing to generate"))
        if not ids
        else BatchResult()
        for ids in prompts
    ]
    runnable = [index for index, ids in enumerate(prompts) if ids]
    if not runnable:
        return results
    plans = [decoding(config, prompt_tokens=len(prompts[i]), side=side) for i in runnable]
    stops = [[token] for token in (*eos_token_ids, *config.stop_tokens)]
    generator: Any = BatchGenerator(
        model,
        max_tokens=config.max_tokens or _NO_CAP,
        stop_tokens=stops,
        sampler=plans[0].sampler,
    )
    try:
        uids = generator.insert(
            [prompts[i] for i in runnable], logits_processors=[p.processors for p in plans]
        )
        tokens = _drive(generator, dict(zip(uids, plans, strict=True)), pacer, stopped, side, piece)
    finally:
        generator.close()
    for index, uid in zip(runnable, uids, strict=True):
        results[index] = BatchResult(tokens=tuple(tokens[uid]))
    return results


def _drive(
    generator: Any,
    plans: dict[int, Decoding],
    pacer: PrefillPacer,
    stopped: Callable[[], bool],
    side: Any,
    piece: Callable[[int], str],
) -> dict[int, list[Token]]:
    """Step the generator until every sequence is done, checking ``stopped`` between steps."""
    tokens: dict[int, list[Token]] = {uid: [] for uid in plans}
    processed: dict[int, int] = {}  # prompt tokens prefilled so far, per sequence
    in_prompt = len(plans)
    while True:
        if stopped():
            raise ConsumerGone
        # One step prefills a chunk of each sequence in its prompt (up to prefill_batch_size
        # of them at once): they share one chunk's time.
        sharing = max(1, min(in_prompt, generator.prefill_batch_size))
        generator.prefill_step_size = max(MIN_CHUNK, pacer.chunk_tokens() // sharing)
        started = time.perf_counter()
        prompt_steps, generated = generator.next()
        elapsed = time.perf_counter() - started
        if not prompt_steps and not generated:
            return tokens
        step_tokens = 0
        for step in prompt_steps:
            done = int(step.progress[0])
            step_tokens += done - processed.get(step.uid, 0)
            processed[step.uid] = done
            in_prompt -= step.end_of_prompt
        pacer.record(step_tokens, elapsed)
        for response in generated:
            plan = plans[response.uid]
            logprobs = plan.model_logprobs(response.logprobs)
            if response.finish_reason == "stop":
                continue  # an end-of-sequence or stop token is not part of the output
            token_id = int(response.token)
            tokens[response.uid].append(
                token_at(token_id, piece(token_id), logprobs, plan, piece, side)
            )
