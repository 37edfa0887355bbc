"""The MLX backend: mlx-lm models on a dedicated worker thread.

Every MLX call of a model runs on that model's own thread (MLX streams are thread-bound), one
request at a time. Tokens reach the event loop through a zero-buffer stream: the consumer gets
each token before the next one is produced, and leaving the loop stops generation at the next
token. Works on Linux with ``mlx[cpu]`` (use float32 weights there) and on Apple silicon.

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
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx_lm
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from ..errors import ConfigError, GenerationError, ModelLoadError
from ..model import BaseTextModel, _check_prompts
from ..settings import GomlSettings
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
from ._mlx_worker import Consumer, ConsumerGone, MLXWorker

__all__ = ["MLXModel", "MLXModelBackend", "load_mlx_model", "set_memory_limits"]

_GB = 1024**3


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


def _sampling(config: GenerateConfig) -> dict[str, Any]:
    """mlx-lm's sampler and logits processors for a GenerateConfig."""
    return {
        "sampler": make_sampler(temp=config.temperature, top_p=config.top_p, top_k=config.top_k),
        "logits_processors": make_logits_processors(
            repetition_penalty=config.repeat_penalty or None
        ),
    }


def _metrics(last: Any) -> GenerateMetrics:
    """GenerateMetrics from mlx-lm's last GenerationResponse."""
    prompt_tps, generation_tps = float(last.prompt_tps), float(last.generation_tps)
    return GenerateMetrics(
        prompt_tokens=int(last.prompt_tokens),
        generated_tokens=int(last.generation_tokens),
        prefill_seconds=last.prompt_tokens / prompt_tps if prompt_tps > 0 else 0.0,
        decode_seconds=last.generation_tokens / generation_tps if generation_tps > 0 else 0.0,
        prefill_tokens_per_sec=prompt_tps,
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

    def __init__(self, model: Any, tokenizer: Any, worker: MLXWorker, path: Path) -> None:
        super().__init__(model_type="mlx")
        self._model = model
        self._tokenizer = tokenizer
        self._worker = worker
        self._path = path
        self._info = _info(path)
        self._side: Any = None

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
        """On the worker: run mlx-lm and hand each token over as it comes."""
        if config.seed is not None:
            mx.random.seed(config.seed)
        tokens: str | list[int] = prompt if isinstance(prompt, str) else self._chat_ids(prompt)
        last = None
        responses = mlx_lm.stream_generate(
            self._model,
            self._tokenizer,
            tokens,
            max_tokens=config.max_tokens or -1,
            **_sampling(config),
        )
        try:
            while True:
                # Each token is computed only when the reader asks for it: real backpressure.
                out.wait_for_demand()
                response = next(responses, None)
                if response is None:
                    break
                last = response
                # On the CPU the default stream is mlx-lm's generation stream, where this read
                # would wait behind the next token's step (about 40 ms a token for SmolLM2).
                with mx.stream(self._side_stream()):
                    logprob = cast(float, response.logprobs[response.token].item())
                out.put(Token(int(response.token), response.text, logprob))
        except ConsumerGone:
            raise
        except Exception as exc:
            out.put(exc)
            return
        finally:
            responses.close()
        out.put(
            _End(_metrics(last) if last is not None else None, getattr(last, "finish_reason", None))
        )

    def _side_stream(self) -> Any:
        """A stream of the worker thread's own for small reads (created on first use there)."""
        if self._side is None:
            self._side = mx.new_stream(mx.default_device())
        return self._side

    def _chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return list(ids)

    async def _generate(
        self, prompt: str | list[dict[str, str]], context: StreamContext
    ) -> AsyncIterator[Token]:
        config = context.config
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
            # With the receive end closed, the worker's next hand-over fails: it stops there.
            consumer.close()

    # -- classify and batch -----------------------------------------------------------------------

    async def classify(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[ClassifyResult]:
        """Prefill each prompt and sample the token at its last position.

        With ``return_logits``, each result carries the last position's logits.
        """
        resolved = self._resolve(config, options)
        checked = _check_prompts(prompts)
        return await self._worker.call(lambda: [self._classify_one(p, resolved) for p in checked])

    def _classify_one(self, prompt: str, config: GenerateConfig) -> ClassifyResult:
        ids = self._tokenizer.encode(prompt)
        if not ids:
            raise GenerationError(f"prompt {prompt!r} encodes to no tokens: nothing to classify")
        logits = self._model(mx.array(ids)[None])[:, -1, :]
        sampler = make_sampler(temp=config.temperature, top_p=config.top_p, top_k=config.top_k)
        token_id = cast(int, sampler(logits).item())
        token = Token(token_id, self._tokenizer.decode([token_id]))
        values = logits[0].astype(mx.float32).tolist() if config.return_logits else None
        return ClassifyResult(token=token, logits=values)

    async def batch_generate(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[BatchResult]:
        """Generate for all prompts in one batch with ``mlx_lm.batch_generate``."""
        resolved = self._resolve(config, options)
        checked = _check_prompts(prompts)
        if not checked:
            return []
        return await self._worker.call(lambda: self._batch(checked, resolved))

    def _batch(self, prompts: list[str], config: GenerateConfig) -> list[BatchResult]:
        encoded = [self._tokenizer.encode(prompt) for prompt in prompts]
        response = mlx_lm.batch_generate(
            self._model,
            self._tokenizer,
            encoded,
            max_tokens=config.max_tokens or 256,
            return_token_ids=True,
            return_logprobs=True,
            sampler=_sampling(config)["sampler"],
        )
        results = []
        for ids, logprobs in zip(response.token_ids or [], response.logprobs or [], strict=True):
            tokens = tuple(
                Token(int(i), self._tokenizer.decode([i]), float(p))
                for i, p in zip(ids, logprobs, strict=True)
            )
            results.append(BatchResult(tokens=tokens))
        return results

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
    settings: GomlSettings | None = None,
) -> MLXModel:
    """Load an mlx-lm model folder (config.json + safetensors) on a new worker thread.

    Args:
        path: the model folder.
        config: ``adapter_path`` applies a LoRA adapter at load time.
        cache_limit: MLX cache limit in bytes (default ``GOML_MLX_CACHE_LIMIT``).
        memory_limit: MLX memory limit in bytes (default ``GOML_MLX_MEMORY_LIMIT``).
        settings: where the defaults come from.

    Raises:
        ModelLoadError: the folder is missing, incomplete, or mlx-lm cannot load it.
    """
    folder = Path(path)  # checked and loaded on the worker thread, not on the event loop
    settings = settings or GomlSettings()
    set_memory_limits(
        settings.mlx_cache_limit if cache_limit is None else cache_limit,
        settings.mlx_memory_limit if memory_limit is None else memory_limit,
    )
    adapter = (config or LoadConfig()).adapter_path
    # mlx-lm asks the Hugging Face hub about local folders unless told it is offline.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    worker = MLXWorker(f"goml-mlx-{folder.name}")
    try:
        model, tokenizer = await worker.call(lambda: _load(folder, adapter))
    except BaseException:
        worker.close()
        raise
    return MLXModel(model, tokenizer, worker, folder)


def _load(folder: Path, adapter: str | None) -> tuple[Any, Any]:
    """On the worker: check the folder and load it with mlx-lm."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(str(folder), "not an MLX model folder (no config.json)")
    if adapter is not None and not Path(adapter).exists():
        raise ModelLoadError(adapter, "the LoRA adapter does not exist")
    try:
        loaded = mlx_lm.load(str(folder), adapter_path=adapter)
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
