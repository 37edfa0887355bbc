"""Go's text semantics where scores depend on them: ``strings.ToLower`` and RE2 regexes.

The scorers are kept identical to go-ml's so scores compare, and go-ml lower-cases with Go's
``strings.ToLower`` and matches with Go's ``regexp`` (RE2 syntax). Python's ``str.lower`` and
``re`` differ from both in ways that change scores:

- ``str.lower`` applies the full Unicode mappings: U+0130 (capital I with dot above) becomes
  ``"i"`` plus a combining dot (two code points) and a final capital sigma becomes the final
  small sigma U+03C2. Go maps every code point to exactly one, with the simple mapping (U+0130
  to ``"i"``, capital sigma to U+03C3 everywhere). :func:`go_lower` does what Go does.
- RE2's ``(?i)`` folds each letter into its Unicode simple case-folding orbit, also inside
  character classes, while ``\\b``, ``\\d`` and ``\\s`` stay ASCII (``\\s`` is ``[\\t\\n\\f\\r ]``,
  without ``\\v``). Python's ``re.IGNORECASE`` is either ASCII-only (with ``re.ASCII``, which
  misses the long s U+017F for ``s`` and the Kelvin sign U+212A for ``k``) or wider than RE2
  (without it, ``i`` also matches U+0130 and the dotless U+0131, and ``\\b`` becomes Unicode).
  :func:`re2` compiles an RE2 pattern into a Python pattern that matches exactly what Go
  matches: ASCII classes, ASCII folding, and the few non-ASCII orbit members spelled out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["FOLD_ORBITS", "compiled_re2_patterns", "go_lower", "has_wide_folds", "re2"]

#: Go's ``unicode.SimpleFold`` orbits that reach beyond ASCII case pairs for the letters
#: the scorers' patterns use: every other ASCII letter folds only with its other case.
FOLD_ORBITS: Final = ("Kk\u212a", "Ss\u017f", "\u03a0\u03c0\u03d6")
_ORBIT_OF: Final = {char: orbit for orbit in FOLD_ORBITS for char in orbit}
# The non-ASCII characters that RE2's (?i) lets match an ASCII letter: the long s and the
# Kelvin sign. A text without them matches every ASCII pattern as with ASCII-only folding.
_WIDE_FOLDS: Final = ("\u017f", "\u212a")

_RE2_SPACE: Final = "\t\n\f\r "
_WORD_RANGES: Final = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_LEADING_FLAGS: Final = re.compile(r"\(\?([ims]+)\)")
_CONTROL_ESCAPES: Final = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v"}
_ANCHOR_ESCAPES: Final = {"b": r"\b", "B": r"\B", "A": r"\A", "z": r"\Z"}

_compiled: dict[str, re.Pattern[str]] = {}


def go_lower(text: str) -> str:
    """Lower-case ``text`` exactly as Go's ``strings.ToLower``: one code point for one.

    Every code point gets its simple lowercase mapping, with no context: U+0130 becomes
    ``"i"`` (``str.lower`` gives ``"i\\u0307"``) and capital sigma always becomes U+03C3 (never
    the final U+03C2), so lengths and byte offsets stay those of Go's result.

    Example:
        >>> go_lower("NOT NECESSAR\\u0130LY"), go_lower("\\u039f\\u0394\\u039f\\u03a3")
        ('not necessarily', 'οδοσ')
    """
    if text.isascii():
        return text.lower()
    # These two are the only code points where str.lower() is not the per-character simple
    # mapping: U+0130 has a two-character full mapping, U+03A3 a context-dependent one.
    return text.replace("\u0130", "i").replace("\u03a3", "\u03c3").lower()


def has_wide_folds(text: str) -> bool:
    """Whether ``text`` has a character that RE2's ``(?i)`` folds onto an ASCII letter."""
    return not text.isascii() and any(char in text for char in _WIDE_FOLDS)


def compiled_re2_patterns() -> dict[str, re.Pattern[str]]:
    """Every RE2 pattern compiled so far, by its RE2 source (a copy)."""
    return dict(_compiled)


def re2(pattern: str) -> re.Pattern[str]:
    """Compile a Go RE2 pattern into a Python pattern that matches exactly the same text.

    The syntax the scorers' patterns use is supported: leading flags ``(?i)``, ``(?m)``,
    ``(?s)``; literals, ``.``, groups ``(...)`` and ``(?:...)``, alternation, quantifiers; ``^``
    and ``$`` (the end of the text, unlike Python's ``$``, unless ``(?m)``); the ASCII classes
    and assertions ``\\b \\B \\A \\z \\d \\D \\s \\S \\w \\W`` and escaped punctuation; classes
    with ranges, negation and those escapes.
    Under ``(?i)`` every letter and class matches its whole simple case-folding orbit.
    Anything else raises ``ValueError``, so a pattern is never silently translated wrong.

    Compiled patterns are cached by source.

    Example:
        >>> bool(re2(r"(?i)\\bplease note\\b").search("plea\\u017fe note"))
        True
        >>> bool(re2(r"(?i)\\bi\\b").search("\\u0130"))  # RE2 does not fold I with U+0130
        False
    """
    cached = _compiled.get(pattern)
    if cached is None:
        cached = _compiled[pattern] = _translate(pattern)
    return cached


