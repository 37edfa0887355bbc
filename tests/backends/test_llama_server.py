"""Tests for LlamaServer (process management) and the xllamacpp launcher.

Fast tests use tiny fake servers (Python scripts that serve /health); the ``slow`` ones start
llama.cpp for real, through the launcher and through the real ``llama-server`` binary.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from processes import gone, wait_gone

from goml_async.backends import llama_launcher, llama_server
from goml_async.backends._llama_sizing import cpu_count, kv_cache_warning
from goml_async.backends.llama_server import (
    LlamaServer,
    launcher_command,
    llama_server_args,
    slot_context,
)
from goml_async.errors import BackendUnavailable, ConfigError, GomlError, ModelLoadError
from goml_async.settings import GomlSettings
from goml_async.types import LoadConfig

pytestmark = pytest.mark.anyio  # applies to the async tests only

# No GOML_LLAMA_SERVER and an empty cache: only PATH and the launcher remain.
NO_ENV = GomlSettings(llama_server=None, cache_dir=Path("/nonexistent/goml-test-cache"))


# -- flags and binary resolution (no process) ------------------------------------------------


def test_default_args() -> None:
    # 4 slots of 4096 tokens each (llama-server divides -c among its slots), one KV stream each;
    # one-token steps on one thread, the rest on every CPU.
    args = llama_server_args("m.gguf", host="127.0.0.1", port=8080)
    assert args == [
        *("-m", "m.gguf", "--host", "127.0.0.1", "--port", "8080", "-c", "16384"),
        *("--parallel", "4", "--cont-batching", "--no-kv-unified", "-ngl", "999", "--jinja"),
        *("-t", "1", "-tb", str(cpu_count())),
    ]


@pytest.mark.parametrize(
    ("config", "threads", "expected"),
    [
        (LoadConfig(context_len=2048), None, ["-c", "8192"]),
        (LoadConfig(context_len=2048, parallel_slots=2), None, ["-c", "4096"]),
        (LoadConfig(gpu_layers=0), None, ["-ngl", "0"]),
        (LoadConfig(gpu_layers=12), None, ["-ngl", "12"]),
        (LoadConfig(gpu_layers=-1), None, ["-ngl", "999"]),
        (LoadConfig(parallel_slots=3), None, ["--parallel", "3"]),
        (LoadConfig(adapter_path="/a/lora.gguf"), None, ["--lora", "/a/lora.gguf"]),
        (LoadConfig(), 3, ["-t", "1", "-tb", "3"]),
    ],
)
def test_load_config_flags(
    fake_servers: dict[str, Path], config: LoadConfig, threads: int | None, expected: list[str]
) -> None:
    server = LlamaServer(
        "m.gguf", config, binary=fake_servers["ok"], threads=threads, port=9000, settings=NO_ENV
    )
    command = server.command
    assert command[:1] == [str(fake_servers["ok"])]
    assert command[1:7] == ["-m", "m.gguf", "--host", "127.0.0.1", "--port", "9000"]
    pairs = list(itertools.pairwise(command[7:]))
    assert all(pair in pairs for pair in itertools.pairwise(expected))


def test_unset_config_fields_add_no_flags() -> None:
    args = llama_server_args("m.gguf", LoadConfig(context_len=0, parallel_slots=0))
    assert "--lora" not in args


def test_one_token_steps_run_on_one_thread_and_the_rest_on_every_cpu() -> None:
    # Batch-invariant greedy output (tests/backends/test_llama_determinism.py); -tb is
    # llama.cpp's count of every CPU this process may use when no threads are given.
    args = llama_server_args("m.gguf", LoadConfig())
    assert args[args.index("-t") + 1] == "1"
    assert int(args[args.index("-tb") + 1]) == cpu_count()
    override = llama_server_args("m.gguf", LoadConfig(), threads=2, extra_args=["-t", "2"])
    assert override[-2:] == ["-t", "2"]  # extra_args come last: llama-server keeps the last


def test_each_slot_gets_the_context_cut_to_the_trained_one() -> None:
    def context(config: LoadConfig, train: int | None) -> str:
        args = llama_server_args("m.gguf", config, train_context=train)
        return args[args.index("-c") + 1]

    assert context(LoadConfig(), 8192) == str(4 * 4096)
    assert context(LoadConfig(), 2048) == str(4 * 2048)
    assert context(LoadConfig(context_len=100_000, parallel_slots=2), 8192) == str(2 * 8192)
    assert context(LoadConfig(context_len=100_000, parallel_slots=2), None) == str(2 * 100_000)
    assert slot_context(LoadConfig(context_len=512), 8192) == 512


async def test_the_slot_count_and_context_come_from_the_config_and_the_gguf(
    bundled_gguf: Path, fake_servers: dict[str, Path]
) -> None:
    server = LlamaServer(bundled_gguf, LoadConfig(parallel_slots=2), binary=fake_servers["ok"])
    assert (server.slots, server.slot_context) == (2, 4096)
    cut = LlamaServer(bundled_gguf, LoadConfig(context_len=9000), binary=fake_servers["ok"])
    async with cut:
        assert (cut.slots, cut.slot_context) == (4, 8192)  # SmolLM2 was trained on 8192
        assert cut.command[cut.command.index("-c") + 1] == str(4 * 8192)


def test_extra_args_pass_through_last(fake_servers: dict[str, Path]) -> None:
    extra = ["--no-webui", "--temp", "0.5", "-c", "64"]
    server = LlamaServer(
        "m.gguf", LoadConfig(context_len=512), binary=fake_servers["ok"], extra_args=extra
    )
    assert server.command[-len(extra) :] == extra
    assert server.command.count("-c") == 2  # both: llama-server takes the last one


def test_binary_resolution_order(
    fake_servers: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "bin" / "llama-server"
    on_path.parent.mkdir()
    on_path.symlink_to(fake_servers["ok"])
    monkeypatch.setenv("PATH", str(on_path.parent))
    from_env = GomlSettings(llama_server=fake_servers["slow"])

    explicit = LlamaServer("m.gguf", binary=fake_servers["boom"], settings=from_env)
    assert explicit.command[0] == str(fake_servers["boom"]) and not explicit.uses_launcher
    assert LlamaServer("m.gguf", settings=from_env).command[0] == str(fake_servers["slow"])
    assert LlamaServer("m.gguf", settings=NO_ENV).command[0] == str(on_path)
    by_name = LlamaServer("m.gguf", binary="llama-server", settings=NO_ENV)
    assert by_name.command[0] == str(on_path)


def test_launcher_when_no_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "xllamacpp" else real_find_spec(name, *a),
    )
    server = LlamaServer("m.gguf", settings=NO_ENV)
    assert server.uses_launcher
    assert (
        server.command[:3]
        == launcher_command()
        == [
            sys.executable,
            "-m",
            "goml_async.backends.llama_launcher",
        ]
    )
    with pytest.raises(BackendUnavailable, match="no llama-server binary found"):
        LlamaServer("m.gguf", use_launcher=False, settings=NO_ENV)


def test_launcher_missing_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "xllamacpp" else real_find_spec(name, *a),
    )
    with pytest.raises(BackendUnavailable, match=r"pip install 'goml_async\[llama\]'"):
        LlamaServer("m.gguf", settings=NO_ENV)
    with pytest.raises(BackendUnavailable, match=r"^the xllamacpp launcher is not installed"):
        LlamaServer("m.gguf", use_launcher=True, settings=NO_ENV)


def test_binary_not_found_or_not_executable(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "llama-server"
    with pytest.raises(BackendUnavailable, match="binary not found") as info:
        LlamaServer("m.gguf", binary=missing)
    assert str(missing) in str(info.value)
    plain = tmp_path / "llama-server"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(BackendUnavailable, match="not executable") as info:
        LlamaServer("m.gguf", binary=plain)
    assert str(plain) in str(info.value)
    with pytest.raises(BackendUnavailable, match="not executable"):
        LlamaServer("m.gguf", binary=tmp_path)
    with pytest.raises(BackendUnavailable, match="GOML_LLAMA_SERVER"):
        LlamaServer("m.gguf", settings=GomlSettings(llama_server=missing))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": -1}, "port"),
        ({"port": 70000}, "port"),
        ({"threads": 0}, "threads"),
        ({"extra_args": "--no-webui"}, "extra_args"),
        ({"startup_timeout": 0}, "startup_timeout"),
        ({"host": ""}, "host"),
        ({"use_launcher": True}, "use_launcher"),
    ],
)
def test_bad_arguments(fake_servers: dict[str, Path], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        LlamaServer("m.gguf", binary=fake_servers["ok"], **kwargs)
    assert info.value.field == field


# -- the launcher's command line ---------------------------------------------------------------


def test_launcher_rejects_unknown_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        llama_launcher.main(["-m", "m.gguf", "--flash-attn", "on"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --flash-attn on" in err
    assert "launcher accepts only" in err


def test_launcher_parses_llama_server_flags() -> None:
    args = llama_launcher.build_parser().parse_args(
        [
            *("-m", "m.gguf", "-c", "64", "-t", "2", "-ngl", "all", "--lora", "a", "--lora", "b,c"),
            *("-np", "3", "--no-webui", "--host", "0.0.0.0", "--port", "1234"),
            *("--cont-batching", "--no-kv-unified"),
        ]
    )
    assert (args.model, args.ctx_size, args.threads, args.gpu_layers) == ("m.gguf", 64, 2, -2)
    assert (args.lora, args.parallel, args.host, args.port) == (["a", "b,c"], 3, "0.0.0.0", 1234)
    assert (args.cont_batching, args.kv_unified) == (True, False)
    assert args.threads_batch is None
    assert llama_launcher.build_parser().parse_args(["-m", "m", "-tb", "3"]).threads_batch == 3
    unset = llama_launcher.build_parser().parse_args(["-m", "m.gguf"])
    assert (unset.cont_batching, unset.kv_unified) == (None, None)  # xllamacpp's own defaults
    assert llama_launcher.build_parser().parse_args(["-m", "m", "-kvu", "-nocb"]).kv_unified


def test_the_launcher_maps_slots_batching_and_kv_layout_onto_xllamacpp(
    launcher_available: None,
) -> None:
    import xllamacpp

    argv = ["-m", "m.gguf", "-c", "8192", "-np", "2", "--cont-batching", "--no-kv-unified"]
    params = llama_launcher._params(xllamacpp, llama_launcher.build_parser().parse_args(argv))
    assert (params.n_ctx, params.n_parallel, params.cont_batching) == (8192, 2, True)
    assert params.kv_unified is False
    argv = ["-m", "m.gguf", "-kvu", "-nocb"]
    params = llama_launcher._params(xllamacpp, llama_launcher.build_parser().parse_args(argv))
    assert (params.kv_unified, params.cont_batching) == (True, False)
    argv = ["-m", "m.gguf", "-t", "1", "-tb", "3"]
    params = llama_launcher._params(xllamacpp, llama_launcher.build_parser().parse_args(argv))
    assert (params.cpuparams.n_threads, params.cpuparams_batch.n_threads) == (1, 3)


def test_launcher_without_xllamacpp(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    assert llama_launcher.main(["-m", "m.gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "llama_launcher: error: xllamacpp is not installed; run: pip install 'goml_async[llama]'"
    )


# -- process management with fake servers ----------------------------------------------------


async def test_model_missing_or_not_gguf(fake_servers: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(ModelLoadError, match="no such file") as info:
        await LlamaServer(missing, binary=fake_servers["ok"]).start()
    assert info.value.path == str(missing)
    text = tmp_path / "model.gguf"
    text.write_text("not a model at all")
    with pytest.raises(ModelLoadError, match="not a GGUF file") as info:
        await LlamaServer(text, binary=fake_servers["ok"]).start()
    assert info.value.path == str(text)
    with pytest.raises(ModelLoadError, match="not a file"):
        await LlamaServer(tmp_path, binary=fake_servers["ok"]).start()


async def test_missing_lora_adapter(fake_servers: dict[str, Path], fake_gguf: Path) -> None:
    config = LoadConfig(adapter_path="/no/such/adapter.gguf")
    with pytest.raises(ModelLoadError, match="LoRA adapter file not found"):
        await LlamaServer(fake_gguf, config, binary=fake_servers["ok"]).start()


async def test_port_in_use(fake_servers: dict[str, Path], fake_gguf: Path) -> None:
    async with LlamaServer(fake_gguf, binary=fake_servers["ok"]) as first:
        second = LlamaServer(fake_gguf, binary=fake_servers["ok"], port=first.port)
        with pytest.raises(ConfigError, match="in use") as info:
            await second.start()
        assert info.value.field == "port"
        assert second.pid is None  # nothing was launched


async def test_ready_on_a_free_port(fake_servers: dict[str, Path], fake_gguf: Path) -> None:
    server = LlamaServer(fake_gguf, binary=fake_servers["ok"], settings=NO_ENV)
    assert (server.port, server.pid) == (0, None)
    async with server:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.command[server.command.index("--port") + 1] == str(server.port)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.base_url}/health")).status_code == 200
        server.check_alive()
        pid = server.pid
        assert pid is not None and not gone(pid)
    assert gone(pid)
    with pytest.raises(BackendUnavailable, match="closed"):
        server.check_alive()


async def test_waits_while_loading(fake_servers: dict[str, Path], fake_gguf: Path) -> None:
    started = time.monotonic()
    async with LlamaServer(fake_gguf, binary=fake_servers["slow"]) as server:
        assert time.monotonic() - started >= 0.5
        assert server.log_tail(200).count("request /health") >= 2  # saw 503s, kept polling


async def test_exit_before_ready_reports_code_and_logs(
    fake_servers: dict[str, Path], fake_gguf: Path
) -> None:
    with pytest.raises(BackendUnavailable, match="exited with exit code 3") as info:
        async with LlamaServer(fake_gguf, binary=fake_servers["boom"]):
            pytest.fail("the server cannot be ready")
    assert "boom" in str(info.value)


async def test_startup_timeout_reports_logs(fake_servers: dict[str, Path], fake_gguf: Path) -> None:
    server = LlamaServer(fake_gguf, binary=fake_servers["hang"], startup_timeout=0.5)
    with pytest.raises(BackendUnavailable, match=r"not ready .* within 0.5 s") as info:
        await server.start()
    assert "fake-server starting" in str(info.value)
    assert server.pid is not None and gone(server.pid)


async def test_noisy_server_never_blocks(fake_servers: dict[str, Path], fake_gguf: Path) -> None:
    with anyio.fail_after(20):
        async with LlamaServer(fake_gguf, binary=fake_servers["noisy"]) as server:
            tail = server.log_tail(200)
    assert len(tail) == 200
    assert tail.count("x" * 1023) >= 150


async def test_aclose_kills_the_process_group(
    fake_servers: dict[str, Path], fake_gguf: Path
) -> None:
    server = LlamaServer(fake_gguf, binary=fake_servers["forks"])
    async with server:
        child = next(int(line.split()[1]) for line in server.log_tail() if "child-pid" in line)
        leader = server.pid
        assert leader is not None and not gone(child)
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)
    assert wait_gone(child), "the server's child survived aclose"
    await server.aclose()  # idempotent


async def test_cancelled_startup_leaves_no_process(
    fake_servers: dict[str, Path], fake_gguf: Path
) -> None:
    server = LlamaServer(fake_gguf, binary=fake_servers["hang"], startup_timeout=60)
    with anyio.move_on_after(0.5) as scope:
        await server.start()
    assert scope.cancelled_caught
    assert server.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


async def test_crash_is_reported_by_check_alive(
    fake_servers: dict[str, Path], fake_gguf: Path
) -> None:
    async with LlamaServer(fake_gguf, binary=fake_servers["ok"]) as server:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        assert await anyio.to_thread.run_sync(wait_gone, server.pid)
        with pytest.raises(
            BackendUnavailable, match=r"crashed \(exit code -9, killed by SIGKILL\)"
        ):
            server.check_alive()
        with pytest.raises(BackendUnavailable, match="fake-server starting"):
            server.check_alive()


async def test_start_twice_is_an_error(fake_servers: dict[str, Path], fake_gguf: Path) -> None:
    async with LlamaServer(fake_gguf, binary=fake_servers["ok"]) as server:
        with pytest.raises(GomlError, match="already started"):
            await server.start()


# -- real llama.cpp servers ---------------------------------------------------------------------


@pytest.mark.slow
async def test_streams_chat_completions(tiny_gguf: Path, llama_binary: dict[str, Any]) -> None:
    config = LoadConfig(context_len=512, parallel_slots=2)
    async with LlamaServer(tiny_gguf, config, threads=1, **llama_binary) as server:
        assert server.uses_launcher == ("binary" not in llama_binary)
        body = {
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
        }
        data: list[str] = []
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                data = [line[6:] async for line in response.aiter_lines() if line[:6] == "data: "]
        assert data[-1] == "[DONE]"
        chunks = [json.loads(item) for item in data[:-1]]
        assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)
        pid = server.pid
        assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    if server.uses_launcher:
        assert server.returncode == 0  # the launcher exits cleanly on SIGTERM


@pytest.mark.slow
async def test_bundled_model_answers(bundled_gguf: Path, llama_binary: dict[str, Any]) -> None:
    body = {
        # Without a system message SmolLM2's template adds its own, and the greedy answer to
        # this question is then a string of French words instead.
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        "max_tokens": 16,
        "temperature": 0,
    }
    async with (
        LlamaServer(bundled_gguf, LoadConfig(context_len=512), threads=2, **llama_binary) as s,
        httpx.AsyncClient(timeout=60) as client,
    ):
        response = await client.post(f"{s.base_url}/v1/chat/completions", json=body)
    assert "Paris" in response.json()["choices"][0]["message"]["content"]


@pytest.mark.slow
async def test_lora_adapter_is_loaded(
    tiny_gguf: Path, tiny_lora: Path, llama_binary: dict[str, Any]
) -> None:
    config = LoadConfig(adapter_path=str(tiny_lora))
    async with (
        LlamaServer(tiny_gguf, config, threads=1, **llama_binary) as server,
        httpx.AsyncClient() as client,
    ):
        adapters = (await client.get(f"{server.base_url}/lora-adapters")).json()
    assert [(a["path"], a["scale"]) for a in adapters] == [(str(tiny_lora), 1.0)]


@pytest.mark.slow
async def test_broken_model_is_a_model_load_error(
    tiny_gguf: Path, llama_binary: dict[str, Any], tmp_path: Path
) -> None:
    broken = anyio.Path(tmp_path / "broken.gguf")
    await broken.write_bytes((await anyio.Path(tiny_gguf).read_bytes())[:1000])
    with pytest.raises(ModelLoadError, match="exited with exit code") as info:
        await LlamaServer(broken, **llama_binary).start()
    assert info.value.path == str(broken)
    assert "failed to load model" in str(info.value)


_SIGINT_CHILD = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
import anyio
from goml_async.backends.llama_server import LlamaServer

async def main():
    async with LlamaServer(sys.argv[1], use_launcher=True, threads=1) as server:
        print(server.pid, flush=True)
        await anyio.sleep(120)

anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.usefixtures("launcher_available")
@pytest.mark.parametrize("child_backend", ["asyncio", "trio"])
def test_ctrl_c_leaves_no_server_behind(tiny_gguf: Path, child_backend: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SIGINT_CHILD), str(tiny_gguf), child_backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), f"child did not start: {line!r} {child.stderr!r}"
        server_pid = int(line)
        assert not gone(server_pid)
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=15)
        assert wait_gone(server_pid), f"llama-server pid {server_pid} survived Ctrl-C"
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


def test_module_surface() -> None:
    assert sorted(llama_server.__all__) == llama_server.__all__
    assert all(hasattr(llama_server, name) for name in llama_server.__all__)


def test_a_kv_cache_past_half_the_memory_is_named_with_the_way_out() -> None:
    gib = 2**30
    assert kv_cache_warning(4 * gib, 24 * gib) is None
    assert kv_cache_warning(0, 24 * gib) is None  # unknown size: nothing to say
    assert kv_cache_warning(4 * gib, 0) is None  # unknown memory
    warning = kv_cache_warning(13 * gib, 24 * gib)
    assert warning is not None
    assert "13.0 GiB" in warning and "24.0 GiB" in warning and "parallel_slots" in warning
