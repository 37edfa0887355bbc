"""One OpenAI wire format for the server, the client and the test server, and the SSE encoder.

The properties: whatever the server's encoder writes (role, content with and without
log-probabilities, finish, usage, error, ``[DONE]``, chat and completion chunks), the client's
SSE decoder and chunk parser read back, split anywhere, with arbitrary Unicode text; the same
holds for the test server's replies, which are built by the same writers.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goml_async._openai_wire import chunks, logprobs, parse, usage
from goml_async._openai_wire.json_text import dumps
from goml_async._sse import (
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_data,
    encode_event,
)
from goml_async.backends import _openai
from goml_async.backends._http_reply import whole_reply_token
from goml_async.errors import APIStatusError, GenerationError
from goml_async.server import _logprobs as server_logprobs
from goml_async.server import _wire as server_wire
from goml_async.server.events import OpenAIEncoder, TextEncoder
from goml_async.testing import Script
from goml_async.testing import _openai_wire as fake_wire
from goml_async.types import GenerateMetrics, Token, TopLogprob

# Text as hostile as a model can make it: line breaks of every kind, SSE field names and
# JSON syntax inside it, multi-byte characters, and anything else but lone surrogates.
TEXT = st.lists(
    st.one_of(
        st.sampled_from(["\n", "\r", "\r\n", "data:", "data: [DONE]", ": ping", '"', "\\", "é"]),
        st.sampled_from(["漢", "🦀", "\u2028", "\x85", "\ufeff", "\x00", "{", ",", "event: x"]),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=6),
    ),
    max_size=5,
).map("".join)

# Log-probabilities down to -1e30, and log(0). Below -3e38 a client reads llama.cpp's log(0)
# (it writes the lowest float32), a value no model reports as a real log-probability.
LOGPROB = st.one_of(st.floats(min_value=-1e30, max_value=0.0), st.just(-math.inf))

ALTERNATIVES = st.lists(
    st.builds(TopLogprob, text=TEXT, logprob=LOGPROB, id=st.integers(0, 50_000)), max_size=4
)

METRICS = st.one_of(
    st.none(),
    st.builds(
        GenerateMetrics,
        prompt_tokens=st.integers(0, 100_000),
        generated_tokens=st.integers(0, 100_000),
        prefill_seconds=st.floats(0, 1e4),
        decode_seconds=st.floats(0, 1e4),
        prefill_tokens_per_sec=st.floats(0, 1e6),
        decode_tokens_per_sec=st.floats(0, 1e6),
    ),
)

# Every finish reason a stream may end with, and some a backend might invent.
FINISH = st.sampled_from([None, "stop", "length", "eos", "stop_sequence", "cancelled"])


def pieces(raw: bytes, cuts: Iterable[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(edges)]


def cut_anywhere(data: st.DataObject, raw: bytes) -> list[bytes]:
    """``raw`` split at random places, inside UTF-8 characters and CRLFs included."""
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    return pieces(raw, cuts)


def decode(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


class ClientRead:
    """What the HTTP client makes of a streamed body: tokens, state and the error, if any."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.state = _openai.StreamState()
        self.tokens: list[Token] = []
        self.error: GenerationError | None = None
        decoder = SSEDecoder()
        try:
            for chunk in chunks:
                for data in decoder.feed_data(chunk):
                    self._parse(data)
            for data in decoder.flush_data():
                self._parse(data)
        except GenerationError as exc:
            self.error = exc

    def _parse(self, data: str) -> None:
        token = _openai.parse_event(data, self.state)
        if token is not None:
            self.tokens.append(token)
        while self.state.pending:
            self.tokens.append(self.state.pending.popleft())

    @property
    def metrics(self) -> GenerateMetrics | None:
        return _openai.metrics_from(self.state.usage, self.state.timings)


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else -9999.0


def expected_alternatives(token: Token, top: int, chat: bool) -> tuple[TopLogprob, ...]:
    """The alternatives a client reads back: chat keeps the list (without IDs, which OpenAI's
    shape has not); the legacy shape is a {text: logprob} dict, read most likely first."""
    kept = token.top_logprobs[:top]
    if chat:
        return tuple(TopLogprob(alt.text, finite(alt.logprob)) for alt in kept)
    by_text = {alt.text: finite(alt.logprob) for alt in kept}
    tops = [TopLogprob(text, logprob) for text, logprob in by_text.items()]
    return tuple(sorted(tops, key=lambda alt: -alt.logprob))


