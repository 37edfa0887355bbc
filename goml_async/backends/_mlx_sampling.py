"""Sampling, penalties and log-probabilities of the MLX backend, built from a GenerateConfig.

Log-probabilities (``Token.logprob`` and ``Token.top_logprobs``) are those of the model's own
distribution: the log-softmax of its logits before any penalty, temperature, top-k or top-p,
which is what llama.cpp reports by default and what OpenAI documents. mlx-lm hands the logits
processors' output on as a step's log-probabilities, so when a penalty is active a first
processor keeps the unmodified ones.

``presence_penalty`` and ``frequency_penalty`` follow OpenAI's definition over every token
generated so far (the prompt does not count): ``logit -= presence * (count > 0) + frequency *
count``. mlx-lm's own processors of those names count the last 20 tokens, prompt included.
``repeat_penalty`` is mlx-lm's (multiplicative, over the last 20 tokens, prompt included).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import mlx.core as mx
from mlx_lm.sample_utils import apply_top_k, apply_top_p, make_logits_processors, make_sampler

from ..errors import NotSupported
from ..types import GenerateConfig, Token, TopLogprob
from ._mlx_grammar import GrammarProcessor

__all__ = [
    "REPETITION_CONTEXT",
    "Decoding",
    "OpenAIPenalties",
    "RawLogprobs",
    "SeededSampler",
    "chosen_logprobs",
    "decoding",
    "fields_set",
    "reject_unsupported",
    "token_at",
]

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]

#: mlx-lm's ``repetition_context_size`` default: its repetition penalty looks this far back.
REPETITION_CONTEXT = 20

_DEFAULTS = GenerateConfig()


def fields_set(config: GenerateConfig, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that ``config`` sets to something other than the default."""
    return [name for name in names if getattr(config, name) != getattr(_DEFAULTS, name)]


def reject_unsupported(config: GenerateConfig, names: Iterable[str], why: str) -> None:
    """Raise NotSupported naming the options of ``names`` that ``config`` sets.

    Raises:
        NotSupported: ``config`` asks for something this call cannot honour.
    """
    found = fields_set(config, names)
    if found:
        raise NotSupported(f"{', '.join(found)}: not supported by the MLX backend here: {why}")


class OpenAIPenalties:
    """OpenAI's presence and frequency penalties over the generated tokens.

    mlx-lm calls a processor with every token so far (the prompt it was given, then each
    generated token); the first ``prompt_tokens`` are skipped. The counts are kept between
    calls, so each step adds only the tokens that are new.
    """

    def __init__(self, presence: float, frequency: float, prompt_tokens: int) -> None:
        self._presence = presence
        self._frequency = frequency
        self._seen = prompt_tokens
        self._counts: mx.array | None = None
        self._penalty: mx.array | None = None

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self._counts is None:
            self._counts = mx.zeros((logits.shape[-1],), dtype=mx.float32)
        if len(tokens) > self._seen:
            new = tokens[self._seen :]
            self._seen = len(tokens)
            self._counts = self._counts.at[new].add(1.0)
            penalty = self._frequency * self._counts + self._presence * (self._counts > 0)
            self._penalty = penalty.astype(logits.dtype)
        if self._penalty is None:  # nothing generated yet
            return logits
        return logits - self._penalty


class RawLogprobs:
    """A first logits processor that keeps each step's unmodified log-probabilities, in order.

    The log-softmax is built on the worker's side stream: reading it then waits only for this
    step's logits, not behind the next step queued on mlx-lm's generation stream.
    """

    def __init__(self, side: Any) -> None:
        self._side = side
        self.steps: deque[mx.array] = deque()

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        with mx.stream(self._side):
            normalised = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            self.steps.append(normalised.reshape(-1))
        return logits


class SeededSampler:
    """mlx-lm's sampling with a random key of its own, so a seed holds in a batch.

    mlx-lm's samplers draw from MLX's one global random state: with several sequences
    decoding together, each would see the others' draws. This one splits its own key at each
    step, so a seeded sequence draws the same tokens alone or in any batch.
    """

    def __init__(self, seed: int, temperature: float, top_p: float, top_k: int) -> None:
        self._key = mx.random.key(seed)
        self._before = self._key
        self._scale = 1.0 / temperature
        self._top_p = top_p
        self._top_k = top_k

    def __call__(self, logprobs: mx.array) -> mx.array:
        if 0 < self._top_p < 1.0:
            logprobs = apply_top_p(logprobs, self._top_p)
        if self._top_k > 0:
            logprobs = apply_top_k(logprobs, self._top_k)
        self._before = self._key
        self._key, draw = mx.random.split(self._key)
        return mx.random.categorical(logprobs * self._scale, key=draw)

    def undo(self) -> None:
        """Forget the last draw: the step it was for is discarded and computed again."""
        self._key = self._before