def _translate(pattern: str) -> re.Pattern[str]:
    flags = ""
    body = pattern
    if (leading := _LEADING_FLAGS.match(pattern)) is not None:
        flags, body = leading.group(1), pattern[leading.end() :]
    fold, multiline = "i" in flags, "m" in flags
    out: list[str] = []
    pos = 0
    while pos < len(body):
        char = body[pos]
        if char == "\\":
            out.append(_escape(body, pos, fold))
            pos += 2
        elif char == "[":
            text, pos = _class(body, pos, fold)
            out.append(text)
            continue
        elif char == "$":
            out.append("$" if multiline else r"\Z")
            pos += 1
        elif body.startswith("(?", pos) and not body.startswith("(?:", pos):
            raise ValueError(f"RE2 pattern {pattern!r}: only leading flags and (?:...) supported")
        else:
            out.append(_literal(char, fold, pattern))
            pos += 1
    python_flags = re.ASCII
    python_flags |= re.IGNORECASE if fold else 0
    python_flags |= re.MULTILINE if multiline else 0
    python_flags |= re.DOTALL if "s" in flags else 0
    return re.compile("".join(out), python_flags)


def _literal(char: str, fold: bool, pattern: str) -> str:
    if not fold:
        return char
    if char in _ORBIT_OF:
        return "[" + re.escape(_ORBIT_OF[char]) + "]"
    if not char.isascii() and char.lower() != char.upper():
        raise ValueError(f"RE2 pattern {pattern!r}: no fold orbit known for {char!r}")
    return char  # ASCII letters fold in Python's ASCII mode exactly as in RE2


def _escape(body: str, pos: int, fold: bool) -> str:
    if pos + 1 >= len(body):
        raise ValueError(f"RE2 pattern {body!r} ends with a lone backslash")
    char = body[pos + 1]
    if char in _ANCHOR_ESCAPES:
        return _ANCHOR_ESCAPES[char]
    if char in "dD":
        return "\\" + char  # [0-9] in ASCII mode, as in RE2
    if char in "sS":
        return ("[^" if char == "S" else "[") + re.escape(_RE2_SPACE) + "]"
    if char in "wW":
        ranges = _folded(list(_WORD_RANGES)) if fold else list(_WORD_RANGES)
        return _render(ranges, negated=char == "W")
    if char in _CONTROL_ESCAPES:
        return re.escape(_CONTROL_ESCAPES[char])
    if char.isascii() and not char.isalnum():
        return re.escape(char)
    raise ValueError(f"RE2 pattern {body!r}: unsupported escape \\{char}")


def _class(body: str, start: int, fold: bool) -> tuple[str, int]:
    """Translate the class at ``body[start] == "["``; returns it and the position after it."""
    pos = start + 1
    negated = body.startswith("^", pos)
    pos += negated
    ranges: list[tuple[int, int]] = []
    first = True
    while True:
        if pos >= len(body):
            raise ValueError(f"RE2 pattern {body!r}: unclosed character class")
        char = body[pos]
        if char == "]" and not first:
            pos += 1
            break
        first = False
        if char == "\\":
            pos = _class_escape(body, pos, ranges)
            continue
        low = ord(char)
        if body.startswith("-", pos + 1) and pos + 2 < len(body) and body[pos + 2] != "]":
            high_char = body[pos + 2]
            if high_char == "\\":
                raise ValueError(f"RE2 pattern {body!r}: escaped range ends are not supported")
            if ord(high_char) < low:
                raise ValueError(f"RE2 pattern {body!r}: bad range {char}-{high_char}")
            ranges.append((low, ord(high_char)))
            pos += 3
        else:
            ranges.append((low, low))
            pos += 1
    return _render(_folded(ranges) if fold else ranges, negated=negated), pos


def _class_escape(body: str, pos: int, ranges: list[tuple[int, int]]) -> int:
    if pos + 1 >= len(body):
        raise ValueError(f"RE2 pattern {body!r} ends with a lone backslash")
    char = body[pos + 1]
    if char == "d":
        ranges.append((0x30, 0x39))
    elif char == "s":
        ranges.extend((ord(space), ord(space)) for space in _RE2_SPACE)
    elif char == "w":
        ranges.extend(_WORD_RANGES)
    elif char in _CONTROL_ESCAPES:
        ranges.append((ord(_CONTROL_ESCAPES[char]),) * 2)
    elif char.isascii() and not char.isalnum():
        ranges.append((ord(char), ord(char)))
    else:
        raise ValueError(f"RE2 pattern {body!r}: unsupported escape \\{char} in a class")
    return pos + 2


def _folded(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` plus the whole orbit of every character in them that has a wide orbit.

    ASCII case pairs need nothing: Python's ASCII-mode IGNORECASE adds them, as RE2 does.
    """
    extra = [
        (ord(member), ord(member))
        for orbit in FOLD_ORBITS
        if any(_contains(ranges, ord(char)) for char in orbit)
        for member in orbit
    ]
    return ranges + extra


def _contains(ranges: Iterable[tuple[int, int]], code: int) -> bool:
    return any(low <= code <= high for low, high in ranges)


def _render(ranges: list[tuple[int, int]], *, negated: bool) -> str:
    parts = [
        re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        for low, high in ranges
    ]
    return ("[^" if negated else "[") + "".join(parts) + "]"
