"""Continuous batching on the MLX worker: every sequence of a model through one decode loop.

Streams, batch prompts and classify prompts are all sequences here. The worker runs
:meth:`Scheduler.step` while there is work; each step:

1. drops the sequences whose reader left (a break, a cancel, a deadline): a sequence leaves
   the batch at the next step, and the KV of what it fed the model goes to the prompt cache;
2. admits waiting sequences, first come first served, while fewer than ``slots`` are live; a
   new one starts from the longest prefix the prompt cache holds;
3. runs paced prefill chunks of the sequences still in their prompts, oldest first, for at most
   one chunk's time. Each prompt is prefilled on its own, into its own KV cache, never padded
   against others, so its numbers are those it would get alone; the sequences whose prompts
   are in by the end of it (and paused ones whose readers caught up) join the batch together,
   in one insertion: the batch's KV arrays are merged once, not once per sequence;
4. runs one decoding step. A sequence that is alone decodes on ``mlx_lm.stream_generate``
   (the fastest path for one sequence), one token per request of its reader: nothing is
   computed ahead of it. As soon as a second sequence is ready to decode, both move into
   mlx-lm's ``BatchGenerator``, which steps all of them at once; in the batch, a stream may
   run up to :data:`READ_AHEAD` tokens ahead of its reader, then it pauses (it leaves the
   batch, its cache kept) and rejoins once its reader has taken half of them. A slow reader
   never holds the others up.

Greedy decoding gives the same tokens alone and in a batch: prompts are prefilled alone, and a
sequence joins the batch with its own cache (left-aligned by mlx-lm's ``BatchKVCache``, masked
where it is shorter), so nothing it computes depends on the others.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx_lm
from mlx_lm.generate import BatchGenerator, StopSequences, generation_stream
from mlx_lm.models.cache import make_prompt_cache

from ..errors import GenerationError
from ..types import Token
from ._mlx_batch import classify_last
from ._mlx_grammar import GrammarProcessor, GrammarTokenizer
from ._mlx_prefill import PrefillPacer, prefill_chunk
from ._mlx_prompt_cache import PromptCache, plain_kv, rewind
from ._mlx_sampling import SeededSampler, chosen_logprobs, decoding, token_at
from ._mlx_sequence import Kind, Request, Sequence, State, tail_of
from ._mlx_worker import Outlet, notify_all

__all__ = ["DEFAULT_SLOTS", "READ_AHEAD", "Scheduler"]

#: Sequences decoding together when ``LoadConfig.parallel_slots`` is 0.
DEFAULT_SLOTS = 8
#: How many tokens a stream in the batch may run ahead of its reader before it pauses.
READ_AHEAD = 16
#: Seconds a batch's readers may wait to be woken with their next tokens (see _may_hold).
WAKE_INTERVAL = 0.002
#: While others decode, a prompt's chunk gets this share of a chunk's time.
_SHARE_WHILE_DECODING = 4
#: ``max_tokens=0`` means no cap; BatchGenerator needs a number.
_NO_CAP = 2**31 - 1


class Scheduler:
    """The sequences of one model and the decode loop they share. Worker thread only."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        slots: int,
        pacer: PrefillPacer,
        prompt_cache: PromptCache,
        side: Callable[[], Any],
        piece: Callable[[int], str],
        grammar: GrammarTokenizer,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.slots = slots
        self._pacer = pacer
        self.prompt_cache = prompt_cache
        self._side = side
        self._piece = piece
        self._grammar = grammar
        self._eos = frozenset(int(t) for t in tokenizer.eos_token_ids)
        self._waiting: deque[Sequence] = deque()
        self._live: list[Sequence] = []  # admitted, in admission order
        self._solo: Sequence | None = None
        self._batch: dict[int, Sequence] = {}  # by BatchGenerator uid
        self._generator: Any = None
        self._batchable: bool | None = None
        self._touched: set[Outlet] = set()  # readers to wake at the end of this step
        self._held: set[Outlet] = set()  # readers whose tokens wait for a later wake-up
        self._last_wake = 0.0  # when readers were last woken (perf_counter)
        self.peak_live = 0  # the most sequences live at once (slots in use)
        self.submitted = 0  # sequences added so far
        self.pauses = 0  # times a stream left the batch to wait for its reader
        self.insertions = 0  # times sequences were inserted into the batch (each may hold many)

    # -- what the worker calls --------------------------------------------------------------------

    def add(self, request: Request) -> None:
        """Queue a request (on the worker, from a submitted job)."""
        self.submitted += 1
        config = request.config
        batch = request.kind is Kind.BATCH
        context = len(request.ids) if request.kind is Kind.CLASSIFY else tail_of(request)
        failed: Exception | None = None
        grammar = None
        if not request.ids:
            failed = GenerationError("the prompt encodes to no tokens: nothing to generate")
        elif config.structured is not None:
            try:
                grammar = GrammarProcessor(config.structured, self._grammar.get())
            except Exception as exc:  # a format this vocabulary cannot spell
                failed = exc
        seq = Sequence(
            request,
            plan=decoding(config, prompt_tokens=context, side=self._side(), grammar=grammar),
            stops=self._eos | frozenset(config.stop_tokens) if batch else self._eos,
        )
        if failed is not None:
            seq.fail(failed)
            self._flush(seq)
            return
        self._waiting.append(seq)

    def ready(self) -> bool:
        """Something can go on now (otherwise the worker sleeps until the next job)."""
        if self._waiting and (len(self._live) < self.slots or self._waiting[0].gone()):
            return True
        for seq in self._live:
            if seq.gone() or seq.state is State.PREFILL:
                return True
            if seq.state is State.PAUSED and seq.sink.backlog() <= READ_AHEAD // 2:
                return True
        return bool(self._batch) or (self._solo is not None and self._solo.wants_token())

    def step(self) -> None:
        """One round: drop, admit, prefill, join, one decoding step."""
        try:
            self._reap()
            self._admit()
            joining = self._resumable()
            decoding_now = self._solo is not None or bool(self._batch)
            joining += self._prefill_pending(_SHARE_WHILE_DECODING if decoding_now else 1)
            self._join(joining)
            if self._solo is not None and self._solo.wants_token():
                self._solo_step(self._solo)
            elif self._batch:
                self._batch_step()
        finally:
            self._wake_readers()

    def shutdown(self) -> None:
        """The model is closing: every unfinished sequence ends with an error."""
        closed = GenerationError("the MLX model is closed")
        for seq in [*self._waiting, *self._live]:
            if seq.state is not State.DONE and not seq.gone():
                seq.fail(closed)
                self._touched.add(seq.sink)
            if seq.solo is not None:
                seq.solo.close()
        self._waiting.clear()
        self._live.clear()
        self._batch.clear()
        self._solo = None
        if self._generator is not None:
            self._generator.close()
            self._generator = None
        self.prompt_cache.clear()
        self._wake_readers()

    def counts(self) -> dict[str, int]:
        """How many sequences are waiting, live, in the batch and solo (for tests and stats)."""
        return {
            "waiting": len(self._waiting),
            "live": len(self._live),
            "batch": len(self._batch),
            "solo": int(self._solo is not None),
        }

    # -- admission and prefill --------------------------------------------------------------------

    def _admit(self) -> None:
        if self._batchable is None:
            self._batchable = plain_kv(make_prompt_cache(self._model))
            if not self._batchable:
                self.slots = 1  # its caches cannot be merged: one sequence at a time
        while self._waiting and len(self._live) < self.slots:
            seq = self._waiting.popleft()
            self._live.append(seq)
            self.peak_live = max(self.peak_live, len(self._live))
            seq.state = State.PREFILL
            seq.started = time.perf_counter()
            target = len(seq.ids) - seq.tail
            cache, length = (None, 0)
            if self._batchable and target > 0:
                cache, length = self.prompt_cache.lookup(seq.ids, target)
            seq.cache = cache if cache is not None else make_prompt_cache(self._model)
            seq.prefilled = seq.cached_tokens = length

    def _prefill_pending(self, share: int) -> list[Sequence]:
        """Prefill chunks, oldest prompt first, for one chunk's time; those ready to decode.

        Short prompts all go in within one step, so a burst of streams joins the batch
        together; a long one takes a chunk per step, and the decoding steps of the others run
        in between.
        """
        pending = [seq for seq in self._live if seq.state is State.PREFILL]
        if not pending:
            return []
        until = time.perf_counter() + self._pacer.chunk_seconds / share
        ready = []
        for seq in pending:
            if self._prefill(seq, share):
                ready.append(seq)
            if time.perf_counter() >= until:
                break
        return ready

    def _prefill(self, seq: Sequence, share: int) -> bool:
        """One chunk of its prompt; True when the prompt is in and it is ready to decode."""
        target = len(seq.ids) - seq.tail
        try:
            if seq.prefilled < target:
                assert seq.cache is not None
                seq.prefilled += prefill_chunk(
                    self._model, seq.cache, seq.ids[seq.prefilled : target], self._pacer, share
                )
            return seq.prefilled >= target and self._start(seq)
        except Exception as exc:
            self._drop(seq, exc)
            return False

    def _start(self, seq: Sequence) -> bool:
        """Its prompt is in: sample (classify, False), or it is ready to decode (True)."""
        assert seq.cache is not None
        if seq.kind is Kind.CLASSIFY:
            result = classify_last(
                self._model,
                seq.cache,
                seq.ids,
                seq.plan,
                seq.request.config,
                side=self._side(),
                piece=self._piece,
            )
            seq.state = State.DONE
            seq.sink.put((seq.request.index, result))
            self._flush(seq)
            self._release(seq, seq.ids)
            return False
        return True

    def _join(self, ready: list[Sequence]) -> None:
        """Start ``ready`` decoding: one new sequence alone decodes solo, else all in the batch."""
        if not ready:
            return
        if len(ready) == 1 and not ready[0].generated and self._solo is None and not self._batch:
            ready[0].state = State.SOLO
            self._solo = ready[0]
            return
        alone = self._solo
        if alone is not None:
            self._leave_solo(alone)
            ready.insert(0, alone)
        self._to_batch(ready)

    # -- decoding alone ---------------------------------------------------------------------------

    def _solo_step(self, seq: Sequence) -> None:
        try:
            if seq.solo is None:
                seq.solo = mlx_lm.stream_generate(
                    self._model,
                    self._tokenizer,
                    seq.ids[len(seq.ids) - seq.tail :],
                    max_tokens=seq.cap or -1,
                    prompt_cache=seq.cache,
                    sampler=seq.plan.sampler,
                    logits_processors=seq.plan.processors or None,
                )
            response = next(seq.solo)
            token_id = int(response.token)
            # token_at reads on the side stream: on the CPU the default stream is mlx-lm's
            # generation stream, where a read waits behind the next token's step.
            logprobs = seq.plan.model_logprobs(response.logprobs)
            text = response.text if seq.kind is Kind.STREAM else self._piece(token_id)
            token = token_at(token_id, text, logprobs, seq.plan, self._piece, self._side())
        except Exception as exc:
            self._drop(seq, exc)
            return
        finish = response.finish_reason
        if seq.kind is Kind.BATCH and token_id in seq.stops:
            finish = "stop"  # stream_generate knows only the end-of-sequence tokens
        seq.emit(token, finish)
        self._flush(seq)
        if finish is not None:
            seq.solo.close()
            self._solo = None
            seq.finish(finish)
            self._release(seq, [*seq.ids, *seq.generated])

    def _leave_solo(self, seq: Sequence) -> None:
        """Stop its stream_generate; its cache then holds what it fed (and maybe one more)."""
        self._solo = None
        if seq.solo is not None:
            seq.solo.close()
            seq.solo = None
            self._discard_pending(seq)

    # -- decoding in the batch --------------------------------------------------------------------

    def _gen(self) -> Any:
        if self._generator is None:
            self._generator = BatchGenerator(
                self._model,
                max_tokens=_NO_CAP,
                completion_batch_size=self.slots,
                prefill_batch_size=self.slots,
            )
        return self._generator

    def _to_batch(self, seqs: list[Sequence]) -> None:
        """Insert them into the batch with their own caches; each feeds its last token next."""
        joining: list[tuple[Sequence, int]] = []
        for seq in seqs:
            try:
                joining.append((seq, self._last_token(seq)))
            except Exception as exc:
                self._drop(seq, exc)
        if not joining:
            return
        try:
            uids = self._gen().insert(
                [[last] for _, last in joining],
                max_tokens=[
                    seq.cap - len(seq.generated) if seq.cap else _NO_CAP for seq, _ in joining
                ],
                caches=[seq.cache for seq, _ in joining],
                all_tokens=[seq.context() for seq, _ in joining],
                samplers=[seq.plan.sampler for seq, _ in joining],
                logits_processors=[seq.plan.processors for seq, _ in joining],
                stop_sequences=[
                    StopSequences([[t] for t in sorted(seq.stops)]) for seq, _ in joining
                ],
            )
        except Exception as exc:
            for seq, _ in joining:
                self._drop(seq, exc)
            return
        self.insertions += 1
        for (seq, _), uid in zip(joining, uids, strict=True):
            seq.uid = uid
            seq.cache = None
            seq.state = State.BATCH
            # In the batch it decodes ahead of its reader: the reader's asks need not wake
            # the worker (which is busy stepping the batch anyway).
            seq.sink.wake_on_ask = False
            self._batch[uid] = seq

    def _last_token(self, seq: Sequence) -> int:
        """Bring its cache to all but its last token, which it feeds the batch; return that."""
        assert seq.cache is not None
        if seq.generated:
            rewind(seq.cache, len(seq.ids) + len(seq.generated) - 1)
            last = seq.generated[-1]
        else:
            rest = seq.ids[len(seq.ids) - seq.tail : -1]
            if rest:  # the tail a repetition penalty needs: run it in as stream_generate would
                with mx.stream(generation_stream):
                    self._model(mx.array(rest)[None], cache=seq.cache)
                    mx.eval([layer.state for layer in seq.cache])
            last = seq.ids[-1]
        if seq.kind is Kind.STREAM:
            seq.detokenizer = self._tokenizer.detokenizer
            for token_id in seq.generated:  # catch up with the text already handed over
                seq.detokenizer.add_token(token_id)
            _ = seq.detokenizer.last_segment
        return last

    def _batch_step(self) -> None:
        try:
            _, responses = self._gen().next()
            members = [(self._batch.get(r.uid), r) for r in responses]
            found = [(seq, r) for seq, r in members if seq is not None]
            # Each sequence's own log-probabilities, in step order (see Decoding).
            own = [seq.plan.model_logprobs(r.logprobs) for seq, r in found]
            tokens = [r.token for _, r in found]
            evaluated = [seq.plan.raw is None for seq, _ in found]
            values = chosen_logprobs(own, tokens, evaluated, self._side())
        except Exception as exc:
            self._generator = None  # its state is unknown now: the next batch starts afresh
            for seq in list(self._batch.values()):
                self._drop(seq, exc)
            return
        for (seq, response), logprobs, value in zip(found, own, values, strict=True):
            self._batch_token(seq, response, logprobs, value)

    def _batch_token(self, seq: Sequence, response: Any, logprobs: Any, value: float) -> None:
        token_id = int(response.token)
        finish = response.finish_reason
        try:
            if seq.kind is Kind.STREAM:
                # As stream_generate: an end-of-sequence token adds no text, then the rest
                # of the text is flushed with the last token.
                if finish != "stop":
                    seq.detokenizer.add_token(token_id)
                if finish is not None:
                    seq.detokenizer.finalize()
                text = seq.detokenizer.last_segment
            else:
                text = self._piece(token_id)
            if seq.plan.top_logprobs:
                token = token_at(token_id, text, logprobs, seq.plan, self._piece, self._side())
            else:
                token = Token(token_id, text, value)
        except Exception as exc:
            self._drop(seq, exc)
            return
        seq.emit(token, finish)
        if finish is None and len(seq.generated) > 1:
            self._held.add(seq.sink)  # see _wake_readers
        else:
            self._flush(seq)
        if finish is not None:
            del self._batch[seq.uid]
            seq.finish(finish)
            seq.cache = response.prompt_cache
            self._release(seq, [*seq.ids, *seq.generated])
        elif seq.kind is Kind.STREAM and seq.sink.backlog() >= READ_AHEAD:
            seq.cache = self._leave_batch(seq)
            seq.state = State.PAUSED
            self.pauses += 1
            self._flush(seq)  # out of the batch, its held tokens go at once
            seq.sink.wake_on_ask = True  # its reader's next asks let it rejoin

    def _leave_batch(self, seq: Sequence) -> list[Any]:
        """Take it out of the batch; return its cache (what it fed, and maybe one more)."""
        del self._batch[seq.uid]
        caches = self._gen().remove([seq.uid], return_prompt_caches=True)
        self._discard_pending(seq)
        cache, _ = caches[seq.uid]
        return list(cache)

    def _resumable(self) -> list[Sequence]:
        """The paused sequences whose readers have taken half of what was ahead of them."""
        return [
            seq
            for seq in self._live
            if seq.state is State.PAUSED
            and not seq.gone()
            and seq.sink.backlog() <= READ_AHEAD // 2
        ]

    @staticmethod
    def _discard_pending(seq: Sequence) -> None:
        """Forget the step computed ahead of the last token: it is computed again on return."""
        if not seq.generated:
            return
        if seq.plan.raw is not None and seq.plan.raw.steps:
            seq.plan.raw.steps.pop()
        if isinstance(seq.plan.sampler, SeededSampler):
            seq.plan.sampler.undo()
        if seq.plan.grammar is not None:
            seq.plan.grammar.undo()

    # -- leaving ----------------------------------------------------------------------------------

    def _reap(self) -> None:
        if any(seq.gone() for seq in self._waiting):
            self._waiting = deque(seq for seq in self._waiting if not seq.gone())
        for seq in [s for s in self._live if s.gone()]:
            fed = [*seq.ids, *seq.generated]
            if seq.state is State.PREFILL:
                fed = seq.ids[: seq.prefilled]
            elif seq.state is State.SOLO:
                self._leave_solo(seq)
            elif seq.state is State.BATCH:
                seq.cache = self._leave_batch(seq)
            seq.state = State.DONE
            self._release(seq, fed)

    def _release(self, seq: Sequence, fed: list[int]) -> None:
        """Free its slot; keep the KV of ``fed`` in the prompt cache."""
        if seq in self._live:
            self._live.remove(seq)
        if seq.cache is not None and self._batchable:
            self.prompt_cache.store(fed, seq.cache)
        seq.cache = None
        seq.detokenizer = None

    def _drop(self, seq: Sequence, exc: BaseException) -> None:
        """It failed: hand the error over and free everything it held."""
        if seq.solo is not None:
            seq.solo.close()
            seq.solo = None
        if self._solo is seq:
            self._solo = None
        if seq.state is State.BATCH and seq.uid in self._batch:
            del self._batch[seq.uid]
            if self._generator is not None:
                self._generator.remove([seq.uid])
        seq.cache = None
        seq.fail(exc)
        self._flush(seq)
        self._release(seq, [])

    def _flush(self, seq: Sequence) -> None:
        self._touched.add(seq.sink)

    def _wake_readers(self) -> None:
        """Wake the readers this step touched, with those whose tokens were held.

        Waking a reader costs the event loop a round, and the worker waits for the loop to
        give the GIL back: on a small model, a tenth of a batch step. So a batch token that is
        neither a stream's first nor its last is held, and held tokens go out together once
        :data:`WAKE_INTERVAL` has passed since the last wake-up (or with the next one that
        goes out anyway): a token waits at most that long plus a step. On a model whose steps
        take longer than the interval, every token goes out at the end of its step.
        """
        now = time.perf_counter()
        if self._touched or (self._held and now - self._last_wake >= WAKE_INTERVAL):
            notify_all(self._touched | self._held)
            self._last_wake = now
            self._touched = set()
            self._held = set()
