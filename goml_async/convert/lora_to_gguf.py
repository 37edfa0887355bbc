"""Turn an mlx-lm LoRA adapter into a GGUF LoRA adapter that llama-server loads with ``--lora``.

mlx-lm saves a LoRA as ``adapters.safetensors`` (or ``{N}_adapters.safetensors`` per
checkpoint) next to ``adapter_config.json``. Each adapted projection has two tensors,
``model.layers.N.{module}.lora_a`` with shape ``(in, rank)`` and ``lora_b`` with shape
``(rank, out)``; mlx-lm adds ``scale * (x @ lora_a) @ lora_b`` to the projection's output.

llama.cpp wants ``blk.N.{gguf}.weight.lora_a`` with shape ``(rank, in)`` and ``lora_b`` with
shape ``(out, rank)`` (numpy order; GGML's ``ne`` is the reverse), and scales by
``adapter.lora.alpha / rank``. So the conversion:

- renames ``q/k/v/o_proj`` to ``attn_q/attn_k/attn_v/attn_output`` and ``gate/up/down_proj``
  to ``ffn_gate/ffn_up/ffn_down``;
- transposes every 2-D tensor;
- writes ``adapter.lora.alpha = round(scale * rank)`` (``lora_parameters`` of the config;
  scale defaults to 20 and rank to 8), so ``alpha / rank`` is mlx-lm's scale;
- for the ``llama`` architecture, permutes the output rows of the Q and K ``lora_b`` tensors
  the way ``convert_hf_to_gguf.py`` permutes the base model's Q/K weights (Hugging Face
  rotate-half -> GGML interleaved rotary layout); this needs the head counts, read from the
  base GGUF;
- writes the tensors sorted by name, with ``general.type = adapter``,
  ``general.architecture``, ``adapter.type = lora`` and ``adapter.lora.alpha`` (float32).

F32 and F16 tensors keep their type, BF16 stays BF16. With ``base_gguf``, each adapted tensor
is checked against the base model (present, matching sizes), so a mismatch is reported here
and not as a llama-server start failure. The file is written beside ``dest`` and renamed into
place: a failed conversion leaves nothing behind.

Example:
    ```python
    from goml_async.convert.lora_to_gguf import convert_mlx_lora_to_gguf

    lora = convert_mlx_lora_to_gguf(
        Path("adapters/0000100_adapters.safetensors"),
        Path("adapters/adapter_config.json"),
        Path("work/0000100_adapters.gguf"),
        base_gguf=Path("models/base.gguf"),
    )
    model = await load_model("models/base.gguf", adapter_path=str(lora))
    ```
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import uuid
from pathlib import Path
from typing import Any

from .._validate import is_int, is_number
from ..errors import BackendUnavailable, ConfigError, ModelLoadError
from .gguf_meta import read_gguf_metadata

__all__ = [
    "DEFAULT_LORA_RANK",
    "DEFAULT_LORA_SCALE",
    "MLX_TO_GGUF_MODULES",
    "convert_mlx_lora_to_gguf",
    "lora_alpha",
    "mlx_tensor_to_gguf",
]

#: mlx-lm projection name -> llama.cpp tensor name.
MLX_TO_GGUF_MODULES: dict[str, str] = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
#: Used when ``adapter_config.json`` has no ``lora_parameters.rank`` / ``scale``.
DEFAULT_LORA_RANK = 8
DEFAULT_LORA_SCALE = 20.0

_LLAMA_HINT = "pip install 'goml_async[llama]'"
# architectures whose Q/K rows convert_hf_to_gguf.py permutes (GGML interleaved rotary layout)
_PERMUTED_ARCHS = frozenset({"llama"})
_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:[\w.]+\.)?(\w+)\.lora_([ab])$")
# safetensors dtype -> (numpy dtype, GGML type name or None for a numpy-native type)
_DTYPES: dict[str, tuple[str, str | None]] = {
    "F32": ("<f4", None),
    "F16": ("<f2", None),
    "BF16": ("<u2", "BF16"),
}


def mlx_tensor_to_gguf(name: str) -> str:
    """The llama.cpp name of an mlx-lm LoRA tensor.

    >>> mlx_tensor_to_gguf("model.layers.3.self_attn.q_proj.lora_a")
    'blk.3.attn_q.weight.lora_a'
    >>> mlx_tensor_to_gguf("model.layers.0.mlp.down_proj.lora_b")
    'blk.0.ffn_down.weight.lora_b'

    Raises:
        ConfigError: the name is not ``...layers.N.<...>.{module}.lora_{a|b}`` or the module
            has no llama.cpp counterpart.
    """
    found = _NAME.search(name)
    if found is None:
        raise ConfigError(
            "adapter_file",
            f"tensor {name!r} is not an mlx-lm LoRA tensor (layers.N.<module>.lora_a|lora_b)",
        )
    layer, module, part = found.groups()
    if module not in MLX_TO_GGUF_MODULES:
        known = ", ".join(MLX_TO_GGUF_MODULES)
        raise ConfigError(
            "adapter_file",
            f"tensor {name!r}: module {module!r} has no GGUF counterpart (known: {known})",
        )
    return f"blk.{int(layer)}.{MLX_TO_GGUF_MODULES[module]}.weight.lora_{part}"


def lora_alpha(config: dict[str, Any]) -> tuple[int, float]:
    """``(rank, alpha)`` from an mlx-lm adapter config: alpha is ``round(scale * rank)``.

    >>> lora_alpha({"lora_parameters": {"rank": 4, "scale": 20.0}})
    (4, 80.0)
    >>> lora_alpha({})
    (8, 160.0)

    Raises:
        ConfigError: ``lora_parameters``, its rank or its scale is not valid.
    """
    params = config.get("lora_parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError("lora_parameters", f"must be an object, got {params!r}")
    rank = params.get("rank", DEFAULT_LORA_RANK)
    scale = params.get("scale", DEFAULT_LORA_SCALE)
    if not is_int(rank) or rank <= 0:
        raise ConfigError("lora_parameters.rank", f"must be a positive integer, got {rank!r}")
    if not is_number(scale) or not math.isfinite(scale):
        raise ConfigError("lora_parameters.scale", f"must be a number, got {scale!r}")
    return rank, float(round(scale * rank))


def convert_mlx_lora_to_gguf(
    adapter_file: Path,
    config_file: Path,
    dest: Path,
    *,
    arch: str | None = None,
    base_gguf: Path | None = None,
) -> Path:
    """Convert an mlx-lm LoRA (safetensors + ``adapter_config.json``) into a GGUF LoRA.

    Args:
        adapter_file: mlx-lm's ``adapters.safetensors`` (or a ``{N}_adapters.safetensors``).
        config_file: the ``adapter_config.json`` saved with it.
        dest: the GGUF file to write (replaced if it exists).
        arch: ``general.architecture`` of the adapter; it must be the base model's. Defaults
            to the base GGUF's.
        base_gguf: the model the adapter will be loaded on: gives the architecture, the head
            counts (``llama`` Q/K permutation) and the sizes every tensor is checked against.

    Returns:
        ``dest``.

    Raises:
        ConfigError: no architecture (neither ``arch`` nor ``base_gguf``), ``arch`` differs
            from the base GGUF's, the config is not a LoRA config, a tensor name is not a
            LoRA tensor of a known module, or the llama architecture needs ``base_gguf``.
        ModelLoadError: a file is missing or corrupt, or a tensor has a bad shape or dtype, or
            does not fit the base model.
        BackendUnavailable: ``gguf`` or ``numpy`` is not installed.
    """
    adapter_file, config_file, dest = Path(adapter_file), Path(config_file), Path(dest)
    config = _read_config(config_file)
    rank, alpha = lora_alpha(config)
    base_arch, heads = None, None
    if base_gguf is not None:
        meta = read_gguf_metadata(base_gguf)
        base_arch = meta.architecture
        if arch is not None and base_arch and arch != base_arch:
            raise ConfigError(
                "arch", f"{arch!r} differs from the base model's architecture {base_arch!r}"
            )
        head_count = meta.values.get(f"{base_arch}.attention.head_count")
        if isinstance(head_count, int):
            kv = meta.values.get(f"{base_arch}.attention.head_count_kv", head_count)
            heads = {"attn_q": head_count, "attn_k": int(kv)}
    arch = arch or base_arch
    if not arch:
        raise ConfigError(
            "arch",
            "the GGUF LoRA needs the base model's architecture: pass arch (e.g. 'llama') "
            "or base_gguf",
        )
    gguf, np = _import_extras()
    tensors = _read_safetensors(adapter_file, np)
    converted = _convert_tensors(adapter_file, tensors, rank, arch, heads, np)
    if base_gguf is not None:
        _check_against_base(base_gguf, converted, gguf)

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        writer = gguf.GGUFWriter(str(partial), arch)
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", alpha)
        for name in sorted(converted):
            values, raw_type = converted[name]
            if raw_type is None:
                writer.add_tensor(name, values)
            else:
                kind = gguf.GGMLQuantizationType[raw_type]
                writer.add_tensor(name, values, raw_shape=values.shape, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _import_extras() -> tuple[Any, Any]:
    try:
        import gguf
        import numpy as np
    except ImportError as exc:
        raise BackendUnavailable(
            f"converting an MLX LoRA to GGUF needs {exc.name or 'gguf and numpy'}, "
            "which is not installed",
            backend="llama",
            install_hint=_LLAMA_HINT,
        ) from exc
    return gguf, np


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(str(path), "no such file (the adapter's adapter_config.json)") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(str(path), f"not a readable adapter_config.json: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(str(path), "adapter_config.json must hold a JSON object")
    kind = config.get("fine_tune_type", "lora")
    if kind != "lora":
        raise ConfigError(
            "fine_tune_type", f"only LoRA adapters convert to GGUF, the config says {kind!r}"
        )
    return config


def _read_safetensors(path: Path, np: Any) -> dict[str, tuple[Any, str | None]]:
    """Tensors by name as numpy arrays, with their GGML raw type (None: numpy-native)."""
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelLoadError(where, "no such file (the MLX adapter)") from exc
    except OSError as exc:
        raise ModelLoadError(where, f"cannot read the adapter: {exc}") from exc
    try:
        (length,) = struct.unpack_from("<Q", data)
        if length > len(data) - 8:
            raise ValueError("the header is longer than the file")
        header = json.loads(data[8 : 8 + length])
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (struct.error, ValueError) as exc:
        raise ModelLoadError(where, f"not a safetensors file: {exc}") from exc
    start = 8 + length
    tensors: dict[str, tuple[Any, str | None]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = info["dtype"], [int(n) for n in info["shape"]]
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(where, f"tensor {name!r} has a corrupt header entry") from exc
        if dtype not in _DTYPES:
            raise ModelLoadError(
                where, f"tensor {name!r} is {dtype}; only F32, F16 and BF16 convert"
            )
        np_dtype, raw = _DTYPES[dtype]
        count = math.prod(shape)
        size = count * np.dtype(np_dtype).itemsize
        if not 0 <= begin <= end <= len(data) - start or end - begin != size:
            raise ModelLoadError(where, f"tensor {name!r}: its data offsets do not fit its shape")
        values = np.frombuffer(data, dtype=np_dtype, count=count, offset=start + begin)
        tensors[name] = (values.reshape(shape), raw)
    if not tensors:
        raise ModelLoadError(where, "the adapter holds no tensors")
    return tensors


def _permute(values: Any, heads: int) -> Any:
    """convert_hf_to_gguf's Q/K row permutation (HF rotate-half -> GGML interleaved)."""
    rows = values.shape[0]
    return (
        values.reshape(heads, 2, rows // heads // 2, *values.shape[1:])
        .swapaxes(1, 2)
        .reshape(values.shape)
    )


def _convert_tensors(
    path: Path,
    tensors: dict[str, tuple[Any, str | None]],
    rank: int,
    arch: str,
    heads: dict[str, int] | None,
    np: Any,
) -> dict[str, tuple[Any, str | None]]:
    """Renamed, transposed (and for llama Q/K permuted) tensors, checked pairwise."""
    where = str(path)
    out: dict[str, tuple[Any, str | None]] = {}
    sources: dict[str, str] = {}
    for name, (values, raw) in tensors.items():
        target = mlx_tensor_to_gguf(name)
        if target in out:
            raise ModelLoadError(where, f"{name!r} and {sources[target]!r} both map to {target!r}")
        if values.ndim != 2:
            raise ModelLoadError(
                where, f"tensor {name!r} has shape {list(values.shape)}; LoRA tensors are 2-D"
            )
        values = np.ascontiguousarray(values.T)
        out[target], sources[target] = (values, raw), name
    for target in sorted(out):
        if not target.endswith(".lora_a"):
            continue
        pair = target[: -len("a")] + "b"
        if pair not in out:
            raise ModelLoadError(where, f"{sources[target]!r} has no lora_b tensor")
        a, b = out[target][0], out[pair][0]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ModelLoadError(
                where,
                f"{sources[target]!r} has shape {list(a.shape[::-1])} and "
                f"{sources[pair]!r} {list(b.shape[::-1])}: expected (in, {rank}) and "
                f"({rank}, out) for the config's rank {rank}",
            )
    for target in out:
        if target.endswith(".lora_b") and target[: -len("b")] + "a" not in out:
            raise ModelLoadError(where, f"{sources[target]!r} has no lora_a tensor")
    if arch in _PERMUTED_ARCHS:
        for target, (values, raw) in list(out.items()):
            module = target.split(".")[2]
            if not target.endswith(".lora_b") or module not in ("attn_q", "attn_k"):
                continue
            if heads is None:
                raise ConfigError(
                    "base_gguf",
                    f"the {arch!r} architecture permutes Q/K rows, so converting "
                    f"{sources[target]!r} needs the base GGUF (for its head counts)",
                )
            if values.shape[0] % (2 * heads[module]):
                raise ModelLoadError(
                    where,
                    f"{sources[target]!r}: {values.shape[0]} outputs do not split into "
                    f"{heads[module]} heads",
                )
            out[target] = (np.ascontiguousarray(_permute(values, heads[module])), raw)
    return out


def _check_against_base(base: Path, tensors: dict[str, tuple[Any, str | None]], gguf: Any) -> None:
    """Every adapted weight exists in the base model, with matching input and output sizes."""
    try:
        reader = gguf.GGUFReader(str(base))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(str(base), f"cannot read the base GGUF's tensors: {exc}") from exc
    # GGUFReader's shape is GGML's ne: (in, out) for a weight matrix
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    for name, (values, _) in sorted(tensors.items()):
        weight, part = name.rsplit(".", 1)
        if weight not in shapes:
            raise ModelLoadError(str(base), f"the base model has no tensor {weight!r} to adapt")
        inputs, outputs = shapes[weight][0], shapes[weight][1]
        size, expected, side = (
            (values.shape[1], inputs, "input")
            if part == "lora_a"
            else (values.shape[0], outputs, "output")
        )
        if size != expected:
            raise ModelLoadError(
                str(base),
                f"the adapter's {name} has {size} {side}s, the base model's {weight} has "
                f"{expected}: the adapter was trained on another model",
            )
