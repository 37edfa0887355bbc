"""A connection pool split into small shards, behind one httpx transport.

httpcore's pool hands out connections by scanning all of them under one lock. With hundreds of
streams opened at once, that scan stalls each burst until idle connections expire (measured
here: 256 concurrent streams on one pool of 256 ran at a tenth of the speed of the same streams
on 16 pools of 16, for the ~5 s keep-alive expiry). Small pools keep every scan short, and a
least-loaded choice spreads the streams over them.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["ShardedTransport"]


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that reports when it is closed, so its shard's load is known."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The inner iterator itself, not a wrapping generator: one fewer generator per stream.
        return self._inner.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.AsyncBaseTransport):
    """``max_connections`` spread over pools of at most ``shard_size`` connections each.

    Args:
        max_connections: connections in all (and kept alive) across the shards.
        shard_size: the most connections one pool holds.
        keepalive_expiry: seconds an idle connection is kept. Below the 5 s that servers such
            as llama-server announce, so the client never reuses a connection the server is
            closing at that moment.
        **options: keyword arguments for each ``httpx.AsyncHTTPTransport`` (not ``limits``).
    """

    def __init__(
        self,
        max_connections: int,
        *,
        shard_size: int = 16,
        keepalive_expiry: float = 4.0,
        **options: Any,
    ) -> None:
        count = max(1, math.ceil(max_connections / shard_size))
        base, extra = divmod(max_connections, count)
        self._shards = [
            httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=size,
                    max_keepalive_connections=size,
                    keepalive_expiry=keepalive_expiry,
                ),
                **options,
            )
            for size in (base + (1 if index < extra else 0) for index in range(count))
        ]
        self._active = [0] * count

    @property
    def shards(self) -> list[httpx.AsyncHTTPTransport]:
        """The underlying transports (one connection pool each)."""
        return list(self._shards)

    @property
    def active(self) -> int:
        """Requests whose response body is still open, over all shards."""
        return sum(self._active)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._shards)), key=self._active.__getitem__)
        self._active[index] += 1

        def release() -> None:
            self._active[index] -= 1

        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream, release)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()
