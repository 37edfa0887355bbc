"""One sequence of the MLX scheduler: its request, where it is, and where its output goes.

A sequence is a stream's (``generate``/``chat``), one prompt of a ``batch_generate`` call, or
one prompt of a ``classify`` call. Its output goes to an :class:`~._mlx_worker.Outlet`: a
stream gets each token and then an :class:`End`; a batch prompt and a classify prompt put one
``(index, result)`` pair when they are done.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from ..errors import GenerationError
from ..types import BatchResult, GenerateConfig, GenerateMetrics, Token
from ._mlx_sampling import REPETITION_CONTEXT, Decoding
from ._mlx_worker import Outlet

__all__ = ["End", "Kind", "Request", "Sequence", "State", "tail_of"]


class Kind(enum.Enum):
    STREAM = "stream"
    BATCH = "batch"
    CLASSIFY = "classify"


class State(enum.Enum):
    WAITING = "waiting"  # queued for a slot
    PREFILL = "prefill"  # its prompt runs into its own KV cache, a chunk per step
    SOLO = "solo"  # decoding alone, on mlx_lm.stream_generate
    BATCH = "batch"  # decoding in the shared BatchGenerator
    PAUSED = "paused"  # out of the batch until its reader catches up (cache kept)
    DONE = "done"


class End:
    """The last item of a stream: its metrics and finish reason."""

    __slots__ = ("finish_reason", "metrics")

    def __init__(self, metrics: GenerateMetrics | None, finish_reason: str | None) -> None:
        self.metrics = metrics
        self.finish_reason = finish_reason


@dataclass(slots=True)
class Request:
    """What the model was asked for, as the scheduler receives it."""

    kind: Kind
    ids: list[int]
    config: GenerateConfig
    sink: Outlet
    index: int = 0  # the prompt's place in its batch or classify call


def tail_of(request: Request) -> int:
    """The prompt tokens given to mlx-lm with the first step rather than prefilled.

    The last one, or as many as the repetition penalty looks back over, so that the penalty
    sees the same tokens as mlx-lm would without the paced prefill.
    """
    penalty = request.config.repeat_penalty
    return min(len(request.ids), REPETITION_CONTEXT if penalty else 1)


@dataclass(slots=True, eq=False)
class Sequence:
    """A request and its decoding state. Touched on the worker thread only."""

    request: Request
    plan: Decoding
    stops: frozenset[int]  # token IDs that end it (end of sequence; a batch's stop tokens)
    state: State = State.WAITING
    cache: list[Any] | None = None
    prefilled: int = 0  # prompt tokens in ``cache``
    cached_tokens: int = 0  # of those, how many came from the prompt cache
    generated: list[int] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)  # a batch prompt's reply
    solo: Any = None  # the stream_generate generator while SOLO
    detokenizer: Any = None  # while in the batch
    uid: int = -1  # its BatchGenerator uid while in the batch
    started: float = field(default_factory=time.perf_counter)
    first_at: float = 0.0
    last_at: float = 0.0

    @property
    def ids(self) -> list[int]:
        return self.request.ids

    @property
    def kind(self) -> Kind:
        return self.request.kind

    @property
    def sink(self) -> Outlet:
        return self.request.sink

    @property
    def tail(self) -> int:
        """See :func:`tail_of`."""
        return tail_of(self.request)

    @property
    def cap(self) -> int:
        """How many tokens it may generate in all (0: no cap)."""
        return self.request.config.max_tokens

    def context(self) -> list[int]:
        """The tokens its logits processors have seen, but the one it feeds next."""
        fed = [*self.ids[len(self.ids) - self.tail :], *self.generated]
        return fed[:-1]

    def gone(self) -> bool:
        return self.sink.cancelled.is_set()

    def wants_token(self) -> bool:
        """A solo step may run: its reader waits for a token (a batch prompt always may)."""
        return self.kind is not Kind.STREAM or self.sink.asked()

    def emit(self, token: Token, finish: str | None) -> None:
        """Hand one generated token over (``finish``: it is the last, and why)."""
        now = time.perf_counter()
        self.first_at = self.first_at or now
        self.last_at = now
        self.generated.append(token.id)
        if self.kind is Kind.STREAM:
            self.sink.put(token)
        elif not (finish == "stop" and token.id in self.stops):
            self.tokens.append(token)  # a batch's reply leaves out the token that stopped it

    def finish(self, reason: str | None) -> None:
        """Put the final item (a stream's End, a batch prompt's result)."""
        self.state = State.DONE
        if self.kind is Kind.STREAM:
            self.sink.put(End(self.metrics(), reason))
        else:
            self.sink.put((self.request.index, BatchResult(tokens=tuple(self.tokens))))

    def fail(self, exc: BaseException) -> None:
        """Put the error that ended it."""
        self.state = State.DONE
        if self.kind is Kind.BATCH:
            error = exc if isinstance(exc, GenerationError) else GenerationError(str(exc))
            self.sink.put((self.request.index, BatchResult(tokens=tuple(self.tokens), error=error)))
        elif self.kind is Kind.CLASSIFY:
            self.sink.put((self.request.index, exc))
        else:
            self.sink.put(exc)

    def metrics(self) -> GenerateMetrics:
        prefill = (self.first_at or time.perf_counter()) - self.started
        decode = self.last_at - self.first_at if self.first_at else 0.0
        count = len(self.generated)
        computed = len(self.ids) - self.cached_tokens
        return GenerateMetrics(
            prompt_tokens=len(self.ids),
            generated_tokens=count,
            prefill_seconds=prefill,
            decode_seconds=decode,
            prefill_tokens_per_sec=computed / prefill if prefill > 0 else 0.0,
            decode_tokens_per_sec=(count - 1) / decode if count > 1 and decode > 0 else 0.0,
            peak_memory_bytes=int(mx.get_peak_memory()),
            active_memory_bytes=int(mx.get_active_memory()),
            cached_tokens=self.cached_tokens,
        )
