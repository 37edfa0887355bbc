"""An LRU of prompt-prefix KV caches per MLX model, bounded in bytes.

When a sequence ends, the KV cache of every token it fed the model (its prompt and the tokens
it generated) is kept, keyed by those token IDs. A later prompt that starts with the same
tokens (the second turn of a chat: the first turn's prompt, the reply, then the new messages)
starts from a copy of the longest matching prefix and prefills only the rest. The entries
together hold at most ``max_bytes`` of KV arrays; the least recently used go first.

Only models whose every layer uses mlx-lm's plain ``KVCache`` take part (a sliding-window or
recurrent cache cannot be cut back to a prefix); for the others the cache stays empty.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache

__all__ = ["DEFAULT_PROMPT_CACHE_BYTES", "PromptCache", "plain_kv", "rewind"]

#: The default bound of a model's prompt cache: 1 GiB of KV arrays.
DEFAULT_PROMPT_CACHE_BYTES = 1 << 30


def plain_kv(cache: Sequence[Any]) -> bool:
    """Every layer of ``cache`` is a plain ``KVCache`` (prefixes can be cut and merged)."""
    return bool(cache) and all(type(layer) is KVCache for layer in cache)


def rewind(cache: Sequence[Any], keep: int) -> None:
    """Cut every layer of ``cache`` back to its first ``keep`` tokens."""
    for layer in cache:
        layer.trim(layer.offset - keep)


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


class _Entry:
    __slots__ = ("keys", "nbytes", "tokens", "values")

    def __init__(self, tokens: tuple[int, ...], keys: list[mx.array], values: list[mx.array]):
        self.tokens = tokens
        self.keys = keys
        self.values = values
        self.nbytes = sum(k.nbytes + v.nbytes for k, v in zip(keys, values, strict=True))


class PromptCache:
    """Prefix KV caches of one model, most recently used last. Used on the worker thread only."""

    def __init__(self, max_bytes: int = DEFAULT_PROMPT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: Sequence[int], limit: int) -> tuple[list[Any] | None, int]:
        """A fresh cache holding the longest cached prefix of ``ids`` (at most ``limit``).

        Returns the cache and its length in tokens, or ``(None, 0)`` when nothing matches.
        """
        best: _Entry | None = None
        length = 0
        for entry in self._entries.values():
            common = min(_common(entry.tokens, ids), limit)
            if common > length:
                best, length = entry, common
        if best is None:
            return None, 0
        self._entries.move_to_end(best.tokens)
        layers = []
        for keys, values in zip(best.keys, best.values, strict=True):
            layer = KVCache()  # type: ignore[no-untyped-call]
            # Slices: the cache's first update concatenates them into new arrays, so the entry
            # itself is never written to.
            layer.keys = keys[..., :length, :]
            layer.values = values[..., :length, :]
            layer.offset = length
            layers.append(layer)
        return layers, length

    def store(self, tokens: Sequence[int], cache: Sequence[Any]) -> None:
        """Keep the KV of ``tokens`` (the first ``len(tokens)`` positions of ``cache``)."""
        if self.max_bytes <= 0 or not tokens or not plain_kv(cache):
            return
        count = min(len(tokens), min(layer.offset for layer in cache))
        if count <= 1:
            return
        key = tuple(tokens[:count])
        for old in [t for t in self._entries if t == key[: len(t)]]:
            self._drop(old)  # a prefix of the new entry: the new one answers for it
        if any(key == t[:count] for t in self._entries):
            return  # already covered by a longer entry
        keys = [mx.contiguous(layer.keys[..., :count, :]) for layer in cache]
        values = [mx.contiguous(layer.values[..., :count, :]) for layer in cache]
        mx.eval(keys, values)
        entry = _Entry(key, keys, values)
        if entry.nbytes > self.max_bytes:
            return
        self._entries[key] = entry
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self.nbytes = 0

    def _drop(self, key: tuple[int, ...]) -> None:
        self.nbytes -= self._entries.pop(key).nbytes
