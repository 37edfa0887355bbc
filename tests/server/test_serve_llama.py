"""``goml serve`` on the bundled SmolLM2 model (real llama-server), read by real clients:
the official openai-python client (sync and async), goml_async's own HTTP backend, and raw
httpx for disconnects and the graceful shutdown."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from processes import children_of, gone

from goml_async import load_model
from goml_async.backends.http import HTTPModel

from .helpers import sse_payloads

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France? Answer in one word."}
]
STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a dragon who bakes bread."}
]
LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Serving:
    """A running ``goml serve``: its URL, process and the llama-server it started."""

    url: str
    process: subprocess.Popen[str]
    llama_pid: int
    llama_url: str
    banner: str
    llama_command: list[str]


def start_serve(
    bundled_gguf: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    model: str | None = None,
    stderr: Path | None = None,
) -> Serving:
    """Start ``goml serve --port 0`` on the bundled model (``--model model`` when given; its
    stderr into the file ``stderr``); wait for the URL it prints."""
    command = [sys.executable, "-m", "goml_async", "serve", "--model", model or str(bundled_gguf)]
    command += ["--port", "0", "--context-len", "2048", "--max-concurrency", "2", *extra]
    environ = {k: v for k, v in os.environ.items() if k != "GOML_SERVER_API_KEY"}
    with open(stderr or os.devnull, "w") as errors:  # the child keeps its own copy
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env={**environ, "NO_PROXY": "127.0.0.1", **(env or {})},
        )
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    while True:
        line = process.stdout.readline()
        assert line or process.poll() is None, f"goml serve exited with {process.returncode}"
        if found := LISTENING.search(line):
            break
        assert time.monotonic() < deadline, "goml serve did not listen within 90 s"
    children = children_of(process.pid)
    assert len(children) == 1, children
    cmdline = Path(f"/proc/{children[0]}/cmdline").read_text().split("\0")
    port = cmdline[cmdline.index("--port") + 1]
    return Serving(found.group(1), process, children[0], f"http://127.0.0.1:{port}", line, cmdline)


def stop_serve(serving: Serving) -> str:
    """SIGTERM, then the rest of stdout; the process must exit 0 and take llama-server along."""
    serving.process.send_signal(signal.SIGTERM)
    output, _ = serving.process.communicate(timeout=30)
    assert serving.process.returncode == 0, output
    assert gone(serving.llama_pid)
    return output


@pytest.fixture(scope="module")
def serving(bundled_gguf: Path) -> Iterator[Serving]:
    # Started as users start it: the bundled model by the name "default".
    serving = start_serve(bundled_gguf, model="default")
    try:
        yield serving
    finally:
        if serving.process.poll() is None:
            output = stop_serve(serving)
            assert "stopped after" in output


def decoded_tokens(llama_url: str) -> int:
    """The most tokens a busy slot has decoded so far (0 when none is busy)."""
    slots = httpx.get(f"{llama_url}/slots", timeout=5).json()
    return max(
        (
            slot["next_token"][0]["n_decoded"]
            for slot in slots
            if slot["is_processing"] and slot.get("next_token")
        ),
        default=0,
    )


def busy_slots(llama_url: str) -> int:
    slots = httpx.get(f"{llama_url}/slots", timeout=5).json()
    return sum(1 for slot in slots if slot["is_processing"])


# -- openai-python --------------------------------------------------------------------------------


def test_openai_sync_plain_and_streamed_agree(serving: Serving) -> None:
    client = openai.OpenAI(base_url=f"{serving.url}/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    name = models.data[0].id
    assert name == "SmolLM2-135M-Instruct.Q4_1"
    plain = client.chat.completions.create(
        model=name,
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
    )
    assert "Paris" in (plain.choices[0].message.content or "")
    assert plain.usage is not None
    assert plain.usage.prompt_tokens > 0 and plain.usage.completion_tokens > 0
    assert plain.choices[0].finish_reason in ("stop", "length")

    chunks = list(
        client.chat.completions.create(
            model=name,
            messages=QUESTION,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert text == plain.choices[0].message.content
    assert finish[-1] == plain.choices[0].finish_reason
    streamed = chunks[-1].usage
    assert streamed is not None

    def counts(usage: Any) -> tuple[int, int, int]:
        return (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)

    assert counts(streamed) == counts(plain.usage)
    # The second request found the first one's prompt in llama-server's prompt cache.
    assert streamed.prompt_tokens_details is not None
    assert 0 < (streamed.prompt_tokens_details.cached_tokens or 0) < streamed.prompt_tokens
    client.close()


def test_openai_sync_completions(serving: Serving) -> None:
    with openai.OpenAI(base_url=f"{serving.url}/v1", api_key="unused", max_retries=0) as client:
        plain = client.completions.create(
            model="", prompt="The capital of France is", max_tokens=6, temperature=0
        )
        streamed = list(
            client.completions.create(
                model="",
                prompt="The capital of France is",
                max_tokens=6,
                temperature=0,
                stream=True,
            )
        )
    assert plain.choices[0].text
    assert "".join(chunk.choices[0].text for chunk in streamed) == plain.choices[0].text
    assert plain.usage is not None and plain.usage.completion_tokens > 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the openai client's async side: asyncio
async def test_openai_async_plain_and_streamed(serving: Serving, anyio_backend: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{serving.url}/v1", api_key="unused", max_retries=0
    ) as client:
        plain = await client.chat.completions.create(
            model="",
            messages=QUESTION,
            max_tokens=12,
            temperature=0,
        )
        stream = await client.chat.completions.create(
            model="",
            messages=QUESTION,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text and text == plain.choices[0].message.content
    assert plain.usage is not None and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens > 0


# -- goml_async's own HTTP backend ----------------------------------------------------------------


@pytest.mark.anyio
async def test_the_http_backend_round_trip_matches_the_model_read_directly(
    serving: Serving,
) -> None:
    async with (
        await load_model(f"{serving.url}/v1") as through_serve,
        HTTPModel(f"{serving.llama_url}/v1") as direct,
    ):
        served_chat = await through_serve.chat(QUESTION, max_tokens=8, temperature=0).collect()
        direct_chat = await direct.chat(QUESTION, max_tokens=8, temperature=0).collect()
        prompt = "Once upon a time, in a small village by the sea,"
        served_text = await through_serve.generate(prompt, max_tokens=8, temperature=0).collect()
        direct_text = await direct.generate(prompt, max_tokens=8, temperature=0).collect()
    assert served_chat.text == direct_chat.text and "Paris" in served_chat.text
    assert served_text.text == direct_text.text and served_text.text
    assert served_chat.metrics is not None and direct_chat.metrics is not None
    assert served_chat.metrics.generated_tokens == direct_chat.metrics.generated_tokens
    assert served_chat.metrics.prompt_tokens == direct_chat.metrics.prompt_tokens


# -- disconnects and shutdown ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_client_dropping_mid_stream_frees_the_llama_slot(serving: Serving) -> None:
    body = {"messages": STORY, "max_tokens": 400, "stream": True, "temperature": 0}
    async with httpx.AsyncClient(base_url=serving.url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            received = 0
            async for line in response.aiter_lines():
                received += line.startswith("data: {")
                if (
                    received >= 5
                    and await anyio.to_thread.run_sync(busy_slots, serving.llama_url) > 0
                ):
                    break  # generating: drop the connection now
            assert received < 400
        dropped = time.monotonic()
        while await anyio.to_thread.run_sync(busy_slots, serving.llama_url):
            assert time.monotonic() - dropped < 1.0, "the slot was still busy 1 s after the drop"
            await anyio.sleep(0.02)
        health = (await http.get("/healthz")).json()
    assert health["client_disconnects_total"] >= 1
    assert health["active_requests"] == 0


def test_sigterm_lets_the_stream_finish_then_exits_0(bundled_gguf: Path) -> None:
    serving = start_serve(bundled_gguf, "--grace", "20")
    body = {"messages": STORY, "max_tokens": 60, "stream": True, "temperature": 0}
    raw = b""
    signalled = False
    with httpx.stream("POST", f"{serving.url}/v1/chat/completions", json=body, timeout=60) as reply:
        for chunk in reply.iter_raw():
            raw += chunk
            if not signalled and raw.count(b"data: {") >= 3:
                serving.process.send_signal(signal.SIGTERM)
                signalled = True
    assert signalled
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    output, _ = serving.process.communicate(timeout=30)
    assert serving.process.returncode == 0, output
    assert "SIGTERM received" in output
    assert re.search(r"1 request\(s\), 1 completed, 0 error\(s\)", output), output
    assert gone(serving.llama_pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{serving.url}/healthz", timeout=2)


# -- names, slots, the line, quiet start-up, /v1/ml/generate disconnects --------------------------


def test_openai_asks_for_the_model_by_the_name_it_was_started_with(serving: Serving) -> None:
    with openai.OpenAI(base_url=f"{serving.url}/v1", api_key="unused", max_retries=0) as client:
        names = [model.id for model in client.models.list().data]
        assert names == ["SmolLM2-135M-Instruct.Q4_1", "default"]
        for name in names:
            reply = client.chat.completions.create(
                model=name, messages=QUESTION, max_tokens=8, temperature=0
            )
            assert "Paris" in (reply.choices[0].message.content or "")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=2)


@pytest.mark.anyio
async def test_goml_asks_for_the_model_by_the_name_default(serving: Serving) -> None:
    async with await load_model(f"{serving.url}/v1", model="default") as model:
        result = await model.chat(QUESTION, max_tokens=8, temperature=0).collect()
    assert "Paris" in result.text


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")
def test_litellm_asks_for_the_model_by_the_name_default(serving: Serving) -> None:
    import litellm

    reply = litellm.completion(
        model="openai/default",
        api_base=f"{serving.url}/v1",
        api_key="unused",
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        num_retries=0,
    )
    assert "Paris" in reply.choices[0].message.content


def test_llama_server_has_as_many_slots_as_the_server_lets_in(serving: Serving) -> None:
    command = serving.llama_command
    assert command[command.index("--parallel") + 1] == "2"  # --max-concurrency 2
    assert len(httpx.get(f"{serving.llama_url}/slots", timeout=5).json()) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the openai client's async side: asyncio
async def test_six_concurrent_requests_on_two_slots_all_succeed(
    serving: Serving, anyio_backend: str
) -> None:
    busiest = 0
    async with openai.AsyncOpenAI(
        base_url=f"{serving.url}/v1", api_key="unused", max_retries=0
    ) as client:

        async def ask() -> str:
            reply = await client.chat.completions.create(
                model="default", messages=QUESTION, max_tokens=8, temperature=0
            )
            return reply.choices[0].message.content or ""

        answers: list[str] = []

        async def one() -> None:
            answers.append(await ask())

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(one)
            while len(answers) < 6:
                slots = await anyio.to_thread.run_sync(busy_slots, serving.llama_url)
                busiest = max(busiest, slots)
                await anyio.sleep(0.05)
    assert len(answers) == 6 and all("Paris" in answer for answer in answers)
    assert busiest <= 2  # the rest waited in goml serve's own line, not inside llama-server
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{serving.url}/healthz")).json()
    assert health["peak_active_requests"] == 2 and health["peak_queued_requests"] >= 1


@pytest.mark.anyio
async def test_a_client_hanging_up_on_ml_generate_frees_the_llama_slot(serving: Serving) -> None:
    host, port = serving.url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": STORY[0]["content"], "max_tokens": 400}).encode()
    request = (
        b"POST /v1/ml/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(request)
        with anyio.fail_after(30):
            # Dropped once decoding is under way (as the streamed test drops after 5 chunks):
            # llama-server notices a closed connection when it next writes, not during prefill.
            while await anyio.to_thread.run_sync(decoded_tokens, serving.llama_url) < 5:  # noqa: ASYNC110 (polling llama-server: no event)
                await anyio.sleep(0.02)
    dropped = time.monotonic()
    while await anyio.to_thread.run_sync(busy_slots, serving.llama_url):
        assert time.monotonic() - dropped < 1.0, "the slot was still busy 1 s after the drop"
        await anyio.sleep(0.02)
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{serving.url}/healthz")).json()
    assert health["active_requests"] == 0  # the place was given back with the slot


def test_start_up_is_quiet_at_info_and_the_access_log_shows(
    bundled_gguf: Path, tmp_path: Path
) -> None:
    log = tmp_path / "stderr.txt"
    serving = start_serve(bundled_gguf, "--log-level", "info", "--access-log", stderr=log)
    httpx.get(f"{serving.url}/healthz", timeout=5)
    stop_serve(serving)
    text = log.read_text()
    assert "/health " not in text and "httpx" not in text  # llama-server's readiness poll
    assert '"GET /healthz HTTP/1.1" 200' in text
