"""The llama.cpp backend: a managed ``llama-server`` streamed through the HTTP backend.

:class:`LlamaModel` owns a :class:`~goml_async.backends.llama_server.LlamaServer` and talks to it
as an :class:`~goml_async.backends.http.HTTPModel` (SSE, deadlines, cancellation that frees the
server's slot). :meth:`LlamaModel.info` reads the GGUF's own metadata. A server that crashes
mid-stream is reported with its exit code and last log lines.

Tokens carry their IDs: ``generate`` streams from llama.cpp's native completion route, which
names every token's ID; ``chat`` uses its OpenAI chat route (chat template, end-of-turn
handling) and asks for IDs only when the call needs them (``stop_tokens``, ``logprobs``), as
they come there only with log-probabilities, which cost the server a softmax per token.

Example:
    ```python
    from goml_async import load_model

    async with await load_model("SmolLM2-135M-Instruct.Q4_1.gguf", context_len=2048) as model:
        async for token in model.chat([{"role": "user", "content": "Hi!"}]):
            print(token.text, end="")
    ```
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Self

import anyio
import httpx

from ..compat import InferenceAdapter
from ..convert.gguf_meta import gguf_model_info, read_gguf_metadata
from ..errors import (
    APIConnectionError,
    BackendUnavailable,
    ConfigError,
    GenerationError,
    GenerationTimeout,
)
from ..model import _check_prompts
from ..settings import GomlSettings, current_settings
from ..stream import StreamContext, StreamItem
from ..structured import ResponseFormat
from ..types import (
    ClassifyResult,
    GenerateConfig,
    LoadConfig,
    Message,
    ModelInfo,
)
from . import _http_reply, _llama_grammar, _llama_tools, _llama_wire, _openai
from .http import HTTPModel
from .llama_launcher import INSTALL_HINT
from .llama_server import LlamaServer, cached_llama_server

__all__ = ["LlamaBackend", "LlamaModel", "LlamaModelBackend", "start_llama_model"]

#: LlamaServer keywords accepted by load_model and start_llama_model (the rest go to HTTPModel).
_SERVER_OPTIONS = frozenset(
    {"binary", "use_launcher", "host", "port", "threads", "extra_args", "startup_timeout"}
)


class LlamaModel(HTTPModel):
    """A TextModel on a llama-server process that it owns (``aclose`` stops the server).

    Build it with :func:`start_llama_model` or ``load_model("model.gguf")``.

    The server decodes :attr:`parallel_slots` streams at once (``LoadConfig.parallel_slots``,
    default 4), and the client lets as many through at a time (``max_concurrency`` defaults to
    the slot count): further streams wait in line here, first come first served, where their
    deadlines and cancellation still apply, rather than in the server's queue.
    """

    #: Every format: JSON through llama-server's own ``json_schema`` (after checking that its
    #: converter enforces every keyword), ``regex`` and ``choice`` through a GBNF grammar.
    response_formats = frozenset(("json_object", "json_schema", "regex", "choice"))
    #: Tools are described in the prompt and the reply held to a JSON schema that the server
    #: enforces (see ``_llama_tools``): llama-server itself drops tools that a model's chat
    #: template cannot render.
    supports_tools = True

    def __init__(self, server: LlamaServer, info: ModelInfo, **http_options: Any) -> None:
        http_options.setdefault("generate_endpoint", "completions")
        http_options.setdefault("max_concurrency", server.slots)
        super().__init__(server.base_url + "/v1", **http_options)
        self._model_type = "llama"
        self._server = server
        self._info = info
        # batch_generate and parallel_slots() run as many requests at once as there are slots.
        self.batch_concurrency = server.slots
        # Requests go to the server's root routes: the native completion route has no /v1 form.
        self._base_url = server.base_url

    @property
    def server(self) -> LlamaServer:
        """The llama-server process behind this model."""
        return self._server

    @property
    def base_url(self) -> str:
        """The server's OpenAI base URL (``http://host:port/v1``), for other OpenAI clients."""
        return self._server.base_url + "/v1"

    def info(self) -> ModelInfo:
        """Architecture, layers, sizes and quantisation, from the GGUF file itself."""
        return self._info

    @property
    def parallel_slots(self) -> int:
        """The server's slots (``--parallel``): how many streams it decodes at once."""
        return self._server.slots

    # -- token sources -----------------------------------------------------------------------------

    def _completion_source(
        self, prompt: str, context: StreamContext, model: str, extra_body: Mapping[str, Any]
    ) -> AsyncIterator[StreamItem]:
        config = context.config
        body = _llama_wire.completion_body(model, prompt, config, extra_body)
        tokens = self._request(_llama_wire.COMPLETION_PATH, body, context)
        return self._trimmed(tokens, config, body)

    def _chat_source(
        self,
        messages: list[Message],
        context: StreamContext,
        model: str,
        extra_body: Mapping[str, Any],
    ) -> AsyncIterator[StreamItem]:
        config = context.config
        fmt = _llama_tools.reply_format(config)
        if config.tools or any(m.role == "tool" or m.tool_calls for m in messages):
            messages = _llama_tools.prompt_messages(messages, config)
        body = _llama_wire.chat_body(model, messages, config, extra_body)
        if fmt is not None:
            body.update(_llama_grammar.constraint_fields(fmt))
        tokens = self._trimmed(self._request(_llama_wire.CHAT_PATH, body, context), config, body)
        return _llama_tools.decoded_reply(tokens, config) if fmt is not None else tokens

    def _check_response_format(self, fmt: ResponseFormat) -> None:
        _llama_grammar.constraint_fields(fmt)

    def _check_tools(self, config: GenerateConfig) -> None:
        fmt = _llama_tools.reply_format(config)
        if fmt is not None:
            try:
                _llama_grammar.constraint_fields(fmt)
            except ConfigError as exc:
                raise ConfigError("tools", f"llama.cpp cannot enforce them: {exc}") from None

    def _trimmed(
        self, tokens: AsyncIterator[StreamItem], config: GenerateConfig, body: Mapping[str, Any]
    ) -> AsyncIterator[StreamItem]:
        """``tokens``, cut to ``top_logprobs`` alternatives when more were asked for."""
        if body.get("n_probs", 0) != config.top_logprobs:
            return _openai.checked_logprobs(tokens, config, self._server.base_url)
        return tokens

    # -- classify ----------------------------------------------------------------------------------

    async def classify(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[ClassifyResult]:
        """Prefill each prompt and sample the token at its last position, in one request.

        The sampled token carries its ID, text and log-probability (and ``top_logprobs``
        alternatives when asked for). With ``return_logits``, ``logits`` holds the whole
        vocabulary's log-probabilities by token ID: llama.cpp exposes no raw logits, and
        these are the raw logits minus their log-sum-exp (same softmax, argmax and
        differences). Only temperature, top-k, top-p and seed apply, as on MLX.
        ``total_timeout`` (or ``first_token_timeout``) bounds the request.

        Raises:
            GenerationError: a prompt encodes to no tokens, or the server failed.
            GenerationTimeout: the deadline passed.
            APIConnectionError: the server cannot be reached.
        """
        resolved = self._resolve(config, options)
        checked = _check_prompts(prompts)
        if not checked:
            return []
        vocab = self._info.vocab_size
        if resolved.return_logits and vocab <= 0:
            raise GenerationError("the GGUF names no vocabulary size: cannot return the logits")
        body = _llama_wire.classify_body(checked, resolved, vocab)
        deadline = resolved.total_timeout or resolved.first_token_timeout
        kind = "total" if resolved.total_timeout else "first_token"
        try:
            with anyio.fail_after(deadline):
                reply = await self._post_json(_llama_wire.COMPLETION_PATH, body)
        except TimeoutError:
            raise GenerationTimeout(
                f"classify of {len(checked)} prompt(s) did not finish within {deadline:g} s",
                deadline=kind,
                seconds=deadline or 0.0,
            ) from None
        return _llama_wire.classify_results(reply, checked, resolved, vocab)

    async def _post_json(self, path: str, body: dict[str, Any]) -> object:
        """POST ``body`` and return the JSON answer (one attempt, no stream)."""
        url = self._base_url + path
        client = self._client()
        try:
            request = client.build_request("POST", url, json=body)
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    error, _ = await _http_reply.status_error(response, self._where(url))
                    raise error
                raw = await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            gone = await self._server_failure()
            raise APIConnectionError(gone or f"cannot reach {self._where(url)}: {exc!r}") from exc
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GenerationError(f"{self._where(url)} answered with malformed JSON") from exc

    # -- the server --------------------------------------------------------------------------------

    def _where(self, url: str) -> str:
        # The server's address is ours, chosen at random: errors name the model instead.
        return f"llama-server ({self._server.model_path.name})"

    async def _server_failure(self) -> str | None:
        # A dropped connection usually means the process died: give it a moment to be reaped
        # so the error can carry the exit code and the server's last words.
        for _ in range(10):
            try:
                self._server.check_alive()
            except BackendUnavailable as crash:
                return str(crash)
            await anyio.sleep(0.05)
        return None

    async def _aclose(self) -> None:
        try:
            await super()._aclose()
        finally:
            await self._server.aclose()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<LlamaModel {self._server.model_path.name} at {self.base_url}{state}>"


async def start_llama_model(
    model_path: str | os.PathLike[str], config: LoadConfig | None = None, **options: Any
) -> LlamaModel:
    """Start llama-server on ``model_path`` and return the model that owns it.

    ``options`` holds LlamaServer keywords (``binary``, ``use_launcher``, ``host``, ``port``,
    ``threads``, ``extra_args``, ``startup_timeout``) and HTTPModel keywords (deadlines,
    ``max_concurrency``, ``max_retries``, ...).

    Raises:
        ModelLoadError: the file is missing, not GGUF, or llama-server could not load it.
        BackendUnavailable: no llama-server binary and no xllamacpp launcher.
    """
    server_options = {k: options.pop(k) for k in list(options) if k in _SERVER_OPTIONS}
    meta = await anyio.to_thread.run_sync(read_gguf_metadata, model_path)
    server = LlamaServer(model_path, config, **server_options)
    await server.start()
    try:
        return LlamaModel(server, gguf_model_info(meta), **options)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await server.aclose()
        raise


class LlamaModelBackend:
    """The ``"llama"`` entry of the backend registry."""

    name = "llama"

    def __init__(self, settings: GomlSettings | None = None) -> None:
        self._settings = settings

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here, or None when it can."""
        settings = self._settings or current_settings()
        if settings.llama_server is not None or shutil.which("llama-server"):
            return None
        if cached_llama_server(settings) is not None:
            return None
        if importlib.util.find_spec("xllamacpp") is not None:
            return None
        return (
            "no llama-server binary (set GOML_LLAMA_SERVER or put llama-server on PATH) and "
            f"no xllamacpp launcher (install it with: {INSTALL_HINT})"
        )

    def available(self) -> bool:
        """A llama-server binary or the xllamacpp launcher is present."""
        return self.unavailable_reason() is None

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> LlamaModel:
        """Start a llama-server for the GGUF at ``path``."""
        return await start_llama_model(path, config, **options)


class LlamaBackend(InferenceAdapter):
    """go-ml's string-level llama backend: a managed llama-server, whole replies.

    An :class:`~goml_async.compat.InferenceAdapter` over a :class:`LlamaModel`, like
    ``HTTPBackend`` over an ``HTTPModel``, except that the server starts on :meth:`start`
    (go-ml's ``Start``) rather than at construction: ``async with LlamaBackend("model.gguf")
    as backend`` starts it and stops it on exit (``Stop``); :meth:`available` is true while it
    runs. Unlike go-ml it picks a free port, streams, and reports a crash with the server's
    exit code and logs.

    Args:
        model_path: the GGUF model.
        lora_path: a LoRA adapter (``--lora``).
        config: further LoadConfig fields.
        **options: LlamaServer and HTTPModel keywords (see :func:`start_llama_model`).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        lora_path: str | os.PathLike[str] | None = None,
        config: LoadConfig | None = None,
        **options: Any,
    ) -> None:
        config = config or LoadConfig()
        if lora_path is not None:
            config = replace(config, adapter_path=os.fspath(lora_path))
        # No model until start(): InferenceAdapter's own constructor needs a running one.
        self._bind("llama", None)
        self._model_path = model_path
        self._config = config
        # go-ml's Generate is a chat with one user message, as for HTTPBackend.
        self._start_options = {"generate_endpoint": "chat", **options}

    @property
    def model(self) -> LlamaModel:
        """The running LlamaModel (for classify, batch_generate, info and metrics).

        Raises:
            BackendUnavailable: the server is not started, or was stopped.
        """
        model = self._model
        if model is None or self._closed:
            raise BackendUnavailable(
                "llama-server not available: start() it first", backend="llama"
            )
        assert isinstance(model, LlamaModel)
        return model

    async def start(self) -> Self:
        """Start llama-server (idempotent)."""
        if self._model is None:
            self._model = await start_llama_model(
                self._model_path, self._config, **self._start_options
            )
        return self

    def available(self) -> bool:
        """True while the server runs."""
        if not super().available():
            return False
        try:
            self.model.server.check_alive()
        except BackendUnavailable:
            return False
        return True

    async def __aenter__(self) -> Self:
        return await self.start()
