"""The MLX backend: mlx-lm models on a dedicated worker thread, streams batched together.

Every MLX call of a model runs on that model's own thread (MLX streams are thread-bound).
Concurrent streams, batch prompts and classify prompts of one model share one decode loop
there (continuous batching, see ``_mlx_scheduler``): up to ``LoadConfig.parallel_slots`` of
them (8 by default) decode together in mlx-lm's ``BatchGenerator``, a new one joins at the next
step and one that ends, is cancelled or times out leaves at the next step; more wait in line,
first come first served. A stream decoding alone gets each token before the next one is
computed; in a batch it runs at most a few tokens ahead of its reader and then pauses alone, so
a slow reader never holds up the others. Prompts are prefilled on their own in chunks paced by
time (leaving during a long prefill stops it within one chunk), starting from the longest
prefix a per-model LRU of KV caches holds (``prompt_cache_bytes``); greedy output is the same
alone, in a batch and from the cache. A ``response_format`` is enforced token by token
(``_mlx_grammar``); ``chat(tools=...)`` goes through the chat template's own tool format and
mlx-lm's parser where it has one (``_mlx_tools``), else through a reply held to a call schema
(``_tool_reply``). Works on Linux with ``mlx[cpu]`` (use float32 weights
there) and on Apple silicon.

Example:
    ```python
    from goml_async import load_model

    async with await load_model("models/SmolLM2-135M-Instruct-f32") as model:  # an MLX folder
        async for token in model.chat([{"role": "user", "content": "Hi!"}]):
            print(token.text, end="")
    ```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import mlx.core as mx
import mlx_lm

from ..errors import ConfigError, GenerationError, ModelLoadError
from ..model import BaseTextModel, _check_prompts
from ..settings import GomlSettings, current_settings
from ..stream import StreamContext, StreamItem
from ..structured._grammar import grammar_for
from ..types import (
    BatchResult,
    ClassifyResult,
    GenerateConfig,
    LoadConfig,
    Message,
    ModelInfo,
    Token,
)
from ._mlx_batch import BATCH_FALLBACK_FIELDS
from ._mlx_grammar import GrammarTokenizer
from ._mlx_prefill import DEFAULT_CHUNK_SECONDS, PrefillPacer
from ._mlx_prefill import prefill as prefill  # benchmarks/bench_mlx.py wraps it by this name
from ._mlx_prompt_cache import DEFAULT_PROMPT_CACHE_BYTES, PromptCache
from ._mlx_sampling import fields_set, reject_unsupported
from ._mlx_scheduler import DEFAULT_SLOTS, Scheduler
from ._mlx_sequence import End, Kind, Request
from ._mlx_tools import (
    ChatPrompt,
    has_template_tools,
    parsed_reply,
    template_messages,
    template_tools,
)
from ._mlx_worker import MLXWorker, Outlet
from ._tool_reply import decoded_reply, has_tool_history, prompt_messages, reply_format

__all__ = ["MLXModel", "MLXModelBackend", "load_mlx_model", "set_memory_limits"]

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


class MLXModel(BaseTextModel):
    """An mlx-lm model served by its own worker thread. Build it with :func:`load_mlx_model`."""

    #: Every format is constrained token by token (see ``_mlx_grammar``).
    response_formats = frozenset(("json_object", "json_schema", "regex", "choice"))
    #: A chat template with a tool format gets the tools and its calls are read by mlx-lm's
    #: parser (``_mlx_tools``); otherwise, and whenever a call is required, the tools are
    #: described in the prompt and the reply held to a call schema (``_tool_reply``).
    supports_tools = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        worker: MLXWorker,
        path: Path,
        *,
        prefill_chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        parallel_slots: int = DEFAULT_SLOTS,
        prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES,
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
        vocab = self._info.vocab_size or len(tokenizer.vocab)
        self._grammar = GrammarTokenizer(tokenizer, vocab)
        self._scheduler = Scheduler(
            model,
            tokenizer,
            slots=parallel_slots,
            pacer=self._pacer,
            prompt_cache=PromptCache(prompt_cache_bytes),
            side=self._side_stream,
            piece=self._piece,
            grammar=self._grammar,
        )
        # A batch's prompts all run at once: the scheduler queues what does not fit.
        self.batch_concurrency = parallel_slots
        worker.stepper = self._scheduler

    @property
    def path(self) -> Path:
        """The model folder."""
        return self._path

    @property
    def worker_thread(self) -> Any:
        """The thread every MLX call of this model runs on."""
        return self._worker.thread

    @property
    def parallel_slots(self) -> int:
        """How many sequences decode together; more wait in line."""
        return self._scheduler.slots

    @property
    def prompt_cache_bytes(self) -> int:
        """The bound of the prompt cache in bytes of KV arrays (0: no prompt cache)."""
        return self._scheduler.prompt_cache.max_bytes

    def info(self) -> ModelInfo:
        """Architecture, sizes and quantisation from the folder's config.json."""
        return self._info

    # -- generation -------------------------------------------------------------------------------

    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        return self._generate(prompt, context)

    @property
    def template_tools(self) -> bool:
        """Whether the chat template has a tool format that mlx-lm can parse."""
        return has_template_tools(self._tokenizer)

    def _stream_chat(
        self, messages: list[Message], context: StreamContext
    ) -> AsyncIterator[StreamItem]:
        config = context.config
        if not config.tools and not has_tool_history(messages):
            return self._generate(ChatPrompt([m.to_dict() for m in messages]), context)
        choice = config.choice
        required = config.calls_tools and choice is not None and choice.mode == "required"
        if self.template_tools:
            tools = template_tools(config.tool_specs) if config.calls_tools else None
            prompt = ChatPrompt(template_messages(messages), tools)
            if required:
                return self._held_reply(prompt, context)
            tokens = self._generate(prompt, context)
            if not config.calls_tools:
                return tokens
            return parsed_reply(tokens, self._tokenizer, config.tool_specs)
        prompt = ChatPrompt([m.to_dict() for m in prompt_messages(messages, config)], None)
        if config.calls_tools:
            return self._held_reply(prompt, context)
        return self._generate(prompt, context)

    def _held_reply(self, prompt: ChatPrompt, context: StreamContext) -> AsyncIterator[StreamItem]:
        """The reply held to the call schema (``_tool_reply``) by the grammar, decoded."""
        config = context.config
        fmt = reply_format(config)
        held = dataclasses.replace(config, tools=(), tool_choice=None, response_format=fmt)
        return decoded_reply(self._generate(prompt, context, held), config)

    def _check_tools(self, config: GenerateConfig) -> None:
        fmt = reply_format(config)
        if fmt is not None:
            try:
                grammar_for(fmt)
            except ConfigError as exc:
                raise ConfigError("tools", f"MLX cannot enforce them: {exc}") from None

    def _produce(self, prompt: str | ChatPrompt, config: GenerateConfig, out: Outlet) -> None:
        """On the worker: encode the prompt and hand the stream to the scheduler."""
        try:
            ids = self._prompt_ids(prompt)
        except Exception as exc:
            out.put(exc)
            out.notify()
            return
        self._scheduler.add(Request(Kind.STREAM, ids, config, out))

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

    def _prompt_ids(self, prompt: str | ChatPrompt) -> list[int]:
        """The prompt's token IDs, encoded as ``mlx_lm.stream_generate`` encodes them."""
        if isinstance(prompt, ChatPrompt):
            extra = {} if prompt.tools is None else {"tools": prompt.tools}
            ids = self._tokenizer.apply_chat_template(
                prompt.messages, add_generation_prompt=True, **extra
            )
            return list(ids)
        bos = self._tokenizer.bos_token
        add_special_tokens = bos is None or not prompt.startswith(bos)
        return list(self._tokenizer.encode(prompt, add_special_tokens=add_special_tokens))

    async def _generate(
        self,
        prompt: str | ChatPrompt,
        context: StreamContext,
        config: GenerateConfig | None = None,
    ) -> AsyncIterator[Token]:
        """The tokens of ``prompt`` under ``config`` (default: the stream's own)."""
        config = config or context.config
        reject_unsupported(
            config,
            ["return_logits"],
            "logits come back from classify(); generated tokens carry logprob and top_logprobs",
        )
        if config.structured is not None and not self._grammar.ready:
            # About a second, once per model: off the worker, which other streams share.
            await anyio.to_thread.run_sync(self._grammar.get)
        outlet = Outlet(self._worker.wake)
        self._worker.submit(lambda: self._produce(prompt, config, outlet))
        try:
            while True:
                item = await outlet.get()
                if isinstance(item, Token):
                    yield item
                elif isinstance(item, End):
                    context.metrics = item.metrics
                    if item.finish_reason == "stop":
                        context.finish_reason = "stop"
                    elif item.finish_reason == "length":
                        context.finish_reason = "length"
                    return
                elif isinstance(item, GenerationError):
                    raise item
                else:
                    raise GenerationError(f"mlx-lm failed: {item!r}") from item
        finally:
            # The sequence leaves the batch (or its prefill stops) at the scheduler's next step.
            outlet.close()

    # -- classify and batch -----------------------------------------------------------------------

    async def classify(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[ClassifyResult]:
        """Prefill each prompt and sample the token at its last position.

        The token carries its log-probability (and ``top_logprobs`` when asked); with
        ``return_logits``, each result carries the last position's raw logits. The prompts
        take slots like streams do and prefill between the other sequences' steps; cancelling
        the call stops them within one prefill chunk.

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
        reject_unsupported(
            resolved, ["response_format"], "classify samples one token: no document to constrain"
        )
        if not checked:
            return []
        results = await self._gather(Kind.CLASSIFY, checked, resolved)
        for value in results:
            if isinstance(value, BaseException):
                raise value
        return cast(list[ClassifyResult], results)

    def _submit(self, kind: Kind, prompts: list[str], config: GenerateConfig, out: Outlet) -> None:
        """On the worker: encode every prompt and queue each as a sequence, in order."""
        for index, prompt in enumerate(prompts):
            try:
                ids = (
                    list(self._tokenizer.encode(prompt))
                    if kind is Kind.CLASSIFY
                    else self._prompt_ids(prompt)
                )
            except Exception as exc:
                failure = GenerationError(f"could not encode prompt {index}: {exc}")
                out.put((index, failure if kind is Kind.CLASSIFY else BatchResult(error=failure)))
                out.notify()
                continue
            if not ids and kind is Kind.CLASSIFY:
                out.put((index, GenerationError(f"prompt {prompt!r} encodes to no tokens")))
                out.notify()
                continue
            self._scheduler.add(Request(kind, ids, config, out, index))

    async def _gather(self, kind: Kind, prompts: list[str], config: GenerateConfig) -> list[Any]:
        """Run every prompt through the scheduler; their results in input order."""
        outlet = Outlet(self._worker.wake)
        self._worker.submit(lambda: self._submit(kind, prompts, config, outlet))
        results: list[Any] = [None] * len(prompts)
        try:
            for _ in prompts:
                index, value = await outlet.get()
                if kind is Kind.CLASSIFY and isinstance(value, BaseException):
                    raise value  # the other prompts stop at the next step
                results[index] = value
        finally:
            outlet.close()
        return results

    async def batch_generate(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[BatchResult]:
        """Generate for all prompts together, in the model's shared batch.

        Sampling, penalties, stop tokens, seed and log-probabilities apply as in
        :meth:`generate`; the prompts take slots like streams (more wait in line). With stop
        sequences or deadlines, the prompts run as ordinary streams instead, where those are
        honoured (they are batched all the same). Cancelling the call stops every prompt at
        the next step.

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
        return cast(list[BatchResult], await self._gather(Kind.BATCH, checked, resolved))

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
    prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES,
    settings: GomlSettings | None = None,
) -> MLXModel:
    """Load an mlx-lm model folder (config.json + safetensors) on a new worker thread.

    Args:
        path: the model folder.
        config: ``adapter_path`` applies a LoRA adapter at load time; ``parallel_slots``
            caps how many sequences decode together (0: 8). More concurrent requests wait in
            line, first come first served.
        cache_limit: MLX cache limit in bytes (default ``GOML_MLX_CACHE_LIMIT``).
        memory_limit: MLX memory limit in bytes (default ``GOML_MLX_MEMORY_LIMIT``).
        prefill_chunk_seconds: how long one prefill chunk should take. Chunks are sized to it
            from the measured rate; cancelling a request (or its deadline) stops a prefill at
            the end of the current chunk. Larger values prefill a little faster on a GPU.
        prompt_cache_bytes: the bound of the model's prompt cache, in bytes of KV arrays
            (default 1 GiB; 0 turns it off). A prompt that starts with tokens a recent
            sequence fed the model (the next turn of a chat) prefills only the rest.
        settings: where the defaults come from.

    Raises:
        ConfigError: ``prefill_chunk_seconds`` is not a positive number of seconds, or
            ``prompt_cache_bytes`` is not a number of bytes >= 0.
        ModelLoadError: the folder is missing, incomplete, or mlx-lm cannot load it.
    """
    if (
        isinstance(prompt_cache_bytes, bool)
        or not isinstance(prompt_cache_bytes, int)
        or prompt_cache_bytes < 0
    ):
        raise ConfigError(
            "prompt_cache_bytes", f"must be a number of bytes >= 0, got {prompt_cache_bytes!r}"
        )
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
    config = config or LoadConfig()
    adapter = config.adapter_path
    worker = MLXWorker(f"goml-mlx-{folder.name}")
    try:
        model, tokenizer = await worker.call(lambda: _load(folder, adapter))
    except BaseException:
        worker.close()
        raise
    return MLXModel(
        model,
        tokenizer,
        worker,
        folder,
        prefill_chunk_seconds=float(prefill_chunk_seconds),
        parallel_slots=config.parallel_slots or DEFAULT_SLOTS,
        prompt_cache_bytes=prompt_cache_bytes,
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
