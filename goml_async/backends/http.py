"""The HTTP backend: any OpenAI-compatible server, streamed over SSE.

:class:`HTTPModel` is a TextModel over ``/v1/chat/completions`` and ``/v1/completions`` with
``stream: true``. It retries only before the first token (connection errors and 408, 409, 429,
5xx; Retry-After honoured up to a cap; exponential backoff with jitter); a failure after the
first token raises :class:`~goml_async.errors.StreamInterrupted` with the partial text, and is
never replayed. Leaving a stream early closes its HTTP response at once.

:class:`HTTPBackend` is go-ml's string-level backend on top of it (chat endpoint, whole replies).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal, Unpack, cast

import anyio
import httpx
from anyio.lowlevel import RunVar
from pydantic import SecretStr

from .._sse import SSEDecoder, SSETooLarge
from .._validate import int_at_least, seconds, string
from ..compat import InferenceAdapter
from ..errors import (
    APIConnectionError,
    ConfigError,
    GenerationError,
    ModelLoadError,
    StreamInterrupted,
)
from ..model import BaseTextModel
from ..retry import RetryPolicy
from ..settings import GomlSettings, current_settings
from ..stream import StreamContext, StreamItem, TokenStream
from ..types import (
    GenerateConfig,
    GenerateOptions,
    LoadConfig,
    Message,
    MessageLike,
    ModelInfo,
)
from . import _http_reply as _reply
from . import _openai
from ._loop_clients import LoopClients
from ._pool import ShardedTransport

__all__ = ["HTTPBackend", "HTTPCallOptions", "HTTPModel", "HTTPModelBackend", "normalize_base_url"]

Endpoint = Literal["completions", "chat"]


def normalize_base_url(url: str) -> str:
    """A base URL as OpenAI clients take it: ``http://host:port/v1`` (``/v1`` when no path)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError("base_url", f"must be an http:// or https:// URL, got {url!r}")
    parsed = httpx.URL(url)
    if not parsed.host:
        raise ConfigError("base_url", f"has no host: {url!r}")
    path = parsed.path.rstrip("/")
    return str(parsed.copy_with(path=path or "/v1", query=None, fragment=None)).rstrip("/")


class HTTPCallOptions(GenerateOptions, total=False):
    """:class:`HTTPModel`'s keyword options: GenerateConfig's fields, the model to ask for and
    fields to add to the request body for this call."""

    model: str
    extra_body: Mapping[str, Any]


