"""The sans-I/O SSE decoder: WHATWG parsing rules, chunking anywhere, and round-trip properties."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goml_async._sse import ServerSentEvent, SSEDecoder, SSETooLarge, _make_event

MULTIBYTE = "é漢🙂"


def decode(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    """Feed every chunk, then flush, and return all events in order."""
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def bytewise(raw: bytes) -> list[bytes]:
    """Split into one-byte chunks: the worst case for every boundary rule."""
    return [raw[i : i + 1] for i in range(len(raw))]


def msg(
    data: str, event: str = "message", id: str | None = None, retry: int | None = None
) -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data, id=id, retry=retry)


# --- ServerSentEvent ---------------------------------------------------------------------


def test_event_defaults() -> None:
    assert ServerSentEvent() == ServerSentEvent("message", "", None, None)


def test_event_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerSentEvent().data = "x"  # type: ignore[misc]


def test_json_parses_data() -> None:
    assert msg('{"choices": [{"delta": {"content": "hi"}}]}').json() == {
        "choices": [{"delta": {"content": "hi"}}]
    }


def test_json_error_propagates() -> None:
    with pytest.raises(json.JSONDecodeError):
        msg("[DONE]").json()


def test_fast_constructor_matches_dataclass() -> None:
    # _make_event writes the slots directly; it must stay in step with the declared fields.
    assert [field.name for field in dataclasses.fields(ServerSentEvent)] == [
        "event",
        "data",
        "id",
        "retry",
    ]
    fast = _make_event("delta", "x", "7", 1000)
    assert fast == ServerSentEvent("delta", "x", "7", 1000)
    assert type(fast) is ServerSentEvent
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.data = "y"  # type: ignore[misc]


# --- basic parsing -------------------------------------------------------------------------


def test_single_event() -> None:
    assert SSEDecoder().feed(b"data: hello\n\n") == [msg("hello")]


def test_incomplete_event_waits_for_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: hello\n") == []
    assert decoder.feed(b"\n") == [msg("hello")]


def test_several_events_in_one_chunk() -> None:
    assert SSEDecoder().feed(b"data: a\n\ndata: b\n\ndata: c\n\n") == [msg("a"), msg("b"), msg("c")]


def test_multiline_data_joined_with_newline() -> None:
    assert decode([b"data: one\ndata: two\ndata:three\n\n"]) == [msg("one\ntwo\nthree")]


def test_event_type_and_reset_after_dispatch() -> None:
    raw = b"event: delta\ndata: a\n\ndata: b\n\n"
    assert decode([raw]) == [msg("a", event="delta"), msg("b")]


def test_empty_event_type_means_message() -> None:
    assert decode([b"event:\ndata: a\n\n"]) == [msg("a")]


def test_event_type_reset_by_blank_line_without_data() -> None:
    # The spec resets the event type buffer on every blank line, dispatch or not.
    assert decode([b"event: ping\n\ndata: a\n\n"]) == [msg("a")]


def test_only_one_leading_space_stripped() -> None:
    assert decode([b"data:  two spaces\n\n"]) == [msg(" two spaces")]
    assert decode([b"data:no space\n\n"]) == [msg("no space")]
    assert decode([b"event:  x\ndata\n\n"]) == [msg("", event=" x")]


def test_colon_in_value_kept() -> None:
    assert decode([b"data: a: b:c\n\n"]) == [msg("a: b:c")]


def test_field_without_colon_has_empty_value() -> None:
    assert decode([b"data\n\n"]) == [msg("")]
    assert decode([b"data\ndata\n\n"]) == [msg("\n")]


def test_empty_data_line_dispatches_empty_string() -> None:
    assert decode([b"data:\n\n"]) == [msg("")]
    assert decode([b"data: \n\n"]) == [msg("")]


def test_comments_ignored() -> None:
    raw = b": keep-alive\n\n:ping\ndata: a\n: between\ndata: b\n\n"
    assert decode([raw]) == [msg("a\nb")]


def test_unknown_fields_ignored() -> None:
    assert decode([b"foo: bar\nDATA: x\ndata: a\n\n"]) == [msg("a")]


def test_field_names_are_case_sensitive_and_exact() -> None:
    assert decode([b"data : a\ndata\t: b\n\n"]) == []


def test_blank_lines_alone_dispatch_nothing() -> None:
    assert decode([b"\n\n\n\r\n\r"]) == []


def test_id_only_block_dispatches_nothing() -> None:
    assert decode([b"id: 5\n\n"]) == []
    assert decode([b"event: x\nid: 5\nretry: 10\n\n"]) == []


def test_id_carries_over_to_later_events() -> None:
    raw = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\n\ndata: c\n\nid\ndata: d\n\n"
    assert decode([raw]) == [msg("a", id="1"), msg("b", id="1"), msg("c", id="2"), msg("d", id="")]


def test_id_with_nul_ignored() -> None:
    assert decode([b"id: 1\n\nid: 2\x003\ndata: a\n\n"]) == [msg("a", id="1")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"retry: 1000", 1000),
        (b"retry:0", 0),
        (b"retry: 007", 7),
        (b"retry: -1", None),
        (b"retry: 1.5", None),
        (b"retry: 10s", None),
        (b"retry:", None),
        (b"retry", None),
        (b"retry:  5", None),
        ("retry: ²".encode(), None),
        ("retry: ٣".encode(), None),
        (b"retry: " + b"9" * 5000, None),
    ],
)
def test_retry_parsing(line: bytes, expected: int | None) -> None:
    assert decode([line + b"\ndata: a\n\n"]) == [msg("a", retry=expected)]


def test_retry_applies_to_its_block_only() -> None:
    assert decode([b"retry: 5\ndata: a\n\ndata: b\n\n"]) == [msg("a", retry=5), msg("b")]


def test_done_sentinel() -> None:
    events = decode([b'data: {"a": 1}\n\n', b"data: [DONE]\n\n"])
    assert events == [msg('{"a": 1}'), msg("[DONE]")]
    assert events[0].json() == {"a": 1}


# --- line endings and chunk boundaries -----------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    raw = eol.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    expected = [msg("a\nb", event="e"), msg("c")]
    assert decode([raw]) == expected
    assert decode(bytewise(raw)) == expected


def test_mixed_line_endings() -> None:
    assert decode([b"data: a\r\ndata: b\rdata: c\n\r\n"]) == [msg("a\nb\nc")]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    # The CR already ends the blank line, so the event is not held back for the LF.
    assert decoder.feed(b"data: a\r\n\r") == [msg("a")]
    # The LF completes that CRLF; it is not a second blank line, and the next event parses.
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r\n") == [msg("b")]
    assert decoder.flush() == []


def test_cr_then_lf_in_later_chunk_does_not_dispatch_twice_or_drop_a_line() -> None:
    # "data: a\r" + "\n" + "data: b\r\n\r\n": if the LF counted as its own line, the event
    # would dispatch as "a" and then "b" separately.
    assert decode([b"data: a\r", b"\n", b"data: b\r\n\r\n"]) == [msg("a\nb")]


def test_cr_lf_separated_by_empty_chunks() -> None:
    assert decode([b"data: a\r", b"", b"", b"\ndata: b\r\n\r\n"]) == [msg("a\nb")]


def test_cr_then_partial_utf8_character() -> None:
    # After the CR comes only half a character: no text yet, so the CR state must wait for it.
    chunks = [b"data: a\r", b"data: ", "漢".encode()[:1], "漢".encode()[1:] + b"\r", b"\n\r\n"]
    assert decode(chunks) == [msg("a\n漢")]


def test_lone_cr_followed_by_non_lf() -> None:
    assert decode([b"data: a\r", b"data: b\r", b"\r"]) == [msg("a\nb")]


def test_split_mid_field_name_and_mid_value() -> None:
    assert decode([b"da", b"ta", b": hel", b"lo\n", b"\n"]) == [msg("hello")]
    assert decode([b"eve", b"nt: x\ndata: y\n\n"]) == [msg("y", event="x")]


@pytest.mark.parametrize("char", ["é", "漢", "🙂"])
def test_multibyte_char_split_at_every_byte(char: str) -> None:
    raw = f"data: <{char}>\n\n".encode()
    for cut in range(len(raw) + 1):
        assert decode([raw[:cut], raw[cut:]]) == [msg(f"<{char}>")], cut
    assert decode(bytewise(raw)) == [msg(f"<{char}>")]


def test_other_unicode_line_breaks_are_not_line_endings() -> None:
    # str.splitlines() would split on these; the SSE grammar only knows CR and LF.
    data = "a\x0bb\x0cc\x1cd\x85e\u2028f\u2029g"
    assert decode([f"data: {data}\n\n".encode()]) == [msg(data)]


def test_invalid_utf8_replaced() -> None:
    assert decode([b"data: a\xffb\n\n"]) == [msg("a\ufffdb")]


def test_truncated_utf8_at_end_of_stream_replaced() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a" + "漢".encode()[:2]) == []
    assert decoder.flush() == [msg("a\ufffd")]


# --- BOM -----------------------------------------------------------------------------------


def test_bom_at_stream_start_skipped() -> None:
    assert decode([b"\xef\xbb\xbfdata: a\n\n"]) == [msg("a")]


def test_bom_split_across_chunks_skipped() -> None:
    assert decode([b"\xef", b"\xbb", b"\xbf", b"data: a\n\n"]) == [msg("a")]


def test_bom_before_a_field_name_would_otherwise_break_it() -> None:
    # Without skipping, the first line would be the unknown field "\ufeffevent".
    assert decode([b"\xef\xbb\xbfevent: e\ndata: a\n\n"]) == [msg("a", event="e")]


def test_only_first_bom_skipped() -> None:
    bom = "\ufeff".encode()
    assert decode([bom + b"data: a\n\n" + bom + b"data: b\n\n"]) == [msg("a")]
    assert decode([b"data: \xef\xbb\xbfx\n\n"]) == [msg("\ufeffx")]


def test_bom_alone_at_end_of_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb\xbf") == []
    assert decoder.flush() == []


# --- flush ---------------------------------------------------------------------------------


def test_flush_dispatches_unterminated_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]\n") == []
    assert decoder.flush() == [msg("[DONE]")]


def test_flush_processes_unterminated_last_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: end\ndata: [DO") == []
    assert decoder.flush() == [msg("[DO", event="end")]


def test_flush_without_data_dispatches_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\nevent: x\nid: 1\n: c") == [msg("a")]
    assert decoder.flush() == []


def test_flush_after_cr_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.flush() == [msg("a")]


def test_flush_resets_decoder_for_reuse() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"\xef\xbb\xbfid: 1\nevent: x\ndata: a\r")
    decoder.flush()
    # A fresh stream: no carried-over id, event type, CR state; a new BOM is skipped again.
    assert decoder.feed(b"\xef\xbb\xbf\ndata: b\n\n") == [msg("b")]
    assert decoder.flush() == []


def test_flush_twice_is_harmless() -> None:
    decoder = SSEDecoder()
    assert decoder.flush() == []
    assert decoder.flush() == []


# --- properties ----------------------------------------------------------------------------

# Text that may appear inside one line: anything but CR, LF and lone surrogates, weighted
# toward the multi-byte characters whose bytes the random chunking must split.
_LINE_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from([*MULTIBYTE, ":", " ", "\x85", "\u2028", "\ufeff", "\x00"]),
        st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    ),
    max_size=12,
)


@st.composite
def _event_blocks(draw: st.DrawFn) -> tuple[list[str], ServerSentEvent | None, str | None]:
    """One block of field lines, the event it should dispatch, and the id it sets."""
    data = draw(st.lists(_LINE_TEXT, min_size=1, max_size=4))
    event = draw(st.one_of(st.none(), _LINE_TEXT))
    event_id = draw(st.one_of(st.none(), _LINE_TEXT.filter(lambda s: "\0" not in s)))
    retry = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)))
    lines = []
    for value in data:
        # All three spellings of a data field must decode the same way.
        if value:
            lines.append(draw(st.sampled_from(["data: ", "data:"])) + value)
            if value.startswith(" "):
                lines[-1] = "data: " + value  # "data:" + " x" would lose the space
        else:
            lines.append(draw(st.sampled_from(["data", "data:", "data: "])))
    others = []
    if event is not None:
        others.append("event: " + event)
    if event_id is not None:
        others.append("id: " + event_id)
    if retry is not None:
        others.append(f"retry: {retry}")
    others += draw(st.lists(_LINE_TEXT.map(lambda s: ":" + s), max_size=2))  # comments
    for line in others:
        # Insert anywhere, keeping the data lines in their order.
        lines.insert(draw(st.integers(min_value=0, max_value=len(lines))), line)
    expected = ServerSentEvent(event=event or "message", data="\n".join(data), retry=retry)
    return lines, expected, event_id


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    """A serialised stream (with a random line ending) and the events it encodes."""
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    blocks = draw(st.lists(_event_blocks(), max_size=6))
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    last_id: str | None = None
    for block_lines, event, event_id in blocks:
        lines.extend(block_lines)
        lines.append("")
        if event_id is not None:
            last_id = event_id
        if event is not None:
            expected.append(dataclasses.replace(event, id=last_id))
        if draw(st.booleans()):
            # An id-only block or a keep-alive between events dispatches nothing.
            lines.extend(draw(st.sampled_from([[": ping", ""], ["event: skipped", ""], [""]])))
    text = "".join(line + eol for line in lines)
    raw = text.encode()
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    return raw, expected


@st.composite
def _chunked(draw: st.DrawFn, raw: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(min_value=0, max_value=len(raw)), max_size=20)))
    edges = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_streams(), data=st.data())
def test_roundtrip_with_random_chunking(
    stream: tuple[bytes, list[ServerSentEvent]], data: st.DataObject
) -> None:
    raw, expected = stream
    chunks = data.draw(_chunked(raw))
    assert decode(chunks) == expected


@settings(max_examples=100)
@given(stream=_streams())
def test_roundtrip_bytewise_equals_whole(stream: tuple[bytes, list[ServerSentEvent]]) -> None:
    raw, expected = stream
    assert decode([raw]) == expected
    assert decode(bytewise(raw)) == expected


@settings(max_examples=200)
@given(raw=st.binary(max_size=200), data=st.data())
def test_arbitrary_bytes_decode_the_same_however_chunked(raw: bytes, data: st.DataObject) -> None:
    # Garbage in never raises, and chunk boundaries never change the result.
    assert decode(data.draw(_chunked(raw))) == decode([raw])


def test_feed_data_matches_feed_for_every_rule() -> None:
    stream = (
        b"\xef\xbb\xbf: ping\r\n"
        b'event: delta\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b"id: 7\nretry: 10\n\n"  # no data: dispatches nothing
        b"data\n\n"  # a field without a colon: an event whose data is empty (as the spec says)
        b"data: caf\xc3"  # split inside a UTF-8 character
        b"\xa9\rdata: [DONE]"  # lone CR, then an unterminated last line
    )
    for size in (1, 2, 5, len(stream)):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        events_decoder, data_decoder = SSEDecoder(), SSEDecoder()
        events = [e for piece in pieces for e in events_decoder.feed(piece)]
        events += events_decoder.flush()
        data = [d for piece in pieces for d in data_decoder.feed_data(piece)]
        data += data_decoder.flush_data()
        assert data == [event.data for event in events]
        assert data == ['{"a":\n1}', "", "café\n[DONE]"]


# --- hostile streams: bounded time and memory -------------------------------------------------


def test_a_line_that_never_ends_costs_linear_time() -> None:
    # 20,000 chunks of 4 KiB with no line ending: re-joining the line per chunk would copy
    # about 800 GB in all; holding the pieces copies nothing until the line ends.
    decoder = SSEDecoder(max_event_chars=100 * 1024 * 1024)
    chunk = b"x" * 4096
    decoder.feed(b"data: ")
    for _ in range(20_000):
        assert decoder.feed(chunk) == []
    events = decoder.feed(b"\n\n")
    assert len(events) == 1
    assert len(events[0].data) == 20_000 * 4096


@pytest.mark.parametrize("feed", ["feed", "feed_data"])
def test_a_line_longer_than_the_limit_is_refused(feed: str) -> None:
    decoder = SSEDecoder(max_event_chars=1000)
    getattr(decoder, feed)(b"data: " + b"x" * 900)
    with pytest.raises(SSETooLarge, match="longer than 1000 characters"):
        getattr(decoder, feed)(b"y" * 200)
    # The decoder dropped what it held: memory is bounded, and it can decode a new stream.
    assert getattr(decoder, feed)(b"data: ok\n\n") in ([msg("ok")], ["ok"])


def test_an_event_of_many_short_data_lines_is_refused() -> None:
    decoder = SSEDecoder(max_event_chars=1000)
    with pytest.raises(SSETooLarge, match="more than 1000 characters of data"):
        for _ in range(100):
            decoder.feed_data(b"data: " + b"z" * 50 + b"\n")


def test_events_under_the_limit_are_untouched() -> None:
    decoder = SSEDecoder(max_event_chars=64)
    assert decoder.feed(b"data: " + b"a" * 60 + b"\n\n") == [msg("a" * 60)]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_the_limit_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        SSEDecoder(max_event_chars=bad)  # type: ignore[arg-type]
