"""Text helpers: Go trimming, think-block removal and judge JSON extraction."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goml_async.errors import ConfigError, JudgeError
from goml_async.scoring.text import (
    GO_WHITESPACE,
    extract_json,
    is_error_response,
    strip_space,
    strip_think_blocks,
    utf8_prefix,
)

# -- strip_space and is_error_response ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" \t\n\v\f\r hi \r\n", "hi"),
        ("\u00a0\u2003\u3000hi\u2028\u0085", "hi"),
        ("\x1chi\x1f", "\x1chi\x1f"),  # Go does not treat the ASCII separators as space
        ("\u200bhi", "\u200bhi"),  # nor the zero-width space
        ("", ""),
    ],
)
def test_strip_space_is_go_trimspace(text: str, expected: str) -> None:
    assert strip_space(text) == expected


def test_go_whitespace_is_what_python_calls_space_minus_the_separators() -> None:
    python_space = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(GO_WHITESPACE) == python_space - {"\x1c", "\x1d", "\x1e", "\x1f"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("error", True),
        ("ERROR: timeout", True),
        ("  Error - failed", True),
        ("errors happen", True),  # a prefix match, as in go-ml
        ("An error", False),
        ("err", False),
        ("", False),
    ],
)
def test_is_error_response(text: str, expected: bool) -> None:
    assert is_error_response(text) is expected


# -- utf8_prefix ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("hello", 10, "hello"),
        ("hello", 3, "hel"),
        ("hello", 0, ""),
        ("h\u00e9llo", 1, "h"),
        ("h\u00e9llo", 2, "h"),  # the 2-byte \u00e9 would be cut: left out
        ("h\u00e9llo", 3, "h\u00e9"),
        ("\U0001f600\U0001f600", 7, "\U0001f600"),
        ("\U0001f600\U0001f600", 8, "\U0001f600\U0001f600"),
        ("a\ud800b", 4, "a\ud800"),  # a lone surrogate counts as 3 bytes
    ],
)
def test_utf8_prefix(text: str, limit: int, expected: str) -> None:
    assert utf8_prefix(text, limit) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(0, 400))
def test_utf8_prefix_is_the_longest_whole_character_prefix(text: str, limit: int) -> None:
    prefix = utf8_prefix(text, limit)
    assert text.startswith(prefix)
    assert len(prefix.encode()) <= limit
    if prefix != text:
        assert len(text[: len(prefix) + 1].encode()) > limit


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_utf8_prefix_rejects_bad_limits(limit: object) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        utf8_prefix("text", limit)  # type: ignore[arg-type]


# -- strip_think_blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>reasoning</think>The answer is 4.", "The answer is 4."),
        ("<think>a</think>one <think>b</think>two", "one two"),
        ("<think>line 1\nline 2\n</think>\n\n  answer  \n", "answer"),
        ("before <think>x</think> after", "before  after"),
        ("<think>a<think>b</think>c</think>", "c</think>"),  # non-greedy, not nested
        ("<think>never closed, answer 4", "<think>never closed, answer 4"),
        ("<THINK>upper</THINK> case", "<THINK>upper</THINK> case"),  # case-sensitive
        ("  plain answer \n", "plain answer"),
        ("\x1canswer", "\x1canswer"),  # trimmed the Go way
        # Nothing left after removal: the input comes back, whole if it is short...
        ("<think>only thinking</think>", "<think>only thinking</think>"),
        ("  <think>x</think>\n ", "  <think>x</think>\n "),
        ("", ""),
        ("   ", "   "),
    ],
)
def test_strip_think_blocks(text: str, expected: str) -> None:
    assert strip_think_blocks(text) == expected


def test_only_thinking_longer_than_500_bytes_is_cut_to_500_bytes() -> None:
    text = "<think>" + "x" * 600 + "</think>"
    assert strip_think_blocks(text) == text[:500]
    exactly = "<think>" + "x" * (500 - 15) + "</think>"
    assert len(exactly.encode()) == 500
    assert strip_think_blocks(exactly) == exactly  # 500 bytes is not "longer than 500"


def test_the_500_byte_cut_never_splits_a_character() -> None:
    text = "<think>" + "\u00e9" * 400 + "</think>"  # 7 + 800 + 8 bytes
    stripped = strip_think_blocks(text)
    assert stripped == "<think>" + "\u00e9" * 246  # 7 + 492 bytes; one more would need 501
    assert len(stripped.encode()) == 499


def test_many_unclosed_think_tags_stay_linear() -> None:
    text = "<think>a</think>answer " + "<think>" * 100_000
    assert strip_think_blocks(text) == "answer " + "<think>" * 100_000


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.lists(
            st.one_of(st.sampled_from(["<think>", "</think>", " ", "\n", "x"]), st.text()),
            max_size=30,
        ).map("".join),
    )
)
def test_strip_think_blocks_never_raises_and_settles(text: str) -> None:
    once = strip_think_blocks(text)
    assert isinstance(once, str)
    if "<think>" not in once:
        assert strip_think_blocks(once) == once
    if "<think>" not in text:
        assert once == (strip_space(text) or utf8_prefix(text, 500))


_plain = st.text(alphabet=st.characters(exclude_characters="<>"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_plain, _plain), min_size=1, max_size=5), _plain)
def test_blocks_around_an_answer_leave_the_answer(parts: list[tuple[str, str]], tail: str) -> None:
    text = "".join(f"{before}<think>{inside}</think>" for before, inside in parts) + tail
    answer = strip_space("".join(before for before, _ in parts) + tail)
    if answer:
        assert strip_think_blocks(text) == answer
        assert strip_think_blocks(answer) == answer


# -- extract_json ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 3}', {"score": 3}),
        ('Here you go: {"score": 3} Hope it helps.', {"score": 3}),
        ('```json\n{"score": 3}\n```', {"score": 3}),
        ('```\n{"score": 3}\n```', {"score": 3}),
        # The fenced block wins over an earlier object in the prose.
        ('Example: {"score": 1}\n```json\n{"score": 5}\n```', {"score": 5}),
        # A block without an object: the whole reply is searched.
        ('```\nno json here\n```\n{"score": 2}', {"score": 2}),
        ('{"a": {"b": {"c": [1, 2, {"d": null}]}}}', {"a": {"b": {"c": [1, 2, {"d": None}]}}}),
        # Braces and quotes inside strings do not count.
        ('{"notes": "use {x} and }"} trailing }', {"notes": "use {x} and }"}),
        ('{"notes": "she said \\"{\\" twice"}', {"notes": 'she said "{" twice'}),
        ('{"path": "C:\\\\dir\\\\"} {"other": 1}', {"path": "C:\\dir\\"}),
        ('{"emoji": "\\ud83d\\ude00 \u00e9"}', {"emoji": "\U0001f600 \u00e9"}),
        # The first balanced candidate does not decode: the next one is used.
        ('Template {score} then {"score": 4}', {"score": 4}),
        ('```json\n{score: 4}\n```\n{"score": 4}', {"score": 4}),
        # An unclosed brace before the object.
        ('Oops { then {"score": 1}', {"score": 1}),
        ('{ "unclosed": {"inner": true}', {"inner": True}),
        # Quotes outside objects are prose.
        ('He said "hi {" and then {"ok": true}', {"ok": True}),
        ("{}", {}),
    ],
)
def test_extract_json(reply: str, expected: dict[str, Any]) -> None:
    assert extract_json(reply) == expected


@pytest.mark.parametrize(
    "reply",
    ["", "no object at all", "[1, 2, 3]", "}{", "{ never closed", '{"a": "never closed}'],
)
def test_no_object_is_a_judge_error(reply: str) -> None:
    with pytest.raises(JudgeError, match="no JSON object found") as caught:
        extract_json(reply)
    assert caught.value.raw_reply == reply


@pytest.mark.parametrize(
    ("reply", "objects"),
    [
        ("{score: 4}", "JSON object"),
        ('{"score": NaN}', "JSON object"),
        ('{"score": Infinity}', "JSON object"),
        ("{'score': 4} and {also bad}", "2 JSON objects"),
        ('{"a": 1,}', "JSON object"),
    ],
)
def test_undecodable_objects_are_a_judge_error(reply: str, objects: str) -> None:
    with pytest.raises(JudgeError, match=f"the {objects} in the judge reply did not decode") as e:
        extract_json(reply)
    assert e.value.raw_reply == reply
    assert repr(reply) in str(e.value)


def test_long_replies_are_shortened_in_the_message_but_kept_whole() -> None:
    reply = "no json " * 500
    with pytest.raises(JudgeError) as caught:
        extract_json(reply)
    message = str(caught.value)
    assert f"({len(reply)} chars)" in message
    assert len(message) < 400
    assert caught.value.raw_reply == reply


def test_extract_json_rejects_non_str() -> None:
    with pytest.raises(ConfigError, match="text: must be a str"):
        extract_json(b'{"a": 1}')  # type: ignore[arg-type]


def test_deeply_nested_objects_are_a_judge_error() -> None:
    reply = '{"a":' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(JudgeError, match="nested too deeply"):
        extract_json(reply)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('```{"a": 1}```', {"a": 1}),
        ('```json{"a": 1}```', {"a": 1}),
        ('``````\n{"a": 1}', {"a": 1}),  # an empty block
        ('````{"a": 1}', {"a": 1}),  # never closed: no block
        ('```JSON\n{"a": 1}\n```', {"a": 1}),
    ],
)
def test_fence_edge_cases(reply: str, expected: dict[str, Any]) -> None:
    assert extract_json(reply) == expected


def test_an_unclosed_fence_with_a_long_blank_run_stays_fast() -> None:
    with pytest.raises(JudgeError):
        extract_json("```" + " " * 200_000)
    assert extract_json("```json" + "\n" * 100_000 + '{"a": 1}') == {"a": 1}


def test_pathological_braces_stay_linear() -> None:
    # Quadratic scanning would take minutes here.
    with pytest.raises(JudgeError):
        extract_json("{" * 50_000)
    assert extract_json("{" * 30_000 + '{"a": 1}') == {"a": 1}
    assert extract_json('"' * 100_000 + '{"a": 1}') == {"a": 1}


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    # Backticks could open a fence in the middle of the object; that case is tested above.
    st.text(alphabet=st.characters(exclude_characters="`")),
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.text(alphabet=st.characters(exclude_characters="`")), children, max_size=4
        ),
    ),
    max_leaves=12,
)
_json_objects = st.dictionaries(
    st.text(alphabet=st.characters(exclude_characters="`")), _json_values, max_size=5
)
_prose_around = st.text(alphabet=st.characters(exclude_characters="{}`"), max_size=80)
_tricky_strings = st.lists(
    st.sampled_from(["{", "}", '"', "\\", '\\"', "x", " "]), max_size=12
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_json_objects, _prose_around, _prose_around, st.booleans())
def test_objects_in_prose_round_trip(
    obj: dict[str, Any], before: str, after: str, ascii_only: bool
) -> None:
    dumped = json.dumps(obj, ensure_ascii=ascii_only)
    assert extract_json(f"{before}{dumped}{after}") == obj
    assert extract_json(f"{before}\n```json\n{dumped}\n```\n{after}") == obj
    assert extract_json(f"{before}```{dumped}```{after}") == obj


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_tricky_strings, _tricky_strings, min_size=1, max_size=4), _prose_around)
def test_braces_quotes_and_backslashes_in_strings_round_trip(
    obj: dict[str, str], before: str
) -> None:
    dumped = json.dumps(obj)
    assert extract_json(f"{before}{dumped} and a stray }} {{ after") == obj
