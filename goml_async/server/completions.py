"""The completion routes: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

One request: check the key and the body, wait in line for a place (leaving the line if the
client hangs up), open the model's TokenStream within the server's limits, then send it as
Server-Sent Events or as one JSON reply. A client that disconnects at any point stops its
generation; the shutdown may stop a request in progress (a stream gets an error event, a plain
request 503).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ..model import TextModel
from ..stream import TokenStream
from ..types import Result
from ._http import ClientGone, read_json_body
from ._logprobs import LogprobsCollector
from ._requests import CompletionRequest, parse_completion_request
from ._wire import ServerError, completion_reply, error_from_exception, new_completion_id
from .events import OpenAIEncoder
from .limits import ServerConfig, clamp_max_tokens, window_messages
from .sse import TokenStreamSender, run_until_disconnect
from .stats import ServerStats

__all__ = ["CompletionHost", "Completions", "Endpoint", "Stoppable"]

logger = logging.getLogger("goml_async.server")


class Endpoint:
    """A raw ASGI endpoint: Starlette routes it without wrapping it in request/response."""

    __slots__ = ("_handler",)

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


class _PlainJob:
    """A non-streamed completion in progress, which the shutdown may stop."""

    __slots__ = ("error", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.error: ServerError | None = None

    def stop(self, error: ServerError | None = None) -> None:
        self.error = error
        self.scope.cancel()


class CompletionHost(Protocol):
    """What the endpoints need of the app that serves them (:class:`~.app.ServerApp`).

    Named here, not imported, so the endpoints sit below the app that routes to them.
    """

    model: TextModel
    model_name: str
    config: ServerConfig
    stats: ServerStats

    def authorize(self, request: Request) -> None: ...
    def refuse_if_shutting_down(self) -> None: ...
    def shutdown_error(self) -> ServerError: ...
    def check_model(self, requested: str) -> None: ...
    async def enter(self) -> None: ...
    def leave(self) -> None: ...
    async def send_error(
        self, error: ServerError, send: Send, scope: Scope | None = None
    ) -> None: ...
    def tracking(self, job: Stoppable) -> contextlib.AbstractContextManager[None]: ...


class Stoppable(Protocol):
    """A request in progress that the shutdown may stop."""

    def stop(self, error: ServerError | None = None) -> None: ...


class Completions:
    """The two completion endpoints of one app (a :class:`CompletionHost`)."""

    def __init__(self, app: CompletionHost) -> None:
        self._app = app

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/chat/completions``."""
        await self._complete(scope, receive, send, chat=True)

    async def completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/completions``."""
        await self._complete(scope, receive, send, chat=False)

    async def _complete(self, scope: Scope, receive: Receive, send: Send, *, chat: bool) -> None:
        app = self._app
        app.stats.requests += 1
        request = Request(scope, receive)
        try:
            app.authorize(request)
            app.refuse_if_shutting_down()
            payload = await read_json_body(request, app.config.max_body_bytes)
            parsed = parse_completion_request(payload, chat=chat)
            app.check_model(parsed.model)
            # Wait in line for a place; a client that hangs up meanwhile leaves the line.
            _, gone = await run_until_disconnect(receive, app.enter)
        except ClientGone:
            gone = True
        except ServerError as error:
            await app.send_error(error, send, scope)
            return
        if gone:
            app.stats.client_disconnects += 1
            return
        try:
            try:
                stream = self._open(parsed)
            except Exception as exc:
                await app.send_error(error_from_exception(exc), send, scope)
                return
            if parsed.stream:
                await self._stream_reply(stream, parsed, receive, send)
            else:
                await self._plain_reply(stream, parsed, scope, receive, send)
        finally:
            app.leave()

    def _open(self, parsed: CompletionRequest) -> TokenStream:
        """The model's TokenStream for a request, within the server's limits."""
        config = self._app.config
        options = dict(parsed.options)
        options["max_tokens"] = clamp_max_tokens(parsed.max_tokens, config.max_tokens)
        if config.timeout is not None:
            options["total_timeout"] = config.timeout
        model = self._app.model
        if options.get("tools") and not getattr(model, "supports_tools", False):
            # Also a TextModel outside BaseTextModel, which might ignore the tools: refused
            # here rather than answered with text that looks as if no tool was wanted.
            raise ServerError(
                400,
                f"tools: tool calling is not supported by the {model.model_type} backend",
                param="tools",
                code="not_supported",
            )
        if parsed.chat:
            return model.chat(window_messages(parsed.messages, config.max_context), **options)
        return model.generate(parsed.prompt, **options)

    async def _stream_reply(
        self, stream: TokenStream, parsed: CompletionRequest, receive: Receive, send: Send
    ) -> None:
        app = self._app
        encoder = OpenAIEncoder(
            chat=parsed.chat,
            model=app.model_name,
            include_usage=parsed.include_usage,
            logprobs=parsed.logprobs,
        )
        sender = TokenStreamSender(stream, encoder, on_error=self._stream_failed)
        with app.tracking(sender):
            outcome = await sender(receive, send)
        if outcome == "completed":
            app.stats.completed += 1
        elif outcome == "disconnected":
            app.stats.client_disconnects += 1

    def _stream_failed(self, error: ServerError, started: bool) -> None:
        self._app.stats.count_error(error, in_stream=started)
        if started or error.status >= 500:
            when = "after" if started else "before"
            logger.warning("stream failed %s it started: %d %s", when, error.status, error.message)

    async def _plain_reply(
        self,
        stream: TokenStream,
        parsed: CompletionRequest,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        app = self._app
        job = _PlainJob()
        logprobs = (
            None
            if parsed.logprobs is None
            else LogprobsCollector(chat=parsed.chat, top=parsed.logprobs)
        )

        async def collect() -> Result | None:
            with job.scope:
                async with stream:
                    async for token in stream:
                        if logprobs is not None:
                            logprobs.add(token)
                return Result(
                    text=stream.text,
                    metrics=stream.metrics,
                    finish_reason=stream.finish_reason,
                    tool_calls=stream.tool_calls,
                )
            return None

        try:
            with app.tracking(job):
                result, gone = await run_until_disconnect(receive, collect)
        except Exception as exc:
            await app.send_error(error_from_exception(exc), send, scope)
            return
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        if gone:
            app.stats.client_disconnects += 1
            return
        if result is None:
            await app.send_error(job.error or app.shutdown_error(), send, scope)
            return
        reply = completion_reply(
            chat=parsed.chat,
            completion_id=new_completion_id(parsed.chat),
            created=int(time.time()),
            model=app.model_name,
            text=result.text,
            finish_reason=result.finish_reason,
            metrics=result.metrics,
            logprobs=logprobs.render() if logprobs is not None else None,
            tool_calls=result.tool_calls,
        )
        app.stats.completed += 1
        await JSONResponse(reply)(scope, receive, send)