class HTTPModel(BaseTextModel):
    """A TextModel served by an OpenAI-compatible HTTP server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080/v1`` (``/v1`` is added when there is no path);
            None takes ``GOML_BASE_URL``, then ``OPENAI_BASE_URL`` (as openai-python does).
        model: the model name to request ("" lets a single-model server choose).
        api_key: sent as a bearer token; defaults to ``GOML_API_KEY`` or ``OPENAI_API_KEY``.
            Never shown in reprs or logs.
        headers: extra headers on every request.
        max_retries: retries before the first token (ignored when ``retry`` is given).
        retry: the full retry policy.
        first_token_timeout: default first-token deadline in seconds (each call may override).
        idle_timeout: default deadline between two tokens.
        total_timeout: default deadline for a whole stream.
        connect_timeout: seconds to open a connection.
        max_concurrency: streams open at once per event loop; more wait their turn.
        generate_endpoint: ``"completions"`` sends ``generate(prompt)`` as a raw completion;
            ``"chat"`` sends it as one user message (for chat-only servers).
        extra_body: fields added to every request body (server-specific options).
        default_config: the model's default GenerateConfig.
        settings: where the API key default comes from (default: current_settings()).
        transport: an httpx transport, for custom networking.

    Example:
        ```python
        async with HTTPModel("http://127.0.0.1:8080/v1", idle_timeout=30) as model:
            async for token in model.chat([{"role": "user", "content": "Hi!"}]):
                print(token.text, end="")
        ```
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "",
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 2,
        retry: RetryPolicy | None = None,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
        total_timeout: float | None = None,
        connect_timeout: float = 10.0,
        max_concurrency: int = 64,
        generate_endpoint: Endpoint = "completions",
        extra_body: Mapping[str, Any] | None = None,
        default_config: GenerateConfig | None = None,
        settings: GomlSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        string("model", model)
        if generate_endpoint not in ("completions", "chat"):
            raise ConfigError(
                "generate_endpoint", f"must be 'completions' or 'chat', got {generate_endpoint!r}"
            )
        int_at_least("max_concurrency", max_concurrency, 1)
        if not isinstance(connect_timeout, int | float) or connect_timeout <= 0:
            raise ConfigError("connect_timeout", f"must be > 0 seconds, got {connect_timeout!r}")
        base = (default_config or GenerateConfig()).with_options(
            **{
                name: value
                for name, value in (
                    ("first_token_timeout", first_token_timeout),
                    ("idle_timeout", idle_timeout),
                    ("total_timeout", total_timeout),
                )
                if value is not None
            }
        )
        super().__init__(
            model_type="http", default_config=base, prompt_as_chat=generate_endpoint == "chat"
        )
        settings = settings or current_settings()
        if base_url is None:
            base_url = settings.server_url()
            if base_url is None:
                raise ConfigError(
                    "base_url", "none given, and neither GOML_BASE_URL nor OPENAI_BASE_URL is set"
                )
        self._base_url = normalize_base_url(base_url)
        self._model_name = model
        if api_key is None:
            secret = settings.api_key
        else:
            if not isinstance(api_key, str):
                raise ConfigError("api_key", "must be a str")
            secret = SecretStr(api_key)
        self._api_key = secret
        self._headers = {str(key): str(value) for key, value in (headers or {}).items()}
        self._retry = retry if retry is not None else RetryPolicy(max_retries=max_retries)
        self._connect_timeout = float(connect_timeout)
        self._max_concurrency = max_concurrency
        self._extra_body = dict(extra_body or {})
        self._transport = transport
        self._info = ModelInfo(architecture="http")
        # One client and one limiter per event loop: both are bound to the loop they run on.
        self._clients = LoopClients(self._new_client, f"goml-http-client-{id(self)}")
        self._limiter_var: RunVar[anyio.CapacityLimiter] = RunVar(f"goml-http-limit-{id(self)}")

    # -- properties -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The normalised base URL (ends in ``/v1`` or the path given)."""
        return self._base_url

    @property
    def model_name(self) -> str:
        """The model name sent with each request."""
        return self._model_name

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force."""
        return self._retry

    def info(self) -> ModelInfo:
        """What the server said about the model (see :meth:`refresh_info`)."""
        return self._info

    def concurrency_statistics(self) -> anyio.CapacityLimiterStatistics:
        """The current event loop's limiter: streams running and waiting. Call it in async code."""
        return self._limiter().statistics()

    # -- per-loop resources -----------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        """The current event loop's client (closed when that loop ends, or by aclose)."""
        return self._clients.get()

    def _new_client(self) -> httpx.AsyncClient:
        headers = {"Accept": "text/event-stream", **self._headers}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return httpx.AsyncClient(
            headers=headers,
            # Reads have no timeout here: the stream's deadlines govern waiting for tokens.
            timeout=httpx.Timeout(None, connect=self._connect_timeout, pool=None),
            # Small pools behind one transport: see _pool.py for the burst stall they avoid.
            transport=self._transport or ShardedTransport(self._max_concurrency),
        )

    def _limiter(self) -> anyio.CapacityLimiter:
        try:
            return self._limiter_var.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self._max_concurrency)
            self._limiter_var.set(limiter)
            return limiter

    async def _aclose(self) -> None:
        # Clients of other event loops (for example the sync facade's) cannot be awaited from
        # here; each is closed by its own loop when that loop ends.
        await self._clients.aclose_current()

    # -- requests ---------------------------------------------------------------------------------

    # Per call, ``model=`` asks for another model and ``extra_body=`` adds fields to the body
    # (over the model's own extra_body): model.chat(messages, model="other", extra_body={...}).
    call_options = frozenset({"model", "extra_body"})
    #: OpenAI's JSON formats, sent as ``response_format``; goml's ``regex`` and ``choice`` have
    #: no OpenAI field, so they fail up front rather than stream unconstrained text.
    response_formats = frozenset(("json_object", "json_schema"))
    #: Tools travel in OpenAI's shapes (``tools``, ``tool_choice``, ``tool_calls`` and
    #: ``tool_call_id`` in the messages); the calls that come back are assembled and checked
    #: here, so a server that ignores the tools cannot pass for one that honoured them.
    supports_tools = True

    if TYPE_CHECKING:  # the signatures with this backend's own options; the base class runs

        def generate(
            self,
            prompt: str,
            config: GenerateConfig | None = None,
            **options: Unpack[HTTPCallOptions],
        ) -> TokenStream: ...

        def chat(
            self,
            messages: Iterable[MessageLike],
            config: GenerateConfig | None = None,
            **options: Unpack[HTTPCallOptions],
        ) -> TokenStream: ...

    def _check_call_options(self, options: dict[str, Any]) -> dict[str, Any]:
        model = options.get("model")
        if model is not None and not isinstance(model, str):
            raise ConfigError("model", f"must be a str, got {type(model).__name__}")
        extra_body = options.get("extra_body")
        if extra_body is not None and not isinstance(extra_body, Mapping):
            raise ConfigError("extra_body", f"must be a mapping, got {type(extra_body).__name__}")
        return {name: value for name, value in options.items() if value is not None}

    def _target(self, context: StreamContext) -> tuple[str, Mapping[str, Any]]:
        """The model to ask for and the extra body fields of this call."""
        options = context.options
        if not options:
            return self._model_name, self._extra_body
        extra_body = options.get("extra_body")
        merged = {**self._extra_body, **extra_body} if extra_body else self._extra_body
        return options.get("model", self._model_name), merged

    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[StreamItem]:
        return self._completion_source(prompt, context, *self._target(context))

    def _stream_chat(
        self, messages: list[Message], context: StreamContext
    ) -> AsyncIterator[StreamItem]:
        return self._chat_source(messages, context, *self._target(context))

    def _completion_source(
        self, prompt: str, context: StreamContext, model: str, extra_body: Mapping[str, Any]
    ) -> AsyncIterator[StreamItem]:
        """The tokens of one ``/completions`` request (LlamaModel uses llama.cpp's own route)."""
        body = _openai.completion_body(model, prompt, context.config, extra_body)
        tokens = self._request("/completions", body, context)
        if context.config.logprobs:
            return _openai.checked_logprobs(tokens, context.config, self._base_url)
        return tokens

    def _chat_source(
        self,
        messages: list[Message],
        context: StreamContext,
        model: str,
        extra_body: Mapping[str, Any],
    ) -> AsyncIterator[StreamItem]:
        """The tokens of one ``/chat/completions`` request."""
        body = _openai.chat_body(model, messages, context.config, extra_body)
        tokens = self._request("/chat/completions", body, context)
        if context.config.logprobs:
            return _openai.checked_logprobs(tokens, context.config, self._base_url)
        return tokens

    async def _request(
        self, path: str, body: dict[str, Any], context: StreamContext
    ) -> AsyncIterator[StreamItem]:
        """POST, retrying until the first token; then stream tokens until [DONE]."""
        client = self._client()
        url = self._base_url + path
        where = self._where(url)
        payload = json.dumps(body).encode()
        # The place is held on behalf of this stream, not of the task that opened it: a stream
        # left with a plain ``break`` is finalised by another task (asyncio's async-generator
        # hook), and one task may read several streams at once.
        limiter, borrower = self._limiter(), object()
        await limiter.acquire_on_behalf_of(borrower)
        try:
            attempt = 0
            while True:
                delivered = 0
                reply = _openai.StreamState()
                response: httpx.Response | None = None
                try:
                    request = client.build_request(
                        "POST", url, content=payload, headers={"Content-Type": "application/json"}
                    )
                    response = await client.send(request, stream=True)
                    kind = _reply.reply_kind(response.headers.get("content-type"))
                    if response.status_code != 200:
                        error, retry_after = await _reply.status_error(response, where)
                        if not self._retry.should_retry(attempt, response.status_code):
                            raise error
                    elif kind == "json":
                        # A server that ignores ``stream: true`` answers with the whole reply.
                        token = await _reply.whole_reply(response, where, reply)
                        if token is not None:
                            delivered += 1
                            yield token
                        while reply.tool_deltas:
                            delivered += 1
                            yield reply.tool_deltas.popleft()
                        self._report(reply, context)
                        return
                    elif kind == "other":
                        raise await _reply.not_a_stream(response, where, self._base_url)
                    else:
                        decoder = SSEDecoder()
                        # The body is read to its end even after [DONE] (which servers send
                        # last), so the connection goes back to the pool for reuse.
                        byte_stream = cast("AsyncGenerator[bytes]", response.aiter_bytes())
                        async with aclosing(byte_stream) as chunks:
                            async for chunk in chunks:
                                for data in () if reply.done else decoder.feed_data(chunk):
                                    token = _openai.parse_event(data, reply)
                                    if token is not None:
                                        delivered += 1
                                        yield token
                                        while reply.pending:  # a chunk of several tokens
                                            delivered += 1
                                            yield reply.pending.popleft()
                                    while reply.tool_deltas:
                                        delivered += 1
                                        yield reply.tool_deltas.popleft()
                                    if reply.done:
                                        break
                        for data in decoder.flush_data() if not reply.done else ():
                            token = _openai.parse_event(data, reply)
                            if token is not None:
                                delivered += 1
                                yield token
                                while reply.pending:
                                    delivered += 1
                                    yield reply.pending.popleft()
                            while reply.tool_deltas:
                                delivered += 1
                                yield reply.tool_deltas.popleft()
                        if not reply.done:
                            raise httpx.RemoteProtocolError("the stream ended before [DONE]")
                        self._report(reply, context)
                        return
                except SSETooLarge as exc:
                    raise GenerationError(
                        f"{where} sent an event stream the client will not hold: {exc}",
                        tokens_generated=delivered,
                    ) from exc
                except GenerationError as exc:
                    if delivered and not isinstance(exc, StreamInterrupted):
                        raise StreamInterrupted(
                            f"the stream from {where} broke after {delivered} token(s): {exc}",
                            tokens_generated=delivered,
                        ) from exc
                    raise
                except httpx.TransportError as exc:
                    gone = await self._server_failure()
                    if delivered:
                        raise StreamInterrupted(
                            f"the connection to {where} failed after {delivered} token(s): "
                            f"{gone or repr(exc)}",
                            tokens_generated=delivered,
                        ) from exc
                    if gone:
                        raise APIConnectionError(gone) from exc
                    if not self._retry.should_retry(attempt, None):
                        raise APIConnectionError(
                            f"cannot stream from {where} after {attempt + 1} attempt(s): {exc!r}"
                        ) from exc
                    retry_after = None
                finally:
                    if response is not None:
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                await anyio.sleep(self._retry.delay(attempt, retry_after))
                attempt += 1
        finally:
            limiter.release_on_behalf_of(borrower)

    async def _server_failure(self) -> str | None:
        """Why the server is gone, when this model can tell (a managed server that exited)."""
        return None

    def _where(self, url: str) -> str:
        """How errors name the server behind ``url`` (a managed server names its model)."""
        return url

    def _report(self, reply: _openai.StreamState, context: StreamContext) -> None:
        context.finish_reason = _openai.finish_reason(reply.finish_reason)
        metrics = _openai.metrics_from(reply.usage, reply.timings)
        if metrics is not None:
            context.metrics = metrics

    # -- server facts -----------------------------------------------------------------------------

    async def refresh_info(self, *, seconds: float = 10.0, strict: bool = False) -> ModelInfo:
        """Ask ``GET /models`` about the model and keep what it says for :meth:`info`.

        llama.cpp reports the vocabulary and embedding sizes in ``meta``; other servers report
        less. Numbers that are not counts (``"abc"``, ``1e400``) count as unknown.

        Args:
            seconds: how long the whole probe may take, connecting included.
            strict: raise when the answer is not an OpenAI model listing (``load_model`` checks
                a URL this way); otherwise such an answer leaves the info as it was.

        Raises:
            APIConnectionError: the server cannot be reached, or did not answer in time.
            ModelLoadError: (strict) the server answered, but not with a model listing.
        """
        url = self._base_url + "/models"
        client = self._client()
        try:
            with anyio.fail_after(seconds):
                request = client.build_request(
                    "GET", url, timeout=httpx.Timeout(seconds, connect=self._connect_timeout)
                )
                response = await client.send(request, stream=True)
                try:
                    raw, more = await _reply.read_capped(response, _reply.MAX_LISTING)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise APIConnectionError(
                f"{self._where(url)} did not answer within {seconds:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach {self._where(url)}: {exc!r}") from exc
        found = _reply.model_listing(
            response.status_code,
            response.headers.get("content-type"),
            None if more else raw,
            self._model_name,
        )
        if isinstance(found, ModelInfo):
            self._info = found
        elif strict:
            raise ModelLoadError(self._base_url, f"GET {url} {found}")
        return self._info

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        name = f" model={self._model_name!r}" if self._model_name else ""
        return f"<HTTPModel {self._base_url}{name}{state}>"


