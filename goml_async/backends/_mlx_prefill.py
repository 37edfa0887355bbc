"""Prefill a prompt in chunks sized by time, checking between chunks whether to stop.

mlx-lm prefills a prompt in chunks of a fixed number of tokens (2048 by default) and offers no
way out of one. On a slow device that is minutes of work nobody can stop: a request that timed
out or was cancelled during prefill kept the worker thread busy to the end of its prompt, and the
next request waited for it. Here each chunk is sized from the rate the previous chunks ran at, so
that one takes about ``chunk_seconds`` whatever the model and device, and the worker checks
between chunks whether its caller is still there. A cancelled prefill frees the worker within
one chunk's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generation_stream

from ._mlx_worker import ConsumerGone

__all__ = ["DEFAULT_CHUNK_SECONDS", "PrefillPacer", "prefill", "prefill_chunk"]

#: How long one prefill chunk should take: the longest a cancelled prefill keeps the worker.
DEFAULT_CHUNK_SECONDS = 0.1
#: The smallest chunk: below this, per-chunk overhead dominates on any device.
MIN_CHUNK = 8
#: The first chunk a model prefills, before any rate is known.
FIRST_CHUNK = 16
#: The largest chunk: mlx-lm's own ``prefill_step_size``.
MAX_CHUNK = 2048


class PrefillPacer:
    """Sizes prefill chunks so that each takes about ``chunk_seconds`` on this model.

    It lives as long as the model and learns from every chunk, so later prompts start at a
    size that already fits.
    """

    def __init__(self, chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> None:
        self.chunk_seconds = chunk_seconds
        self._next = FIRST_CHUNK

    def chunk_tokens(self) -> int:
        """How many tokens the next chunk should hold."""
        return self._next

    def record(self, tokens: int, seconds: float) -> None:
        """Size the next chunk from one of ``tokens`` tokens that took ``seconds``."""
        if tokens <= 0:
            return
        fitting = tokens * self.chunk_seconds / seconds if seconds > 0 else float(MAX_CHUNK)
        # Grow at most twofold at a time: the timing of a small chunk is noisy, and attention
        # gets slower the further into the prompt a chunk is. Shrinking is immediate.
        self._next = int(max(MIN_CHUNK, min(MAX_CHUNK, 2 * self._next, fitting)))


def prefill(
    model: Any,
    cache: list[Any],
    tokens: Sequence[int],
    pacer: PrefillPacer,
    stopped: Callable[[], bool],
) -> None:
    """Run ``tokens`` through ``model`` into ``cache``, one paced chunk at a time.

    Runs on mlx-lm's generation stream, like mlx-lm's own prefill, so the decoding steps that
    follow are ordered after it.

    Raises:
        ConsumerGone: ``stopped()`` became true; the cache holds only the chunks before it.
    """
    if stopped():
        raise ConsumerGone
    if not tokens:
        return
    prompt = mx.array(list(tokens))
    done, total = 0, len(tokens)
    with mx.stream(generation_stream):
        while done < total:
            step = min(pacer.chunk_tokens(), total - done)
            started = time.perf_counter()
            model(prompt[done : done + step][None], cache=cache)
            mx.eval([entry.state for entry in cache])
            pacer.record(step, time.perf_counter() - started)
            done += step
            mx.clear_cache()
            if stopped():
                raise ConsumerGone


def prefill_chunk(
    model: Any, cache: list[Any], tokens: Sequence[int], pacer: PrefillPacer, share: int = 1
) -> int:
    """Run the first paced chunk of ``tokens`` into ``cache``; return how many it ran.

    ``share`` divides the chunk's time: with other sequences decoding, a chunk of a prompt
    runs between two of their steps and should hold them up for only part of a chunk's time.
    """
    step = min(max(MIN_CHUNK, pacer.chunk_tokens() // share), len(tokens))
    if step <= 0:
        return 0
    with mx.stream(generation_stream):
        started = time.perf_counter()
        model(mx.array(list(tokens[:step]))[None], cache=cache)
        mx.eval([entry.state for entry in cache])
        pacer.record(step, time.perf_counter() - started)
        mx.clear_cache()
    return step
