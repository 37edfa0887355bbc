"""``response_format`` on the server, in process: the value reaches the model validated, a
malformed one is a 400 naming the field, a model that cannot enforce it is a 400 naming
``response_format``, and output that breaks it is never a 200 with the invalid text: a 422
(``schema_violation``) when not streamed, an error event and no more content when streamed.

The model is a real HTTPModel talking to a FakeOpenAIServer that ignores the schema (the
server-that-fails-open case), and ScriptedModel for exact token boundaries; the real llama
backend is tested through ``goml serve`` in test_serve_llama_structured.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from goml_async.backends.http import HTTPModel
from goml_async.server import create_app
from goml_async.server.app import ServerApp
from goml_async.structured import ResponseFormat
from goml_async.testing import FakeOpenAIServer, Script, ScriptedModel

from .helpers import chunk_text, sse_payloads

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "hi"}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}


def client(app: ServerApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


async def post(app: ServerApp, path: str = "/v1/chat/completions", **body: Any) -> httpx.Response:
    if path.endswith("chat/completions"):
        body.setdefault("messages", MESSAGES)
    else:
        body.setdefault("prompt", "Once")
    async with client(app) as http:
        return await http.post(path, json=body)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


# -- the format reaches the model -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_valid_document_is_served_and_the_model_got_the_format(
    path: str, stream: bool
) -> None:
    model = ScriptedModel(['{"name"', ': "Ann", ', '"age": 3}'])
    response = await post(create_app(model), path, stream=stream, response_format=PERSON_FORMAT)
    assert response.status_code == 200
    if stream:
        payloads = sse_payloads(response.content)
        assert payloads[-1] == "[DONE]"
        text = chunk_text(payloads)
    else:
        choice = response.json()["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
    assert text == '{"name": "Ann", "age": 3}'
    (_, config), *_ = model.calls
    assert isinstance(config.response_format, ResponseFormat)
    assert config.response_format.schema == PERSON


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "regex", "pattern": "[0-9]{3}"},
        {"type": "choice", "choices": ["yes", "no"]},
    ],
)
async def test_goml_and_openai_shapes_are_all_accepted(response_format: dict[str, Any]) -> None:
    model = ScriptedModel(["123" if response_format["type"] == "regex" else "yes"])
    if response_format["type"] == "json_object":
        model = ScriptedModel(['{"a": 1}'])
    response = await post(create_app(model), response_format=response_format)
    assert response.status_code == 200, response.text
    assert model.calls[0][1].response_format == ResponseFormat(
        response_format["type"],
        pattern=response_format.get("pattern", ""),
        choices=tuple(response_format.get("choices", ())),
    )


async def test_type_text_is_unconstrained() -> None:
    model = ScriptedModel(["free text"])
    response = await post(create_app(model), response_format={"type": "text"})
    assert response.status_code == 200
    assert model.calls[0][1].response_format is None


# -- output that breaks the format is never a 200 with it -----------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize(
    ("tokens", "says"),
    [
        (['{"name"', ': "Ann", ', '"age": ', '"old"}'], "left its json_schema 'person'"),
        (['{"name"', ': "Ann"'], "ended before a complete"),
    ],
)
async def test_a_plain_request_whose_output_breaks_the_format_is_422(
    path: str, tokens: list[str], says: str
) -> None:
    app = create_app(ScriptedModel(tokens))
    response = await post(app, path, response_format=PERSON_FORMAT)
    assert response.status_code == 422
    error = error_of(response)
    assert (error["param"], error["code"]) == ("response_format", "schema_violation")
    assert says in error["message"]
    assert app.health()["errors_by_status"] == {"422": 1}


async def test_a_stream_that_breaks_the_format_ends_with_an_error_event_and_no_more_text() -> None:
    app = create_app(ScriptedModel(['{"name"', ': "Ann", ', '"age": ', '"old"', "}"]))
    response = await post(app, stream=True, response_format=PERSON_FORMAT)
    assert response.status_code == 200  # the headers went out with the first token
    payloads = sse_payloads(response.content)
    assert chunk_text(payloads) == '{"name": "Ann", "age": '
    assert "[DONE]" not in payloads
    last = payloads[-1]
    assert (last["error"]["param"], last["error"]["code"]) == (
        "response_format",
        "schema_violation",
    )
    assert "at byte 23" in last["error"]["message"]


async def test_a_stream_that_ends_unfinished_gets_the_error_event_instead_of_done() -> None:
    app = create_app(ScriptedModel(['{"name"', ': "Ann"']))
    response = await post(app, stream=True, response_format=PERSON_FORMAT)
    payloads = sse_payloads(response.content)
    assert chunk_text(payloads) == '{"name": "Ann"'
    assert "[DONE]" not in payloads
    assert payloads[-1]["error"]["code"] == "schema_violation"
    assert not any(p.get("choices") and p["choices"][0].get("finish_reason") for p in payloads[:-1])


async def test_a_stream_whose_first_token_breaks_the_format_is_a_422_json_reply() -> None:
    response = await post(
        create_app(ScriptedModel(["Sure!", " {}"])), stream=True, response_format=PERSON_FORMAT
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert error_of(response)["code"] == "schema_violation"


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_server_that_ignores_the_schema_is_caught(
    fake: FakeOpenAIServer, stream: bool
) -> None:
    fake.script = Script(tokens=['{"name"', ': "Ann"', ', "age": ', '"old"', "}"])
    async with HTTPModel(fake.base_url) as model:
        response = await post(create_app(model), stream=stream, response_format=PERSON_FORMAT)
    # The upstream was asked for the schema in OpenAI's shape, and answered without it.
    sent = fake.requests[-1].json
    assert sent is not None and sent["response_format"]["json_schema"]["schema"] == PERSON
    if stream:
        payloads = sse_payloads(response.content)
        assert chunk_text(payloads) == '{"name": "Ann", "age": '
        assert payloads[-1]["error"]["code"] == "schema_violation"
    else:
        assert response.status_code == 422
        assert "choices" not in response.json()
        assert error_of(response)["code"] == "schema_violation"


# -- fail closed before generating ----------------------------------------------------------------


class Unconstrained(ScriptedModel):
    """A backend that declares no format it can enforce (BaseTextModel's default)."""

    response_formats = frozenset()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_model_that_cannot_enforce_the_format_is_400_naming_it(
    fake: FakeOpenAIServer, stream: bool
) -> None:
    # A real backend: OpenAI-compatible servers have no field for goml's regex.
    before = len(fake.requests)
    async with HTTPModel(fake.base_url) as model:
        response = await post(
            create_app(model), stream=stream, response_format={"type": "regex", "pattern": "a+"}
        )
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "response_format"
    assert "regex output is not supported on the http backend" in error["message"]
    assert [r for r in fake.requests[before:] if r.method == "POST"] == []

    unconstrained = Unconstrained(["{}"])
    response = await post(create_app(unconstrained), stream=stream, response_format=PERSON_FORMAT)
    assert response.status_code == 400 and error_of(response)["param"] == "response_format"
    assert unconstrained.calls == []


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ("json", "response_format"),
        ({"type": "yaml"}, "response_format.type"),
        ({"type": "json_object", "schema": {}}, "response_format.schema"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"schema": PERSON}},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": 7}}},
            "response_format.json_schema.schema.type",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": {"type": "array", "uniqueItems": True}},
            },
            "response_format.json_schema.schema.uniqueItems",
        ),
        ({"type": "regex", "pattern": ""}, "response_format.pattern"),
        ({"type": "regex", "pattern": "(unclosed"}, "response_format.pattern"),
        ({"type": "choice", "choices": ["a", 3]}, "response_format.choices[1]"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_a_malformed_response_format_is_400_naming_the_field(
    response_format: object, param: str, path: str
) -> None:
    model = ScriptedModel(["{}"])
    app = create_app(model)
    response = await post(app, path, response_format=response_format)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["param"], error["code"]) == (param, "invalid_value")
    assert error["message"].startswith(f"{param}: ")
    assert model.calls == []


async def test_tools_are_refused_by_name_where_they_cannot_be_honoured() -> None:
    model = ScriptedModel(["{}"])  # a backend without tool support
    refused: dict[str, Any] = {
        "tools": ([{"type": "function", "function": {"name": "f"}}], "not_supported"),
        "tool_choice": ("required", "invalid_value"),  # needs tools
    }
    async with client(create_app(model)) as http:
        for field, (value, code) in refused.items():
            body = {"messages": MESSAGES, field: value, "response_format": PERSON_FORMAT}
            response = await http.post("/v1/chat/completions", json=body)
            error = error_of(response)
            assert (response.status_code, error["param"]) == (400, field)
            assert error["code"] == code
            assert error["message"].startswith(f"{field}: ")
    assert model.calls == []
