"""Find models on disk: MLX folders and GGUF files in a directory and its immediate subfolders.

Both scans read only small files (``config.json``, a GGUF header), never the weights, and are
synchronous: from async code, call them through ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .convert.gguf_meta import gguf_model_info, read_gguf_metadata
from .errors import ConfigError, ModelLoadError
from .types import DiscoveredModel

__all__ = ["discover_gguf_models", "discover_models"]


def discover_models(base_dir: str | Path) -> list[DiscoveredModel]:
    """Find model folders in ``base_dir`` and its immediate subfolders, sorted by path.

    A folder counts when its config.json parses as a JSON object and it holds at least one
    ``*.safetensors`` file. This scans the file system synchronously; from async code, call it
    through ``anyio.to_thread.run_sync``.
    """
    base = _base(base_dir)
    candidates = [base, *sorted(child for child in base.iterdir() if child.is_dir())]
    found = [model for folder in candidates if (model := _discovered(folder)) is not None]
    return sorted(found, key=lambda model: model.path)


def discover_gguf_models(base_dir: str | Path) -> list[DiscoveredModel]:
    """Find GGUF model files in ``base_dir`` and its immediate subfolders, sorted by path.

    Each file's own metadata gives the architecture and quantisation; files that are not valid
    GGUF are left out. Synchronous, like :func:`discover_models`.
    """
    base = _base(base_dir)
    files = [*base.glob("*.gguf"), *base.glob("*/*.gguf")]
    found = []
    for file in sorted(path.resolve() for path in files if path.is_file()):
        try:
            meta = read_gguf_metadata(file)
        except ModelLoadError:
            continue
        info = gguf_model_info(meta)
        found.append(
            DiscoveredModel(
                path=str(file),
                model_type=info.architecture,
                quant_bits=info.quant_bits,
                quant_group=info.quant_group,
                num_files=1,
                size_bytes=meta.size_bytes,
                format="gguf",
            )
        )
    return found


def _base(base_dir: str | Path) -> Path:
    base = Path(base_dir).expanduser()
    if not base.is_dir():
        raise ConfigError("base_dir", f"not a directory: {str(base_dir)!r}")
    return base


def _discovered(folder: Path) -> DiscoveredModel | None:
    config_file = folder / "config.json"
    files = sorted(folder.glob("*.safetensors"))
    if not files or not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    quant = config.get("quantization")
    quant = quant if isinstance(quant, dict) else {}
    return DiscoveredModel(
        path=str(folder.resolve()),
        model_type=str(config.get("model_type", "")),
        quant_bits=_as_int(quant.get("bits")),
        quant_group=_as_int(quant.get("group_size")),
        num_files=len(files),
        size_bytes=sum(file.stat().st_size for file in files),
    )


def _as_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
