"""A sans-I/O Server-Sent Events codec: a decoder and the encoder that writes what it reads.

The decoder follows the WHATWG ``text/event-stream`` parsing rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
and never touches a socket: the HTTP shell feeds it raw bytes as they arrive and gets complete
events back. Chunks may be split anywhere, including inside a UTF-8 character or between the CR
and LF of a CRLF line ending. The encoder (:func:`encode_data`, :func:`encode_event`,
:func:`encode_comment`) returns the text of one event; whatever it is given, the decoder reads
back the same event (a CR in the data arrives as LF: the format has no way to carry one).

Example:
    >>> decoder = SSEDecoder()
    >>> decoder.feed(b'data: {"n": 1}\\n\\nda')
    [ServerSentEvent(event='message', data='{"n": 1}', id=None, retry=None)]
    >>> decoder.feed(b"ta: [DONE]\\n")
    []
    >>> decoder.flush()
    [ServerSentEvent(event='message', data='[DONE]', id=None, retry=None)]
    >>> encode_event("a\\nb", event="note")
    'event: note\\ndata: a\\ndata: b\\n\\n'
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEFAULT_MAX_EVENT_CHARS",
    "SSEDecoder",
    "SSETooLarge",
    "ServerSentEvent",
    "encode_comment",
    "encode_data",
    "encode_event",
]

#: The longest line, and the most data one event may hold, in characters (8 Mi): far above
#: anything an LLM server sends in one event, and a bound on what a hostile one can make us hold.
DEFAULT_MAX_EVENT_CHARS = 8 * 1024 * 1024


class SSETooLarge(ValueError):
    """A line or an event of the stream is longer than the decoder's limit."""


