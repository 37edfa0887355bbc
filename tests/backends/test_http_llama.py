"""HTTPModel against a real llama.cpp ``llama-server`` serving the bundled SmolLM2 model."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import anyio
import httpx
import pytest

from goml_async import GenerateConfig, GenerationTimeout, GenOpts, NotSupported
from goml_async.backends.http import HTTPBackend, HTTPModel

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

QUESTION = "What is the capital of France? Answer in one word."


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def llama_url(real_llama_server: Path, bundled_gguf: Path) -> Iterator[str]:
    """A real llama-server with SmolLM2 on a free loopback port, for this module."""
    port = _free_port()
    command = [str(real_llama_server), "-m", str(bundled_gguf), "--host", "127.0.0.1"]
    command += ["--port", str(port), "-c", "2048", "-t", "2", "--parallel", "2", "--no-webui"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"llama-server exited with {process.returncode}"
            assert time.monotonic() < deadline, "llama-server was not ready within 60 s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def busy_slots(url: str) -> int:
    async with httpx.AsyncClient() as client:
        slots = (await client.get(url.removesuffix("/v1") + "/slots", timeout=5)).json()
    return sum(1 for slot in slots if slot["is_processing"])


async def slots_idle_within(url: str, seconds: float) -> bool:
    """Poll /slots until no slot is processing; True if that happened in time."""
    deadline = time.monotonic() + seconds
    for _ in range(1000):
        if await busy_slots(url) == 0:
            return True
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.02)
    return False


async def test_the_bundled_model_knows_the_capital_of_france(llama_url: str) -> None:
    async with HTTPModel(llama_url) as model:
        result = await model.chat(
            [{"role": "user", "content": QUESTION}], temperature=0, max_tokens=16
        ).collect()
    assert "Paris" in result.text
    assert result.finish_reason == "stop"


async def test_streaming_yields_many_tokens_with_the_servers_counts(llama_url: str) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 30, separated by commas."}]
    async with HTTPModel(llama_url) as model:
        stream = model.chat(messages, max_tokens=40, temperature=0)
        tokens = [token async for token in stream]
    assert len(tokens) >= 20
    metrics = stream.metrics
    assert metrics is not None
    # The same request without streaming: the server's own usage numbers.
    body = {"messages": messages, "max_tokens": 40, "temperature": 0}
    async with httpx.AsyncClient() as client:
        reply = (await client.post(f"{llama_url}/chat/completions", json=body, timeout=60)).json()
    assert metrics.prompt_tokens == reply["usage"]["prompt_tokens"]
    assert metrics.generated_tokens == reply["usage"]["completion_tokens"]
    assert metrics.decode_seconds > 0  # from llama.cpp's timings
    assert metrics.decode_tokens_per_sec > 0
    assert stream.text == reply["choices"][0]["message"]["content"]


async def test_every_sampling_field_is_accepted_by_llama_cpp(llama_url: str) -> None:
    config = GenerateConfig(
        max_tokens=12,
        temperature=0.8,
        top_k=20,
        top_p=0.9,
        repeat_penalty=1.1,
        seed=42,
        stop_sequences=["\n\n"],
    )
    async with HTTPModel(llama_url) as model:
        result = await model.generate("Once upon a time", config).collect()
        again = await model.generate("Once upon a time", config).collect()
    assert result.text
    assert result.text == again.text  # the seed reached the sampler


async def test_breaking_out_frees_the_server_slot(llama_url: str) -> None:
    async with HTTPModel(llama_url) as model:
        async with model.generate("Write a very long story about a dragon.", max_tokens=400) as s:
            async for _token in s:
                break
        assert await slots_idle_within(llama_url, 1.0)


async def test_an_idle_deadline_cancels_generation_on_the_server(llama_url: str) -> None:
    async with HTTPModel(llama_url, idle_timeout=0.001) as model:
        with pytest.raises(GenerationTimeout):
            await model.generate("Tell me about Paris.", max_tokens=300).collect()
    # The server notices the closed response when it next sends a token.
    assert await slots_idle_within(llama_url, 3.0)


async def test_the_string_backend_against_llama_cpp(llama_url: str) -> None:
    async with HTTPBackend(llama_url, max_tokens=16) as backend:
        result = await backend.generate(QUESTION, GenOpts(temperature=0))
        info = backend.model.info()
    assert "Paris" in result.text
    assert isinstance(backend.model, HTTPModel)
    assert info.architecture == "http"


async def test_refresh_info_reads_llama_cpp_metadata(llama_url: str) -> None:
    async with HTTPModel(llama_url) as model:
        info = await model.refresh_info()
    assert info.vocab_size == 49152
    assert info.hidden_size == 576


# -- log-probabilities, penalties and stop tokens through the OpenAI routes ------------------------


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_logprobs_come_with_llama_cpps_token_ids(
    llama_url: str, endpoint: Literal["completions", "chat"]
) -> None:
    async with HTTPModel(llama_url, generate_endpoint=endpoint) as model:
        stream = model.generate(QUESTION, max_tokens=8, temperature=0, top_logprobs=3)
        tokens = [token async for token in stream]
        plain = await model.generate(QUESTION, max_tokens=8, temperature=0).collect()
    assert "".join(token.text for token in tokens) == plain.text
    for token in tokens:
        assert token.id >= 0  # llama.cpp names the ID in each log-probability entry
        assert token.logprob is not None and token.logprob <= 0
        assert len(token.top_logprobs) == 3
        best = token.top_logprobs[0]
        assert (best.id, best.logprob) == (token.id, token.logprob)  # greedy: the top one


async def test_logprobs_without_alternatives(llama_url: str) -> None:
    async with HTTPModel(llama_url) as model:
        tokens = [token async for token in model.generate(QUESTION, max_tokens=4, logprobs=True)]
    assert tokens
    assert all(token.logprob is not None and token.top_logprobs == () for token in tokens)


async def test_penalties_reach_llama_cpp(llama_url: str) -> None:
    prompt = "Repeat after me: the the the the the the the the"
    async with HTTPModel(llama_url) as model:
        plain = await model.generate(prompt, max_tokens=16, temperature=0).collect()
        penalised = await model.generate(
            prompt, max_tokens=16, temperature=0, presence_penalty=2.0, frequency_penalty=2.0
        ).collect()
    assert plain.text != penalised.text


async def test_stop_tokens_stay_refused_over_plain_http(llama_url: str) -> None:
    async with HTTPModel(llama_url) as model:
        with pytest.raises(NotSupported, match="stop_tokens"):
            await model.generate(QUESTION, stop_tokens=[2]).collect()
