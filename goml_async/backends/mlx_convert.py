"""Moved to :mod:`goml_async.convert.gguf_to_mlx`; this old path still imports it.

The name is bound to the very same module object (in ``sys.modules``), so reading, setting or
patching an attribute through either path acts on the one module.
"""

from __future__ import annotations

import sys

from ..convert import gguf_to_mlx as _moved
from ..convert.gguf_to_mlx import (
    MARKER_FILE,
    ProgressCallback,
    convert_gguf_to_mlx,
    default_mlx_model,
)

__all__ = ["MARKER_FILE", "ProgressCallback", "convert_gguf_to_mlx", "default_mlx_model"]

sys.modules[__name__] = _moved