def expected_metrics(metrics: GenerateMetrics | None, include_usage: bool) -> GenerateMetrics:
    """What the client measures: counts from usage (or timings), times as milliseconds."""
    measured = metrics is not None and bool(metrics.prefill_seconds or metrics.decode_seconds)
    assert metrics is not None or include_usage
    metrics = metrics or GenerateMetrics()
    if not measured:
        return GenerateMetrics(metrics.prompt_tokens, metrics.generated_tokens)
    return GenerateMetrics(
        prompt_tokens=metrics.prompt_tokens,
        generated_tokens=metrics.generated_tokens,
        prefill_seconds=round(metrics.prefill_seconds * 1000, 3) / 1000,
        decode_seconds=round(metrics.decode_seconds * 1000, 3) / 1000,
        prefill_tokens_per_sec=metrics.prefill_tokens_per_sec,
        decode_tokens_per_sec=metrics.decode_tokens_per_sec,
    )


# -- the server's events, read back by the client -------------------------------------------------


@st.composite
def server_streams(draw: st.DrawFn) -> dict[str, Any]:
    top = draw(st.one_of(st.none(), st.integers(0, 4)))
    if top is None:
        tokens = draw(st.lists(st.builds(Token, id=st.integers(0, 9), text=TEXT), max_size=8))
    else:
        token = st.builds(Token, id=st.integers(0, 9), text=TEXT, logprob=LOGPROB)
        token = token.flatmap(
            lambda t: ALTERNATIVES.map(lambda alts: Token(t.id, t.text, t.logprob, tuple(alts)))
        )
        tokens = draw(st.lists(token, max_size=8))
    return {
        "chat": draw(st.booleans()),
        "include_usage": draw(st.booleans()),
        "top": top,
        "tokens": tokens,
        "finish_reason": draw(FINISH),
        "metrics": draw(METRICS),
        "error": draw(st.one_of(st.none(), TEXT)),
        "model": draw(TEXT),
    }


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(stream=server_streams(), data=st.data())
def test_every_server_event_reads_back_through_the_client(
    stream: dict[str, Any], data: st.DataObject
) -> None:
    chat, top, tokens = stream["chat"], stream["top"], stream["tokens"]
    encoder = OpenAIEncoder(
        chat=chat,
        model=stream["model"],
        include_usage=stream["include_usage"],
        logprobs=top,
    )
    body = encoder.start() + b"".join(encoder.encode_token(token) for token in tokens)
    if stream["error"] is None:
        body += encoder.end(stream["finish_reason"], stream["metrics"])
    else:
        body += encoder.error(server_wire.ServerError(500, stream["error"], code="boom"))
    read = ClientRead(cut_anywhere(data, body))

    sent = [token for token in tokens if token.text]
    assert [token.text for token in read.tokens] == [token.text for token in sent]
    for got, token in zip(read.tokens, sent, strict=True):
        if top is None:
            assert got == Token(-1, token.text)
        else:
            assert token.logprob is not None
            alternatives = expected_alternatives(token, top, chat)
            assert got == Token(-1, token.text, finite(token.logprob), alternatives)
    if stream["error"] is not None:
        assert type(read.error) is GenerationError and not read.state.done
        assert stream["error"].strip()[:100] in str(read.error)
        return
    assert read.error is None and read.state.done
    expected = "length" if stream["finish_reason"] == "length" else "stop"
    assert _openai.finish_reason(read.state.finish_reason) == expected
    if stream["include_usage"] or server_wire.timings(stream["metrics"]) is not None:
        got_metrics = read.metrics
        assert got_metrics is not None
        want = expected_metrics(stream["metrics"], stream["include_usage"])
        assert got_metrics.prompt_tokens == want.prompt_tokens
        assert got_metrics.generated_tokens == want.generated_tokens
        assert got_metrics.prefill_seconds == pytest.approx(want.prefill_seconds, abs=1e-9)
        assert got_metrics.decode_seconds == pytest.approx(want.decode_seconds, abs=1e-9)
        assert got_metrics.prefill_tokens_per_sec == want.prefill_tokens_per_sec
        assert got_metrics.decode_tokens_per_sec == want.decode_tokens_per_sec
    else:
        assert read.metrics is None


def test_the_stream_shapes_are_openais() -> None:
    encoder = OpenAIEncoder(chat=True, model="m", include_usage=True, completion_id="c", created=1)
    body = encoder.start() + encoder.token("a\nb") + encoder.end("length", None)
    events = [event.data for event in decode([body])]
    head = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    assert events == [
        head + '[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
        '"finish_reason":null}],"usage":null}',
        head + '[{"index":0,"delta":{"content":"a\\nb"},"logprobs":null,'
        '"finish_reason":null}],"usage":null}',
        head + '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":null}',
        head + '[],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}',
        "[DONE]",
    ]


