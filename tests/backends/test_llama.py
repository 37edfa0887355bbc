"""The llama backend: LlamaModel on a managed llama-server (real binary and xllamacpp launcher)."""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from model_fixtures import StartLlama, busy_slots
from processes import gone

from goml_async import (
    APIConnectionError,
    BackendUnavailable,
    GenOpts,
    GomlSettings,
    ModelLoadError,
    StreamInterrupted,
    discover_gguf_models,
    get_backend,
    load_default_model,
    load_model,
)
from goml_async.backends.gguf_meta import gguf_model_info, read_gguf_metadata
from goml_async.backends.http import HTTPBackend
from goml_async.backends.llama import LlamaBackend, LlamaModel, LlamaModelBackend
from goml_async.compat import InferenceAdapter, as_text_model

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
QUESTION = {"role": "user", "content": "What is the capital of France? Answer in one word."}


# -- the bundled model on both servers ------------------------------------------------------------


async def test_the_bundled_model_answers_paris(
    bundled_gguf: Path, llama_binary: dict[str, Any], start_llama: StartLlama
) -> None:
    async with await start_llama(bundled_gguf, context_len=2048) as model:
        assert model.model_type == "llama"
        assert model.server.uses_launcher == llama_binary["use_launcher"]
        result = await model.chat([SYSTEM, QUESTION], temperature=0, max_tokens=16).collect()
        pid = model.server.pid
    assert "Paris" in result.text
    assert result.metrics is not None
    assert result.metrics.prompt_tokens > 10  # the server's count
    assert pid is not None
    assert gone(pid)  # aclose stopped the server


async def test_info_comes_from_the_gguf_file(bundled_gguf: Path) -> None:
    async with await load_model(str(bundled_gguf), use_launcher=True) as model:
        info = model.info()
    assert (info.architecture, info.num_layers, info.hidden_size) == ("llama", 30, 576)
    assert (info.vocab_size, info.quant_bits, info.quant_group) == (49152, 4, 32)


