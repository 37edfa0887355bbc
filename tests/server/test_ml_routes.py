"""The /v1/ml REST routes over a Service: scripted backends for every error case, the bundled
SmolLM2 on llama.cpp for real answers, and the routes as ``goml serve`` mounts them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from model_fixtures import require

require("starlette")

from goml_async import GenOpts, GomlSettings, InferenceAdapter, Result, Service  # noqa: E402
from goml_async.registry import load_model  # noqa: E402
from goml_async.server import ServerConfig, create_app  # noqa: E402
from goml_async.server._wire import ServerError  # noqa: E402
from goml_async.server.ml_routes import (  # noqa: E402
    create_ml_app,
    ml_mount,
    parse_generate_request,
)
from goml_async.service import ChatAdapter  # noqa: E402
from goml_async.testing import ScriptedModel  # noqa: E402
from goml_async.types import MessageLike  # noqa: E402

from .helpers import Exchange, drive, wait_until  # noqa: E402

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
SYSTEM = "You are a helpful assistant."
QUESTION = "What is the capital of France?"

#: Every bad request and the status and error code it gets (with the parameter at fault).
BAD_REQUESTS: list[tuple[Any, int, str, str | None]] = [
    (b"{not json", 400, "invalid_json", None),
    ([1, 2], 400, "invalid_request", None),
    ({}, 400, "missing_field", "prompt"),
    ({"prompt": 7}, 400, "invalid_value", "prompt"),
    ({"prompt": "   "}, 400, "invalid_value", "prompt"),
    ({"prompt": "hi", "max_tokens": -1}, 400, "invalid_value", "max_tokens"),
    ({"prompt": "hi", "max_tokens": 2.5}, 400, "invalid_value", "max_tokens"),
    ({"prompt": "hi", "temperature": -0.5}, 400, "invalid_value", "temperature"),
    ({"prompt": "hi", "temperature": "hot"}, 400, "invalid_value", "temperature"),
    ({"prompt": "hi", "temperature": 10**400}, 400, "invalid_value", "temperature"),  # no 500
    ({"prompt": "hi", "backend": 3}, 400, "invalid_value", "backend"),
    ({"prompt": "hi", "max_token": 3}, 400, "unknown_field", "max_token"),
    ({"prompt": "hi", "backend": "nope"}, 404, "backend_not_found", "backend"),
]


class Unavailable:
    """A Backend whose ``available()`` is False."""

    name = "down"

    def available(self) -> bool:
        return False

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        raise AssertionError("never called")

    async def chat(self, messages: Sequence[MessageLike], opts: GenOpts | None = None) -> Result:
        raise AssertionError("never called")


def client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers
    )


async def post(http: httpx.AsyncClient, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"content-type": "application/json"}
        return await http.post("/v1/ml/generate", content=body, headers=headers)
    return await http.post("/v1/ml/generate", json=body)


def assert_error(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    expected = {504: "timeout_error", 429: "rate_limit_error"}.get(status, "server_error")
    assert error["type"] == (
        expected if status >= 500 or status == 429 else "invalid_request_error"
    )
    assert error["message"]


async def check_bad_requests(http: httpx.AsyncClient) -> None:
    for body, status, code, param in BAD_REQUESTS:
        assert_error(await post(http, body), status, code, param)
    unknown = await post(http, {"prompt": "hi", "backend": "nope"})
    assert "registered:" in unknown.json()["error"]["message"]


@pytest.fixture
async def scripted() -> AsyncIterator[Service]:
    service = Service(GomlSettings())
    service.register("echo", InferenceAdapter(ScriptedModel(["Hello", " there"]), "echo"))
    service.register("down", Unavailable())
    async with service:
        yield service


# -- scripted backends ----------------------------------------------------------------------------


def test_parse_generate_request() -> None:
    parsed = parse_generate_request(
        {"prompt": "Hi", "backend": "b", "temperature": 0, "max_tokens": 5, "system": "S"}
    )
    assert (parsed.prompt, parsed.backend, parsed.system, parsed.max_tokens) == ("Hi", "b", "S", 5)
    with pytest.raises(ServerError, match="prompt: required"):
        parse_generate_request({"backend": "b"})


async def test_status_and_backends(scripted: Service) -> None:
    async with client(create_ml_app(scripted)) as http:
        status = (await http.get("/v1/ml/status")).json()
        backends = (await http.get("/v1/ml/backends")).json()
    assert (status["ready"], status["has_judge"], status["state"]) == (True, False, "running")
    assert status["skipped_suites"] == ["content", "semantic", "standard"]
    assert backends["default"] == "echo"
    assert [(b["name"], b["available"]) for b in backends["backends"]] == [
        ("down", False),
        ("echo", True),
    ]


async def test_generate_with_scripted_backend(scripted: Service) -> None:
    async with client(create_ml_app(scripted)) as http:
        reply = await post(http, {"prompt": "Hi", "max_tokens": 1, "temperature": 0.5})
    assert reply.status_code == 200
    assert reply.json() == {
        "text": "Hello",
        "backend": "echo",
        "model": "echo",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


async def test_every_bad_request_gets_400_or_404(scripted: Service) -> None:
    async with client(create_ml_app(scripted)) as http:
        await check_bad_requests(http)


async def test_503_when_the_backend_or_the_service_cannot_serve(scripted: Service) -> None:
    app = create_ml_app(scripted)
    async with client(app) as http:
        down = await post(http, {"prompt": "hi", "backend": "down"})
        assert_error(down, 503, "backend_unavailable", None)
        await scripted.aclose()
        assert_error(await post(http, {"prompt": "hi"}), 503, "service_unavailable", None)
        assert (await http.get("/v1/ml/status")).json()["ready"] is False

    fresh = Service(GomlSettings())
    fresh.register("echo", ScriptedModel(["x"]))
    async with client(create_ml_app(fresh)) as http:
        not_started = await post(http, {"prompt": "hi"})
    assert_error(not_started, 503, "service_unavailable", None)
    assert "not started" in not_started.json()["error"]["message"]

    async with Service(GomlSettings(default_backend="gone")) as empty:
        empty.register("other", ScriptedModel(["x"]))
        async with client(create_ml_app(empty)) as http:
            no_default = await post(http, {"prompt": "hi"})
    assert_error(no_default, 503, "no_default_backend", None)


async def test_limits_auth_and_unknown_routes(scripted: Service) -> None:
    config = ServerConfig(api_key="secret", max_tokens=1, max_body_bytes=64)
    app = create_ml_app(scripted, config)
    async with client(app) as http:
        assert_error(await http.get("/v1/ml/status"), 401, "invalid_api_key", None)
    async with client(app, authorization="Bearer secret") as http:
        capped = await post(http, {"prompt": "Hi", "max_tokens": 50})
        assert capped.json()["text"] == "Hello"
        huge = await post(http, {"prompt": "x" * 100})
        assert_error(huge, 413, "request_too_large", None)
        assert_error(await http.get("/v1/ml/nothing"), 404, "not_found", None)
        assert_error(await http.get("/v1/ml/generate"), 405, "method_not_allowed", None)


async def test_timeout_gets_504() -> None:
    service = Service(GomlSettings())
    service.register("slow", ScriptedModel(["a", "b"], delay=5.0))
    async with service, client(create_ml_app(service, ServerConfig(timeout=0.05))) as http:
        assert_error(await post(http, {"prompt": "hi"}), 504, "timeout", None)


class Started(InferenceAdapter):
    """An adapter that says when a generation has started."""

    def __init__(self, model: ScriptedModel) -> None:
        super().__init__(model, "slow")
        self.started = anyio.Event()

    async def generate(self, prompt: str, opts: GenOpts | None = None) -> Result:
        self.started.set()
        return await super().generate(prompt, opts)


async def test_generate_shares_the_servers_concurrency_cap_and_drain() -> None:
    """Under ``goml serve`` the /v1/ml routes count against the completions' cap (429 both
    ways) and its shutdown (503)."""
    slow = ScriptedModel(["a"] * 20, delay=0.02)
    backend = Started(slow)
    service = Service(GomlSettings())
    service.register("slow", backend)
    app = create_app(
        slow,
        ServerConfig(max_concurrency=1, max_queue=0),
        routes=lambda app: [ml_mount(service, admit=app.admit)],
    )
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    async with service, client(app) as http:
        async with app.admit():  # the one slot is taken (as by a completion in progress)
            busy = await post(http, {"prompt": "hi"})
            assert_error(busy, 429, "server_busy", None)
            assert busy.headers["Retry-After"]
        assert app.active_requests == 0

        answers: list[httpx.Response] = []

        async def generate() -> None:
            answers.append(await post(http, {"prompt": "hi"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(generate)
            await backend.started.wait()
            assert app.active_requests == 1
            second = await http.post("/v1/chat/completions", json=chat)
            assert second.status_code == 429, second.text
        assert answers[0].status_code == 200 and answers[0].json()["text"] == "a" * 20
        assert app.active_requests == 0

        app.start_shutdown()
        assert_error(await post(http, {"prompt": "hi"}), 503, "shutting_down", None)


async def test_a_client_hanging_up_stops_its_generation() -> None:
    """A hung-up /v1/ml/generate gives its place back at once instead of generating on."""
    slow = ScriptedModel(["a"] * 1000, delay=0.01)  # 10 s if nothing stops it
    service = Service(GomlSettings())
    service.register("slow", ChatAdapter(slow, "slow"), default=True)
    app = create_app(
        slow,
        ServerConfig(max_concurrency=1),
        routes=lambda app: [ml_mount(service, admit=app.admit, stats=app.stats)],
    )
    gone = anyio.Event()
    seen: list[Exchange] = []

    async def hang_up_later() -> None:
        seen.append(await drive(app, "/v1/ml/generate", {"prompt": "hi"}, gone=gone))

    async with service, anyio.create_task_group() as group:
        group.start_soon(hang_up_later)
        await wait_until(lambda: app.active_requests == 1 and slow.calls != [])
        gone.set()
        await wait_until(lambda: app.active_requests == 0, 1.0)
    assert seen[0].status in (0, 499)  # nobody reads the reply
    health = app.health()
    assert (health["client_disconnects_total"], health["completed_total"]) == (1, 0)
    assert health["requests_total"] == 1


# -- the bundled model ----------------------------------------------------------------------------


@pytest.fixture
async def smollm2(bundled_gguf: Path) -> AsyncIterator[Service]:
    """A Service whose default backend is the bundled SmolLM2 on llama.cpp (owned)."""
    model = await load_model(str(bundled_gguf), context_len=2048)
    service = Service(GomlSettings())
    service.register("smollm2", ChatAdapter(model, "smollm2"), own=True)
    async with service:
        yield service


@pytest.mark.slow
async def test_real_model_routes(smollm2: Service) -> None:
    async with client(create_ml_app(smollm2)) as http:
        status = (await http.get("/v1/ml/status")).json()
        assert status["ready"] is True and status["has_judge"] is False
        assert status["backends"][0]["name"] == "smollm2"
        backends = (await http.get("/v1/ml/backends")).json()
        assert backends == {
            "backends": [
                {"name": "smollm2", "available": True, "default": True, "owned": True, "model": ""}
            ],
            "default": "smollm2",
        }
        reply = await post(
            http,
            {"prompt": QUESTION, "system": SYSTEM, "temperature": 0, "max_tokens": 12},
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert "Paris" in body["text"]
        assert (body["backend"], body["model"], body["finish_reason"]) == (
            "smollm2",
            "smollm2",
            "stop",
        )
        assert body["usage"]["completion_tokens"] > 0
        plain = await post(http, {"prompt": "Say hello.", "backend": "smollm2", "max_tokens": 4})
        assert plain.status_code == 200 and plain.json()["text"].strip()
        await check_bad_requests(http)
        await smollm2.aclose()
        assert_error(await post(http, {"prompt": QUESTION}), 503, "service_unavailable", None)


@pytest.mark.slow
def test_goml_serve_mounts_the_ml_routes(bundled_gguf: Path) -> None:
    """``goml serve`` makes the served model a Service backend and mounts /v1/ml."""
    command = [sys.executable, "-m", "goml_async", "serve", "--model", str(bundled_gguf)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GOML_")}
    process = subprocess.Popen(
        [*command, "--port", "0", "--context-len", "2048"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**environ, "NO_PROXY": "127.0.0.1"},
    )
    try:
        assert process.stdout is not None
        while not (found := re.search(r"listening on (http://\S+)", process.stdout.readline())):
            assert process.poll() is None, "goml serve exited"
        url = found.group(1)
        name = bundled_gguf.stem
        status = httpx.get(f"{url}/v1/ml/status", timeout=30).json()
        assert status["ready"] is True
        assert status["backends"][0]["name"] == name
        body = {"prompt": QUESTION, "system": SYSTEM, "max_tokens": 12}
        reply = httpx.post(f"{url}/v1/ml/generate", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert "Paris" in reply.json()["text"] and reply.json()["backend"] == name
        missing = httpx.post(f"{url}/v1/ml/generate", json={"prompt": "x", "backend": "no"})
        assert missing.status_code == 404
        assert json.loads(missing.text)["error"]["code"] == "backend_not_found"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
