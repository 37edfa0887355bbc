"""convert_mlx_lora_to_gguf: real mlx-lm adapters for the tiny model, read back and served."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from agent.conftest import (
    LORA_RANK,
    LORA_SCALE,
    _save_safetensors,
    write_adapter_config,
    write_mlx_adapter,
)
from model_fixtures import _TINY, require

from goml_async import load_model
from goml_async.backends.lora_convert import convert_mlx_lora_to_gguf, mlx_tensor_to_gguf
from goml_async.errors import ConfigError, ModelLoadError

gguf = require("gguf")
np = require("numpy")

PROMPT = "def main():\n"


@pytest.fixture
def adapter(tmp_path: Path) -> tuple[Path, Path]:
    """A rank-4 mlx-lm LoRA (q_proj and v_proj of both layers) and its adapter_config.json."""
    folder = tmp_path / "adapter"
    path = write_mlx_adapter(folder / "0000100_adapters.safetensors", seed=3)
    return path, write_adapter_config(folder)


def _mlx_tensors(path: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def _strong_adapter(folder: Path, *, seed: int = 5, modules: tuple[str, ...] = ()) -> Path:
    """An adapter on every projection with a large lora_b: it changes what the model says."""
    rng = np.random.default_rng(seed)
    hidden, inter = _TINY["hidden_size"], _TINY["intermediate_size"]
    q_out = _TINY["num_attention_heads"] * _TINY["head_dim"]
    kv_out = _TINY["num_key_value_heads"] * _TINY["head_dim"]
    dims = {
        "self_attn.q_proj": (hidden, q_out),
        "self_attn.k_proj": (hidden, kv_out),
        "self_attn.v_proj": (hidden, kv_out),
        "self_attn.o_proj": (q_out, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    tensors = {}
    for layer in range(_TINY["num_hidden_layers"]):
        for key, (inputs, outputs) in dims.items():
            if modules and key not in modules:
                continue
            prefix = f"model.layers.{layer}.{key}"
            tensors[f"{prefix}.lora_a"] = rng.normal(0, 0.3, (inputs, LORA_RANK)).astype("f4")
            tensors[f"{prefix}.lora_b"] = rng.normal(0, 0.3, (LORA_RANK, outputs)).astype("f4")
    folder.mkdir(parents=True, exist_ok=True)
    _save_safetensors(tensors, folder / "adapters.safetensors")
    config = write_adapter_config(folder)
    data = json.loads(config.read_text())
    data["lora_parameters"]["keys"] = list(modules or dims)
    config.write_text(json.dumps(data))
    return folder / "adapters.safetensors"


# -- the written file ----------------------------------------------------------------------------


def test_names_shapes_dtype_and_metadata(
    adapter: tuple[Path, Path], tiny_gguf: Path, tmp_path: Path
) -> None:
    source, config = adapter
    dest = convert_mlx_lora_to_gguf(source, config, tmp_path / "out.gguf", base_gguf=tiny_gguf)
    assert dest == tmp_path / "out.gguf"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    reader = gguf.GGUFReader(str(dest))
    fields = {name: field.contents() for name, field in reader.fields.items() if "." in name}
    assert fields["general.type"] == "adapter"
    assert fields["general.architecture"] == "llama"
    assert fields["adapter.type"] == "lora"
    alpha = reader.fields["adapter.lora.alpha"]
    assert alpha.types == [gguf.GGUFValueType.FLOAT32]
    assert alpha.contents() == pytest.approx(round(LORA_SCALE * LORA_RANK))

    names = [t.name for t in reader.tensors]
    expected = sorted(
        f"blk.{layer}.{module}.weight.lora_{part}"
        for layer in range(_TINY["num_hidden_layers"])
        for module in ("attn_q", "attn_v")
        for part in "ab"
    )
    assert names == expected
    mlx = _mlx_tensors(source)
    head_dim = _TINY["head_dim"]
    for tensor in reader.tensors:
        layer, module, _, part = tensor.name.split(".")[1:]
        proj = {"attn_q": "q_proj", "attn_v": "v_proj"}[module]
        original = mlx[f"model.layers.{layer}.self_attn.{proj}.lora_{part[-1]}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == list(original.shape)  # GGML ne: numpy's, reversed
        data = np.asarray(tensor.data).reshape(original.shape[::-1])
        if tensor.name.endswith("attn_q.weight.lora_b"):
            # output rows in GGML's interleaved rotary layout, as the base model's Q weight
            heads = _TINY["num_attention_heads"]
            hf = original.T.reshape(heads, 2, head_dim // 2, LORA_RANK)
            np.testing.assert_array_equal(data, hf.swapaxes(1, 2).reshape(data.shape))
        else:
            np.testing.assert_array_equal(data, original.T)


def test_alpha_defaults_and_float16(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "model.layers.0.mlp.down_proj.lora_a": rng.normal(size=(128, 8)).astype("f2"),
        "model.layers.0.mlp.down_proj.lora_b": rng.normal(size=(8, 64)).astype("f2"),
    }
    from safetensors.numpy import save_file

    save_file(tensors, str(tmp_path / "a.safetensors"))
    (tmp_path / "adapter_config.json").write_text("{}")  # rank 8, scale 20
    dest = convert_mlx_lora_to_gguf(
        tmp_path / "a.safetensors",
        tmp_path / "adapter_config.json",
        tmp_path / "o.gguf",
        arch="qwen2",
    )
    reader = gguf.GGUFReader(str(dest))
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(160.0)
    assert reader.fields["general.architecture"].contents() == "qwen2"
    a, b = reader.tensors
    assert a.name == "blk.0.ffn_down.weight.lora_a"
    assert a.tensor_type == gguf.GGMLQuantizationType.F16
    assert list(a.shape) == [128, 8]
    np.testing.assert_array_equal(
        np.asarray(b.data).reshape(64, 8), tensors["model.layers.0.mlp.down_proj.lora_b"].T
    )


def test_bfloat16_stays_bfloat16(tmp_path: Path) -> None:
    values = np.arange(4 * 6, dtype="<f4").reshape(4, 6)
    raw = (values.view("<u4") >> 16).astype("<u2")  # exact for these small integers
    header = {
        name: {"dtype": "BF16", "shape": [4, 6], "data_offsets": [0, raw.nbytes]}
        for name in ["model.layers.1.self_attn.o_proj.lora_a"]
    }
    header["model.layers.1.self_attn.o_proj.lora_b"] = {
        "dtype": "BF16",
        "shape": [6, 4],
        "data_offsets": [raw.nbytes, 2 * raw.nbytes],
    }
    encoded = json.dumps(header).encode()
    blob = raw.tobytes() + raw.reshape(6, 4).tobytes()
    (tmp_path / "a.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob)
    (tmp_path / "c.json").write_text(json.dumps({"lora_parameters": {"rank": 6, "scale": 2}}))
    dest = convert_mlx_lora_to_gguf(
        tmp_path / "a.safetensors", tmp_path / "c.json", tmp_path / "o.gguf", arch="gemma3"
    )
    reader = gguf.GGUFReader(str(dest))
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(12.0)
    a = reader.tensors[0]
    assert a.name == "blk.1.attn_output.weight.lora_a"
    assert a.tensor_type == gguf.GGMLQuantizationType.BF16
    assert list(a.shape) == [4, 6]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.12.self_attn.k_proj.lora_b", "blk.12.attn_k.weight.lora_b"),
        ("model.layers.0.mlp.gate_proj.lora_a", "blk.0.ffn_gate.weight.lora_a"),
        ("model.layers.1.mlp.up_proj.lora_a", "blk.1.ffn_up.weight.lora_a"),
        (
            "language_model.model.layers.3.self_attn.o_proj.lora_b",
            "blk.3.attn_output.weight.lora_b",
        ),
    ],
)
def test_tensor_names(name: str, expected: str) -> None:
    assert mlx_tensor_to_gguf(name) == expected


# -- llama.cpp loads it ---------------------------------------------------------------------------


async def _greedy(tiny_gguf: Path, llama_binary: dict[str, Any], adapter: Path | None) -> str:
    options: dict[str, Any] = {"adapter_path": str(adapter)} if adapter else {}
    async with await load_model(str(tiny_gguf), threads=2, **llama_binary, **options) as model:
        if adapter is not None:
            assert "--lora" in model.server.command  # type: ignore[attr-defined]
        result = await model.generate(PROMPT, temperature=0, max_tokens=8).collect()
    return result.text


# The server and the comparison do not depend on the event loop: asyncio only.
@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_llama_server_loads_the_converted_adapter_and_the_output_changes(
    tiny_gguf: Path, llama_binary: dict[str, Any], tmp_path: Path
) -> None:
    source = _strong_adapter(tmp_path / "strong")
    converted = convert_mlx_lora_to_gguf(
        source, source.parent / "adapter_config.json", tmp_path / "lora.gguf", base_gguf=tiny_gguf
    )
    plain = await _greedy(tiny_gguf, llama_binary, None)
    adapted = await _greedy(tiny_gguf, llama_binary, converted)
    assert plain and adapted
    assert adapted != plain


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.usefixtures("launcher_available")
async def test_llama_cpp_with_the_converted_adapter_matches_mlx_lm(
    tiny_gguf: Path, tiny_mlx: Path, tmp_path: Path
) -> None:
    """Same greedy tokens as mlx-lm with the original adapter: the conversion is exact."""
    mlx_lm = require("mlx_lm")
    from mlx_lm.sample_utils import make_sampler

    source = _strong_adapter(tmp_path / "mlx-adapter", seed=7)
    converted = convert_mlx_lora_to_gguf(
        source, source.parent / "adapter_config.json", tmp_path / "lora.gguf", base_gguf=tiny_gguf
    )
    model, tokenizer = mlx_lm.load(str(tiny_mlx), adapter_path=str(source.parent))
    pieces = mlx_lm.stream_generate(
        model, tokenizer, PROMPT, max_tokens=8, sampler=make_sampler(temp=0.0)
    )
    expected = "".join(piece.text for piece in pieces)
    plain = await _greedy(tiny_gguf, {"use_launcher": True}, None)
    adapted = await _greedy(tiny_gguf, {"use_launcher": True}, converted)
    assert adapted == expected != plain


# -- bad inputs -----------------------------------------------------------------------------------


def test_arch_is_required_without_a_base(adapter: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"arch.*pass arch .*or base_gguf"):
        convert_mlx_lora_to_gguf(*adapter, tmp_path / "o.gguf")
    assert not (tmp_path / "o.gguf").exists()


def test_llama_q_needs_the_base_for_its_head_counts(
    adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"permutes Q/K rows.*needs the base GGUF"):
        convert_mlx_lora_to_gguf(*adapter, tmp_path / "o.gguf", arch="llama")


def test_arch_must_match_the_base(
    adapter: tuple[Path, Path], tiny_gguf: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"'gemma3' differs .* 'llama'"):
        convert_mlx_lora_to_gguf(*adapter, tmp_path / "o.gguf", arch="gemma3", base_gguf=tiny_gguf)


def test_missing_files(adapter: tuple[Path, Path], tiny_gguf: Path, tmp_path: Path) -> None:
    source, config = adapter
    with pytest.raises(ModelLoadError, match=r"missing\.safetensors.*no such file"):
        convert_mlx_lora_to_gguf(
            tmp_path / "missing.safetensors", config, tmp_path / "o.gguf", base_gguf=tiny_gguf
        )
    with pytest.raises(ModelLoadError, match=r"adapter_config.*no such file"):
        convert_mlx_lora_to_gguf(
            source, tmp_path / "adapter_config.json", tmp_path / "o.gguf", base_gguf=tiny_gguf
        )
    with pytest.raises(ModelLoadError, match="no such file"):
        convert_mlx_lora_to_gguf(source, config, tmp_path / "o.gguf", base_gguf=tmp_path / "x")


def test_not_safetensors_and_not_lora(
    adapter: tuple[Path, Path], tiny_gguf: Path, tmp_path: Path
) -> None:
    source, config = adapter
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 16)
    with pytest.raises(ModelLoadError, match="not a safetensors file"):
        convert_mlx_lora_to_gguf(junk, config, tmp_path / "o.gguf", base_gguf=tiny_gguf)
    dora = tmp_path / "dora.json"
    dora.write_text(json.dumps({"fine_tune_type": "dora"}))
    with pytest.raises(ConfigError, match="only LoRA adapters"):
        convert_mlx_lora_to_gguf(source, dora, tmp_path / "o.gguf", base_gguf=tiny_gguf)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lora_parameters": {"rank": "four"}}))
    with pytest.raises(ConfigError, match="rank: must be a positive integer"):
        convert_mlx_lora_to_gguf(source, bad, tmp_path / "o.gguf", base_gguf=tiny_gguf)


def _write(tmp_path: Path, tensors: dict[str, Any], rank: int = LORA_RANK) -> tuple[Path, Path]:
    _save_safetensors(tensors, tmp_path / "x.safetensors")
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"lora_parameters": {"rank": rank, "scale": 20.0}}))
    return tmp_path / "x.safetensors", config


def test_unknown_module(tiny_gguf: Path, tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "model.layers.0.self_attn.qkv_proj.lora_a": np.zeros((64, 4), "f4"),
            "model.layers.0.self_attn.qkv_proj.lora_b": np.zeros((4, 64), "f4"),
        },
    )
    with pytest.raises(ConfigError, match=r"module 'qkv_proj' has no GGUF counterpart"):
        convert_mlx_lora_to_gguf(*files, tmp_path / "o.gguf", base_gguf=tiny_gguf)
    files = _write(tmp_path, {"model.embed_tokens.weight": np.zeros((4, 4), "f4")})
    with pytest.raises(ConfigError, match="not an mlx-lm LoRA tensor"):
        convert_mlx_lora_to_gguf(*files, tmp_path / "o.gguf", base_gguf=tiny_gguf)


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"a": (64, 4, 1), "b": (4, 64)}, r"shape \[64, 4, 1\]; LoRA tensors are 2-D"),
        ({"a": (64, 4)}, "has no lora_b tensor"),
        ({"b": (4, 64)}, "has no lora_a tensor"),
        ({"a": (64, 3), "b": (3, 64)}, r"expected \(in, 4\) and \(4, out\)"),
        ({"a": (32, 4), "b": (4, 64)}, r"32 inputs, the base model's blk.0.attn_q.weight has 64"),
        ({"a": (64, 4), "b": (4, 96)}, r"96 outputs, .* has 64: the adapter was trained on"),
    ],
)
def test_bad_shapes(
    tiny_gguf: Path, tmp_path: Path, tensors: dict[str, tuple[int, ...]], match: str
) -> None:
    files = _write(
        tmp_path,
        {
            f"model.layers.0.self_attn.q_proj.lora_{part}": np.zeros(shape, "f4")
            for part, shape in tensors.items()
        },
    )
    with pytest.raises(ModelLoadError, match=match):
        convert_mlx_lora_to_gguf(*files, tmp_path / "o.gguf", base_gguf=tiny_gguf)
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".*")) == []


def test_a_layer_the_base_lacks(tiny_gguf: Path, tmp_path: Path) -> None:
    files = _write(
        tmp_path,
        {
            "model.layers.7.self_attn.v_proj.lora_a": np.zeros((64, 4), "f4"),
            "model.layers.7.self_attn.v_proj.lora_b": np.zeros((4, 32), "f4"),
        },
    )
    with pytest.raises(ModelLoadError, match=r"no tensor 'blk\.7\.attn_v\.weight' to adapt"):
        convert_mlx_lora_to_gguf(*files, tmp_path / "o.gguf", base_gguf=tiny_gguf)
