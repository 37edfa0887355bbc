"""Moved to :mod:`goml_async.convert.lora_to_gguf`; this old path still imports it.

The name is bound to the very same module object (in ``sys.modules``), so reading, setting or
patching an attribute through either path acts on the one module.
"""

from __future__ import annotations

import sys

from ..convert import lora_to_gguf as _moved
from ..convert.lora_to_gguf import (
    DEFAULT_LORA_RANK,
    DEFAULT_LORA_SCALE,
    MLX_TO_GGUF_MODULES,
    convert_mlx_lora_to_gguf,
    lora_alpha,
    mlx_tensor_to_gguf,
)

__all__ = [
    "DEFAULT_LORA_RANK",
    "DEFAULT_LORA_SCALE",
    "MLX_TO_GGUF_MODULES",
    "convert_mlx_lora_to_gguf",
    "lora_alpha",
    "mlx_tensor_to_gguf",
]

sys.modules[__name__] = _moved
