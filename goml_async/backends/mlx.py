"""The MLX backend: mlx-lm models on a dedicated worker thread.

Every MLX call of a model runs on that model's own thread (MLX streams are thread-bound), one
request at a time. Tokens reach the event loop through a zero-buffer stream: the consumer gets
each token before the next one is produced, and leaving the loop stops generation at the next
token. Prompts are prefilled in chunks paced by time, so leaving during a long prefill (a
cancellation, a first-token deadline) stops it within one chunk. Works on Linux with
``mlx[cpu]`` (use float32 weights there) and on Apple silicon.

Example:
    ```python
    from goml_async import load_model

    async with await load_model("models/SmolLM2-135M-Instruct-f32") as model:  # an MLX folder
        async for token in model.chat([{"role": "user", "content": "Hi!"}]):
            print(token.text, end="")
    ```
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx_lm
from mlx_lm.models.cache import make_prompt_cache

from ..errors import ConfigError, GenerationError, ModelLoadError
from ..model import BaseTextModel, _check_prompts
from ..settings import GomlSettings, current_settings
from ..stream import StreamContext
from ..types import (
    BatchResult,
    ClassifyResult,
    GenerateConfig,
    GenerateMetrics,
    LoadConfig,
    Message,
    ModelInfo,
    Token,
)
from ._mlx_batch import BATCH_FALLBACK_FIELDS, classify_prompt, run_batch
from ._mlx_prefill import DEFAULT_CHUNK_SECONDS, PrefillPacer, prefill
from ._mlx_sampling import (
    REPETITION_CONTEXT,
    decoding,
    fields_set,
    reject_unsupported,
    token_at,
)
from ._mlx_worker import Consumer, ConsumerGone, MLXWorker

__all__ = ["MLXModel", "MLXModelBackend", "load_mlx_model", "set_memory_limits"]

_GB = 1024**3
_DEADLINES = ("first_token_timeout", "idle_timeout", "total_timeout")


def set_memory_limits(cache_limit: int | None = None, memory_limit: int | None = None) -> None:
    """Set MLX's cache and memory limits in bytes (None leaves a limit as it is).

    go-ml's ``SetMLXMemoryLimits``; the defaults come from ``GOML_MLX_CACHE_LIMIT`` and
    ``GOML_MLX_MEMORY_LIMIT``.
    """
    for name, value, setter in (
        ("cache_limit", cache_limit, mx.set_cache_limit),
        ("memory_limit", memory_limit, mx.set_memory_limit),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(name, f"must be a number of bytes >= 0, got {value!r}")
        setter(value)


def _info(folder: Path) -> ModelInfo:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    quant = config.get("quantization") or {}
    return ModelInfo(
        architecture=str(config.get("model_type", "")),
        vocab_size=int(config.get("vocab_size") or 0),
        num_layers=int(config.get("num_hidden_layers") or 0),
        hidden_size=int(config.get("hidden_size") or 0),
        quant_bits=int(quant.get("bits") or 0),
        quant_group=int(quant.get("group_size") or 0),
    )


def _metrics(last: Any, prompt_tokens: int, prefill_seconds: float) -> GenerateMetrics:
    """GenerateMetrics from mlx-lm's last GenerationResponse.

    mlx-lm saw only the end of the prompt (the rest was prefilled in paced chunks first):
    ``prompt_tokens`` and ``prefill_seconds`` are the whole prompt's, before mlx-lm's share.
    """
    prompt_tps, generation_tps = float(last.prompt_tps), float(last.generation_tps)
    prefill_seconds += last.prompt_tokens / prompt_tps if prompt_tps > 0 else 0.0
    return GenerateMetrics(
        prompt_tokens=prompt_tokens,
        generated_tokens=int(last.generation_tokens),
        prefill_seconds=prefill_seconds,
        decode_seconds=last.generation_tokens / generation_tps if generation_tps > 0 else 0.0,
        prefill_tokens_per_sec=prompt_tokens / prefill_seconds if prefill_seconds > 0 else 0.0,
        decode_tokens_per_sec=generation_tps,
        peak_memory_bytes=int(last.peak_memory * _GB),
        active_memory_bytes=int(mx.get_active_memory()),
    )


class _End:
    """The last item of a generation: its metrics and finish reason."""

    __slots__ = ("finish_reason", "metrics")

    def __init__(self, metrics: GenerateMetrics | None, finish_reason: str | None) -> None:
        self.metrics = metrics
        self.finish_reason = finish_reason


class MLXModel(BaseTextModel):
    """An mlx-lm model served by its own worker thread. Build it with :func:`load_mlx_model`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        worker: MLXWorker,
        path: Path,
        *,
        prefill_chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    ) -> None:
        super().__init__(model_type="mlx")
        self._model = model
        self._tokenizer = tokenizer
        self._worker = worker
        self._path = path
        self._info = _info(path)
        self._side: Any = None
        self._pacer = PrefillPacer(prefill_chunk_seconds)
        self._pieces: dict[int, str] = {}

    @property
    def path(self) -> Path:
        """The model folder."""
        return self._path

    @property
    def worker_thread(self) -> Any:
        """The thread every MLX call of this model runs on."""
        return self._worker.thread

    def info(self) -> ModelInfo:
        """Architecture, sizes and quantisation from the folder's config.json."""
        return self._info

    # -- generation -------------------------------------------------------------------------------

    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        return self._generate(prompt, context)

    def _stream_chat(self, messages: list[Message], context: StreamContext) -> AsyncIterator[Token]:
        return self._generate([message.to_dict() for message in messages], context)

    def _produce(
        self, prompt: str | list[dict[str, str]], config: GenerateConfig, out: Consumer[Any]
    ) -> None:
        """On the worker: prefill in paced chunks, then run mlx-lm and hand each token over."""
        # Nothing is computed before the reader asks for the first token.
        out.wait_for_demand()
        if config.seed is not None:
            mx.random.seed(config.seed)
        side = self._side_stream()
        ids = self._prompt_ids(prompt)
        # mlx-lm gets the end of the prompt: the last token, or as many as its repetition
        # penalty looks back over, so that the penalty sees the same tokens as without this.
        tail = min(len(ids), REPETITION_CONTEXT if config.repeat_penalty else 1)
        plan = decoding(config, prompt_tokens=tail, side=side)
        cache = make_prompt_cache(self._model)
        started = time.perf_counter()
        prefill(self._model, cache, ids[: len(ids) - tail], self._pacer, out.cancelled.is_set)
        prefilled = time.perf_counter() - started
        responses = mlx_lm.stream_generate(
            self._model,
            self._tokenizer,
            ids[len(ids) - tail :],
            max_tokens=config.max_tokens or -1,
            prompt_cache=cache,
            sampler=plan.sampler,
            logits_processors=plan.processors or None,
        )
        last = None
        try:
            while True:
                if last is not None:
                    # Each token is computed only when the reader asks for it: backpressure.
                    out.wait_for_demand()
                response = next(responses, None)
                if response is None:
                    break
                last = response
                token_id = int(response.token)
                # token_at reads on the side stream: on the CPU the default stream is mlx-lm's
                # generation stream, where a read waits behind the next token's step (about
                # 40 ms a token for SmolLM2).
                logprobs = plan.model_logprobs(response.logprobs)
                out.put(token_at(token_id, response.text, logprobs, plan, self._piece, side))
        except ConsumerGone:
            raise
        except Exception as exc:
            out.put(exc)
            return
        finally:
            responses.close()
        metrics = _metrics(last, len(ids), prefilled) if last is not None else None
        out.put(_End(metrics, getattr(last, "finish_reason", None)))

    def _side_stream(self) -> Any:
        """A stream of the worker thread's own for small reads (created on first use there)."""
        if self._side is None:
            self._side = mx.new_stream(mx.default_device())
        return self._side

    def _piece(self, token_id: int) -> str:
        """The text of one token on its own (``TopLogprob.text``), cached per ID."""
        text = self._pieces.get(token_id)
        if text is None:
            text = self._pieces[token_id] = cast(str, self._tokenizer.decode([token_id]))
        return text

    def _prompt_ids(self, prompt: str | list[dict[str, str]]) -> list[int]:
        """The prompt's token IDs, encoded as ``mlx_lm.stream_generate`` encodes them."""
        if not isinstance(prompt, str):
            ids = self._tokenizer.apply_chat_template(prompt, add_generation_prompt=True)
            return list(ids)
        bos = self._tokenizer.bos_token
        add_special_tokens = bos is None or not prompt.startswith(bos)
        return list(self._tokenizer.encode(prompt, add_special_tokens=add_special_tokens))

    async def _generate(
        self, prompt: str | list[dict[str, str]], context: StreamContext
    ) -> AsyncIterator[Token]:
        config = context.config
        reject_unsupported(
            config,
            ["return_logits"],
            "logits come back from classify(); generated tokens carry logprob and top_logprobs",
        )
        receive, consumer = self._worker.stream(lambda out: self._produce(prompt, config, out))
        try:
            async with receive:
                while True:
                    consumer.ask()
                    item = await receive.receive()
                    if isinstance(item, Token):
                        yield item
                    elif isinstance(item, _End):
                        context.metrics = item.metrics
                        if item.finish_reason == "stop":
                            context.finish_reason = "stop"
                        elif item.finish_reason == "length":
                            context.finish_reason = "length"
                        return
                    else:
                        raise GenerationError(f"mlx-lm failed: {item!r}") from item
        finally:
            # With the receive end closed, the worker's next hand-over fails, and a prefill
            # stops at its next chunk: the worker is free for the next request.
            consumer.close()

    # -- classify and batch -----------------------------------------------------------------------

    async def classify(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[ClassifyResult]:
        """Prefill each prompt and sample the token at its last position.

        The token carries its log-probability (and ``top_logprobs`` when asked); with
        ``return_logits``, each result carries the last position's raw logits. Cancelling the
        call stops the worker within one prefill chunk.

        Raises:
            NotSupported: stop tokens, stop sequences or deadlines were set (classify samples
                one token; wrap the call in ``anyio.fail_after`` to bound it).
        """
        resolved = self._resolve(config, options)
        checked = _check_prompts(prompts)
        reject_unsupported(
            resolved,
            ["stop_tokens", "stop_sequences", *_DEADLINES],
            "classify samples one token (bound the call with anyio.fail_after instead)",
        )
        stop = threading.Event()
        return await self._worker.call(lambda: self._classify(checked, resolved, stop), stop=stop)

    def _classify(
        self, prompts: list[str], config: GenerateConfig, stop: threading.Event
    ) -> list[ClassifyResult]:
        if config.seed is not None:
            mx.random.seed(config.seed)
        results = []
        for prompt in prompts:
            ids = list(self._tokenizer.encode(prompt))
            if not ids:
                raise GenerationError(
                    f"prompt {prompt!r} encodes to no tokens: nothing to classify"
                )
            results.append(
                classify_prompt(
                    self._model,
                    ids,
                    config,
                    pacer=self._pacer,
                    stopped=stop.is_set,
                    side=self._side_stream(),
                    piece=self._piece,
                )
            )
        return results

    async def batch_generate(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[BatchResult]:
        """Generate for all prompts in one batch on mlx-lm's ``BatchGenerator``.

        Sampling, penalties, stop tokens, seed and log-probabilities apply as in
        :meth:`generate`. With stop sequences or deadlines, the prompts run as ordinary
        streams instead (one at a time on the worker), where those are honoured. Cancelling
        the call stops the worker within one batch step.

        Raises:
            NotSupported: ``return_logits`` was set (logits come back from :meth:`classify`).
        """
        resolved = self._resolve(config, options)
        checked = _check_prompts(prompts)
        reject_unsupported(
            resolved,
            ["return_logits"],
            "logits come back from classify(); generated tokens carry logprob and top_logprobs",
        )
        if not checked:
            return []
        if fields_set(resolved, BATCH_FALLBACK_FIELDS):
            return await super().batch_generate(checked, resolved)
        stop = threading.Event()
        return await self._worker.call(lambda: self._batch(checked, resolved, stop), stop=stop)

    def _batch(
        self, prompts: list[str], config: GenerateConfig, stop: threading.Event
    ) -> list[BatchResult]:
        if config.seed is not None:
            mx.random.seed(config.seed)
        return run_batch(
            self._model,
            [list(self._tokenizer.encode(prompt)) for prompt in prompts],
            config,
            eos_token_ids=list(self._tokenizer.eos_token_ids),
            pacer=self._pacer,
            stopped=stop.is_set,
            side=self._side_stream(),
            piece=self._piece,
        )

    async def _aclose(self) -> None:
        await self._worker.aclose()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<MLXModel {self._path.name}{state}>"


async def load_mlx_model(
    path: str | os.PathLike[str],
    config: LoadConfig | None = None,
    *,
    cache_limit: int | None = None,
    memory_limit: int | None = None,
    prefill_chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    settings: GomlSettings | None = None,
) -> MLXModel:
    """Load an mlx-lm model folder (config.json + safetensors) on a new worker thread.

    Args:
        path: the model folder.
        config: ``adapter_path`` applies a LoRA adapter at load time.
        cache_limit: MLX cache limit in bytes (default ``GOML_MLX_CACHE_LIMIT``).
        memory_limit: MLX memory limit in bytes (default ``GOML_MLX_MEMORY_LIMIT``).
        prefill_chunk_seconds: how long one prefill chunk should take. Chunks are sized to it
            from the measured rate; cancelling a request (or its deadline) stops a prefill at
            the end of the current chunk. Larger values prefill a little faster on a GPU.
        settings: where the defaults come from.

    Raises:
        ConfigError: ``prefill_chunk_seconds`` is not a positive number of seconds.
        ModelLoadError: the folder is missing, incomplete, or mlx-lm cannot load it.
    """
    if (
        isinstance(prefill_chunk_seconds, bool)
        or not isinstance(prefill_chunk_seconds, int | float)
        or not 0 < prefill_chunk_seconds < math.inf
    ):
        raise ConfigError(
            "prefill_chunk_seconds",
            f"must be a number of seconds > 0, got {prefill_chunk_seconds!r}",
        )
    folder = Path(path)  # checked and loaded on the worker thread, not on the event loop
    settings = settings or current_settings()
    set_memory_limits(
        settings.mlx_cache_limit if cache_limit is None else cache_limit,
        settings.mlx_memory_limit if memory_limit is None else memory_limit,
    )
    adapter = (config or LoadConfig()).adapter_path
    worker = MLXWorker(f"goml-mlx-{folder.name}")
    try:
        model, tokenizer = await worker.call(lambda: _load(folder, adapter))
    except BaseException:
        worker.close()
        raise
    return MLXModel(
        model, tokenizer, worker, folder, prefill_chunk_seconds=float(prefill_chunk_seconds)
    )


def _load(folder: Path, adapter: str | None) -> tuple[Any, Any]:
    """On the worker: check the folder and load it with mlx-lm."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(str(folder), "not an MLX model folder (no config.json)")
    if adapter is not None and not Path(adapter).exists():
        raise ModelLoadError(adapter, "the LoRA adapter does not exist")
    try:
        # A local folder: mlx-lm downloads nothing, but transformers' tokenizer loader would
        # still ask the Hugging Face hub about it unless told to use local files only.
        local_only = {"local_files_only": True}
        loaded = mlx_lm.load(str(folder), tokenizer_config=local_only, adapter_path=adapter)
    except Exception as exc:
        raise ModelLoadError(str(folder), f"mlx-lm could not load it: {exc}") from exc
    return loaded[0], loaded[1]


class MLXModelBackend:
    """The ``"mlx"`` entry of the backend registry."""

    name = "mlx"

    def available(self) -> bool:
        """mlx and mlx-lm import (the registry checks the extra before this)."""
        return True

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> MLXModel:
        """Load the MLX folder at ``path``."""
        return await load_mlx_model(path, config, **options)
