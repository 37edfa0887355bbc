"""Pure text helpers shared by the scorers: Go-compatible trimming, think-block removal, JSON.

:func:`strip_space` trims as Go's ``strings.TrimSpace`` does, so that every rule that looks at
"the trimmed response" sees exactly the text go-ml's scorer sees and scores compare
(``str.strip()`` also removes the ASCII separators ``\\x1c``-``\\x1f``, which Go keeps).

:func:`extract_json` finds the judge's JSON object in a free-form reply. Unlike go-ml, its brace
matching understands JSON strings, so ``{"notes": "use {x}"}`` is one object, not a broken one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any, NoReturn

from .._validate import int_at_least, string
from ..errors import JudgeError
from ._gotext import go_lower

__all__ = [
    "GO_WHITESPACE",
    "extract_json",
    "is_error_response",
    "strip_space",
    "strip_think_blocks",
    "utf8_prefix",
]

#: The characters Go's ``unicode.IsSpace`` accepts, which ``strings.TrimSpace`` removes.
GO_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_THINK_CLOSE = "</think>"
_THINK_FALLBACK_BYTES = 500

_FENCE = "```"
# The characters that matter to the brace scanner; everything else is skipped in C.
_BRACE_SCANNER_STOPS = re.compile(r'[{}"\\]')
_SHORT_REPLY_CHARS = 200
_MAX_SCANS = 4


def strip_space(text: str) -> str:
    """Remove leading and trailing white space exactly as Go's ``strings.TrimSpace`` does.

    Args:
        text: any text.

    Returns:
        ``text`` without the Unicode white space at either end.

    Example:
        >>> strip_space("\\u3000 hello \\n")
        'hello'
        >>> strip_space("\\x1chello")  # str.strip() would remove \\x1c; Go keeps it
        '\\x1chello'
    """
    return string("text", text).strip(GO_WHITESPACE)


def is_error_response(text: str) -> bool:
    """Whether a response is an error message rather than an answer.

    A response is an error when, after :func:`strip_space`, it starts with ``error`` in any
    letter case (``"ERROR: timeout"``, ``"Error - model failed"``, ``"error"``). Such responses
    score ``False`` in GSM8K, zero engagement and "broken" in the heuristic suite.

    Args:
        text: a model response.

    Returns:
        True for an error response.

    Example:
        >>> is_error_response("  Error: the backend timed out")
        True
        >>> is_error_response("The error is in line 3")
        False
    """
    # Lower-cased as Go's strings.ToLower does, one code point for one, so the first five
    # code points decide.
    return go_lower(string("text", text).strip(GO_WHITESPACE)[:5]) == "error"


def utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding is at most ``max_bytes`` bytes.

    Go slices strings by bytes; this is the same cut without splitting a character (a character
    that would straddle the limit is left out). Lone surrogates count as three bytes.

    Args:
        text: any text.
        max_bytes: the byte budget, >= 0.

    Returns:
        A prefix of ``text``.

    Example:
        >>> utf8_prefix("héllo", 2)
        'h'
        >>> utf8_prefix("héllo", 3)
        'hé'
    """
    string("text", text)
    int_at_least("max_bytes", max_bytes, 0)
    if len(text) <= max_bytes and (text.isascii() or len(text) * 4 <= max_bytes):
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    cut = max_bytes
    while cut > 0 and data[cut] & 0xC0 == 0x80:  # a continuation byte: back off to its lead
        cut -= 1
    return data[:cut].decode("utf-8", "surrogatepass")


def strip_think_blocks(text: str) -> str:
    """Remove reasoning-model ``<think>...</think>`` blocks.

    Every ``<think>...</think>`` block (non-greedy, across lines, case-sensitive) is removed and
    the rest is trimmed with :func:`strip_space`. When nothing is left, the model only thought:
    the first 500 bytes of the input are returned if the input is longer than that (cut at a
    character boundary, see :func:`utf8_prefix`), and the input unchanged otherwise.

    Args:
        text: a model response.

    Returns:
        The answer without its thinking.

    Example:
        >>> strip_think_blocks("<think>12 * 2 = 24</think>\\nThe answer is 24.")
        'The answer is 24.'
        >>> strip_think_blocks("<think>hmm</think>")
        '<think>hmm</think>'
    """
    string("text", text)
    last_close = text.rfind(_THINK_CLOSE)
    if last_close == -1:
        cleaned = text
    else:
        # No block can end after the last "</think>"; cutting there keeps the regex linear when
        # a degenerate reply repeats "<think>" without ever closing it.
        head_end = last_close + len(_THINK_CLOSE)
        cleaned = _THINK_BLOCK.sub("", text[:head_end]) + text[head_end:]
    cleaned = cleaned.strip(GO_WHITESPACE)
    if cleaned:
        return cleaned
    return utf8_prefix(text, _THINK_FALLBACK_BYTES)


# -- JSON extraction ------------------------------------------------------------------------------


