"""Constrained decoding on MLX: an llguidance matcher per sequence as a logits processor.

A sequence with a ``response_format`` gets a :class:`GrammarProcessor` last among its logits
processors, alone (``mlx_lm.stream_generate``) and in the batch (``BatchGenerator``) alike:
each step it feeds the matcher the token the sequence just took, asks it for the bitmask of
the tokens that can continue a valid document, and sets every other logit to -inf, so the
sampler (greedy or not) can only pick an allowed token. Once the document is complete only the
end-of-sequence tokens are allowed. The stream layer still checks the text as it arrives and
validates the whole document at the end (a ``max_tokens`` cut is a violation there).

The processor never raises inside a step: an error there would end every sequence of the
batch. If its matcher ever fails, it allows only end-of-sequence, and the stream's own check
reports the violation for that stream alone.

The llguidance tokenizer of a model is built once (about a second for a 49k vocabulary), off
the worker thread, the first time a constrained request arrives.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

import mlx.core as mx
import numpy as np

from ..structured import ResponseFormat, new_matcher

if TYPE_CHECKING:
    import llguidance

__all__ = ["GrammarProcessor", "GrammarTokenizer"]


class GrammarTokenizer:
    """A model's llguidance tokenizer, built on first use (thread-safe)."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._built: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether it is built already (building it takes about a second)."""
        return self._built is not None

    def get(self) -> llguidance.LLTokenizer:
        """The tokenizer, built now if it is not yet."""
        with self._lock:
            if self._built is None:
                import llguidance.hf

                hf = getattr(self._tokenizer, "_tokenizer", self._tokenizer)
                self._built = llguidance.hf.from_tokenizer(
                    hf,
                    n_vocab=self._vocab_size,
                    eos_token=sorted(int(t) for t in self._tokenizer.eos_token_ids),
                )
            return self._built


class GrammarProcessor:
    """An mlx-lm logits processor that keeps one sequence inside its response format."""

    __slots__ = ("_actions", "_eos_only", "_matcher", "_started", "_vocab")

    def __init__(self, fmt: ResponseFormat, tokenizer: llguidance.LLTokenizer) -> None:
        self._matcher = new_matcher(fmt, tokenizer)
        self._vocab = tokenizer.vocab_size
        self._started = False
        # What each call did, newest last, so that a step computed ahead and then dropped (the
        # sequence left the batch or the solo path) can be undone: True = it fed a token.
        self._actions: list[bool] = []
        self._eos_only = np.zeros(self._vocab, dtype=bool)
        self._eos_only[list(tokenizer.eos_tokens)] = True

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        """Mask ``logits`` (one row) to the tokens that continue the document."""
        fed = self._started
        if fed:
            # The token the sequence took last step: reading it waits for that step, which
            # the next one needs anyway.
            self._matcher.consume_token(cast(int, tokens.reshape(-1)[-1].item()))
        self._started = True
        self._actions.append(fed)
        return mx.where(self._allowed(logits.shape[-1]), logits, -mx.inf)

    def undo(self) -> None:
        """Forget the last call (its step was computed ahead and dropped)."""
        if not self._actions:
            return
        if self._actions.pop():
            self._matcher.rollback(1)
        else:
            self._started = False

    def _allowed(self, width: int) -> mx.array:
        """The tokens allowed next, as a bool row of ``width`` (the logits' width)."""
        matcher = self._matcher
        if matcher.is_error() or matcher.is_stopped():
            allowed = self._eos_only
        else:
            bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
            allowed = np.unpackbits(bits, bitorder="little", count=self._vocab).view(bool)
        if width < self._vocab:
            allowed = allowed[:width]
        elif width > self._vocab:  # a padded embedding: rows past the vocabulary stay out
            allowed = np.pad(allowed, (0, width - self._vocab))
        return mx.array(allowed)