@dataclass(slots=True)
class Decoding:
    """How one sequence is sampled, and where its tokens' log-probabilities come from."""

    sampler: Callable[[mx.array], mx.array]
    processors: list[LogitsProcessor]
    raw: RawLogprobs | None
    top_logprobs: int
    grammar: GrammarProcessor | None = None  # the last processor, with a response_format

    def model_logprobs(self, reported: mx.array) -> mx.array:
        """The model's own log-probabilities of the step mlx-lm reported as ``reported``."""
        return self.raw.steps.popleft() if self.raw is not None else reported


def decoding(
    config: GenerateConfig,
    *,
    prompt_tokens: int,
    side: Any,
    grammar: GrammarProcessor | None = None,
) -> Decoding:
    """The sampler and logits processors for ``config``.

    Args:
        config: the request's options.
        prompt_tokens: how many prompt tokens mlx-lm passes to the processors first.
        side: the worker's side stream (see :class:`RawLogprobs`).
        grammar: the constraint of its ``response_format``; it masks last, after the
            penalties, and the reported log-probabilities stay the model's own.
    """
    processors: list[LogitsProcessor] = list(
        make_logits_processors(repetition_penalty=config.repeat_penalty or None)
    )
    if config.presence_penalty or config.frequency_penalty:
        processors.append(
            OpenAIPenalties(config.presence_penalty, config.frequency_penalty, prompt_tokens)
        )
    if grammar is not None:
        processors.append(grammar)
    raw = None
    if processors:
        raw = RawLogprobs(side)
        processors.insert(0, raw)
    sampler = make_sampler(temp=config.temperature, top_p=config.top_p, top_k=config.top_k)
    if config.seed is not None and config.temperature > 0:
        sampler = SeededSampler(config.seed, config.temperature, config.top_p, config.top_k)
    return Decoding(sampler, processors, raw, config.top_logprobs, grammar)


def chosen_logprobs(
    rows: list[mx.array], tokens: list[int], evaluated: list[bool], side: Any
) -> list[float]:
    """``rows[i][tokens[i]]`` for each row of a batch step, as floats.

    A row that is ``evaluated`` (mlx-lm evaluates the log-probabilities it reports in its
    step) is read in place through the buffer protocol: no MLX operation, no wait on a
    stream, no release of the GIL. The others (the unmodified log-probabilities of
    :class:`RawLogprobs`, still lazy on the side stream) are gathered in one read there.
    """
    values = [0.0] * len(rows)
    lazy: list[int] = []
    for i, row in enumerate(rows):
        value = _in_place(row, tokens[i]) if evaluated[i] else None
        if value is None:
            lazy.append(i)
        else:
            values[i] = value
    if lazy:
        with mx.stream(side):
            picks = mx.stack([rows[i][tokens[i]] for i in lazy]).astype(mx.float32)
            for i, value in zip(lazy, cast(list[float], picks.tolist()), strict=True):
                values[i] = value
    return values


def _in_place(row: mx.array, index: int) -> float | None:
    """``row[index]`` of an evaluated 1-D array, read from its buffer (None: it cannot be)."""
    if row.dtype not in (mx.float32, mx.bfloat16, mx.float16):
        return None
    view = memoryview(cast(Any, row))  # MLX's stubs do not declare the buffer protocol
    if row.dtype == mx.float32:
        return cast(float, view[index])
    if not view.c_contiguous:
        return None
    raw = view.cast("B")[2 * index : 2 * index + 2]  # memoryview indexes neither 16-bit float
    if row.dtype == mx.float16:
        return cast(float, struct.unpack("<e", raw)[0])
    # bfloat16 is the upper half of a float32 (little-endian, as MLX's platforms are).
    return cast(float, struct.unpack("<f", b"\0\0" + bytes(raw))[0])


def token_at(
    token_id: int,
    text: str,
    logprobs: mx.array,
    decoding: Decoding,
    piece: Callable[[int], str],
    side: Any,
) -> Token:
    """The Token for ``token_id``, with its log-probability (and the top ones when asked).

    Args:
        token_id: the sampled token.
        text: its text as the detokenizer produced it.
        logprobs: the model's own log-probabilities at this position (vocabulary-sized).
        decoding: the sequence's decoding (``top_logprobs`` is read from it).
        piece: the text of one token ID on its own.
        side: the worker's side stream, where these small reads run.
    """
    with mx.stream(side):
        if not decoding.top_logprobs:
            return Token(token_id, text, cast(float, logprobs[token_id].item()))
        count = min(decoding.top_logprobs, logprobs.size)
        candidates = mx.argpartition(-logprobs, kth=count - 1)[:count]
        values = logprobs[candidates]
        order = mx.argsort(-values)
        chosen = logprobs[token_id]
        mx.eval(candidates, values, order, chosen)
        ids = cast(list[int], candidates[order].tolist())
        lps = cast(list[float], values[order].tolist())
        top = tuple(TopLogprob(piece(i), lp, i) for i, lp in zip(ids, lps, strict=True))
        return Token(token_id, text, cast(float, chosen.item()), top)