def _object_spans(text: str, start: int) -> tuple[list[tuple[int, int]], int | None]:
    """Balanced ``{...}`` spans from ``start``, outermost first, in one left-to-right scan.

    Outside an object only ``{`` matters. Inside one, braces count unless they are in a JSON
    string (double quotes, backslash escapes). If the text ends with braces still open, the
    objects that did close inside them are returned too, with the first brace left open.
    """
    spans: list[tuple[int, int]] = []
    # Each open brace with the closed objects directly inside it.
    open_braces: list[tuple[int, list[tuple[int, int]]]] = []
    in_string = False
    pos = start
    while True:
        if not open_braces:
            pos = text.find("{", pos)
            if pos == -1:
                break
            open_braces.append((pos, []))
            pos += 1
            continue
        stop = _BRACE_SCANNER_STOPS.search(text, pos)
        if stop is None:
            break
        pos = stop.start()
        char = text[pos]
        if in_string:
            if char == "\\":
                pos += 2  # the escaped character, whatever it is, cannot end the string
                continue
            if char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            open_braces.append((pos, []))
        elif char == "}":
            opened, _nested = open_braces.pop()
            (open_braces[-1][1] if open_braces else spans).append((opened, pos + 1))
        pos += 1
    for _opened, closed_inside in open_braces:
        spans.extend(closed_inside)
    spans.sort()
    return spans, (open_braces[0][0] if open_braces else None)


def _fenced_block(text: str) -> str | None:
    """The inside of the first fenced code block (an optional ``json`` tag left out), or None.

    This is the block a fence-to-fence regex captures, up to the white space around it (which
    the brace scanner skips anyway). Two plain searches replace the regex, whose white-space loops
    make Python's backtracking engine slow on long blank runs.
    """
    opening = text.find(_FENCE)
    if opening == -1:
        return None
    start = opening + len(_FENCE)
    if text.startswith("json", start):
        start += len("json")
    closing = text.find(_FENCE, start)
    return None if closing == -1 else text[start:closing]


def _candidates(text: str) -> Iterator[str]:
    """The objects to try, in order: inside the first fenced block, then in the whole text.

    A brace left open (prose such as ``"{ oops"``, or a quote that made the rest look like a
    string) is skipped by scanning again just after it, a few times at most.
    """
    seen: set[str] = set()
    block = _fenced_block(text)
    sources = (text,) if block is None else (block, text)
    for source in sources:
        start = 0
        for _ in range(_MAX_SCANS):
            spans, unclosed = _object_spans(source, start)
            for begin, end in spans:
                candidate = source[begin:end]
                if candidate not in seen:
                    seen.add(candidate)
                    yield candidate
            if unclosed is None:
                break
            start = unclosed + 1


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    # Python's float() turns an out-of-range literal such as 1e400 into inf, a value no JSON
    # text can denote; such an object fails like any other that does not decode.
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"the number {literal} is out of range for a float")
    return value


def _shorten(text: str) -> str:
    if len(text) <= _SHORT_REPLY_CHARS:
        return repr(text)
    return f"{text[:_SHORT_REPLY_CHARS]!r}... ({len(text)} chars)"


def extract_json(text: str) -> dict[str, Any]:
    """Find and decode the JSON object in an LLM judge's reply.

    The object is looked for first in the first fenced code block (```` ``` ```` or
    ```` ```json ````), then in the whole reply. Braces inside JSON strings (and escaped quotes
    in them) do not count, so string values may contain ``{``, ``}`` and ``\\"``. If the first
    balanced object does not decode (for example a ``{placeholder}`` in the prose before the
    real answer), the next one after it is tried, and the first that decodes wins; an object
    nested in one that failed is never used on its own. A ``{`` that never closes is skipped.
    Decoding is strict JSON: ``NaN`` and ``Infinity`` are rejected, and so is a number too large
    for a float (``1e400``, which Python would read as infinity); an object holding one does not
    decode, so the next candidate is tried.

    Args:
        text: the judge's reply.

    Returns:
        The decoded object.

    Raises:
        JudgeError: no balanced object was found, or none decodes; ``raw_reply`` holds ``text``.
        ConfigError: ``text`` is not a str.

    Example:
        >>> extract_json('Scores:\\n```json\\n{"score": 4, "notes": "uses {x} well"}\\n```')
        {'score': 4, 'notes': 'uses {x} well'}
    """
    string("text", text)
    tried = 0
    first_problem = ""
    for candidate in _candidates(text):
        tried += 1
        try:
            value = json.loads(
                candidate, parse_constant=_reject_constant, parse_float=_finite_float
            )
        except ValueError as exc:
            first_problem = first_problem or str(exc)
            continue
        except RecursionError:
            first_problem = first_problem or "nested too deeply"
            continue
        if isinstance(value, dict):
            return value
    if not tried:
        raise JudgeError(
            f"no JSON object found in the judge reply {_shorten(text)}", raw_reply=text
        )
    objects = "JSON object" if tried == 1 else f"{tried} JSON objects"
    raise JudgeError(
        f"the {objects} in the judge reply did not decode ({first_problem}): {_shorten(text)}",
        raw_reply=text,
    )
