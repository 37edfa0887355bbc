"""Stop sequences over a token stream, sans-I/O, in memory and time linear in the stops.

:class:`StopSequenceCutter` finds the first stop sequence in streamed text with an Aho-Corasick
automaton over the stops: each character moves the automaton one step (amortised O(1)), and the
automaton's state is the longest tail of the text that could still become a stop, which is
exactly the text to hold back. Building the automaton costs O(total length of the stops); a
request with one 40,000-character stop costs 40,000 states, not the 800 million characters that
storing every prefix of it would.

Semantics: the text delivered is exactly the text before the earliest-starting occurrence of any
stop in the whole stream, however the text is split into tokens. When a short stop completes
while a longer one that started earlier is still possible (stops ``"abcd"`` and ``"bc"`` on
``"abc"``), the text is held until the longer one completes or fails.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from .errors import ConfigError
from .types import Token

__all__ = ["StopSequenceCutter"]

#: Automata over stops up to this many characters in all are cached and shared by streams.
_CACHED_CHARS = 4096


class _Automaton:
    """Aho-Corasick over the stop sequences: a trie with failure links.

    State 0 is the root. For each state: its outgoing edges, its failure link (the state of its
    longest proper suffix that is also a trie prefix), its depth (the length of its string) and
    the length of the longest stop that is a suffix of its string (0 when none is).
    """

    __slots__ = ("depth", "edges", "fail", "first_chars", "longest_stop")

    def __init__(self, stops: Sequence[str]) -> None:
        self.edges: list[dict[str, int]] = [{}]
        self.depth = [0]
        self.longest_stop = [0]
        for stop in stops:
            state = 0
            for char in stop:
                child = self.edges[state].get(char)
                if child is None:
                    child = len(self.edges)
                    self.edges[state][char] = child
                    self.edges.append({})
                    self.depth.append(self.depth[state] + 1)
                    self.longest_stop.append(0)
                state = child
            self.longest_stop[state] = len(stop)
        # From the root only a stop's first character leads anywhere: the C regex engine skips
        # the text in between, so ordinary tokens never reach the per-character loop.
        self.first_chars = re.compile("[" + "".join(map(re.escape, sorted(self.edges[0]))) + "]")
        self.fail = [0] * len(self.edges)
        queue = deque(self.edges[0].values())
        while queue:
            state = queue.popleft()
            inherited = self.longest_stop[self.fail[state]]
            if inherited > self.longest_stop[state]:
                self.longest_stop[state] = inherited
            for char, child in self.edges[state].items():
                link = self.fail[state]
                while link and char not in self.edges[link]:
                    link = self.fail[link]
                target = self.edges[link].get(char, 0)
                self.fail[child] = target if target != child else 0
                queue.append(child)

    def step(self, state: int, char: str) -> int:
        """The state after reading ``char`` in ``state``."""
        edges, fail = self.edges, self.fail
        while state and char not in edges[state]:
            state = fail[state]
        return edges[state].get(char, 0)


@functools.lru_cache(maxsize=32)
def _cached_automaton(stops: tuple[str, ...]) -> _Automaton:
    return _Automaton(stops)


def _automaton(stops: tuple[str, ...]) -> _Automaton:
    # Small stop sets (the usual "\n\n", "User:") are shared; a huge one is built per stream,
    # so hostile requests cannot fill the cache with big automata.
    if sum(map(len, stops)) <= _CACHED_CHARS:
        return _cached_automaton(stops)
    return _Automaton(stops)


class StopSequenceCutter:
    """Sans-I/O stop-sequence cutting over a token sequence.

    Tokens whose text could be the start of a stop sequence are held back until later tokens
    decide; on a match, only the text before the stop is released (the token that straddles
    the stop is truncated). Everything released is safe to deliver.

    Example:
        >>> cutter = StopSequenceCutter(["\\nUser:"])
        >>> cutter.feed(Token(0, "Hi"))
        ([Token(id=0, text='Hi', logprob=None, top_logprobs=())], False)
        >>> cutter.feed(Token(1, "\\nUs"))
        ([], False)
        >>> cutter.feed(Token(2, "er: more"))
        ([], True)
    """

    __slots__ = ("_automaton", "_held", "_held_text", "_match", "_state")

    def __init__(self, stops: Sequence[str]) -> None:
        if not stops or any(not isinstance(stop, str) or not stop for stop in stops):
            raise ConfigError("stops", "stop sequences must be non-empty strings")
        self._automaton = _automaton(tuple(stops))
        self._state = 0
        self._held: list[Token] = []
        self._held_text = ""
        # Where the earliest complete stop seen so far starts in the held text, while a longer
        # stop that started before it may still complete; None when there is none.
        self._match: int | None = None

    @property
    def held_text(self) -> str:
        """Text received but not yet released (a possible stop, or text before one)."""
        return self._held_text

    def feed(self, token: Token) -> tuple[list[Token], bool]:
        """Add a token; return the tokens now safe to deliver and whether a stop was found."""
        automaton = self._automaton
        text = self._held_text + token.text
        self._held.append(token)
        self._held_text = text
        state, match = self._state, self._match
        chars = token.text
        base = len(text) - len(chars)
        index, size = 0, len(chars)
        while index < size:
            if state == 0:
                at_root = automaton.first_chars.search(chars, index)
                if at_root is None:
                    break
                index = at_root.start()
            state = automaton.step(state, chars[index])
            index += 1
            end = base + index
            found = automaton.longest_stop[state]
            if found and (match is None or end - found < match):
                match = end - found
            # Decided once no stop in progress could start before the match.
            if match is not None and end - automaton.depth[state] >= match:
                return self._release(match, truncate=True), True
        self._state, self._match = state, match
        if state == 0 and match is None:
            released, self._held, self._held_text = self._held, [], ""
            return released, False
        keep_from = len(text) - automaton.depth[state]
        if match is not None:
            keep_from = min(keep_from, match)
        released = self._release(keep_from, truncate=False)
        return released, False

    def finish(self) -> tuple[list[Token], bool]:
        """The source ended: release what is held, cut at a stop that is still pending.

        Returns:
            The tokens to deliver and whether a stop sequence ended the text.
        """
        if self._match is not None:
            return self._release(self._match, truncate=True), True
        released, self._held, self._held_text = self._held, [], ""
        self._state = 0
        return released, False

    def flush(self) -> list[Token]:
        """Release everything that is safe to deliver (see :meth:`finish`)."""
        return self.finish()[0]

    def _release(self, limit: int, *, truncate: bool) -> list[Token]:
        """Release held tokens that lie before ``limit``; truncate the straddler on a stop."""
        released: list[Token] = []
        offset = 0
        index = 0
        for index, token in enumerate(self._held):  # noqa: B007 - index used after the loop
            end = offset + len(token.text)
            if end <= limit:
                released.append(token)
                offset = end
                continue
            if truncate and offset < limit:
                released.append(replace(token, text=token.text[: limit - offset]))
            break
        else:
            index = len(self._held)
        if truncate:
            self._held, self._held_text = [], ""
            self._state, self._match = 0, None
        else:
            self._held = self._held[index:]
            self._held_text = self._held_text[offset:]
            if self._match is not None:
                self._match -= offset
        return released