# -- text events ----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(texts=st.lists(TEXT, max_size=6), reason=FINISH, data=st.data())
def test_text_events_read_back_with_line_breaks_as_lf(
    texts: list[str], reason: str | None, data: st.DataObject
) -> None:
    encoder = TextEncoder()
    body = b"".join(encoder.token(text) for text in texts) + encoder.end(reason, None)
    events = decode(cut_anywhere(data, body))
    # SSE has no way to carry a CR: CRLF and a lone CR arrive as LF.
    sent = [text.replace("\r\n", "\n").replace("\r", "\n") for text in texts if text]
    assert [(event.event, event.data) for event in events[:-1]] == [("message", t) for t in sent]
    assert events[-1].event == "done"
    assert events[-1].json()["finish_reason"] == ("length" if reason == "length" else "stop")


# -- the SSE encoder ------------------------------------------------------------------------------

FIELD = TEXT.map(lambda text: text.replace("\r", "").replace("\n", ""))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(
        st.tuples(
            TEXT,
            st.one_of(st.none(), FIELD),
            st.one_of(st.none(), FIELD.map(lambda text: text.replace("\0", ""))),
            st.one_of(st.none(), st.integers(0, 10**12)),
            st.one_of(st.none(), TEXT),
        ),
        max_size=5,
    ),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    data=st.data(),
)
def test_encoded_events_decode_to_themselves(
    blocks: list[tuple[str, str | None, str | None, int | None, str | None]],
    eol: str,
    data: st.DataObject,
) -> None:
    raw = ""
    expected = []
    last_id = None
    for text, event, event_id, retry, comment in blocks:
        if comment is not None:
            raw += encode_comment(comment, eol)
        raw += encode_event(text, event=event, id=event_id, retry=retry, eol=eol)
        last_id = last_id if event_id is None else event_id
        data_lf = text.replace("\r\n", "\n").replace("\r", "\n")
        expected.append(ServerSentEvent(event or "message", data_lf, last_id, retry))
    assert decode(cut_anywhere(data, raw.encode())) == expected


def test_single_line_data_is_one_line_and_breaks_start_new_data_lines() -> None:
    assert encode_data('{"a":1}') == 'data: {"a":1}\n\n'
    assert encode_data("a\r\nb\rc\n", "\r\n") == "data: a\r\ndata: b\r\ndata: c\r\ndata: \r\n\r\n"
    assert encode_data("") == "data: \n\n"
    assert encode_comment("ping") == ": ping\n\n"
    assert encode_comment("") == ":\n\n"
    assert encode_event("{}", event="done") == "event: done\ndata: {}\n\n"


@pytest.mark.parametrize(
    "fields",
    [{"event": "a\nb"}, {"id": "x\ry"}, {"id": "nul\0"}, {"retry": -1}, {"retry": True}],
)
def test_fields_a_client_would_misread_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="SSE"):
        encode_event("data", **fields)


# -- the test server, built with the same writers -------------------------------------------------


@st.composite
def fake_replies(draw: st.DrawFn) -> tuple[fake_wire.ReplyPlan, int | None]:
    tokens = draw(st.lists(TEXT, max_size=6))
    error_after = draw(st.one_of(st.none(), st.integers(0, len(tokens))))
    script = Script(
        tokens=tokens,
        line_ending=draw(st.sampled_from(["\n", "\r\n"])),
        multiline_data=draw(st.booleans()),
        keepalive_every=draw(st.integers(0, 3)),
        timings=draw(st.booleans()),
        error_after=error_after,
    )
    request = fake_wire.CompletionRequest(
        chat=draw(st.booleans()),
        stream=True,
        include_usage=draw(st.booleans()),
        max_tokens=draw(st.one_of(st.none(), st.integers(0, 8))),
        prompt_words=draw(st.integers(0, 50)),
    )
    return fake_wire.ReplyPlan(script, request, "cmpl-x", 1), error_after


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(reply=fake_replies(), data=st.data())
def test_the_test_servers_streams_read_back_through_the_client(
    reply: tuple[fake_wire.ReplyPlan, int | None], data: st.DataObject
) -> None:
    plan, error_after = reply
    steps = fake_wire.stream_steps(plan, started=0.0, clock=itertools.count(1).__next__)
    body = b"".join(step for step in steps if isinstance(step, bytes))
    read = ClientRead(cut_anywhere(data, body))
    sent = plan.script.tokens[: plan.sent_tokens]
    if error_after is not None and error_after <= plan.sent_tokens:
        assert isinstance(read.error, APIStatusError) and read.error.status_code == 500
        assert "boom" in str(read.error)
        sent = sent[:error_after]
    assert [token.text for token in read.tokens] == [text for text in sent if text]
    if read.error is not None:
        return
    assert read.state.done and read.state.finish_reason == plan.finish_reason
    metrics = read.metrics
    if plan.request.include_usage or plan.script.timings:
        assert metrics is not None
        assert (metrics.prompt_tokens, metrics.generated_tokens) == (
            plan.prompt_tokens,
            plan.sent_tokens,
        )
    else:
        assert metrics is None


