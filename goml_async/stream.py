"""TokenStream: the one object every backend's ``generate``/``chat`` returns.

A backend supplies a *token source*: an async generator function that takes a
:class:`StreamContext` and yields :class:`~goml_async.types.Token` objects. The stream adds,
once for every backend:

- client-side stop sequences (also when a stop string is split across tokens; no text from the
  stop onwards is ever delivered), stop token IDs and the ``max_tokens`` cap;
- the finish reason, metrics (time to first token measured here), the error and partial text;
- with a ``response_format``, the check of the text as it arrives and of the whole document at
  the end (:class:`~goml_async.structured.StreamChecker`): the first token that breaks the
  format raises :class:`~goml_async.errors.SchemaViolation` and is not delivered, and a stream
  never ends successfully with text that does not validate;
- tool calls: the source may yield :class:`~goml_async.tools.ToolCallDelta` events beside its
  tokens; :meth:`TokenStream.events` delivers both in arrival order (iterating the stream
  itself yields the text tokens only), one assembler joins the deltas, and the end of the
  stream checks the calls against the tools and ``tool_choice``;
- closing the source as soon as the consumer leaves: ``break`` + ``aclose()``, ``async with``,
  cancellation, or reaching a stop. Closing the source is what stops generation at the backend
  (the MLX thread, the HTTP response, the llama-server slot).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, NoReturn, Self, TypeAlias

import anyio
from anyio.abc import AsyncResource

from ._stop_sequences import StopSequenceCutter
from ._tool_calls import ToolCallAssembler, check_tool_choice
from .errors import GenerationError, GenerationTimeout, GomlError, SchemaViolation
from .structured._checker import StreamChecker
from .tools import ToolCall, ToolCallDelta
from .types import FinishReason, GenerateConfig, GenerateMetrics, Result, Token

__all__ = ["StopSequenceCutter", "StreamContext", "StreamItem", "TokenSource", "TokenStream"]

_DEFAULT_CONFIG = GenerateConfig()
_NONE: Mapping[str, Any] = MappingProxyType({})
#: The end of a checked stream: reached without error, so the document is checked there.
_CHECKED_ENDS = frozenset(("stop", "length", "stop_sequence"))


class StreamContext:
    """What a token source tells its stream besides the tokens.

    Attributes:
        config: the resolved GenerateConfig of this call (read it in the source).
        metrics: set by the source when the backend reports measurements (token counts,
            durations, memory); fields left at 0 are filled in from client-side timing.
        finish_reason: set by the source when the backend says why it stopped
            (``"stop"`` or ``"length"``); otherwise the stream infers it.
        options: the call's backend-specific options (read-only), those the backend declares
            in :attr:`~goml_async.model.BaseTextModel.call_options` (HTTP's ``model=`` and
            ``extra_body=``); empty for most calls.
    """

    __slots__ = ("config", "finish_reason", "metrics", "options")

    def __init__(self, config: GenerateConfig, options: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.metrics: GenerateMetrics | None = None
        self.finish_reason: FinishReason | None = None
        self.options: Mapping[str, Any] = MappingProxyType(dict(options)) if options else _NONE


#: What a token source yields: text tokens and, beside them, tool-call deltas.
StreamItem: TypeAlias = Token | ToolCallDelta
TokenSource: TypeAlias = Callable[[StreamContext], AsyncIterator[StreamItem]]


class TokenStream(AsyncResource):
    """An async iterator of tokens with the outcome attached once it ends.

    Example:
        ```python
        async with model.generate("Name a colour.", max_tokens=16) as stream:
            async for token in stream:
                print(token.text, end="", flush=True)
        print(stream.finish_reason, stream.metrics)
        ```

    ``await stream.collect()``, or simply ``await stream``, gathers the whole reply as a
    :class:`~goml_async.types.Result`. With tools, :meth:`events` yields the text tokens and
    the :class:`~goml_async.tools.ToolCallDelta` events in arrival order, and after the end
    :attr:`tool_calls` holds the checked calls (``finish_reason`` ``"tool_calls"``).
    After the end, :attr:`text`, :attr:`finish_reason` (``stop``, ``length``,
    ``stop_sequence``, ``cancelled`` or ``error``), :attr:`metrics` and :attr:`error` are set.
    Leaving early (``break`` then ``aclose()``, leaving ``async with``, or cancellation) closes
    the source, which stops generation at the backend.
    """

    __slots__ = (
        "_checker",
        "_config",
        "_context",
        "_count",
        "_cutter",
        "_error",
        "_finish_reason",
        "_first_token_at",
        "_iterator",
        "_metrics",
        "_on_finish",
        "_parsed",
        "_parts",
        "_ready",
        "_source",
        "_started_at",
        "_stop_ids",
        "_tool_calls",
        "_tools",
        "_total_deadline",
    )

    def __init__(
        self,
        source: TokenSource | AsyncIterable[StreamItem],
        *,
        config: GenerateConfig | None = None,
        on_finish: Callable[[TokenStream], None] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Wrap a token source.

        Args:
            source: an async generator function taking a StreamContext (what backends pass),
                or any async iterable of Tokens.
            config: the call's GenerateConfig; its stops and ``max_tokens`` are applied here.
            on_finish: called once with this stream when it ends, however it ends.
            options: the call's backend-specific options, handed to the source on
                :attr:`StreamContext.options`.
        """
        self._config = config if config is not None else _DEFAULT_CONFIG
        self._source = source
        self._on_finish = on_finish
        self._context = StreamContext(self._config, options)
        self._iterator: AsyncIterator[StreamItem] | None = None
        self._cutter = (
            StopSequenceCutter(self._config.stop_sequences) if self._config.stop_sequences else None
        )
        self._stop_ids = frozenset(self._config.stop_tokens)
        fmt = self._config.structured
        self._checker = StreamChecker(fmt) if fmt is not None else None
        self._parsed: Any = None
        self._tools: ToolCallAssembler | None = None
        self._tool_calls: tuple[ToolCall, ...] | None = None
        self._ready: deque[Token] = deque()
        self._parts: list[str] = []
        self._count = 0
        self._started_at = 0.0
        self._total_deadline = math.inf
        self._first_token_at = 0.0
        self._finish_reason: FinishReason | None = None
        self._metrics: GenerateMetrics | None = None
        self._error: BaseException | None = None

    # -- outcome ----------------------------------------------------------------------------------

    @property
    def config(self) -> GenerateConfig:
        """The resolved GenerateConfig of this call."""
        return self._config

    @property
    def text(self) -> str:
        """The text delivered so far (all of it once the stream has ended)."""
        return "".join(self._parts)

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why the stream ended; None while it is still running."""
        return self._finish_reason

    @property
    def metrics(self) -> GenerateMetrics | None:
        """Measurements of the finished stream; None while it is still running."""
        return self._metrics

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the stream, if any."""
        return self._error

    @property
    def parsed(self) -> Any:
        """The validated document once the stream has ended well with a ``response_format``.

        The pydantic instance when a model class was given, the JSON value for the JSON
        formats, the text for ``regex`` and ``choice``; None without a ``response_format``.
        """
        return self._parsed

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The calls the model made, checked against the tools, once the stream has ended well
        (empty while it runs, and when the model made none)."""
        return self._tool_calls or ()

    @property
    def done(self) -> bool:
        """True once the stream has ended."""
        return self._finish_reason is not None

    # -- iteration --------------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Token:
        while True:
            item = await self._next_token()
            if not isinstance(item, ToolCallDelta):
                return await self._accept(item)

    async def events(self) -> AsyncIterator[StreamItem]:
        """Yield the text tokens and the tool-call deltas in the order they arrive.

        Example:
            ```python
            async with model.chat(messages, tools=tools) as stream:
                async for event in stream.events():
                    if isinstance(event, ToolCallDelta):
                        print("call", event.index, event.name or "", event.arguments)
                    else:
                        print(event.text, end="")
            print(stream.tool_calls)
            ```
        """
        while True:
            try:
                item = await self._next_token()
            except StopAsyncIteration:
                return
            yield item if isinstance(item, ToolCallDelta) else await self._accept(item)

    async def _accept(self, token: Token) -> Token:
        """Check a text token against the format and record it as delivered."""
        if self._checker is not None:
            try:
                self._checker.feed(token.text)
            except SchemaViolation as exc:
                # The token is not delivered; generation stops at the backend.
                await self._close_source()
                raise self._violation(exc) from None
        self._parts.append(token.text)
        return token

    async def _next_token(self) -> StreamItem:
        if self._ready:
            return self._deliver(self._ready.popleft())
        if self._finish_reason is not None:
            self._exhausted()
        iterator = self._iterator if self._iterator is not None else self._start()
        cap = self._config.max_tokens
        timed = self._config.has_deadlines
        while True:
            try:
                token = await (self._next_in_time(iterator) if timed else iterator.__anext__())
            except StopAsyncIteration:
                self._end_of_source()
                return self._deliver(self._ready.popleft())
            except BaseException as exc:
                raise self._fail(exc)  # noqa: B904 - the cause is kept on the raised error
            if isinstance(token, ToolCallDelta):
                await self._tool_delta(token)
                return token
            if cap and self._count >= cap:
                # The cap was reached and the source did not stop by itself: cut it off here.
                # (Backends that honour max_tokens natively end first, after their final
                # usage and timings, which is why the stream waits for them.)
                await self._stop_early("length")
                if self._ready:
                    return self._deliver(self._ready.popleft())
                self._exhausted()
            self._count += 1
            if self._count == 1:
                self._first_token_at = time.perf_counter()
            if self._stop_ids and token.id in self._stop_ids:
                await self._stop_early("stop")
                if self._ready:
                    return self._deliver(self._ready.popleft())
                self._exhausted()
            if self._cutter is None:
                return self._deliver(token)
            released, hit = self._cutter.feed(token)
            self._ready.extend(released)
            if hit:
                await self._stop_early("stop_sequence")
            if self._ready:
                return self._deliver(self._ready.popleft())
            if self._finish_reason is not None:
                self._exhausted()

    async def _next_in_time(self, iterator: AsyncIterator[StreamItem]) -> StreamItem:
        """The next token, or GenerationTimeout when the nearest deadline passes first."""
        config = self._config
        deadline, kind, seconds = self._total_deadline, "total", config.total_timeout or 0.0
        gap = config.first_token_timeout if self._count == 0 else config.idle_timeout
        if gap is not None and anyio.current_time() + gap < deadline:
            deadline, seconds = anyio.current_time() + gap, gap
            kind = "first_token" if self._count == 0 else "idle"
        with anyio.CancelScope(deadline=deadline):
            return await iterator.__anext__()
        # Only reached when this scope's deadline cancelled the wait; the source has been
        # cancelled at its await point and has run its cleanup.
        what = {"first_token": "no first token", "idle": "no token", "total": "not finished"}
        raise GenerationTimeout(
            f"{what[kind]} within the {kind} deadline of {seconds:g} s "
            f"({self._count} token(s) received)",
            deadline=kind,
            seconds=seconds,
        )

    def _start(self) -> AsyncIterator[StreamItem]:
        self._started_at = time.perf_counter()
        if self._config.total_timeout is not None:
            self._total_deadline = anyio.current_time() + self._config.total_timeout
        source = self._source
        iterator = (
            source.__aiter__() if isinstance(source, AsyncIterable) else source(self._context)
        )
        self._iterator = iterator
        return iterator

    def _deliver(self, token: Token) -> Token:
        # The token goes out through __anext__, which checks it against the format first.
        return token

    async def _tool_delta(self, delta: ToolCallDelta) -> None:
        """Hand a tool-call delta to the assembler; a hostile one ends the stream."""
        if self._tools is None:
            self._tools = ToolCallAssembler(self._config.tool_specs)
        try:
            self._tools.add(delta)
        except GenerationError as exc:
            await self._close_source()
            raise self._fail(exc) from None

    def _exhausted(self) -> NoReturn:
        checker = self._checker
        ended_well = self._finish_reason in _CHECKED_ENDS
        if checker is not None and checker.parsed is None and ended_well:
            try:
                self._parsed = checker.finish()
            except SchemaViolation as exc:
                raise self._violation(exc) from None
        if self._tool_calls is None and ended_well:
            try:
                calls = self._tools.finish() if self._tools is not None else ()
                check_tool_choice(self._config.choice, calls, self.text)
            except SchemaViolation as exc:
                raise self._violation(exc) from None
            self._tool_calls = calls
            if calls and self._finish_reason == "stop":
                self._finish_reason = "tool_calls"
        self._notify()
        raise StopAsyncIteration

    def _violation(self, exc: SchemaViolation) -> SchemaViolation:
        """Record that the output broke its format and return the error to raise."""
        exc.tokens_generated = self._count
        self._error = exc
        if self._finish_reason is None:
            self._metrics = self._build_metrics()
        # Also when the source had ended: a document that fails its check is no success.
        self._finish_reason = "error"
        self._ready.clear()
        self._notify()
        return exc

    def _end_of_source(self) -> None:
        """The source is used up: release held text and record why it ended."""
        reason = self._context.finish_reason
        if self._cutter is not None:
            released, hit = self._cutter.finish()
            self._ready.extend(released)
            if hit:
                reason = "stop_sequence"
        if reason is None:
            cap = self._config.max_tokens
            reason = "length" if cap and self._count >= cap else "stop"
        self._finish(reason)
        if not self._ready:
            self._exhausted()

    async def _stop_early(self, reason: FinishReason) -> None:
        """End before the source does: release held text and close the source."""
        if self._cutter is not None:
            released, hit = self._cutter.finish()
            self._ready.extend(released)
            if hit:
                reason = "stop_sequence"
        await self._close_source()
        self._finish(reason)

    async def _close_source(self) -> None:
        iterator = self._iterator
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            # Shielded: a source must get to run its cleanup (close the HTTP response, stop the
            # worker thread) even when the consumer is being cancelled.
            with anyio.CancelScope(shield=True):
                await aclose()

    def _fail(self, exc: BaseException) -> BaseException:
        """Record a failure of the source and return the exception to raise."""
        if self._finish_reason is not None:
            return exc
        partial = self.text + (self._cutter.held_text if self._cutter is not None else "")
        if isinstance(exc, GenerationError):
            if not exc.partial_text:
                exc.partial_text = partial
            if not exc.tokens_generated:
                exc.tokens_generated = self._count
            error: BaseException = exc
        elif isinstance(exc, Exception) and not isinstance(exc, GomlError):
            error = GenerationError(
                f"generation failed after {self._count} token(s): {type(exc).__name__}: {exc}",
                partial_text=partial,
                tokens_generated=self._count,
            )
            error.__cause__ = exc
        else:
            error = exc
        if isinstance(exc, Exception):
            self._error = error
            self._finish("error")
        else:  # cancellation, KeyboardInterrupt, GeneratorExit
            self._finish("cancelled")
        self._ready.clear()
        self._notify()
        return error

    def _finish(self, reason: FinishReason) -> None:
        """Record the outcome (once); the observer hears of it when the consumer is done."""
        if self._finish_reason is None:
            self._finish_reason = reason
            self._metrics = self._build_metrics()

    def _notify(self) -> None:
        on_finish, self._on_finish = self._on_finish, None
        if on_finish is not None:
            on_finish(self)

    def _build_metrics(self) -> GenerateMetrics:
        now = time.perf_counter()
        started = self._started_at or now
        total = now - started
        ttft = self._first_token_at - started if self._first_token_at else 0.0
        reported = self._context.metrics
        if reported is None:
            decode = now - self._first_token_at if self._first_token_at else 0.0
            # The first token closes prefill; the rate counts the tokens decoded after it.
            rate = (self._count - 1) / decode if self._count > 1 and decode > 0 else 0.0
            return GenerateMetrics(
                generated_tokens=self._count,
                prefill_seconds=ttft,
                decode_seconds=decode,
                total_seconds=total,
                time_to_first_token=ttft,
                decode_tokens_per_sec=rate,
            )
        fill: dict[str, Any] = {}
        if not reported.time_to_first_token and ttft:
            fill["time_to_first_token"] = ttft
        if not reported.total_seconds:
            fill["total_seconds"] = total
        return replace(reported, **fill) if fill else reported

    # -- closing ----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the stream and the generation behind it. Idempotent."""
        self._ready.clear()
        if self._finish_reason is None:
            await self._close_source()
            self._finish("cancelled")
        self._notify()

    async def collect(self) -> Result:
        """Consume the stream and return the whole reply.

        Raises:
            GenerationError: the backend failed; ``partial_text`` holds what came before.
        """
        async with self:
            async for _ in self:
                pass
        return Result(
            text=self.text,
            metrics=self._metrics,
            finish_reason=self._finish_reason,
            parsed=self._parsed,
            tool_calls=self.tool_calls,
        )

    def __await__(self) -> Generator[Any, None, Result]:
        """``await stream`` is ``await stream.collect()``: ``await model.chat(messages)``.

        Example:
            ```python
            result = await model.chat([{"role": "user", "content": "Hi!"}], max_tokens=32)
            print(result.text, result.finish_reason)
            ```
        """
        return self.collect().__await__()

    def __repr__(self) -> str:
        state = self._finish_reason or ("running" if self._iterator is not None else "new")
        return f"<TokenStream {state} tokens={self._count} text={self.text[:40]!r}>"
