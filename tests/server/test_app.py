"""The ASGI app over a ScriptedModel, in-process, on asyncio and trio.

Requests go through httpx's ASGITransport (which buffers each response) or, where a client must
leave mid-stream, through ``helpers.drive``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from goml_async.backends.http import HTTPModel
from goml_async.errors import ConfigError
from goml_async.model import BaseTextModel
from goml_async.server import ServerConfig, create_app
from goml_async.server.app import ServerApp
from goml_async.stream import StreamContext
from goml_async.testing import ScriptedModel
from goml_async.types import Message, Token

from .helpers import USER, chunk_text, drive, sse_events, sse_payloads, wait_until

pytestmark = pytest.mark.anyio

REPLY = ["Hello", ",", " world", "!"]


def client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers
    )


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": [USER], **fields}


async def post(app: ServerApp, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    async with client(app) as http:
        return await http.post(path, json=body)


async def health(app: ServerApp) -> dict[str, Any]:
    async with client(app) as http:
        reply: dict[str, Any] = (await http.get("/healthz")).json()
    return reply


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


# -- replies --------------------------------------------------------------------------------------


async def test_a_plain_chat_reply_with_usage() -> None:
    model = ScriptedModel(REPLY)
    response = await post(create_app(model, model_name="m"), chat(model="m"))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "m"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world!"}
    assert body["choices"][0]["finish_reason"] == "stop"
    # ScriptedModel reports the prompt's words and the tokens it produced.
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


async def test_a_plain_completion() -> None:
    model = ScriptedModel(REPLY)
    response = await post(create_app(model), {"prompt": "Once upon"}, "/v1/completions")
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Hello, world!"
    assert model.calls[0][0] == "Once upon"


async def test_a_streamed_chat_is_framed_as_openai_does() -> None:
    app = create_app(ScriptedModel(REPLY), model_name="m")
    body = chat(stream=True, stream_options={"include_usage": True})
    async with client(app) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert all(block.startswith(b"data: ") for block in response.content.split(b"\n\n")[:-1])
    payloads = sse_payloads(response.content)
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunk_text(payloads) == "Hello, world!"
    assert payloads[-3]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-2]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert payloads[-1] == "[DONE]"


async def test_streamed_and_plain_usage_agree() -> None:
    app = create_app(ScriptedModel(REPLY))
    plain = (await post(app, chat())).json()["usage"]
    streamed = sse_payloads(
        (await post(app, chat(stream=True, stream_options={"include_usage": True}))).content
    )[-2]["usage"]
    assert plain == streamed


async def test_a_streamed_completion() -> None:
    app = create_app(ScriptedModel(REPLY))
    response = await post(app, {"prompt": "x", "stream": True}, "/v1/completions")
    payloads = sse_payloads(response.content)
    assert {p["object"] for p in payloads[:-1]} == {"text_completion"}
    assert chunk_text(payloads) == "Hello, world!"
    assert "usage" not in payloads[-2]


async def test_the_http_backend_reads_the_app() -> None:
    model = ScriptedModel(REPLY)
    transport = httpx.ASGITransport(app=create_app(model, model_name="m"))
    async with HTTPModel("http://localhost/v1", "m", transport=transport, max_retries=0) as remote:
        chatted = await remote.chat([USER], max_tokens=3).collect()
        generated = await remote.generate("Once upon", temperature=0).collect()
    assert (chatted.text, chatted.finish_reason) == ("Hello, world", "length")
    assert chatted.metrics is not None and chatted.metrics.generated_tokens == 3
    assert generated.text == "Hello, world!"


async def test_sampling_fields_reach_the_model() -> None:
    model = ScriptedModel(REPLY)
    body = chat(temperature=0.7, top_p=0.9, top_k=20, seed=3, stop=["zzz"], max_tokens=9)
    await post(create_app(model), body)
    config = model.calls[0][1]
    assert (config.temperature, config.top_p, config.top_k, config.seed) == (0.7, 0.9, 20, 3)
    assert (config.stop_sequences, config.max_tokens) == (("zzz",), 9)


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "expected"), [(None, 3), (0, 3), (2, 2), (100, 3)])
async def test_max_tokens_is_clamped_to_the_cap(requested: int | None, expected: int) -> None:
    model = ScriptedModel(REPLY)
    response = await post(create_app(model, max_tokens=3), chat(max_tokens=requested))
    assert model.calls[0][1].max_tokens == expected
    body = response.json()
    assert body["usage"]["completion_tokens"] == expected
    assert body["choices"][0]["finish_reason"] == "length"


async def test_the_timeout_becomes_the_streams_total_deadline() -> None:
    model = ScriptedModel(REPLY)
    await post(create_app(model, timeout=12.5), chat())
    assert model.calls[0][1].total_timeout == 12.5
    model = ScriptedModel(REPLY)
    await post(create_app(model, timeout=None), chat())
    assert model.calls[0][1].total_timeout is None


async def test_the_context_window_keeps_the_system_prompt() -> None:
    model = ScriptedModel(REPLY)
    turns = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"m{n}"} for n in range(7)]
    body = {"messages": [{"role": "system", "content": "be kind"}, *turns]}
    await post(create_app(model, max_context=3), body)
    sent = model.calls[0][0]
    assert sent == [
        Message("system", "be kind"),
        Message("user", "m4"),
        Message("assistant", "m5"),
        Message("user", "m6"),
    ]


async def test_every_message_is_kept_by_default() -> None:
    model = ScriptedModel(REPLY)
    turns = [{"role": "user", "content": f"m{n}"} for n in range(9)]
    await post(create_app(model), {"messages": turns})
    assert len(model.calls[0][0]) == 9


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequences_cut_the_reply(stream: bool) -> None:
    model = ScriptedModel(["Hello", " wor", "ld", "! more"])
    response = await post(create_app(model), chat(stop="world", stream=stream))
    if stream:
        payloads = sse_payloads(response.content)
        text, reason = chunk_text(payloads), payloads[-2]["choices"][0]["finish_reason"]
    else:
        choice = response.json()["choices"][0]
        text, reason = choice["message"]["content"], choice["finish_reason"]
    assert (text, reason) == ("Hello ", "stop")


async def test_without_a_queue_a_burst_gets_exactly_max_concurrency_through() -> None:
    model = ScriptedModel(REPLY, delay=0.05)
    app = create_app(model, max_concurrency=2, max_queue=0, retry_after=3)
    responses: list[httpx.Response] = []
    async with client(app) as http:

        async def one() -> None:
            responses.append(await http.post("/v1/chat/completions", json=chat()))

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(one)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 200, 429, 429, 429, 429]
    busy = [response for response in responses if response.status_code == 429]
    assert all(response.headers["retry-after"] == "3" for response in busy)
    assert error_of(busy[0])["type"] == "rate_limit_error"
    assert model.max_concurrency == 2
    stats = await health(app)
    assert (stats["rejected_busy_total"], stats["active_requests"]) == (4, 0)
    # Once the burst is over, the places are free again.
    assert (await post(app, chat())).status_code == 200


async def test_a_body_over_the_limit_gets_413_from_its_declared_length() -> None:
    model = ScriptedModel(REPLY)
    app = create_app(model, max_body_bytes=100)
    response = await post(app, chat(padding="x" * 200))
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    assert model.calls == []


async def test_a_chunked_body_is_read_only_up_to_the_limit() -> None:
    app = create_app(ScriptedModel(REPLY), max_body_bytes=1000)
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b" " * 100

    async with client(app) as http:
        response = await http.post(
            "/v1/chat/completions", content=body(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert pulled < 20


# -- errors ---------------------------------------------------------------------------------------


async def test_bad_json_is_400() -> None:
    async with client(create_app(ScriptedModel(REPLY))) as http:
        response = await http.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


async def test_a_bad_field_is_400_naming_it() -> None:
    response = await post(create_app(ScriptedModel(REPLY)), chat(temperature=-1))
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["type"]) == ("temperature", "invalid_request_error")
    assert "temperature" in error["message"]


async def test_a_field_the_model_refuses_is_400_naming_it() -> None:
    response = await post(create_app(ScriptedModel(REPLY)), chat(stop=["x"] * 16, seed=-1))
    assert response.status_code == 400
    assert error_of(response)["param"] == "seed"


@pytest.mark.parametrize("model_name", ["m", "", None])
async def test_the_served_model_an_empty_or_no_name_are_accepted(model_name: str | None) -> None:
    body = chat() if model_name is None else chat(model=model_name)
    assert (await post(create_app(ScriptedModel(REPLY), model_name="m"), body)).status_code == 200


async def test_an_unknown_model_is_404() -> None:
    response = await post(create_app(ScriptedModel(REPLY), model_name="m"), chat(model="gpt-4"))
    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "'m'" in error["message"]


async def test_unknown_paths_and_methods_are_404_and_405_in_openais_shape() -> None:
    async with client(create_app(ScriptedModel(REPLY))) as http:
        missing = await http.get("/v1/embeddings")
        wrong = await http.get("/v1/chat/completions")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"


async def test_a_failure_before_the_first_token_is_500() -> None:
    app = create_app(ScriptedModel(REPLY, fail_after=0))
    response = await post(app, chat())
    assert response.status_code == 500
    error = error_of(response)
    assert (error["type"], error["code"]) == ("server_error", "generation_error")
    assert "scripted failure" in error["message"]
    assert (await health(app))["errors_total"] == 1


async def test_a_timed_out_request_is_504() -> None:
    app = create_app(ScriptedModel(REPLY, delay=0.5), timeout=0.1)
    response = await post(app, chat())
    assert response.status_code == 504
    error = error_of(response)
    assert (error["type"], error["code"]) == ("timeout_error", "timeout")
    assert "timeout of 0.1 s" in error["message"]
    assert (await health(app))["timeouts_total"] == 1


async def test_a_failure_mid_stream_is_an_error_event_and_counted() -> None:
    app = create_app(ScriptedModel(REPLY, fail_after=2))
    response = await post(app, chat(stream=True))
    assert response.status_code == 200
    payloads = sse_payloads(response.content)
    assert chunk_text(payloads[:-1]) == "Hello,"
    assert payloads[-1]["error"]["code"] == "generation_error"
    assert "[DONE]" not in payloads
    stats = await health(app)
    assert (stats["stream_errors_total"], stats["errors_total"]) == (1, 1)


async def test_a_timeout_mid_stream_is_an_error_event() -> None:
    app = create_app(ScriptedModel(REPLY, delay=0.05), timeout=0.12)
    payloads = sse_payloads((await post(app, chat(stream=True))).content)
    assert payloads[-1]["error"]["code"] == "timeout"
    assert (await health(app))["timeouts_total"] == 1


async def test_a_stream_failing_before_its_first_token_gets_a_status() -> None:
    app = create_app(ScriptedModel(REPLY, fail_after=0))
    response = await post(app, chat(stream=True))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert error_of(response)["code"] == "generation_error"
    stats = await health(app)
    assert (stats["errors_total"], stats["stream_errors_total"]) == (1, 0)


async def test_a_stream_timing_out_before_its_first_token_is_504() -> None:
    app = create_app(ScriptedModel(REPLY, delay=0.5), timeout=0.1)
    response = await post(app, chat(stream=True))
    assert response.status_code == 504
    assert error_of(response)["code"] == "timeout"


async def test_an_empty_reply_is_still_a_whole_stream() -> None:
    app = create_app(ScriptedModel([]))
    payloads = sse_payloads((await post(app, chat(stream=True))).content)
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1] == "[DONE]"


class NoChatModel(BaseTextModel):
    """A model without a chat template."""

    def __init__(self) -> None:
        super().__init__(model_type="nochat")

    async def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        yield Token(0, prompt)


async def test_an_operation_the_model_lacks_is_400() -> None:
    response = await post(create_app(NoChatModel()), chat())
    assert response.status_code == 400
    assert error_of(response)["code"] == "not_supported"


# -- authentication -------------------------------------------------------------------------------


async def test_the_api_key_guards_v1_but_not_healthz() -> None:
    app = create_app(ScriptedModel(REPLY), api_key="s3cret")
    async with client(app) as http:
        anonymous = await http.post("/v1/chat/completions", json=chat())
        wrong = await http.post(
            "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer nope"}
        )
        models = await http.get("/v1/models")
        healthz = await http.get("/healthz")
    for response in (anonymous, wrong, models):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_of(response)["code"] == "invalid_api_key"
        assert "s3cret" not in response.text
    assert healthz.status_code == 200 and healthz.json()["auth_required"] is True
    async with client(app, Authorization="Bearer s3cret") as http:
        assert (await http.post("/v1/chat/completions", json=chat())).status_code == 200
        assert (await http.get("/v1/models")).status_code == 200


# -- models, health and the page ------------------------------------------------------------------


async def test_models_and_info() -> None:
    model = ScriptedModel(REPLY)
    app = create_app(model, model_name="org/m")
    async with client(app) as http:
        listing = (await http.get("/v1/models")).json()
        card = (await http.get("/v1/models/org/m")).json()
        before = (await http.get("/v1/models/org/m/info")).json()
        await http.post("/v1/chat/completions", json=chat())
        after = (await http.get("/v1/models/org/m/info")).json()
        unknown = await http.get("/v1/models/other/info")
    assert listing["object"] == "list"
    assert [entry["id"] for entry in listing["data"]] == ["org/m"]
    assert card["id"] == "org/m" and card["max_tokens"] == 4096
    assert before["architecture"] == "scripted" and before["metrics"]["generated_tokens"] == 0
    assert after["metrics"]["generated_tokens"] == 4
    assert {"decode_tokens_per_sec", "peak_memory_bytes", "vocab_size"} <= set(after)
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "model_not_found"


async def test_healthz_reports_the_model_and_the_limits() -> None:
    app = create_app(ScriptedModel(REPLY), model_name="m", max_tokens=77, max_context=5)
    stats = await health(app)
    assert stats["status"] == "ok"
    assert (stats["model"], stats["max_tokens"], stats["max_context"]) == ("m", 77, 5)
    assert stats["max_concurrency"] == 4 and stats["auth_required"] is False
    assert stats["active_requests"] == 0 and stats["uptime_seconds"] >= 0


async def test_the_app_serves_as_many_at_once_as_the_model_decodes_together() -> None:
    model = ScriptedModel(REPLY)
    model.batch_concurrency = 6  # its parallel_slots
    assert (await health(create_app(model)))["max_concurrency"] == 6
    assert (await health(create_app(model, max_concurrency=2)))["max_concurrency"] == 2
    # A config given whole is taken as it is.
    assert (await health(create_app(model, ServerConfig())))["max_concurrency"] == 4


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<!doctype html><p>hi</p>")
    (tmp_path / "app.js").write_text("console.log(1)")
    return tmp_path


async def test_the_page_and_static_files_are_served(static_dir: Path) -> None:
    app = create_app(ScriptedModel(REPLY), static_dir=static_dir)
    async with client(app) as http:
        page = await http.get("/")
        script = await http.get("/static/app.js")
        missing = await http.get("/static/nope.css")
    assert page.status_code == 200 and page.text == "<!doctype html><p>hi</p>"
    assert page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200 and script.text == "console.log(1)"
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"


async def test_the_packaged_page_is_served() -> None:
    async with client(create_app(ScriptedModel(REPLY))) as http:
        page = await http.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()


async def test_a_missing_page_is_404(tmp_path: Path) -> None:
    async with client(create_app(ScriptedModel(REPLY), static_dir=tmp_path)) as http:
        assert (await http.get("/")).status_code == 404


# -- disconnects and shutdown ---------------------------------------------------------------------


LONG = ["tok"] * 1000


async def test_a_client_leaving_mid_stream_stops_the_model() -> None:
    model = ScriptedModel(LONG, delay=0.005)
    app = create_app(model)
    with anyio.fail_after(5):
        seen = await drive(
            app, "/v1/chat/completions", chat(stream=True), disconnect_when=lambda x: x.chunks >= 4
        )
    assert seen.status == 200
    assert model.metrics().generated_tokens < 20  # the scripted source was closed
    stats = await health(app)
    assert (stats["client_disconnects_total"], stats["active_requests"]) == (1, 0)
    assert stats["errors_total"] == 0


async def test_a_client_leaving_a_plain_request_stops_the_model() -> None:
    model = ScriptedModel(LONG, delay=0.005)
    app = create_app(model)

    async def leave_soon() -> None:
        await wait_until(lambda: len(model.calls) == 1)  # generating: hang up now
        gone.set()

    gone = anyio.Event()
    raw = json.dumps(chat()).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    messages: list[Mapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": headers,
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
    }
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(leave_soon)
            await app(scope, receive, send)
    assert messages == []  # nobody to answer
    assert model.metrics().generated_tokens < 50
    assert (await health(app))["client_disconnects_total"] == 1


async def test_a_stream_stopped_at_shutdown_before_its_first_token_gets_503() -> None:
    model = ScriptedModel(REPLY, delay=5.0)
    app = create_app(model)
    results: list[Any] = []
    async with anyio.create_task_group() as group:

        async def request() -> None:
            results.append(await drive(app, "/v1/chat/completions", chat(stream=True)))

        group.start_soon(request)
        await wait_until(lambda: len(model.calls) == 1)  # the model is working on it
        with anyio.fail_after(5):
            assert await app.drain(0.05) == 1
    assert results[0].status == 503
    assert json.loads(results[0].body)["error"]["code"] == "shutting_down"


async def test_shutdown_lets_a_short_stream_finish() -> None:
    model = ScriptedModel(REPLY, delay=0.05)
    app = create_app(model)
    async with anyio.create_task_group() as group:
        results: list[Any] = []

        async def request() -> None:
            results.append(await drive(app, "/v1/chat/completions", chat(stream=True)))

        group.start_soon(request)
        await wait_until(lambda: len(model.calls) == 1)
        assert app.active_requests == 1
        assert await app.drain(5.0) == 0
    assert results[0].body.endswith(b"data: [DONE]\n\n")


async def test_shutdown_stops_what_outlives_the_grace_period() -> None:
    model = ScriptedModel(LONG, delay=0.01)
    app = create_app(model)
    results: list[Any] = []
    async with anyio.create_task_group() as group:

        async def request(body: dict[str, Any]) -> None:
            results.append(await drive(app, "/v1/chat/completions", body))

        group.start_soon(request, chat(stream=True))
        group.start_soon(request, chat())
        await wait_until(lambda: len(model.calls) == 2)
        assert app.active_requests == 2
        with anyio.fail_after(5):
            assert await app.drain(0.1) == 2
    streamed = next(r for r in results if r.status == 200)
    plain = next(r for r in results if r.status != 200)
    last = sse_events(streamed.body)[-1].json()
    assert last["error"]["code"] == "shutting_down"
    assert plain.status == 503 and json.loads(plain.body)["error"]["code"] == "shutting_down"
    # New requests are refused, and /healthz says why.
    response = await post(app, chat())
    assert response.status_code == 503 and error_of(response)["code"] == "shutting_down"
    async with client(app) as http:
        healthz = await http.get("/healthz")
    assert healthz.status_code == 503
    assert healthz.json()["status"] == "shutting_down"
    assert healthz.json()["stopped_at_shutdown_total"] == 2


async def test_a_second_drain_ends_the_first_ones_wait() -> None:
    model = ScriptedModel(LONG, delay=0.01)
    app = create_app(model)
    stopped: list[int] = []
    with anyio.fail_after(3):  # not the first drain's 30 s grace period
        async with anyio.create_task_group() as group:
            group.start_soon(drive, app, "/v1/chat/completions", chat(stream=True))
            await wait_until(lambda: len(model.calls) == 1)

            async def patient() -> None:
                stopped.append(await app.drain(30.0))

            group.start_soon(patient)
            await wait_until(lambda: app.shutting_down)  # the first drain waits
            stopped.append(await app.drain(0.0))
    assert sorted(stopped) == [0, 1]
    assert app.stats.stopped_at_shutdown == 1


# -- create_app -----------------------------------------------------------------------------------


def test_create_app_rejects_unknown_options_and_non_models() -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(ScriptedModel(REPLY), max_token=5)
    assert caught.value.field == "max_token"
    with pytest.raises(ConfigError):
        create_app("model")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        create_app(ScriptedModel(REPLY), config={"max_tokens": 5})  # type: ignore[arg-type]


def test_options_override_the_config() -> None:
    app = create_app(ScriptedModel(REPLY), ServerConfig(max_tokens=5, max_context=2), max_tokens=9)
    assert (app.config.max_tokens, app.config.max_context) == (9, 2)
    assert app.model_name == "scripted"