async def test_breaking_out_frees_the_slot_within_a_second(
    bundled_gguf: Path, llama_binary: dict[str, Any]
) -> None:
    async with await load_model(str(bundled_gguf), **llama_binary) as model:
        assert isinstance(model, LlamaModel)
        async with model.chat(
            [{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=500
        ) as stream:
            async for _token in stream:
                if await busy_slots(model):
                    break
        started = time.monotonic()
        for _ in range(100):
            if await busy_slots(model) == 0:
                break
            await anyio.sleep(0.01)
        assert await busy_slots(model) == 0
        assert time.monotonic() - started < 1.0


async def test_load_default_model_serves_the_bundled_model() -> None:
    async with await load_default_model() as model:
        assert isinstance(model, LlamaModel)
        assert model.server.model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
        result = await model.chat([SYSTEM, QUESTION], max_tokens=16).collect()
    assert "Paris" in result.text


# -- crashes --------------------------------------------------------------------------------------


async def test_a_crash_mid_stream_reports_the_exit_code_and_logs(
    tiny_gguf: Path, llama_binary: dict[str, Any]
) -> None:
    async with await load_model(str(tiny_gguf), **llama_binary) as model:
        assert isinstance(model, LlamaModel)
        pid = model.server.pid
        assert pid is not None
        received = 0
        # ignore_eos: the random model must not finish (and the server flush [DONE]) before
        # the kill lands, which a sampled end-of-text sometimes did.
        stream = model.generate(
            "hello", max_tokens=0, temperature=1.0, extra_body={"ignore_eos": True}
        )
        with pytest.raises(StreamInterrupted) as caught:
            async for _token in stream:
                received += 1
                if received == 1:
                    os.killpg(pid, signal.SIGKILL)
    message = str(caught.value)
    assert "crashed" in message
    assert "SIGKILL" in message or "-9" in message
    assert "log lines" in message
    assert caught.value.partial_text


async def test_a_dead_server_before_the_first_token(tiny_gguf: Path) -> None:
    async with await load_model(str(tiny_gguf), use_launcher=True) as model:
        assert isinstance(model, LlamaModel)
        pid = model.server.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        with pytest.raises(APIConnectionError, match="crashed"):
            await model.generate("hello").collect()


# -- the go-ml string backend ---------------------------------------------------------------------


async def test_llama_backend_start_generate_stop(bundled_gguf: Path) -> None:
    backend = LlamaBackend(bundled_gguf, use_launcher=True)
    assert not backend.available()
    with pytest.raises(BackendUnavailable, match="start"):
        await backend.generate("x")
    async with backend:
        assert backend.available()
        assert backend.name == "llama"
        result = await backend.chat([SYSTEM, QUESTION], GenOpts(max_tokens=16))
        assert "Paris" in result.text
        assert backend.model.info().architecture == "llama"
    assert not backend.available()
    with pytest.raises(BackendUnavailable, match="start"):
        await backend.chat([QUESTION])


async def test_llama_backend_is_built_like_http_backend(bundled_gguf: Path) -> None:
    # Both string backends are InferenceAdapters over their model, so code above the backends
    # lifts either to the very model it wraps (no GenOpts round trip).
    backend = LlamaBackend(bundled_gguf, use_launcher=True)
    assert isinstance(backend, InferenceAdapter)
    assert issubclass(HTTPBackend, InferenceAdapter)
    with pytest.raises(BackendUnavailable, match="start"):
        as_text_model(backend)
    async with backend:
        assert as_text_model(backend) is backend.model
        reply = await as_text_model(backend).generate("The capital of France is").collect()
        assert reply.text
    with pytest.raises(BackendUnavailable, match="start"):
        as_text_model(backend)


# -- registry and errors --------------------------------------------------------------------------


async def test_the_registry_knows_why_llama_cannot_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "xllamacpp" else real_find_spec(name, *a),
    )
    backend = LlamaModelBackend(GomlSettings(cache_dir=tmp_path))
    assert not backend.available()
    reason = backend.unavailable_reason()
    assert reason is not None
    assert "GOML_LLAMA_SERVER" in reason
    assert "pip install 'goml_async[llama]'" in reason
    assert isinstance(get_backend("llama"), LlamaModelBackend)


async def test_bad_model_files(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        await load_model(str(not_gguf), use_launcher=True)
    with pytest.raises(ModelLoadError, match="no such file"):
        await load_model(str(tmp_path / "missing.gguf"))


# -- GGUF metadata and discovery ------------------------------------------------------------------


def test_gguf_metadata_of_the_tiny_model(tiny_gguf: Path) -> None:
    meta = read_gguf_metadata(tiny_gguf)
    assert meta.version == 3
    assert meta.architecture == "llama"
    assert meta.array_lengths["tokenizer.ggml.tokens"] == 512
    info = gguf_model_info(meta)
    assert (info.num_layers, info.hidden_size, info.vocab_size) == (2, 64, 512)
    assert info.quant_bits == 0  # f32


def test_truncated_gguf_is_reported(tiny_gguf: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="corrupt GGUF metadata"):
        read_gguf_metadata(broken)
    version_99 = tmp_path / "future.gguf"
    version_99.write_bytes(b"GGUF" + struct.pack("<I", 99) + b"\0" * 16)
    with pytest.raises(ModelLoadError, match="unsupported GGUF version 99"):
        read_gguf_metadata(version_99)
    with pytest.raises(ModelLoadError, match="a folder"):
        read_gguf_metadata(tmp_path)


def test_discover_gguf_models(tiny_gguf: Path, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    (tmp_path / "junk.gguf").write_bytes(b"nope")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.gguf").write_bytes(tiny_gguf.read_bytes())
    [found] = discover_gguf_models(tmp_path)
    assert found.path == str((tmp_path / "sub" / "tiny.gguf").resolve())
    assert (found.format, found.model_type) == ("gguf", "llama")
    assert found.size_bytes == tiny_gguf.stat().st_size
