"""Read a GGUF file's metadata (architecture, sizes, quantisation) without loading the model.

A small reader of the GGUF header and key/value section (format versions 2 and 3), in pure
Python: ``goml models list`` and :meth:`LlamaModel.info` need no optional dependency for it.
Arrays are not materialised (a 49k-token vocabulary is skipped, only its length is kept).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ModelLoadError
from ..types import ModelInfo

__all__ = ["GGUFMetadata", "gguf_model_info", "kv_bytes_per_token", "read_gguf_metadata"]

_MAGIC = b"GGUF"
# value type -> struct format of one scalar
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
# general.file_type (llama.cpp's LlamaFileType) -> (bits, group size); absent: unquantised
_FILE_TYPES: dict[int, tuple[int, int]] = {
    2: (4, 32),  # Q4_0
    3: (4, 32),  # Q4_1
    7: (8, 32),  # Q8_0
    8: (5, 32),  # Q5_0
    9: (5, 32),  # Q5_1
    10: (2, 256),  # Q2_K
    11: (3, 256),  # Q3_K_S
    12: (3, 256),  # Q3_K_M
    13: (3, 256),  # Q3_K_L
    14: (4, 256),  # Q4_K_S
    15: (4, 256),  # Q4_K_M
    16: (5, 256),  # Q5_K_S
    17: (5, 256),  # Q5_K_M
    18: (6, 256),  # Q6_K
}


@dataclass(frozen=True, slots=True)
class GGUFMetadata:
    """The header and key/value metadata of a GGUF file.

    Attributes:
        path: the file.
        version: the GGUF format version.
        tensor_count: how many tensors the file holds.
        values: scalar and string values by key (arrays are left out).
        array_lengths: the length of each array value by key.
        size_bytes: the file's size.
    """

    path: str
    version: int
    tensor_count: int
    values: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0

    @property
    def architecture(self) -> str:
        """``general.architecture`` (e.g. ``"llama"``), or "" when absent."""
        return str(self.values.get("general.architecture", ""))


class _Reader:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self._file.read(size)
        if len(data) != size:
            raise EOFError("the file ends inside its metadata")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        data = self._file.read(length)
        if len(data) != length:
            raise EOFError("the file ends inside a string")
        return data.decode("utf-8", errors="replace")

    def skip(self, count: int) -> None:
        self._file.seek(count, 1)

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        fmt = _SCALARS.get(kind)
        if fmt is None:
            raise ValueError(f"unknown value type {kind}")
        return self.unpack(fmt)

    def skip_array(self, kind: int, count: int) -> None:
        if kind == _STRING:
            for _ in range(count):
                self.skip(self.unpack("<Q"))
        elif kind in _SCALARS:
            self.skip(struct.calcsize(_SCALARS[kind]) * count)
        else:
            raise ValueError(f"unsupported array element type {kind}")


def read_gguf_metadata(path: str | os.PathLike[str]) -> GGUFMetadata:
    """Read the metadata of the GGUF file at ``path``.

    Raises:
        ModelLoadError: the file is missing, unreadable, not GGUF, or its metadata is corrupt.
    """
    target = Path(path)
    try:
        size = target.stat().st_size
        with target.open("rb") as file:
            if file.read(4) != _MAGIC:
                raise ModelLoadError(str(path), "not a GGUF file (the magic bytes are missing)")
            reader = _Reader(file)
            version = reader.unpack("<I")
            if version not in (2, 3):
                raise ModelLoadError(str(path), f"unsupported GGUF version {version}")
            tensor_count = reader.unpack("<Q")
            kv_count = reader.unpack("<Q")
            values: dict[str, Any] = {}
            lengths: dict[str, int] = {}
            for _ in range(kv_count):
                key = reader.string()
                kind = reader.unpack("<I")
                if kind == _ARRAY:
                    element, count = reader.unpack("<I"), reader.unpack("<Q")
                    lengths[key] = count
                    reader.skip_array(element, count)
                else:
                    values[key] = reader.value(kind)
    except FileNotFoundError as exc:
        raise ModelLoadError(str(path), "no such file") from exc
    except IsADirectoryError as exc:
        raise ModelLoadError(str(path), "a folder, not a GGUF file") from exc
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise ModelLoadError(str(path), f"corrupt GGUF metadata: {exc}") from exc
    return GGUFMetadata(str(path), version, tensor_count, values, lengths, size)


def gguf_model_info(meta: GGUFMetadata) -> ModelInfo:
    """ModelInfo from GGUF metadata: architecture, layers, sizes and quantisation."""
    arch = meta.architecture
    values = meta.values

    def number(key: str) -> int:
        value = values.get(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0

    vocab = number(f"{arch}.vocab_size") or meta.array_lengths.get("tokenizer.ggml.tokens", 0)
    bits, group = _FILE_TYPES.get(number("general.file_type"), (0, 0))
    return ModelInfo(
        architecture=arch,
        vocab_size=vocab,
        num_layers=number(f"{arch}.block_count"),
        hidden_size=number(f"{arch}.embedding_length"),
        quant_bits=bits,
        quant_group=group,
    )


def kv_bytes_per_token(meta: GGUFMetadata) -> int:
    """Bytes of f16 KV cache one token of context takes (K and V, every layer); 0: unknown.

    Example: SmolLM2-135M (30 layers, 3 KV heads of 64) takes 23,040 bytes (22.5 KiB) a token.
    """
    arch = meta.architecture
    values = meta.values

    def number(key: str) -> int:
        value = values.get(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0

    layers = number(f"{arch}.block_count")
    heads = number(f"{arch}.attention.head_count")
    kv_heads = number(f"{arch}.attention.head_count_kv") or heads
    head_size = number(f"{arch}.attention.key_length") or (
        number(f"{arch}.embedding_length") // heads if heads else 0
    )
    return 2 * layers * kv_heads * head_size * 2
