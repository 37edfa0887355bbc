"""Log-probabilities in OpenAI's two shapes (and llama.cpp's variants), both ways.

- chat: ``choices[0].logprobs = {"content": [{"token", "logprob", "bytes", "top_logprobs":
  [{"token", "logprob", "bytes"}, ...]}, ...], "refusal": null}``; llama.cpp adds each token's
  ``id``, and with ``post_sampling_probs`` sends ``prob``/``top_probs`` instead;
- completions (the legacy API): ``{"tokens": [...], "token_logprobs": [...], "top_logprobs":
  [{text: logprob, ...}, ...], "text_offset": [...]}``, offsets counted in characters from the
  start of the completion.

A streamed reply carries the same objects, one token per chunk (some servers batch several).
Writing, a token without a log-probability raises :class:`~goml_async.errors.NotSupported`
(a 400, or an error event mid-stream): a reply never silently lacks them. JSON has no infinity:
log(0) is written as -9999 (OpenAI's value) and read back from anything at or below -3e38
(llama.cpp writes the lowest float32).

Example:
    >>> from goml_async.types import Token, TopLogprob
    >>> token = Token(5, "Hi", -0.25, (TopLogprob("Hi", -0.25, 5), TopLogprob("Hey", -1.5, 9)))
    >>> chat_entry(token, 1)["top_logprobs"]
    [{'token': 'Hi', 'logprob': -0.25, 'bytes': [72, 105]}]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ..errors import GenerationError, NotSupported
from ..types import Token, TopLogprob

__all__ = ["LogprobsCollector", "chat_entry", "completion_part", "logprob_tokens"]

#: What a log-probability of minus infinity is sent as (JSON has no infinity; OpenAI's value).
_FLOOR: Final = -9999.0

#: llama.cpp writes log(0) as the lowest float32 (JSON has no -inf); anything below is log(0).
_LOG_ZERO: Final = -3.0e38


# -- writing --------------------------------------------------------------------------------------


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else _FLOOR


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8", "replace"))


def _required(token: Token) -> float:
    if token.logprob is None:
        raise NotSupported(
            "logprobs were asked for, but this model reports no log-probability for its tokens"
        )
    return _finite(token.logprob)


def chat_entry(token: Token, top: int) -> dict[str, Any]:
    """One token of a chat reply's ``logprobs.content``, with up to ``top`` alternatives.

    Raises:
        NotSupported: the token has no log-probability.
    """
    return {
        "token": token.text,
        "logprob": _required(token),
        "bytes": _bytes(token.text),
        "top_logprobs": [
            {"token": alt.text, "logprob": _finite(alt.logprob), "bytes": _bytes(alt.text)}
            for alt in token.top_logprobs[:top]
        ],
    }


def completion_part(token: Token, top: int) -> tuple[str, float, dict[str, float]]:
    """One token of a completion's logprobs: its text, log-probability and alternatives.

    Raises:
        NotSupported: the token has no log-probability.
    """
    alternatives = {alt.text: _finite(alt.logprob) for alt in token.top_logprobs[:top]}
    return token.text, _required(token), alternatives


class LogprobsCollector:
    """Gathers the log-probabilities of a whole reply, token by token.

    Args:
        chat: the chat shape (True) or the completions shape.
        top: alternatives kept per token.
    """

    __slots__ = ("_chat", "_entries", "_offset", "_offsets", "_tokens", "_top", "_tops", "_values")

    def __init__(self, *, chat: bool, top: int) -> None:
        self._chat = chat
        self._top = top
        self._entries: list[dict[str, Any]] = []
        self._tokens: list[str] = []
        self._values: list[float] = []
        self._tops: list[dict[str, float]] = []
        self._offsets: list[int] = []
        self._offset = 0

    def add(self, token: Token) -> None:
        """Record one delivered token (tokens with no text are skipped, as in the reply)."""
        if not token.text:
            return
        if self._chat:
            self._entries.append(chat_entry(token, self._top))
            return
        text, value, alternatives = completion_part(token, self._top)
        self._tokens.append(text)
        self._values.append(value)
        self._tops.append(alternatives)
        self._offsets.append(self._offset)
        self._offset += len(text)

    def chunk(self, token: Token) -> dict[str, Any]:
        """The ``logprobs`` object of the stream chunk that carries ``token`` (a token with
        text); a stream keeps nothing of it but the text offset."""
        if self._chat:
            return {"content": [chat_entry(token, self._top)], "refusal": None}
        text, value, alternatives = completion_part(token, self._top)
        offset, self._offset = self._offset, self._offset + len(text)
        return {
            "tokens": [text],
            "token_logprobs": [value],
            "top_logprobs": [alternatives],
            "text_offset": [offset],
        }

    def render(self) -> dict[str, Any]:
        """The ``logprobs`` object of the whole reply."""
        if self._chat:
            return {"content": list(self._entries), "refusal": None}
        return {
            "tokens": list(self._tokens),
            "token_logprobs": list(self._values),
            "top_logprobs": list(self._tops),
            "text_offset": list(self._offsets),
        }


# -- reading --------------------------------------------------------------------------------------


def _logprob(entry: Mapping[str, Any]) -> float | None:
    """An entry's log-probability: ``logprob``, or llama.cpp's ``prob`` (post_sampling_probs)."""
    value = entry.get("logprob")
    if value is None:
        prob = entry.get("prob")
        if prob is None:
            return None
        prob = _real(prob)
        return math.log(prob) if prob > 0 else -math.inf
    value = _real(value)
    return -math.inf if value <= _LOG_ZERO else value


def _real(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _token_id(entry: Mapping[str, Any]) -> int:
    value = entry.get("id", -1)
    if type(value) is not int:
        raise TypeError(f"not a token ID: {value!r}")
    return value


def _alternatives(entries: Sequence[Mapping[str, Any]]) -> tuple[TopLogprob, ...]:
    """Chat (and llama.cpp) ``top_logprobs``: a list of ``{token, logprob, id?}``."""
    tops = []
    for entry in entries:
        logprob = _logprob(entry)
        if logprob is not None:
            tops.append(TopLogprob(str(entry.get("token", "")), logprob, _token_id(entry)))
    return tuple(tops)


def _legacy_alternatives(alternatives: Mapping[str, Any] | None) -> tuple[TopLogprob, ...]:
    """Legacy completions' ``top_logprobs``: one ``{text: logprob}`` dict, most likely first."""
    if not alternatives:
        return ()
    tops = [TopLogprob(str(text), _real(lp)) for text, lp in alternatives.items()]
    return tuple(sorted(tops, key=lambda top: -top.logprob))


