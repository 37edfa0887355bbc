"""The Host, Origin and Content-Type checks: a DNS-rebinding Host, a cross-site text/plain POST
and a cross-origin fetch are refused; the server's own page, IP addresses and allowed names get
through; no CORS header is ever sent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from goml_async.server import create_app
from goml_async.server.guard import RequestGuard, host_allowed, host_name, is_json_media_type
from goml_async.server.ml_routes import create_ml_app
from goml_async.service import Service
from goml_async.settings import GomlSettings
from goml_async.testing import ScriptedModel

from .helpers import USER

CHAT = {"messages": [USER]}


def client(app: Any, base_url: str = "http://127.0.0.1:8090") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


# -- the rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8090", "localhost"),
        ("LOCALHOST", "localhost"),
        ("localhost.:80", "localhost"),
        ("127.0.0.1:8090", "127.0.0.1"),
        ("[::1]:8090", "::1"),
        ("[::1]", "::1"),
        ("Example.COM", "example.com"),
    ],
)
def test_host_names_are_read_without_port_brackets_or_case(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("name", "allowed", "ok"),
    [
        ("localhost", (), True),
        ("app.localhost", (), True),
        ("127.0.0.1", (), True),
        ("10.1.2.3", (), True),
        ("::1", (), True),
        ("rebind.evil.example", (), False),
        ("localhost.evil.example", (), False),
        ("127.0.0.1.nip.io", (), False),
        ("box.lan", ("box.lan",), True),
        ("BOX.LAN", ("box.lan.",), False),  # names are compared as host_name gives them
        ("api.example.com", ("*.example.com",), True),
        ("example.com", ("*.example.com",), False),
        ("anything.at.all", ("*",), True),
    ],
)
def test_which_hosts_are_served(name: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert host_allowed(name, allowed) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ('application/json; charset="UTF-8"', True),
        ("application/json; charset=latin-1", False),
        ("text/plain", False),
        ("text/plain; charset=utf-8", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonp", False),
        ("", False),
    ],
)
def test_only_json_bodies_are_taken(value: str, ok: bool) -> None:
    assert is_json_media_type(value) is ok


def test_same_origin_is_judged_against_the_host_header() -> None:
    guard = RequestGuard()
    json_post = [(b"content-type", b"application/json")]

    def check(origin: str, host: str = "127.0.0.1:8090") -> int | None:
        error = guard.check(
            "POST", [(b"host", host.encode()), (b"origin", origin.encode()), *json_post]
        )
        return None if error is None else error.status

    assert check("http://127.0.0.1:8090") is None
    assert check("https://localhost", host="localhost") is None  # behind a TLS proxy
    assert check("http://localhost:8090") == 403  # another name is another origin
    assert check("http://127.0.0.1:3000") == 403  # another local page
    assert check("https://evil.example") == 403
    assert check("null") == 403  # a sandboxed frame or a file:// page
    assert guard.check("GET", [(b"host", b"localhost"), (b"origin", b"https://e.x")]) is None


def test_allowed_origins() -> None:
    guard = RequestGuard(allowed_origins=["https://app.example.com/"])
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    ok = guard.check("POST", [*headers, (b"origin", b"https://app.example.com")])
    refused = guard.check("POST", [*headers, (b"origin", b"https://other.example.com")])
    assert ok is None and refused is not None and refused.code == "cross_origin"
    anyone = RequestGuard(allowed_origins=["*"])
    assert anyone.check("POST", [*headers, (b"origin", b"https://x.example")]) is None


# -- the app --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_dns_rebinding_host_is_refused_on_every_route() -> None:
    model = ScriptedModel(["hi"])
    app = create_app(model)
    async with client(app, "http://rebind.evil.example:8090") as http:
        post = await http.post("/v1/chat/completions", json=CHAT)
        models = await http.get("/v1/models")
        page = await http.get("/")
    for response in (post, models, page):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_host"
    assert "rebind.evil.example" in post.json()["error"]["message"]
    assert model.calls == []
    assert app.health()["errors_by_status"] == {"400": 3}


@pytest.mark.anyio
async def test_a_cross_site_text_plain_post_is_refused() -> None:
    model = ScriptedModel(["hi"])
    app = create_app(model)
    async with client(app) as http:
        # What a page's <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}) can send.
        response = await http.post(
            "/v1/chat/completions",
            content=b'{"messages": [{"role": "user", "content": "hi"}]}',
            headers={"content-type": "text/plain", "origin": "https://evil.example"},
        )
        no_origin = await http.post(
            "/v1/chat/completions",
            content=b'{"messages": [{"role": "user", "content": "hi"}]}',
            headers={"content-type": "text/plain"},
        )
    assert response.status_code == 403 and response.json()["error"]["code"] == "cross_origin"
    assert no_origin.status_code == 415
    assert no_origin.json()["error"]["code"] == "unsupported_media_type"
    assert model.calls == []


@pytest.mark.anyio
async def test_the_servers_own_page_and_ip_addresses_get_through() -> None:
    app = create_app(ScriptedModel(["hi"]))
    for base in ("http://127.0.0.1:8090", "http://[::1]:8090", "http://192.168.1.20:8090"):
        async with client(app, base) as http:
            own = await http.post("/v1/chat/completions", json=CHAT, headers={"origin": base})
        assert own.status_code == 200, own.text


@pytest.mark.anyio
async def test_allowed_hosts_and_any_host() -> None:
    named = create_app(ScriptedModel(["hi"]), allowed_hosts=["box.lan"])
    anyone = create_app(ScriptedModel(["hi"]), allowed_hosts=["*"])
    async with client(named, "http://box.lan:8090") as http:
        assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 200
    async with client(named, "http://other.lan:8090") as http:
        assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 400
    async with client(anyone, "http://other.lan:8090") as http:
        assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 200


@pytest.mark.anyio
async def test_no_cors_header_is_ever_sent() -> None:
    app = create_app(ScriptedModel(["hi"]))
    origin = {"origin": "https://evil.example"}
    async with client(app) as http:
        preflight = await http.request(
            "OPTIONS",
            "/v1/chat/completions",
            headers={**origin, "access-control-request-method": "POST"},
        )
        replies = [
            preflight,
            await http.get("/v1/models", headers=origin),
            await http.get("/healthz", headers=origin),
            await http.post("/v1/chat/completions", json=CHAT, headers=origin),
            await http.post("/v1/chat/completions", json=CHAT),
        ]
    assert preflight.status_code == 405
    for reply in replies:
        assert not [name for name in reply.headers if name.startswith("access-control-")]


@pytest.mark.anyio
async def test_the_standalone_ml_app_is_guarded_too() -> None:
    async with Service(GomlSettings()) as service:
        app = create_ml_app(service)
        async with client(app, "http://rebind.evil.example") as http:
            rebound = await http.get("/v1/ml/status")
        async with client(app) as http:
            plain = await http.post(
                "/v1/ml/generate",
                content=b'{"prompt": "hi"}',
                headers={"content-type": "text/plain"},
            )
            status = await http.get("/v1/ml/status")
    assert rebound.status_code == 400
    assert plain.status_code == 415
    assert status.status_code == 200
