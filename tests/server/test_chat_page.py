"""The chat page at ``/``: headless Chromium against the real bundled model behind ``create_app``.

The server runs in-process (uvicorn on a free loopback port) on the test's event loop, so the
test can see the TokenStreams the page's requests open. Chromium is Debian's (``chromium``), not
a browser downloaded by playwright.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from model_fixtures import _missing, require

from goml_async.registry import load_default_model
from goml_async.stream import TokenStream

from .helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUESTION = "What is the capital of France?"
STORY = "Write a long story about a dragon who learns to bake bread."
API_KEY = "test-key"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """playwright's async API runs on asyncio only."""
    return "asyncio"


@dataclass
class Served:
    """The running servers and every TokenStream their model opened.

    ``url`` serves the model openly; ``locked_url`` serves the same model with an API key.
    """

    url: str = ""
    locked_url: str = ""
    streams: list[TokenStream] = field(default_factory=list)


@pytest.fixture(scope="module")
async def served(anyio_backend: str, bundled_gguf: Path) -> AsyncIterator[Served]:
    """``create_app`` over the bundled model, served by uvicorn on 127.0.0.1 (free ports)."""
    require("starlette")
    uvicorn = require("uvicorn")
    from goml_async.server import create_app

    model = await load_default_model()
    served = Served()
    open_chat = model.chat

    def recording_chat(*args: Any, **kwargs: Any) -> TokenStream:
        stream = open_chat(*args, **kwargs)
        served.streams.append(stream)
        return stream

    model.chat = recording_chat  # type: ignore[method-assign]
    servers = [
        uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        for app in (create_app(model), create_app(model, api_key=API_KEY))
    ]
    try:
        async with anyio.create_task_group() as group:
            for server in servers:
                group.start_soon(server.serve)
            await wait_until(lambda: all(server.started for server in servers), 30)
            served.url, served.locked_url = (
                f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
                for server in servers
            )
            try:
                yield served
            finally:
                for server in servers:
                    server.should_exit = True
    finally:
        await model.aclose()


