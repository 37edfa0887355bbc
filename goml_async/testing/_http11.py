"""A minimal HTTP/1.1 server connection for FakeOpenAIServer: requests in, raw bytes out.

Parsing and framing are pure functions; :class:`Connection` wraps one accepted anyio byte stream.
Its reader task buffers whatever the client sends and notices the client's EOF at once, so a
response that is waiting (a delay, a stall) is cancelled the moment the client goes away.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import anyio
from anyio.abc import ByteStream

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
LAST_CHUNK: Final = b"0\r\n\r\n"
_TOKEN_CHARS: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_STREAM_ERRORS: Final = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class HTTPError(Exception):
    """A request that cannot be read: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """Writing to the client failed: it closed or reset the connection."""


@dataclass(frozen=True)
class RequestHead:
    """A parsed request line and header section."""

    method: str
    target: str
    version: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        """The target without its query string (and without ``http://host`` if absolute)."""
        target = self.target
        if target.startswith(("http://", "https://")):
            target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
        return target.partition("?")[0]

    @property
    def keep_alive(self) -> bool:
        """Whether the client lets the connection serve another request after this one."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def content_length(self) -> int:
        """The body length; raise :class:`HTTPError` for a body this server cannot frame."""
        if "transfer-encoding" in self.headers:
            raise HTTPError(411, "chunked request bodies are not supported: send Content-Length")
        raw = self.headers.get("content-length")
        if raw is None:
            return 0
        values = {value.strip() for value in raw.split(",")}
        if len(values) != 1 or not (value := values.pop()).isdigit():
            raise HTTPError(400, f"invalid Content-Length {raw!r}")
        if int(value) > MAX_BODY_BYTES:
            raise HTTPError(413, f"request body over {MAX_BODY_BYTES} bytes")
        return int(value)


def find_head_end(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """``(end of the header section, start of the body)``, or None while it is incomplete."""
    crlf, lf = buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, crlf + 4
    if lf >= 0:
        return lf, lf + 2
    return None


def parse_head(raw: bytes) -> RequestHead:
    """Parse a request line and headers (no trailing blank line); bad input raises HTTPError."""
    try:
        text = raw.decode("latin-1")
        request_line, *lines = text.replace("\r\n", "\n").split("\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise HTTPError(400, "malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPError(505, f"unsupported HTTP version {version!r}")
    if not method or not set(method.lower().encode()) <= _TOKEN_CHARS or not target:
        raise HTTPError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        key = name.lower()
        if not colon or not key or not set(key.encode()) <= _TOKEN_CHARS:
            raise HTTPError(400, f"malformed header line {line!r}")
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return RequestHead(method, target, version, headers)


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """A status line and header section, ending with the blank line."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes | memoryview) -> bytes:
    """``data`` framed as one chunk of a chunked transfer-coded body."""
    return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))


class Connection:
    """One client connection: buffered request reading, EOF watching, and writes.

    Run :meth:`read_forever` in a task beside the code that calls :meth:`read_request` and
    :meth:`send`.
    """

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.eof = False
        self._buffer = bytearray()
        self._arrived = anyio.Event()
        self._watch: anyio.CancelScope | None = None

    async def read_forever(self) -> None:
        """Buffer what the client sends until it closes; then cancel any watched response."""
        try:
            while True:
                self._buffer += await self.stream.receive()
                self._arrived.set()
                self._arrived = anyio.Event()
        except (anyio.EndOfStream, *_STREAM_ERRORS):
            pass
        finally:
            self.eof = True
            self._arrived.set()
            if self._watch is not None:
                self._watch.cancel()

    @contextmanager
    def watch_eof(self) -> Iterator[anyio.CancelScope]:
        """A scope cancelled as soon as the client closes (``cancelled_caught`` tells)."""
        with anyio.CancelScope() as scope:
            self._watch = scope
            if self.eof:
                scope.cancel()
            try:
                yield scope
            finally:
                self._watch = None

    async def read_request(self) -> tuple[RequestHead, bytes] | None:
        """The next request and its body, or None when the client closed the connection."""
        buffer = self._buffer
        while (end := find_head_end(buffer.lstrip(b"\r\n"))) is None:
            if len(buffer) > MAX_HEAD_BYTES:
                raise HTTPError(431, f"request header section over {MAX_HEAD_BYTES} bytes")
            if self.eof:
                return None
            await self._arrived.wait()
        del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]  # blank lines before a request
        head = parse_head(bytes(buffer[: end[0]]))
        del buffer[: end[1]]
        length = head.content_length()
        if length > len(buffer) and head.headers.get("expect", "").lower() == "100-continue":
            await self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(buffer) < length:
            if self.eof:
                return None
            await self._arrived.wait()
        body = bytes(buffer[:length])
        del buffer[:length]
        return head, body

    async def send(self, data: bytes) -> None:
        """Write ``data``; raise :class:`ClientGone` when the client is gone."""
        try:
            await self.stream.send(data)
        except _STREAM_ERRORS as exc:
            raise ClientGone from exc

    async def send_body(
        self, data: bytes, *, head: bytes = b"", piece: int | None, chunked: bool
    ) -> None:
        """Write body bytes (after ``head``), as ``piece``-byte chunks each sent on its own."""
        if piece is None:
            await self.send(head + chunk(data) if chunked else head + data)
            return
        view = memoryview(data)
        for start in range(0, len(data), piece):
            part = view[start : start + piece]
            await self.send(head + chunk(part) if chunked else head + part)
            head = b""

    async def finish(self, *, linger: float = 2.0) -> None:
        """Close gracefully: flush, send FIN, and wait a while for the client to close too.

        Closing at once would discard unsent data (anyio aborts asyncio transports) or, with
        unread input, make the kernel send a reset; waiting for the client's EOF avoids both.
        """
        with anyio.move_on_after(linger):
            try:
                await self.stream.send_eof()
            except (NotImplementedError, *_STREAM_ERRORS):
                return
            while not self.eof:
                await self._arrived.wait()