def _entries(logprobs: Mapping[str, Any]) -> list[tuple[str, int, float | None, Any]]:
    """(token text, ID, logprob, alternatives) for each token of a chunk's ``logprobs``."""
    if "content" in logprobs:  # chat, and llama.cpp's own completions shape
        return [
            (
                str(entry.get("token", "")),
                _token_id(entry),
                _logprob(entry),
                _alternatives(entry.get("top_logprobs") or entry.get("top_probs") or ()),
            )
            for entry in logprobs["content"] or ()
        ]
    texts = logprobs.get("tokens") or ()  # OpenAI's legacy completions shape
    values = logprobs.get("token_logprobs") or ()
    tops = logprobs.get("top_logprobs") or ()
    return [
        (
            str(text),
            -1,
            None if i >= len(values) or values[i] is None else _real(values[i]),
            _legacy_alternatives(tops[i] if i < len(tops) else None),
        )
        for i, text in enumerate(texts)
    ]


def logprob_tokens(text: str, logprobs: Any, pending: deque[Token]) -> Token | None:
    """The tokens of a chunk with log-probabilities: the first returned, the rest ``pending``.

    Raises:
        GenerationError: the log-probabilities are malformed.
    """
    try:
        entries = _entries(logprobs)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        message = f"the server sent malformed logprobs ({exc}): {logprobs!r}"
        raise GenerationError(message[:400]) from exc
    if not entries:
        return Token(-1, text) if text else None
    pieces = [entry[0] for entry in entries]
    # Each token gets its own text when the pieces spell the chunk's text; otherwise (a token
    # whose bytes end mid-character, a reasoning delta) the first token carries all of it, so
    # no text is ever lost or delivered late.
    if len(entries) > 1 and "".join(pieces) == text:
        texts = pieces
    else:
        texts = [text] + [""] * (len(entries) - 1)
    tokens = [
        Token(token_id, piece, logprob, tops)
        for piece, (_, token_id, logprob, tops) in zip(texts, entries, strict=True)
    ]
    pending.extend(tokens[1:])
    return tokens[0]
