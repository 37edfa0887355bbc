"""How big a managed llama-server is: slots, the context each holds, threads, KV memory.

Split from :mod:`~goml_async.backends.llama_server` (which starts and stops the process): these
are the numbers its command line and its start-up checks are made of.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._validate import is_int
from ..convert.gguf_meta import GGUFMetadata, read_gguf_metadata
from ..errors import ModelLoadError
from ..types import LoadConfig

__all__ = [
    "DECODE_THREADS",
    "DEFAULT_SLOTS",
    "DEFAULT_SLOT_CONTEXT",
    "KV_WARN_SHARE",
    "cpu_count",
    "kv_cache_warning",
    "memory_bytes",
    "read_meta",
    "slot_context",
    "train_context",
]

#: Server slots (``--parallel``) when ``LoadConfig.parallel_slots`` is 0: streams decoded together.
DEFAULT_SLOTS = 4
#: CPU threads for a step that decodes one token (``-t``; other steps get ``-tb``). llama.cpp's
#: CPU flash attention splits the cache of a lone one-token query among the threads once it
#: holds 512 cells and merges the parts, in another order than when several sequences decode in
#: one step; a greedy reply then changes after ~250 tokens with what else the server runs. On
#: one thread the split is one part, the same sums. It costs speed only when one stream decodes.
DECODE_THREADS = 1
#: Tokens of context each slot gets when ``LoadConfig.context_len`` is 0 (cut to the model's
#: trained context): llama-server's long-standing default ``-c``, now per slot.
DEFAULT_SLOT_CONTEXT = 4096


def slot_context(config: LoadConfig, train_context: int | None = None) -> int:
    """The context, in tokens, that each slot of a server for ``config`` holds.

    ``context_len``, or :data:`DEFAULT_SLOT_CONTEXT` when it is 0, cut to ``train_context``
    (the GGUF's ``context_length``) when that is known: positions past it are ones the model
    never saw.
    """
    wanted = config.context_len or DEFAULT_SLOT_CONTEXT
    return min(wanted, train_context) if train_context and train_context > 0 else wanted


def cpu_count() -> int:
    """The CPUs this process may run on (llama.cpp's own ``-tb`` default counts them all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def read_meta(path: Path) -> GGUFMetadata | None:
    """The GGUF's metadata, or None when it is no GGUF (llama-server reports that itself)."""
    try:
        return read_gguf_metadata(path)
    except ModelLoadError:
        return None


def train_context(meta: GGUFMetadata | None) -> int | None:
    """The GGUF's trained context length, or None when the file does not say."""
    if meta is None:
        return None
    value = meta.values.get(f"{meta.architecture}.context_length")
    return value if is_int(value) and value > 0 else None


#: Warn when the slots' KV cache would take more than this share of the machine's memory.
KV_WARN_SHARE = 0.5


def kv_cache_warning(kv_bytes: int, memory_bytes: int) -> str | None:
    """What to tell the user when ``kv_bytes`` of KV cache is a lot for ``memory_bytes``."""
    if not kv_bytes or not memory_bytes or kv_bytes <= KV_WARN_SHARE * memory_bytes:
        return None
    return (
        f"the KV cache of the llama-server slots takes about {kv_bytes / 2**30:.1f} GiB, more "
        f"than half of this machine's {memory_bytes / 2**30:.1f} GiB: lower "
        "LoadConfig.parallel_slots or context_len (each slot holds context_len tokens)"
    )


def memory_bytes() -> int:
    """Physical memory, in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0
