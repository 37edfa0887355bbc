"""Moved to :mod:`goml_async.convert.gguf_meta`; this old path still imports it.

The name is bound to the very same module object (in ``sys.modules``), so reading, setting or
patching an attribute through either path acts on the one module.
"""

from __future__ import annotations

import sys

from ..convert import gguf_meta as _moved
from ..convert.gguf_meta import (
    GGUFMetadata,
    gguf_model_info,
    kv_bytes_per_token,
    read_gguf_metadata,
)

__all__ = ["GGUFMetadata", "gguf_model_info", "kv_bytes_per_token", "read_gguf_metadata"]

sys.modules[__name__] = _moved