# The C-level decoder, called directly: codecs' incremental decoder classes wrap this very
# function in Python-level methods, which costs a few hundred ns per chunk on the hot path.
_utf8_decode = codecs.utf_8_decode


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: the event type; ``"message"`` when the stream named none.
        data: the data lines of the event joined with ``"\\n"``.
        id: the last event ID seen on the stream so far (per spec it carries over to later
            events), or ``None`` if the stream never sent one.
        retry: the reconnection time in milliseconds announced in this event's block, if any.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """Parse ``data`` as JSON.

        Returns:
            The decoded JSON value.

        Raises:
            json.JSONDecodeError: ``data`` is not valid JSON; the caller translates it.
        """
        return json.loads(self.data)


# The generated __init__ of a frozen dataclass sets each field through object.__setattr__:
# about 0.45 us, some 40% of feed()'s time per event on the hot path. Writing the same slots
# through their member descriptors does exactly that at about half the cost.
# tests/test_sse.py checks that this stays in step with the dataclass's fields.
_new = object.__new__
_slots = vars(ServerSentEvent)
_set_event = _slots["event"].__set__
_set_data = _slots["data"].__set__
_set_id = _slots["id"].__set__
_set_retry = _slots["retry"].__set__
del _slots


def _make_event(event: str, data: str, id: str | None, retry: int | None) -> ServerSentEvent:
    """Build a :class:`ServerSentEvent` as its constructor would, only faster."""
    sse: ServerSentEvent = _new(ServerSentEvent)
    _set_event(sse, event)
    _set_data(sse, data)
    _set_id(sse, id)
    _set_retry(sse, retry)
    return sse


class SSEDecoder:
    """Incremental ``text/event-stream`` decoder: bytes in, :class:`ServerSentEvent` out.

    Call :meth:`feed` with each chunk read from the network and :meth:`flush` once at the end
    of the stream. The decoder can be reused after :meth:`flush`.

    Implements the WHATWG rules: CRLF, LF and lone CR line endings; a leading UTF-8 BOM is
    skipped; lines starting with ``":"`` are comments (keep-alive pings) and ignored; a field
    without a colon has an empty value; one space after the colon is stripped; ``data`` lines
    are joined with ``"\\n"``; a blank line dispatches the event only if it had ``data``; the
    event type resets after every blank line; ``retry`` is honoured only if all ASCII digits;
    an ``id`` containing NUL is ignored. Invalid UTF-8 is replaced with U+FFFD.

    Two deliberate deviations from the spec, both for callers that talk to LLM servers:

    * :meth:`flush` dispatches an event whose data is pending when the stream ends without a
      final blank line (the spec discards it), because some servers end with
      ``data: [DONE]\\n`` and close the connection.
    * ``retry`` is reported on the event of the block it appeared in (the spec only updates the
      connection's reconnection time); a ``retry``-only block dispatches nothing.
    """

    __slots__ = (
        "_bom_pending",
        "_buffer",
        "_buffered",
        "_data",
        "_event",
        "_last_id",
        "_max_chars",
        "_more",
        "_pending_bytes",
        "_retry",
        "_skip_lf",
    )

    def __init__(self, *, max_event_chars: int = DEFAULT_MAX_EVENT_CHARS) -> None:
        """Create a decoder.

        Args:
            max_event_chars: the longest line, and the most data one event may carry; beyond
                it :meth:`feed` raises :class:`SSETooLarge` (memory stays bounded whatever
                the server sends).
        """
        if isinstance(max_event_chars, bool) or not isinstance(max_event_chars, int):
            raise ConfigError("max_event_chars", f"must be an int, got {max_event_chars!r}")
        if max_event_chars < 1:
            raise ConfigError("max_event_chars", f"must be >= 1, got {max_event_chars}")
        self._max_chars = max_event_chars
        self._reset()

    def _reset(self) -> None:
        # Incomplete trailing bytes of a UTF-8 character, kept for the next chunk.
        self._pending_bytes = b""
        # Text after the last line ending: an incomplete line. When it spans more chunks, the
        # later pieces wait in _more (with their length in _buffered): a line that never ends
        # costs one append per chunk, not a copy of everything so far, and is bounded.
        self._buffer = ""
        self._more: list[str] = []
        self._buffered = 0
        # True until the first non-empty text, so a BOM split across chunks is still found.
        self._bom_pending = True
        # The previous chunk ended with CR: an LF starting the next text belongs to that CRLF.
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk of the stream.

        Args:
            chunk: the next bytes read from the response body, split anywhere.

        Returns:
            The events completed by this chunk, in order (often empty).
        """
        return self._process(self._lines(chunk))

    def feed_data(self, chunk: bytes) -> list[str]:
        """Like :meth:`feed`, but return only each completed event's ``data``.

        The fast path for consumers that read nothing else (OpenAI-style streams): no event
        objects are built. Every other field is still parsed, so the two methods can be mixed.
        """
        return self._process_data(self._lines(chunk))

    def _lines(self, chunk: bytes) -> list[str]:
        """Decode a chunk into the complete lines it finishes (without their endings)."""
        if self._pending_bytes:
            chunk = self._pending_bytes + chunk
            self._pending_bytes = b""
        text, used = _utf8_decode(chunk, "replace", False)
        if used != len(chunk):
            self._pending_bytes = chunk[used:]
        if not text:
            # Only part of a multi-byte character: the BOM and CR state wait for real text.
            return []
        if self._bom_pending:
            self._bom_pending = False
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if "\r" in text:
            # A trailing CR ends its line now (so the event is not held back until more data
            # arrives); remember it so an LF at the start of the next chunk is not a 2nd line.
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        if self._buffer:
            if len(lines) == 1:
                self._hold(text)
                return []
            head = self._buffer
            if self._more:
                head += "".join(self._more)
                self._more = []
            lines[0] = head + lines[0]
        # One chunk's tail is no longer than the chunk; only _hold accumulates.
        self._buffer = lines.pop()
        return lines

    def _hold(self, text: str) -> None:
        """Keep one more piece of a line that has not ended yet, within the limit."""
        if not self._more:
            self._buffered = len(self._buffer)
        self._buffered += len(text)
        if self._buffered > self._max_chars:
            self._reset()
            raise SSETooLarge(f"an event-stream line is longer than {self._max_chars} characters")
        self._more.append(text)

    def _check_pending(self) -> None:
        """Refuse an event whose data, still incomplete, has grown past the limit."""
        if sum(map(len, self._data)) > self._max_chars:
            self._reset()
            raise SSETooLarge(f"an event carries more than {self._max_chars} characters of data")

    def flush(self) -> list[ServerSentEvent]:
        """Signal the end of the stream and return any event still pending.

        Unlike the spec, an unterminated last line is processed, and an event with data but
        no final blank line is dispatched (see the class docstring). The decoder is reset
        afterwards, so it can decode a new stream.

        Returns:
            The remaining events (at most one from the unterminated block).
        """
        events = self._process(self._final_lines())
        self._reset()
        return events

    def flush_data(self) -> list[str]:
        """Like :meth:`flush`, but return only the pending event's ``data``."""
        data = self._process_data(self._final_lines())
        self._reset()
        return data

    def _final_lines(self) -> list[str]:
        """The unterminated last line (if any) and a blank line that ends the last block."""
        lines: list[str] = []
        buffer = self._buffer + "".join(self._more)
        if self._pending_bytes:
            # Truncated UTF-8 at the very end becomes U+FFFD, like anywhere else.
            text = self._pending_bytes.decode("utf-8", "replace")
            if self._bom_pending and text and text[0] == "\ufeff":
                text = text[1:]
            buffer += text
        if buffer:
            lines.append(buffer)
        lines.append("")
        return lines

    def _process(self, lines: list[str]) -> list[ServerSentEvent]:
        """Interpret complete lines (without their endings) and return dispatched events."""
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(
                        _make_event(
                            self._event or "message", "\n".join(data), self._last_id, self._retry
                        )
                    )
                    data = self._data = []
                self._event = ""
                self._retry = None
            elif line.startswith("data: "):
                # The hot path: almost every line an LLM server sends is ``data: {json}``.
                data.append(line[6:])
            else:
                self._field(line)
        if data:
            self._check_pending()
        return events

    def _process_data(self, lines: list[str]) -> list[str]:
        """:meth:`_process` for data-only consumers: the same rules, no event objects."""
        completed: list[str] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    completed.append(data[0] if len(data) == 1 else "\n".join(data))
                    data = self._data = []
                self._event = ""
                self._retry = None
            elif line.startswith("data: "):
                data.append(line[6:])
            else:
                self._field(line)
        if data:
            self._check_pending()
        return completed

    def _field(self, line: str) -> None:
        """Apply one non-blank line that is not a plain ``data: `` line."""
        colon = line.find(":")
        if colon == 0:
            return  # a comment, typically a keep-alive ping
        if colon < 0:
            name, value = line, ""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == " ":
                value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # str.isdigit() alone would accept non-ASCII digits such as "²" or "٣"; the length cap
        # keeps int() below CPython's 4300-digit limit, which would raise ValueError.
        elif name == "retry" and value.isascii() and value.isdigit() and len(value) < 4300:
            self._retry = int(value)
        # Any other field name is ignored, as the spec requires.


# -- encoding -------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """``text`` cut at every line ending the decoder knows (LF, CRLF and a lone CR)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def encode_data(data: str, eol: str = "\n") -> str:
    """The text of one ``message`` event carrying ``data``: ``data:`` lines, then a blank line.

    This is the hot path of every streamed reply: data on one line (any JSON text) costs one
    concatenation. Each line break in ``data`` (LF, CRLF or a lone CR) starts another ``data:``
    line, which the decoder joins back with LF.

    Args:
        data: the event's data, any text.
        eol: the line ending to write: ``"\\n"`` (the default), ``"\\r\\n"`` or ``"\\r"``.
    """
    if "\n" in data or "\r" in data:
        return "".join([f"data: {line}{eol}" for line in _lines(data)]) + eol
    return "data: " + data + eol + eol


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    eol: str = "\n",
) -> str:
    """The text of one event with its type, ID and reconnection time, each when given.

    Args:
        data: the event's data, any text (see :func:`encode_data`).
        event: the event type (a client's ``message`` handlers skip any other).
        id: the event ID, which the client keeps for later events too.
        retry: the reconnection time to announce, in milliseconds.
        eol: the line ending to write.

    Raises:
        ValueError: ``event`` or ``id`` spans lines, ``id`` holds a NUL (a client ignores
            such an ID), or ``retry`` is negative.
    """
    fields = ""
    if event is not None:
        fields += f"event: {_one_line('event', event)}{eol}"
    if id is not None:
        if "\0" in id:
            raise ValueError(f"an SSE id cannot hold a NUL: {id!r}")
        fields += f"id: {_one_line('id', id)}{eol}"
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"an SSE retry must be an int >= 0, got {retry!r}")
        fields += f"retry: {retry}{eol}"
    return fields + encode_data(data, eol)


def encode_comment(text: str = "", eol: str = "\n") -> str:
    """The text of a comment, which every client skips: a keep-alive ping, for example.

    Each line of ``text`` becomes a ``:`` line, and a blank line follows; send it between events.
    """
    lines = _lines(text)
    return "".join([f": {line}{eol}" if line else f":{eol}" for line in lines]) + eol


def _one_line(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} cannot span lines: {value!r}")
    return value
