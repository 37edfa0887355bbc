"""Model file formats: read GGUF metadata, turn a GGUF into an MLX folder, a LoRA into GGUF.

These are file tools, not backends: they load no model and start no server, so the backends,
``goml models`` and the agent share them. Heavy dependencies (gguf, numpy, tokenizers) are
imported only inside the conversions, so importing this package needs no extra.

- :mod:`goml_async.convert.gguf_meta`: a GGUF file's metadata, in pure Python.
- :mod:`goml_async.convert.gguf_to_mlx`: a llama-architecture GGUF as an mlx-lm folder.
- :mod:`goml_async.convert.lora_to_gguf`: an mlx-lm LoRA adapter as a GGUF LoRA for llama.cpp.
"""

from __future__ import annotations

from .gguf_meta import GGUFMetadata, gguf_model_info, read_gguf_metadata
from .gguf_to_mlx import convert_gguf_to_mlx, default_mlx_model
from .lora_to_gguf import convert_mlx_lora_to_gguf

__all__ = [
    "GGUFMetadata",
    "convert_gguf_to_mlx",
    "convert_mlx_lora_to_gguf",
    "default_mlx_model",
    "gguf_model_info",
    "read_gguf_metadata",
]