class HTTPBackend(InferenceAdapter):
    """go-ml's string-level HTTP backend over :class:`HTTPModel`.

    Replies come whole as :class:`~goml_async.types.Result`, requested through the chat
    endpoint like go-ml's (``generate(prompt)`` is one user message). Unlike go-ml it streams
    under the hood, sends every sampling field, and supports API keys. Ollama works as a plain
    HTTPBackend at its OpenAI-compatible URL (``http://localhost:11434/v1``).

    Args:
        base_url: the server's base URL.
        model: the model name to request.
        api_key: bearer token (default from ``GOML_API_KEY``/``OPENAI_API_KEY``).
        max_tokens: default max_tokens (go-ml's ``WithHTTPMaxTokens``); 0 keeps 256.
        **options: any other :class:`HTTPModel` keyword.
    """

    def __init__(
        self,
        base_url: str,
        model: str = "",
        api_key: str | None = None,
        *,
        max_tokens: int = 0,
        **options: Any,
    ) -> None:
        default = options.pop("default_config", None) or GenerateConfig()
        if max_tokens:
            default = default.with_options(max_tokens=max_tokens)
        http_model = HTTPModel(
            base_url,
            model,
            api_key=api_key,
            generate_endpoint="chat",
            default_config=default,
            **options,
        )
        super().__init__(http_model, "http")
        self._http_model = http_model

    @property
    def base_url(self) -> str:
        """The server's normalised base URL."""
        return self._http_model.base_url

    @property
    def model_name(self) -> str:
        """The model name sent with each request."""
        return self._http_model.model_name


class HTTPModelBackend:
    """The ``"http"`` entry of the backend registry: loads an :class:`HTTPModel` from a URL."""

    name = "http"

    def available(self) -> bool:
        """Always: the HTTP backend needs only core dependencies."""
        return True

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> HTTPModel:
        """An HTTPModel for the URL ``path``, after checking that it serves the OpenAI API.

        The check is ``GET /models``, bounded by ``probe_timeout`` seconds (default 10);
        ``probe=False`` skips it, for a server without ``/models``.

        Raises:
            ModelLoadError: the server cannot be reached, does not answer in time, or answers
                with something other than an OpenAI model listing.
        """
        probe = options.pop("probe", True)
        probe_timeout = options.pop("probe_timeout", 10.0)
        if not isinstance(probe, bool):
            raise ConfigError("probe", f"must be True or False, got {probe!r}")
        probe_timeout = seconds("probe_timeout", probe_timeout)
        model = HTTPModel(path, **options)
        if not probe:
            return model
        try:
            await model.refresh_info(seconds=float(probe_timeout), strict=True)
        except APIConnectionError as exc:
            await model.aclose()
            raise ModelLoadError(model.base_url, f"the server does not answer ({exc})") from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await model.aclose()
            raise
        return model
