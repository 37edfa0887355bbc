"""Log-probabilities in OpenAI's two wire shapes, without I/O.

- chat: ``choices[0].logprobs = {"content": [{"token", "logprob", "bytes", "top_logprobs":
  [{"token", "logprob", "bytes"}, ...]}, ...], "refusal": null}``;
- completions (the legacy API): ``{"tokens": [...], "token_logprobs": [...], "top_logprobs":
  [{text: logprob, ...}, ...], "text_offset": [...]}``, offsets counted in characters from the
  start of the completion.

A streamed reply carries the same objects, one token per chunk. A token that arrives without a
log-probability although they were asked for raises :class:`~goml_async.errors.NotSupported`
(a 400, or an error event mid-stream): the reply never silently lacks them.

Example:
    >>> from goml_async.types import Token, TopLogprob
    >>> token = Token(5, "Hi", -0.25, (TopLogprob("Hi", -0.25, 5), TopLogprob("Hey", -1.5, 9)))
    >>> chat_entry(token, 1)["top_logprobs"]
    [{'token': 'Hi', 'logprob': -0.25, 'bytes': [72, 105]}]
"""

from __future__ import annotations

import math
from typing import Any, Final

from ..errors import NotSupported
from ..types import Token

__all__ = ["LogprobsCollector", "chat_entry", "completion_part"]

#: What a log-probability of minus infinity is sent as (JSON has no infinity; OpenAI's value).
_FLOOR: Final = -9999.0


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else _FLOOR


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8", "replace"))


def _logprob(token: Token) -> float:
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
        "logprob": _logprob(token),
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
    return token.text, _logprob(token), alternatives


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