@pytest.fixture(scope="module")
async def browser(anyio_backend: str) -> AsyncIterator[Any]:
    """Headless Debian Chromium, driven by playwright."""
    require("playwright")
    executable = shutil.which("chromium")
    if executable is None:
        _missing("chromium is not installed; run scripts/setup (it installs Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Page:
    """A fresh page on the chat page, with every URL it requested."""

    page: Any
    requested: list[str]


@pytest.fixture
async def chat(browser: Any, served: Served) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(15_000)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(served.url)
    try:
        yield Page(page, requested)
    finally:
        await context.close()
    assert errors == [], errors


def _expect(locator: Any) -> Any:
    from playwright.async_api import expect

    return expect(locator)


async def _settings(page: Any, *, temperature: str, max_tokens: str) -> None:
    if await page.locator("#settings").get_attribute("open") is None:
        await page.get_by_text("Settings").click()
    await page.get_by_label("Temperature").fill(temperature)
    await page.get_by_label("Max tokens per reply").fill(max_tokens)


async def _ask(page: Any, question: str) -> Any:
    await page.get_by_label("Message").fill(question)
    await page.get_by_role("button", name="Send").click()
    return page.locator("li.message.assistant").last


def _only_loopback(urls: list[str]) -> None:
    """Every request went to a loopback server (the page loads nothing from anywhere else)."""
    assert urls
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme == "data":
            continue
        assert parts.scheme == "http", f"the page requested {url}"
        assert parts.hostname == "127.0.0.1", f"the page requested {url}"


async def test_the_page_chats_with_the_bundled_model(chat: Page, served: Served) -> None:
    page = chat.page
    await _expect(page.get_by_role("status")).to_contain_text("Model: ")
    await _settings(page, temperature="0", max_tokens="48")
    async with page.expect_request("**/v1/chat/completions") as sent:
        answer = await _ask(page, QUESTION)
    body = json.loads((await sent.value).post_data)
    assert body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": QUESTION},
    ]
    assert (body["stream"], body["temperature"], body["max_tokens"]) == (True, 0, 48)
    await _expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    assert "Paris" in await answer.locator(".text").inner_text()
    user = page.locator("li.message.user")
    await _expect(user).to_have_count(1)
    await _expect(user.locator(".text")).to_have_text(QUESTION)
    await _expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # The next request carries the conversation, and "New chat" clears it.
    async with page.expect_request("**/v1/chat/completions") as sent:
        answer = await _ask(page, "And of Italy?")
    roles = [m["role"] for m in json.loads((await sent.value).post_data)["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    await _expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    await page.get_by_role("button", name="New chat").click()
    await _expect(page.locator("li.message")).to_have_count(0)

    _only_loopback(chat.requested)
    paths = {urlsplit(url).path for url in chat.requested}
    assert {"/", "/static/chat.js", "/static/chat.css", "/healthz"} <= paths


async def test_the_stop_button_stops_the_generation(chat: Page, served: Served) -> None:
    page = chat.page
    await _settings(page, temperature="0", max_tokens="400")
    answer = await _ask(page, STORY)
    text = answer.locator(".text")
    await page.wait_for_function(
        "() => document.querySelector('li.message.assistant:last-child .text')"
        ".textContent.length > 40",
        timeout=60_000,
    )
    stream = served.streams[-1]
    await page.get_by_role("button", name="Stop").click()
    await _expect(answer).to_have_attribute("data-state", "stopped")
    await _expect(answer.locator(".note")).to_have_text("stopped")
    # The server saw the client go and closed the stream: the model stopped generating.
    await wait_until(lambda: stream.done, 10)
    assert stream.finish_reason == "cancelled"
    assert stream.metrics is not None
    assert stream.metrics.generated_tokens < 400
    shown = await text.inner_text()
    await anyio.sleep(0.3)
    assert await text.inner_text() == shown
    assert shown.strip()
    await _expect(page.get_by_role("button", name="Send")).to_be_enabled()
    await _expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    _only_loopback(chat.requested)


async def test_the_page_shows_the_servers_error(chat: Page) -> None:
    page = chat.page
    await _settings(page, temperature="7", max_tokens="16")
    await _ask(page, QUESTION)
    alert = page.get_by_role("alert")
    await _expect(alert).to_contain_text("HTTP 400")
    await _expect(alert).to_contain_text("temperature")
    # The failed exchange is taken out and the question is given back.
    await _expect(page.locator("li.message")).to_have_count(0)
    await _expect(page.get_by_label("Message")).to_have_value(QUESTION)


async def test_the_page_asks_for_the_api_key_when_the_server_has_one(
    chat: Page, served: Served
) -> None:
    page = chat.page
    await page.goto(served.locked_url)
    key = page.get_by_label("API key")
    await _expect(key).to_be_visible()  # /healthz says a key is needed
    await _settings(page, temperature="0", max_tokens="48")
    await _ask(page, QUESTION)
    alert = page.get_by_role("alert")
    await _expect(alert).to_contain_text("HTTP 401")
    await _expect(alert).to_contain_text("API key")
    await _expect(page.locator("li.message")).to_have_count(0)

    await key.fill(API_KEY)
    async with page.expect_request("**/v1/chat/completions") as sent:
        await page.get_by_role("button", name="Send").click()  # the question was given back
    assert (await sent.value).headers["authorization"] == f"Bearer {API_KEY}"
    answer = page.locator("li.message.assistant").last
    await _expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    assert "Paris" in await answer.locator(".text").inner_text()
    await _expect(alert).to_be_hidden()
    _only_loopback(chat.requested)


async def test_model_output_is_rendered_as_text(chat: Page) -> None:
    page = chat.page
    tokens = ["<img src=x onerror=\"document.title='owned'\">", "<b>bold</b>", " & done"]
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": token}}]} for token in tokens]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"

    async def fake_server(route: Any) -> None:
        await route.fulfill(status=200, content_type="text/event-stream", body=body)

    await page.route("**/v1/chat/completions", fake_server)
    answer = await _ask(page, "<i>hello</i>")
    await _expect(answer).to_have_attribute("data-state", "done")
    await _expect(answer.locator(".text")).to_have_text("".join(tokens))
    await _expect(page.locator("li.message.user .text")).to_have_text("<i>hello</i>")
    await _expect(page.locator("#log img, #log b, #log i")).to_have_count(0)
    assert await page.title() == "goml chat"


_SPLIT_CHECK = """
async () => {
  const { SSEParser, readSSE } = await import("./static/sse.js");
  const text = 'data: {"a":1}\\r\\n\\r\\n: keep-alive\\n\\ndata: {"b":"x\\u00e9y"}\\n\\n'
    + 'data:line1\\ndata: line2\\r\\rdata: [DONE]\\n\\n';
  const parse = (pieces) => {
    const out = [];
    const parser = new SSEParser((data) => out.push(data));
    for (const piece of pieces) parser.feed(piece);
    parser.end();
    return JSON.stringify(out);
  };
  const whole = parse([text]);
  const failures = [];
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= text.length; j++) {
      const got = parse([text.slice(0, i), text.slice(i, j), text.slice(j)]);
      if (got !== whole) failures.push([i, j, got]);
    }
  }
  // One byte per network chunk: lines and UTF-8 characters are split everywhere.
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream({
    start(controller) {
      for (const byte of bytes) controller.enqueue(new Uint8Array([byte]));
      controller.close();
    },
  });
  const events = [];
  await readSSE(body, (data) => events.push(data));
  return { whole: JSON.parse(whole), failures: failures.slice(0, 3), bytes: events };
}
"""


async def test_sse_parsing_survives_chunks_split_anywhere(chat: Page) -> None:
    result = await chat.page.evaluate(_SPLIT_CHECK)
    expected = ['{"a":1}', '{"b":"xéy"}', "line1\nline2", "[DONE]"]
    assert result == {"whole": expected, "failures": [], "bytes": expected}