def _without_optional_nulls(chunk: Any) -> Any:
    """A chunk without the fields servers differ in: null logprobs/usage, timings and IDs."""
    if not isinstance(chunk, dict):
        return chunk
    chunk = {k: v for k, v in chunk.items() if k not in ("id", "created", "timings")}
    if chunk.get("usage", 0) is None:
        del chunk["usage"]
    for choice in chunk.get("choices", ()):
        if choice.get("logprobs", 0) is None:
            del choice["logprobs"]
    return chunk


@settings(max_examples=100)
@given(
    # Non-empty: a script's empty token is sent as an empty chunk (as some servers do), while
    # the server sends nothing for a token without text.
    tokens=st.lists(TEXT.filter(bool), max_size=5),
    chat=st.booleans(),
    include_usage=st.booleans(),
    max_tokens=st.one_of(st.none(), st.integers(0, 5)),
)
def test_the_test_server_and_the_server_send_the_same_shapes(
    tokens: list[str], chat: bool, include_usage: bool, max_tokens: int | None
) -> None:
    plan = fake_wire.ReplyPlan(
        Script(tokens=tokens, model="m", prompt_tokens=3),
        fake_wire.CompletionRequest(chat, True, include_usage, max_tokens, 3),
        "x",
        1,
    )
    fake_body = b"".join(s for s in fake_wire.stream_steps(plan, started=0) if isinstance(s, bytes))
    encoder = OpenAIEncoder(chat=chat, model="m", include_usage=include_usage)
    sent = plan.script.tokens[: plan.sent_tokens]
    metrics = GenerateMetrics(prompt_tokens=3, generated_tokens=len(sent))
    body = encoder.start() + b"".join(encoder.token(text) for text in sent)
    body += encoder.end(plan.finish_reason, metrics)

    def shapes(raw: bytes) -> list[Any]:
        return [
            _without_optional_nulls(json.loads(e.data) if e.data != "[DONE]" else e.data)
            for e in decode([raw])
        ]

    assert shapes(fake_body) == shapes(body)
    plain = _without_optional_nulls(plan.plain_body())
    reply = server_wire.completion_reply(
        chat=chat,
        completion_id="x",
        created=1,
        model="m",
        text="".join(sent),
        finish_reason=plan.finish_reason,
        metrics=metrics,
    )
    assert plain == _without_optional_nulls(reply)


# -- whole replies and error bodies ---------------------------------------------------------------


@settings(max_examples=100)
@given(text=TEXT, chat=st.booleans(), reason=FINISH, metrics=METRICS)
def test_a_whole_reply_reads_back_through_the_client(
    text: str, chat: bool, reason: str | None, metrics: GenerateMetrics | None
) -> None:
    reply = server_wire.completion_reply(
        chat=chat,
        completion_id="c",
        created=1,
        model="m",
        text=text,
        finish_reason=reason,
        metrics=metrics,
    )
    state = _openai.StreamState()
    token = whole_reply_token(json.loads(dumps(reply)), state)
    assert (token.text if token else "") == text
    assert _openai.finish_reason(state.finish_reason) == (
        "length" if reason == "length" else "stop"
    )
    got = _openai.metrics_from(state.usage, state.timings)
    assert got is not None
    want = metrics or GenerateMetrics()
    assert (got.prompt_tokens, got.generated_tokens) == (want.prompt_tokens, want.generated_tokens)


@settings(max_examples=100)
@given(message=TEXT.filter(lambda text: text.strip()), status=st.integers(400, 599))
def test_error_bodies_of_both_shapes_read_back(message: str, status: int) -> None:
    error = server_wire.ServerError(status, message, param="p", code="c")
    body = json.loads(dumps(error.body()))
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert _openai.error_message(body) == message
    assert type(_openai.stream_error(body)) is GenerationError
    llama = json.loads(fake_wire.error_body(status, message))
    assert llama["error"]["code"] == status and _openai.error_message(llama) == message
    raised = _openai.stream_error(llama)
    assert isinstance(raised, APIStatusError) and raised.status_code == status


def test_the_old_module_names_are_the_packages() -> None:
    assert _openai.parse_event is parse.parse_event
    assert _openai.StreamState is parse.StreamState
    assert server_logprobs.LogprobsCollector is logprobs.LogprobsCollector
    assert server_wire.usage is usage.usage_from_metrics
    assert server_wire.timings is usage.timings_from_metrics
    assert server_wire.openai_finish_reason is usage.wire_finish_reason
    assert server_wire.new_completion_id is chunks.new_completion_id
    assert server_wire.dumps is dumps
    assert (
        fake_wire.ERROR_PAYLOAD == '{"error":{"message":"boom","type":"server_error","code":500}}'
    )
