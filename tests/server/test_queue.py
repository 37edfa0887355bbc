"""The line in front of the server's places: FIFO order, its depth, its timeout, a client that
hangs up while waiting, the shutdown, and /healthz, on asyncio and trio."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from goml_async.server import ServerConfig, create_app
from goml_async.server.admission import Admission, QueueClosed, QueueFull, QueueTimeout
from goml_async.server.app import ServerApp
from goml_async.server.ml_routes import ml_mount
from goml_async.service import ChatAdapter, Service
from goml_async.settings import GomlSettings
from goml_async.testing import ScriptedModel
from goml_async.types import Message

from .helpers import drive, wait_until

pytestmark = pytest.mark.anyio


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


def said(content: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


async def ask_for(http: httpx.AsyncClient, content: str) -> httpx.Response:
    return await http.post("/v1/chat/completions", json=said(content))


def first_words(model: ScriptedModel) -> list[str]:
    """The user message of every chat the model was asked, in the order it started them."""
    words = []
    for subject, _ in model.calls:
        assert isinstance(subject, list) and isinstance(subject[-1], Message)
        words.append(subject[-1].content)
    return words


# -- the admission queue alone --------------------------------------------------------------------


async def test_places_are_handed_on_in_arrival_order() -> None:
    admission = Admission(1, max_queue=3, timeout=None)
    order: list[int] = []
    await admission.enter()

    async def waiter(number: int) -> None:
        async with admission.place():
            order.append(number)

    async with anyio.create_task_group() as group:
        for number in range(3):
            group.start_soon(waiter, number)
            await wait_until(lambda n=number: admission.waiting == n + 1)  # type: ignore[misc]
        with pytest.raises(QueueFull):
            await admission.enter()
        admission.leave()
    assert order == [0, 1, 2]
    assert (admission.active, admission.waiting, admission.peak_waiting) == (0, 0, 3)
    assert admission.waited == 3


async def test_a_wait_past_the_timeout_is_refused_and_leaves_the_line() -> None:
    admission = Admission(1, max_queue=4, timeout=0.05)
    await admission.enter()
    with pytest.raises(QueueTimeout):
        await admission.enter()
    assert admission.waiting == 0
    admission.leave()
    await admission.enter()  # the place is free again, not given to the one that gave up
    assert admission.active == 1


async def test_a_cancelled_waiter_passes_on_a_place_it_was_just_handed() -> None:
    admission = Admission(1, max_queue=4, timeout=None)
    await admission.enter()
    got_in: list[str] = []
    async with anyio.create_task_group() as group:

        async def wait(name: str) -> None:
            async with admission.place():
                got_in.append(name)

        first = anyio.CancelScope()

        async def wait_then_give_up() -> None:
            with first:
                await wait("first")

        group.start_soon(wait_then_give_up)
        await wait_until(lambda: admission.waiting == 1)
        group.start_soon(wait, "second")
        await wait_until(lambda: admission.waiting == 2)
        # In one step: "first" is cancelled, then handed the place before it can run: it
        # must pass the place on to "second" as it gives up.
        first.cancel()
        admission.leave()
    assert got_in == ["second"]
    assert (admission.active, admission.waiting) == (0, 0)


async def test_closing_refuses_those_waiting_and_those_to_come() -> None:
    admission = Admission(1, max_queue=4, timeout=None)
    await admission.enter()
    refused: list[type[BaseException]] = []

    async def wait() -> None:
        with pytest.raises(QueueClosed) as caught:
            await admission.enter()
        refused.append(caught.type)

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        await wait_until(lambda: admission.waiting == 1)
        admission.close()
    with pytest.raises(QueueClosed):
        await admission.enter()
    assert refused == [QueueClosed]


# -- the app --------------------------------------------------------------------------------------


async def test_a_burst_past_the_cap_waits_in_line_and_is_served_in_order() -> None:
    model = ScriptedModel(["a"] * 5, delay=0.02)
    app = create_app(model, max_concurrency=1)
    statuses: list[int] = []
    async with client(app) as http, anyio.create_task_group() as group:

        async def ask(word: str) -> None:
            statuses.append((await http.post("/v1/chat/completions", json=said(word))).status_code)

        for number, word in enumerate(["first", "second", "third", "fourth"]):
            group.start_soon(ask, word)
            # The next one is sent once this one is running or waiting in line.
            await wait_until(lambda n=number: app.active_requests + app.queued_requests == n + 1)  # type: ignore[misc]
    assert statuses == [200] * 4
    assert first_words(model) == ["first", "second", "third", "fourth"]
    assert model.max_concurrency == 1
    health = app.health()
    assert (health["queued_requests"], health["peak_queued_requests"]) == (0, 3)
    assert (health["queued_total"], health["rejected_busy_total"]) == (3, 0)


async def test_past_the_line_the_answer_is_429_with_retry_after() -> None:
    app = create_app(ScriptedModel(["a"] * 50, delay=0.02), max_concurrency=1, max_queue=1)
    async with client(app) as http, anyio.create_task_group() as group:
        group.start_soon(ask_for, http, "running")
        await wait_until(lambda: app.active_requests == 1)
        group.start_soon(ask_for, http, "waiting")
        await wait_until(lambda: app.queued_requests == 1)
        refused = await http.post("/v1/chat/completions", json=said("one too many"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "server_busy")
        assert "1 waiting" in error["message"]
    assert app.health()["rejected_busy_total"] == 1


async def test_a_wait_past_the_queue_timeout_is_429() -> None:
    app = create_app(
        ScriptedModel(["a"] * 100, delay=0.02), max_concurrency=1, queue_timeout=0.1, retry_after=2
    )
    async with client(app) as http, anyio.create_task_group() as group:
        group.start_soon(ask_for, http, "running")
        await wait_until(lambda: app.active_requests == 1)
        started = anyio.current_time()
        late = await http.post("/v1/chat/completions", json=said("late"))
        waited = anyio.current_time() - started
        group.cancel_scope.cancel()
    assert late.status_code == 429 and late.headers["retry-after"] == "2"
    assert late.json()["error"]["code"] == "queue_timeout"
    assert 0.1 <= waited < 1.5
    health = app.health()
    assert (health["queue_timeouts_total"], health["queued_requests"]) == (1, 0)


async def test_a_client_hanging_up_in_line_leaves_it() -> None:
    model = ScriptedModel(["a"] * 30, delay=0.02)
    app = create_app(model, max_concurrency=1)
    gone = anyio.Event()
    async with client(app) as http, anyio.create_task_group() as group:
        group.start_soon(ask_for, http, "running")
        await wait_until(lambda: app.active_requests == 1)
        seen: list[Any] = []

        async def hang_up_in_line() -> None:
            seen.append(await drive(app, "/v1/chat/completions", said("leaves"), gone=gone))

        group.start_soon(hang_up_in_line)
        await wait_until(lambda: app.queued_requests == 1)
        gone.set()
        await wait_until(lambda: app.queued_requests == 0)
    assert seen[0].status == 0  # nobody was answered
    assert first_words(model) == ["running"]  # the one that left never reached the model
    assert app.health()["client_disconnects_total"] == 1


async def test_the_shutdown_turns_the_line_away_with_503() -> None:
    app = create_app(ScriptedModel(["a"] * 20, delay=0.02), max_concurrency=1)
    answers: dict[str, httpx.Response] = {}
    async with client(app) as http, anyio.create_task_group() as group:

        async def ask(word: str) -> None:
            answers[word] = await http.post("/v1/chat/completions", json=said(word))

        group.start_soon(ask, "running")
        await wait_until(lambda: app.active_requests == 1)
        group.start_soon(ask, "waiting")
        await wait_until(lambda: app.queued_requests == 1)
        await app.drain(5.0)
    assert answers["running"].status_code == 200
    assert answers["waiting"].status_code == 503
    assert answers["waiting"].json()["error"]["code"] == "shutting_down"


async def test_ml_generate_waits_in_the_same_line() -> None:
    model = ScriptedModel(["a"] * 10, delay=0.02)
    service = Service(GomlSettings())
    service.register("m", ChatAdapter(model, "m"), default=True)
    app: ServerApp = create_app(
        model,
        ServerConfig(max_concurrency=1),
        routes=lambda app: [ml_mount(service, admit=app.admit, stats=app.stats)],
    )
    answers: list[httpx.Response] = []
    async with service, client(app) as http, anyio.create_task_group() as group:

        async def completion() -> None:
            answers.append(await http.post("/v1/chat/completions", json=said("chat")))

        async def generate() -> None:
            answers.append(await http.post("/v1/ml/generate", json={"prompt": "ml"}))

        group.start_soon(completion)
        await wait_until(lambda: app.active_requests == 1)
        group.start_soon(generate)
        await wait_until(lambda: app.queued_requests == 1)
    assert [answer.status_code for answer in answers] == [200, 200]
    health = app.health()
    assert (health["queued_total"], health["requests_total"], health["completed_total"]) == (
        1,
        2,
        2,
    )
