"""Model backends: llama.cpp (``llama_server``, ``llama_launcher``), HTTP and MLX.

Each backend module imports its optional dependencies itself, so importing this package never
imports xllamacpp, mlx or any other extra.
"""

from __future__ import annotations

__all__: list[str] = []
