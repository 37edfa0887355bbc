"""HTTPModel against a real loopback SSE server that injects faults (the conformance kit).

The server is goml_async.testing.FakeOpenAIServer: real sockets, real HTTP/1.1 chunked SSE,
faults real servers can't be made to produce on demand. The same behaviours are checked against
a real llama.cpp server in test_http_llama.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from goml_async import (
    APIConnectionError,
    APIStatusError,
    GenerateConfig,
    GenerationError,
    GenerationTimeout,
    GenOpts,
    GomlSettings,
    ModelLoadError,
    NotSupported,
    StreamInterrupted,
    load_model,
)
from goml_async._retry import RetryPolicy
from goml_async.backends._pool import ShardedTransport
from goml_async.backends.http import HTTPBackend, HTTPModel
from goml_async.testing import FakeOpenAIServer, Script

pytestmark = pytest.mark.anyio

TOKENS = ["The", " capital", " of", " France", " is", " Paris", "."]
FAST_RETRY = RetryPolicy(max_retries=2, backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(Script(tokens=TOKENS)) as running:
        yield running


@pytest.fixture
def fake(server: FakeOpenAIServer) -> FakeOpenAIServer:
    """The shared server with a fresh default script."""
    server.script = Script(tokens=TOKENS)
    return server


def make(server: FakeOpenAIServer, **options: object) -> HTTPModel:
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("settings", GomlSettings(_env_file=None))
    return HTTPModel(server.base_url, "fake-model", **options)  # type: ignore[arg-type]


def posts(server: FakeOpenAIServer, since: int) -> list[dict[str, object]]:
    return [r.json for r in server.requests[since:] if r.method == "POST" and r.json is not None]


# -- the happy path -------------------------------------------------------------------------------


async def test_chat_streams_every_token_with_server_metrics(fake: FakeOpenAIServer) -> None:
    before = len(fake.requests)
    async with make(fake) as model:
        stream = model.chat([{"role": "user", "content": "What is the capital of France?"}])
        texts = [token.text async for token in stream]
    assert texts == TOKENS
    assert stream.finish_reason == "stop"
    assert stream.metrics is not None
    assert stream.metrics.prompt_tokens == 6  # the server's count, not ours
    assert stream.metrics.generated_tokens == len(TOKENS)
    assert stream.metrics.time_to_first_token > 0
    [body] = posts(fake, before)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "fake-model"
    assert fake.requests[before].path == "/v1/chat/completions"


async def test_generate_uses_the_completions_endpoint(fake: FakeOpenAIServer) -> None:
    before = len(fake.requests)
    async with make(fake) as model:
        result = await model.generate("The capital of France is").collect()
    assert result.text == "".join(TOKENS)
    assert fake.requests[before].path == "/v1/completions"
    assert posts(fake, before)[0]["prompt"] == "The capital of France is"


async def test_every_sampling_field_and_extra_body_reach_the_server(fake: FakeOpenAIServer) -> None:
    before = len(fake.requests)
    async with make(fake, extra_body={"cache_prompt": True}) as model:
        await model.chat(
            [{"role": "user", "content": "hi"}],
            max_tokens=5,
            temperature=0.5,
            top_k=40,
            top_p=0.9,
            repeat_penalty=1.1,
            stop_sequences=["\n\n"],
            seed=3,
            model="other-model",
            extra_body={"n_probs": 0},
        ).collect()
    body = posts(fake, before)[0]
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_k", "top_p")} == {
        "max_tokens": 5,
        "temperature": 0.5,
        "top_k": 40,
        "top_p": 0.9,
    }
    assert (body["repeat_penalty"], body["stop"], body["seed"]) == (1.1, ["\n\n"], 3)
    assert (body["model"], body["cache_prompt"], body["n_probs"]) == ("other-model", True, 0)


async def test_max_tokens_gives_length(fake: FakeOpenAIServer) -> None:
    async with make(fake) as model:
        result = await model.chat([{"role": "user", "content": "x"}], max_tokens=3).collect()
    assert result.text == "The capital of"
    assert result.finish_reason == "length"


async def test_stop_tokens_are_refused_with_a_clear_error(fake: FakeOpenAIServer) -> None:
    async with make(fake) as model:
        with pytest.raises(NotSupported, match="stop_sequences"):
            await model.generate("x", stop_tokens=[2]).collect()


# -- the SSE stream, however it is cut ------------------------------------------------------------

UNICODE = ["é", "漢字", "🙂", " ok", "\n", "naïve"]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
@pytest.mark.parametrize("line_ending", ["\n", "\r\n"])
async def test_split_chunks_and_line_endings(
    fake: FakeOpenAIServer, chunk_size: int, line_ending: str
) -> None:
    fake.script = Script(tokens=UNICODE, chunk_size=chunk_size, line_ending=line_ending)
    async with make(fake) as model:
        result = await model.chat([{"role": "user", "content": "x"}]).collect()
    assert result.text == "".join(UNICODE)
    assert result.metrics is not None
    assert result.metrics.generated_tokens == len(UNICODE)


async def test_keepalive_comments_and_multiline_data(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, keepalive_every=1, multiline_data=True, chunk_size=5)
    async with make(fake) as model:
        assert (await model.chat([{"role": "user", "content": "x"}]).collect()).text == "".join(
            TOKENS
        )


# -- faults before the first token: retried -------------------------------------------------------


async def test_503_while_loading_then_200_is_retried(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, statuses=[503, 503], retry_after="0.2")
    before = len(fake.requests)
    started = time.monotonic()
    async with make(fake) as model:
        result = await model.chat([{"role": "user", "content": "x"}]).collect()
    assert result.text == "".join(TOKENS)
    assert len(posts(fake, before)) == 3
    assert time.monotonic() - started >= 0.4  # Retry-After was honoured twice


async def test_429_with_retry_after(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, statuses=[429], retry_after="0.1")
    async with make(fake) as model:
        assert (await model.generate("x").collect()).text == "".join(TOKENS)


async def test_retry_after_is_capped(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, statuses=[503], retry_after="120")
    policy = RetryPolicy(max_retries=1, retry_after_cap=0.1)
    started = time.monotonic()
    async with make(fake, retry=policy) as model:
        assert (await model.generate("x").collect()).text == "".join(TOKENS)
    assert time.monotonic() - started < 5


async def test_retries_run_out(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, statuses=[503, 503, 503, 503])
    before = len(fake.requests)
    async with make(fake) as model:
        with pytest.raises(APIStatusError, match="503") as caught:
            await model.generate("x").collect()
    assert caught.value.status_code == 503
    assert "error" in caught.value.body
    assert len(posts(fake, before)) == 3  # the first try and max_retries=2 more


async def test_client_errors_are_not_retried(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, statuses=[400])
    before = len(fake.requests)
    async with make(fake) as model:
        with pytest.raises(APIStatusError) as caught:
            await model.generate("x").collect()
    assert caught.value.status_code == 400
    assert len(posts(fake, before)) == 1


async def test_a_disconnect_before_the_first_token_is_retried_then_reported(
    fake: FakeOpenAIServer,
) -> None:
    fake.script = Script(tokens=TOKENS, disconnect_after=0)
    before = len(fake.requests)
    async with make(fake) as model:
        with pytest.raises(APIConnectionError, match="after 3 attempt"):
            await model.generate("x").collect()
    assert len(posts(fake, before)) == 3


async def test_connection_refused_is_an_api_connection_error() -> None:
    with anyio.fail_after(10):
        async with HTTPModel("http://127.0.0.1:9/v1", retry=FAST_RETRY) as model:
            with pytest.raises(APIConnectionError, match=r"127\.0\.0\.1:9"):
                await model.generate("x").collect()


# -- faults after the first token: never replayed -------------------------------------------------


async def test_a_disconnect_mid_stream_keeps_the_partial_text(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, disconnect_after=3)
    before = len(fake.requests)
    async with make(fake) as model:
        seen: list[str] = []
        with pytest.raises(StreamInterrupted, match="after 3 token") as caught:
            async for token in model.chat([{"role": "user", "content": "x"}]):
                seen.append(token.text)
    assert seen == TOKENS[:3]
    assert caught.value.partial_text == "The capital of"
    assert caught.value.tokens_generated == 3
    assert len(posts(fake, before)) == 1  # never replayed


async def test_malformed_json_mid_stream(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, malformed_after=2)
    async with make(fake) as model:
        with pytest.raises(StreamInterrupted, match="malformed JSON") as caught:
            await model.generate("x").collect()
    assert caught.value.partial_text == "The capital"


async def test_malformed_json_before_any_token(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, malformed_after=0)
    async with make(fake) as model:
        with pytest.raises(GenerationError, match="malformed JSON") as caught:
            await model.generate("x").collect()
    assert not isinstance(caught.value, StreamInterrupted)


async def test_an_error_event_mid_stream(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, error_after=4)
    async with make(fake) as model:
        with pytest.raises(StreamInterrupted, match="boom") as caught:
            await model.generate("x").collect()
    assert caught.value.partial_text == "The capital of France"
    assert isinstance(caught.value.__cause__, APIStatusError)


# -- deadlines ------------------------------------------------------------------------------------


async def test_idle_deadline_on_a_stall_closes_the_response(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, stall_after=2, stall_seconds=30)
    aborted = fake.streams_aborted
    async with make(fake, idle_timeout=0.3) as model:
        with pytest.raises(GenerationTimeout) as caught:
            await model.generate("x").collect()
    assert caught.value.deadline == "idle"
    assert caught.value.partial_text == "The capital"
    assert fake.wait_for(lambda: fake.streams_aborted > aborted, timeout=3)


async def test_first_token_deadline_spans_the_retries(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, statuses=[503] * 10, retry_after="1")
    policy = RetryPolicy(max_retries=10)
    started = time.monotonic()
    async with make(fake, retry=policy) as model:
        with pytest.raises(GenerationTimeout) as caught:
            await model.generate("x", first_token_timeout=0.5).collect()
    assert caught.value.deadline == "first_token"
    assert time.monotonic() - started < 3


async def test_total_deadline(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS * 10, token_delay=0.05)
    async with make(fake, total_timeout=0.5) as model:
        with pytest.raises(GenerationTimeout) as caught:
            await model.generate("x", max_tokens=0).collect()
    assert caught.value.deadline == "total"
    assert 0 < caught.value.tokens_generated < 70


# -- cancellation and connections -----------------------------------------------------------------


def checked_out(model: HTTPModel) -> int:
    """Connections of the model's client that are not idle (httpcore's pools, read-only)."""
    transport = model._client()._transport
    assert isinstance(transport, ShardedTransport)
    assert transport.active == 0  # every response body was closed
    return sum(
        1
        for shard in transport.shards
        for connection in shard._pool.connections
        if not connection.is_idle()
    )


async def test_breaking_out_closes_the_response_at_once(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, token_delay=0.2)
    aborted = fake.streams_aborted
    async with make(fake) as model:
        async with model.generate("x") as stream:
            async for _token in stream:
                break
        assert stream.finish_reason == "cancelled"
        assert fake.wait_for(lambda: fake.streams_aborted > aborted, timeout=3)
        assert checked_out(model) == 0


async def test_cancelling_the_task_closes_the_response(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, token_delay=0.3)
    aborted = fake.streams_aborted
    async with make(fake) as model:
        with anyio.move_on_after(0.45):
            await model.generate("x").collect()
        assert fake.wait_for(lambda: fake.streams_aborted > aborted, timeout=3)
        assert checked_out(model) == 0
        assert model.concurrency_statistics().borrowed_tokens == 0


async def test_a_thousand_broken_streams_leave_no_connection_checked_out(
    fake: FakeOpenAIServer,
) -> None:
    fake.script = Script(tokens=["x"] * 40)
    async with make(fake, max_concurrency=8) as model:
        for _ in range(1000):
            async with model.generate("p", max_tokens=0) as stream:
                received = 0
                async for _token in stream:
                    received += 1
                    if received == 2:
                        break
        assert checked_out(model) == 0
        assert model.concurrency_statistics().borrowed_tokens == 0
        # The client still works afterwards.
        assert (await model.generate("p", max_tokens=3).collect()).text == "xxx"


async def test_the_concurrency_limit_queues_extra_streams(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=TOKENS, token_delay=0.02)
    peak = 0
    async with make(fake, max_concurrency=2) as model:

        async def one() -> None:
            await model.generate("x").collect()

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(one)
            for _ in range(40):
                await anyio.sleep(0.01)
                peak = max(peak, model.concurrency_statistics().borrowed_tokens)
        assert peak == 2


async def test_batch_generate_runs_concurrently_in_order(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=["a", "b"], token_delay=0.05)
    started = time.monotonic()
    async with make(fake) as model:
        results = await model.batch_generate([f"p{i}" for i in range(4)])
    assert [r.text for r in results] == ["ab"] * 4
    assert all(r.error is None for r in results)
    assert time.monotonic() - started < 0.4 * 4 / 2


async def test_classify_is_not_supported(fake: FakeOpenAIServer) -> None:
    async with make(fake) as model:
        with pytest.raises(NotSupported, match="cannot classify"):
            await model.classify(["x"])


# -- auth and headers -----------------------------------------------------------------------------


async def test_api_key_and_headers_are_sent_but_never_shown(fake: FakeOpenAIServer) -> None:
    before = len(fake.requests)
    secret = "sk-test-0123456789"
    async with make(fake, api_key=secret, headers={"X-Team": "eval"}) as model:
        await model.generate("x").collect()
        assert secret not in repr(model)
    headers = fake.requests[before].headers
    assert headers["authorization"] == f"Bearer {secret}"
    assert headers["x-team"] == "eval"


async def test_api_key_from_the_environment(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOML_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    before = len(fake.requests)
    async with HTTPModel(fake.base_url, retry=FAST_RETRY) as model:
        await model.generate("x").collect()
    assert fake.requests[before].headers["authorization"] == "Bearer sk-from-openai-env"


async def test_no_authorization_header_without_a_key(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOML_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = len(fake.requests)
    async with HTTPModel(fake.base_url) as model:
        await model.generate("x").collect()
    assert "authorization" not in fake.requests[before].headers


# -- the string backend and the registry ----------------------------------------------------------


async def test_http_backend_sends_genopts_through_the_chat_endpoint(
    fake: FakeOpenAIServer,
) -> None:
    before = len(fake.requests)
    async with HTTPBackend(fake.base_url, "fake-model", max_tokens=64, retry=FAST_RETRY) as backend:
        result = await backend.generate("hello", GenOpts(temperature=0.2, top_k=5))
        assert backend.name == "http"
        assert backend.base_url == fake.base_url
        assert backend.model_name == "fake-model"
    assert result.text == "".join(TOKENS)
    assert fake.requests[before].path == "/v1/chat/completions"
    body = posts(fake, before)[0]
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert (body["temperature"], body["top_k"], body["max_tokens"]) == (0.2, 5, 64)


async def test_load_model_routes_urls_to_the_http_backend(fake: FakeOpenAIServer) -> None:
    model = await load_model(fake.url, model="fake-model")
    async with model:
        assert isinstance(model, HTTPModel)
        assert model.base_url == fake.base_url
        assert (await model.generate("x").collect()).text == "".join(TOKENS)


async def test_load_model_fails_clearly_when_nothing_answers() -> None:
    with pytest.raises(ModelLoadError, match="does not answer"):
        await load_model("http://127.0.0.1:9/v1")


async def test_invalid_options_name_the_field() -> None:
    from goml_async import ConfigError

    for options, field in (
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"generate_endpoint": "edit"}, "generate_endpoint"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"idle_timeout": -1}, "idle_timeout"),
    ):
        with pytest.raises(ConfigError) as caught:
            HTTPModel("http://127.0.0.1:1/v1", **options)
        assert caught.value.field == field


async def test_one_client_per_event_loop(fake: FakeOpenAIServer) -> None:
    from goml_async import sync

    model = make(fake)
    assert (await model.generate("x").collect()).text == "".join(TOKENS)
    # The blocking facade runs on its own loop: the model opens a second client there.
    assert sync.generate(model, "x").text == "".join(TOKENS)
    assert model._clients.opened == 2
    await model.aclose()


def test_config_deadlines_default_from_the_model() -> None:
    model = HTTPModel("http://127.0.0.1:1/v1", idle_timeout=5, first_token_timeout=9)
    stream = model.generate("x")
    assert stream.config == GenerateConfig(idle_timeout=5, first_token_timeout=9)
    assert model.generate("x", idle_timeout=1).config.idle_timeout == 1
    assert isinstance(httpx.URL(model.base_url), httpx.URL)


async def test_concurrent_streams_spread_over_small_pools(fake: FakeOpenAIServer) -> None:
    fake.script = Script(tokens=["a", "b", "c"], token_delay=0.02)
    async with make(fake, max_concurrency=64) as model:
        async with anyio.create_task_group() as group:
            for _ in range(64):
                group.start_soon(lambda: model.generate("x").collect())
        transport = model._client()._transport
        assert isinstance(transport, ShardedTransport)
        sizes = [len(shard._pool.connections) for shard in transport.shards]
        assert len(sizes) == 4  # 64 connections in pools of 16
        assert all(size > 0 for size in sizes)
        assert sum(sizes) <= 64
        assert transport.active == 0


def test_shard_sizes_add_up() -> None:
    transport = ShardedTransport(100, shard_size=16)
    limits = [shard._pool._max_connections for shard in transport.shards]
    assert len(limits) == 7
    assert sum(limits) == 100
    assert max(limits) <= 16
    assert ShardedTransport(1).shards[0]._pool._max_connections == 1
