"""FakeOpenAIServer's side of the wire, without I/O: the script, request bodies and SSE events.

Everything here is a pure function of a :class:`Script` and a request body; the HTTP side
(``openai_server``) only writes what :func:`stream_steps` yields and sleeps where it says so.
The replies are built with the server's own writers (:mod:`goml_async._openai_wire`,
:mod:`goml_async._sse`), in llama.cpp's variant of the shapes: no ``"logprobs": null`` or
``"usage": null`` fields, errors with the HTTP status as their code, ``timings`` on the last
chunk. Only the faults are written by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .._openai_wire.chunks import DONE, ChunkWriter, completion_object
from .._openai_wire.errors import llama_error_object, llama_error_type
from .._openai_wire.json_text import dumps
from .._openai_wire.usage import timings_object, usage_object
from .._sse import encode_comment, encode_data
from ..errors import ConfigError

#: A stream is handed to the writer in batches of about this many bytes (one HTTP chunk each).
BATCH_BYTES: Final = 64 * 1024
DEFAULT_TOKENS: Final = ("Hello", ",", " world", "!")
ERROR_PAYLOAD: Final = dumps(llama_error_object("boom", "server_error", 500))
MALFORMED_PAYLOAD: Final = "{not json"


@dataclass(frozen=True)
class Script:
    """What a :class:`~goml_async.testing.FakeOpenAIServer` replies, and which faults it injects.

    Token positions count the reply's tokens: ``*_after=N`` acts once N tokens have been sent,
    before token N (``0``: before the first; ``len(tokens)``: after the last, before the final
    chunk). Sequences are stored as tuples.

    Args:
        tokens: the reply's token texts, one SSE chunk each.
        model: the model name in replies and in ``GET /v1/models``.
        token_delay: seconds slept before each token.
        first_token_delay: extra seconds slept before the first token (after the headers and
            the role chunk were sent).
        chunk_size: write the SSE bytes in pieces of this many bytes, each its own HTTP chunk,
            so events, lines, JSON and UTF-8 characters are split anywhere.
        line_ending: ``"\\n"`` or ``"\\r\\n"``, for every SSE line.
        keepalive_every: send a ``: ping`` comment before every Nth token (0: never).
        multiline_data: split each JSON payload across two ``data:`` lines after its first
            comma; a correct SSE client rejoins them with ``"\\n"``.
        timings: add llama.cpp-style ``timings`` to the last chunk (and to plain replies).
        prompt_tokens: the prompt token count to report (default: whitespace-split words of the
            messages' contents or of the prompt).
        stall_after: after this many tokens, sleep ``stall_seconds`` before going on.
        stall_seconds: how long ``stall_after`` sleeps.
        malformed_after: after this many tokens, send ``data: {not json`` and go on.
        disconnect_after: after this many tokens, close the connection without ending the
            chunked body.
        error_after: after this many tokens, send an SSE error payload and ``[DONE]``.
        statuses: the first ``len(statuses)`` completion requests (counted from when this
            script was set) get these HTTP error statuses with an OpenAI error body.
        retry_after: a ``Retry-After`` header value added to those error responses.
        loading_until_requests: ``GET /health`` answers 503 "Loading model" this many times.

    Example:
        >>> Script(tokens=["a", "b"], statuses=[503]).statuses
        (503,)
    """

    tokens: Sequence[str] = DEFAULT_TOKENS
    model: str = "fake-model"
    token_delay: float = 0.0
    first_token_delay: float = 0.0
    chunk_size: int | None = None
    line_ending: str = "\n"
    keepalive_every: int = 0
    multiline_data: bool = False
    timings: bool = True
    prompt_tokens: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 0.0
    malformed_after: int | None = None
    disconnect_after: int | None = None
    error_after: int | None = None
    statuses: Sequence[int] = ()
    retry_after: str | None = None
    loading_until_requests: int = 0

    def __post_init__(self) -> None:
        tokens = self.tokens
        if isinstance(tokens, str) or not isinstance(tokens, Sequence):
            raise ConfigError("tokens", f"must be a sequence of str, got {tokens!r}")
        if not all(isinstance(text, str) for text in tokens):
            raise ConfigError("tokens", "every token text must be a str")
        object.__setattr__(self, "tokens", tuple(tokens))
        statuses = self.statuses
        if isinstance(statuses, str | bytes) or not isinstance(statuses, Sequence):
            raise ConfigError("statuses", f"must be a sequence of int, got {statuses!r}")
        if not all(_is_int(code) and 400 <= code <= 599 for code in statuses):
            raise ConfigError("statuses", f"must be HTTP error codes (400-599), got {statuses!r}")
        object.__setattr__(self, "statuses", tuple(statuses))
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model", f"must be a non-empty str, got {self.model!r}")
        for name in ("token_delay", "first_token_delay", "stall_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(name, f"must be a number >= 0, got {value!r}")
        for name in ("keepalive_every", "loading_until_requests"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(name, f"must be an int >= 0, got {getattr(self, name)!r}")
        for name in (
            "prompt_tokens",
            "stall_after",
            "malformed_after",
            "disconnect_after",
            "error_after",
        ):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ConfigError(name, f"must be an int >= 0 or None, got {value!r}")
        if self.chunk_size is not None and (not _is_int(self.chunk_size) or self.chunk_size < 1):
            raise ConfigError("chunk_size", f"must be an int >= 1 or None, got {self.chunk_size!r}")
        if self.line_ending not in ("\n", "\r\n"):
            raise ConfigError("line_ending", f'must be "\\n" or "\\r\\n", got {self.line_ending!r}')
        if self.retry_after is not None and (
            not isinstance(self.retry_after, str) or not self.retry_after.isprintable()
        ):
            problem = f"must be a printable header value, got {self.retry_after!r}"
            raise ConfigError("retry_after", problem)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, as a test sees it.

    Attributes:
        method: the HTTP method, e.g. ``"POST"``.
        path: the request path without its query string, e.g. ``"/v1/chat/completions"``.
        headers: the request headers, names lower-cased (repeated headers joined by ``", "``).
        json: the parsed JSON body, or None when there was no body or it was not JSON.
        body: the raw request body.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    body: bytes = b""


class RequestError(Exception):
    """A completion request body that cannot be served: answered with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class CompletionRequest:
    """The parts of a ``/v1/chat/completions`` or ``/v1/completions`` body the server obeys."""

    chat: bool
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_words: int


@dataclass(frozen=True)
class Pause:
    """A step of a reply: sleep this many seconds (watching the connection) before going on."""

    seconds: float


class Disconnect:
    """A step of a reply: close the connection here, leaving the body unfinished."""


#: What :func:`stream_steps` yields: bytes to write, a pause, or the end of the connection.
Step = bytes | Pause | Disconnect


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def error_body(status: int, message: str) -> bytes:
    """A llama.cpp style error body: ``{"error":{"message","type","code"}}``, code = status."""
    return dumps(llama_error_object(message, llama_error_type(status), status)).encode()


def parse_completion_request(body: object, *, chat: bool) -> CompletionRequest:
    """Validate a completion request body; raise :class:`RequestError` (400) when it is bad."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "'messages' must be a non-empty list")
        words = sum(_content_words(m.get("content")) for m in messages if isinstance(m, dict))
    else:
        words = _prompt_words(body.get("prompt", ""))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 0):
        raise RequestError(400, f"'max_tokens' must be an int >= 0, got {max_tokens!r}")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return CompletionRequest(chat, bool(body.get("stream")), include_usage, max_tokens, words)


def _content_words(content: object) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):  # content parts: count the text parts
        return sum(
            len(part["text"].split())
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def _prompt_words(prompt: object) -> int:
    if isinstance(prompt, str):
        return len(prompt.split())
    if isinstance(prompt, list):  # a batch of prompts, or token ids
        return sum(1 if _is_int(item) else _prompt_words(item) for item in prompt)
    return 0


@dataclass(frozen=True)
class ReplyPlan:
    """One reply to one completion request: its identity and what it will contain."""

    script: Script
    request: CompletionRequest
    response_id: str
    created: int

    @property
    def sent_tokens(self) -> int:
        """How many of the script's tokens are sent (``max_tokens`` may cut the reply)."""
        limit = self.request.max_tokens
        count = len(self.script.tokens)
        return count if limit is None else min(limit, count)

    @property
    def finish_reason(self) -> str:
        """``"length"`` when ``max_tokens`` cut the reply, else ``"stop"``."""
        return "length" if self.sent_tokens < len(self.script.tokens) else "stop"

    @property
    def prompt_tokens(self) -> int:
        """The server-side prompt token count: the script's override or the prompt's words."""
        override = self.script.prompt_tokens
        return self.request.prompt_words if override is None else override

    def usage(self, completion_tokens: int) -> dict[str, int]:
        """The OpenAI ``usage`` object for this reply."""
        return usage_object(self.prompt_tokens, completion_tokens)

    def timings(self, prompt_ms: float, predicted_ms: float) -> dict[str, float]:
        """llama.cpp's whole ``timings`` object for this reply (with the per-token times)."""
        return timings_object(
            prompt_n=self.prompt_tokens,
            prompt_ms=prompt_ms,
            predicted_n=self.sent_tokens,
            predicted_ms=predicted_ms,
            per_token=True,
        )

    def chunks(self) -> ChunkWriter:
        """The writer of this reply's stream chunks, in llama.cpp's variant of the shape."""
        return ChunkWriter(
            chat=self.request.chat,
            completion_id=self.response_id,
            created=self.created,
            model=self.script.model,
            null_logprobs=False,
        )

    def plain_body(self) -> dict[str, Any]:
        """The whole non-streaming reply (``stream`` false)."""
        script, count = self.script, self.sent_tokens
        timings = None
        if script.timings:
            first = script.first_token_delay + script.token_delay if count else 0.0
            rest = script.token_delay * max(count - 1, 0)
            timings = self.timings(first * 1e3, rest * 1e3)
        return completion_object(
            chat=self.request.chat,
            completion_id=self.response_id,
            created=self.created,
            model=script.model,
            text="".join(script.tokens[:count]),
            finish_reason=self.finish_reason,
            usage=self.usage(count),
            timings=timings,
            null_logprobs=False,
        )


class SSEFormat:
    """Frames SSE events with the script's line ending, optionally over two ``data:`` lines."""

    def __init__(self, script: Script) -> None:
        self._eol = script.line_ending
        self._multiline = script.multiline_data
        self.done = self.event(DONE)
        self.ping = encode_comment("ping", self._eol).encode()

    def event(self, payload: str) -> bytes:
        """One ``data:`` event carrying ``payload`` (one line of JSON, or any text)."""
        cut = payload.find(',"') + 1 if self._multiline else 0
        if cut > 0:  # after a comma between JSON members, "\n" is whitespace: rejoined it parses
            payload = f"{payload[:cut]}\n{payload[cut:]}"
        return encode_data(payload, self._eol).encode()


def stream_steps(
    reply: ReplyPlan, *, started: float, clock: Callable[[], float] = time.perf_counter
) -> Iterator[Step]:
    """The SSE body of a streaming reply, as writes and pauses, lazily.

    Consecutive events are joined into batches of about :data:`BATCH_BYTES`; each pause or the
    disconnect first yields what was batched. ``started`` is when the request arrived on
    ``clock``; the timings in the last chunk are measured on it while the writer pulls steps.
    """
    script = reply.script
    fmt = SSEFormat(script)
    writer = reply.chunks()
    events: dict[str, bytes] = {}  # token text -> its encoded event, built once per request
    faults = {script.stall_after, script.malformed_after, script.disconnect_after}
    faults.add(script.error_after)
    batch: list[bytes] = []
    size = 0
    if reply.request.chat:
        batch.append(fmt.event(writer.role()))
    first_token_at = started
    count = reply.sent_tokens
    for index in range(count + 1):
        if index in faults:
            for step in _fault_steps(script, index, fmt):
                if isinstance(step, bytes):
                    batch.append(step)
                    continue
                if batch:
                    yield b"".join(batch)
                    batch.clear()
                    size = 0
                yield step
                if isinstance(step, Disconnect):
                    return
            if index == script.error_after:
                yield b"".join(batch)
                return
        if index == count:
            break
        delay = script.token_delay + (script.first_token_delay if index == 0 else 0.0)
        if script.keepalive_every and (index + 1) % script.keepalive_every == 0:
            batch.append(fmt.ping)
        if delay > 0:
            if batch:
                yield b"".join(batch)
                batch.clear()
                size = 0
            yield Pause(delay)
        if index == 0:
            first_token_at = clock()
        text = script.tokens[index]
        event = events.get(text)
        if event is None:
            event = fmt.event(writer.content(text))
            events[text] = event
        batch.append(event)
        size += len(event)
        if size >= BATCH_BYTES:
            yield b"".join(batch)
            batch.clear()
            size = 0
    batch.extend(_final_events(reply, fmt, writer, started, first_token_at, clock()))
    yield b"".join(batch)


def _fault_steps(script: Script, index: int, fmt: SSEFormat) -> Iterator[Step]:
    if script.stall_after == index and script.stall_seconds > 0:
        yield Pause(script.stall_seconds)
    if script.malformed_after == index:
        yield fmt.event(MALFORMED_PAYLOAD)
    if script.error_after == index:
        yield fmt.event(ERROR_PAYLOAD)
        yield fmt.done
    elif script.disconnect_after == index:
        yield Disconnect()


def _final_events(
    reply: ReplyPlan, fmt: SSEFormat, writer: ChunkWriter, started: float, first: float, now: float
) -> list[bytes]:
    """The finish chunk, the usage chunk when asked for, and ``[DONE]``; ``timings`` (when the
    script sends them) travel on the last of the chunks, as llama.cpp sends them."""
    if reply.sent_tokens == 0:
        first = now
    timings = None
    if reply.script.timings:
        timings = reply.timings((first - started) * 1e3, (now - first) * 1e3)
    if not reply.request.include_usage:
        return [fmt.event(writer.finish(reply.finish_reason, timings)), fmt.done]
    usage = reply.usage(reply.sent_tokens)
    return [
        fmt.event(writer.finish(reply.finish_reason)),
        fmt.event(writer.usage(usage, timings)),
        fmt.done,
    ]


def plain_outcome(reply: ReplyPlan) -> tuple[float, int, bytes | None]:
    """A non-streaming reply as ``(seconds to wait, status, body)``; body None: disconnect.

    The script's delays are summed; a fault at or before the last sent token replaces the
    reply: ``error_after`` with a 500, ``malformed_after`` with a non-JSON 200 body and
    ``disconnect_after`` with a closed connection.
    """
    script, count = reply.script, reply.sent_tokens
    delay = script.token_delay * count + (script.first_token_delay if count else 0.0)
    if script.stall_after is not None and script.stall_after <= count:
        delay += script.stall_seconds
    faults: Mapping[str, int | None] = {
        "disconnect": script.disconnect_after,
        "error": script.error_after,
        "malformed": script.malformed_after,
    }
    fired = [(at, name) for name, at in faults.items() if at is not None and at <= count]
    if fired:
        name = min(fired)[1]
        if name == "disconnect":
            return delay, 200, None
        if name == "error":
            return delay, 500, ERROR_PAYLOAD.encode()
        return delay, 200, MALFORMED_PAYLOAD.encode()
    return delay, 200, dumps(reply.plain_body()).encode()
