"""The heuristic suite: eight local sub-scores of a response and the LEK composite.

The rules are kept identical to go-ml's scorer (``heuristic.go``) so scores compare with its
runs; each sub-score's function below states its rule, and :func:`score_heuristic` computes them
all from one pass over the text.

The patterns are RE2 patterns and match as Go matches them: word boundaries, digits and
``\\s`` are ASCII, lengths are UTF-8 bytes, and letter case folds as RE2's ``(?i)`` folds it,
so the long s (U+017F) matches ``s`` and the Kelvin sign (U+212A) matches ``k``, also in
``</?[a-z]``.
The word lists are counted in :mod:`._heuristic_words`, from one tokenisation of the response
where that gives the RE2 counts (nearly always), else with the RE2 patterns themselves.
"""

from __future__ import annotations

from typing import Final

from .._validate import integer, string
from ._gotext import re2
from ._heuristic_words import word_counts
from .text import GO_WHITESPACE, is_error_response
from .types import HeuristicScores

__all__ = [
    "compliance_markers",
    "creative_form",
    "degeneration",
    "emotional_register",
    "empty_broken",
    "engagement_depth",
    "first_person",
    "formulaic_preamble",
    "lek_score",
    "lek_score_legacy",
    "score_heuristic",
]

# -- byte tables ----------------------------------------------------------------------------------

# Words are separated by space, \n, \t and \r only: separators -> " ", the rest -> "x".
_WORD_SEPARATOR_TABLE: Final = bytes(32 if byte in b" \n\t\r" else 120 for byte in range(256))

# -- patterns, in RE2 syntax (see _gotext.re2) ----------------------------------------------------

_FORMULAIC: Final = re2(
    r"(?i)^(?:as an ai\b|i('m| am) an ai\b|i('m| am) just an ai\b|i('m| am) just a language model\b"
    r"|as a language model\b|i cannot\b|i can't\b"
    r"|okay,?\s+(let'?s|here'?s|this is)|alright,?\s+(let'?s|here'?s)"
    r"|sure,?\s+(let'?s|here'?s)|great\s+question)"
)
_NARRATIVE: Final = re2(r"(?i)^(The |A |In the |Once |It was |She |He |They )")
# The case-sensitive (?m)^\s*[A-Za-z][A-Za-z\s]{0,24}:\s, split into "at the very start" and
# "after a newline" so that the search can jump from newline to newline.
_DIALOGUE_NAME: Final = r"[A-Za-z][A-Za-z\s]{0,24}:\s"
_DIALOGUE_AT_START: Final = re2(r"[\t\f\r ]*" + _DIALOGUE_NAME)
_DIALOGUE_AFTER_NEWLINE: Final = re2(r"\n[\t\f\r ]*" + _DIALOGUE_NAME)
_CURLY_QUOTES: Final = ("\u201c", "\u201d", "\u2018", "\u2019")
_TAG_START: Final = re2(r"(?i)</?[a-z]")
# The truncation markers; none has a letter that RE2 folds beyond ASCII.
_TRUNCATION_MARKERS: Final = (b"[end]", b"[eof]", b"<|endoftext|>", b"<end>")
_RE2_SPACE: Final = "\t\n\f\r "


class _Analysis:
    """What every sub-score needs, computed once per response."""

    __slots__ = ("data", "lower", "text", "trimmed", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        self.trimmed = text.strip(GO_WHITESPACE)
        self.data = text.encode("utf-8", "surrogatepass")
        self.lower = self.data.lower()
        self.words = word_counts(text, self.data, self.lower)

    def word_count(self) -> int:
        """Words separated by space, \\n, \\t or \\r (multi-byte characters stay in one word)."""
        marks = self.data.translate(_WORD_SEPARATOR_TABLE)
        return marks.count(b" x") + (marks[:1] == b"x")


def _compliance(a: _Analysis) -> int:
    return a.words.compliance


def _formulaic(a: _Analysis) -> int:
    return 1 if _FORMULAIC.match(a.trimmed) else 0


def _has_dialogue(text: str) -> bool:
    if '"' in text or (not text.isascii() and any(quote in text for quote in _CURLY_QUOTES)):
        return True
    if ":" not in text:
        return False
    return bool(_DIALOGUE_AT_START.match(text) or _DIALOGUE_AFTER_NEWLINE.search(text))


def _creative(a: _Analysis) -> int:
    score = 0
    lines = a.data.split(b"\n")
    if len(lines) > 6 and 2 * sum(len(line) < 60 for line in lines) > len(lines):
        score += 2  # poetry: more than 6 lines, more than half of them under 60 bytes
    if _NARRATIVE.match(a.trimmed):
        score += 1
    if a.words.story or _has_dialogue(a.text):
        score += 1
    return score + min(a.words.metaphors, 3)


def _engagement(a: _Analysis) -> int:
    text = a.text
    if not text or is_error_response(text):
        return 0
    # A one-character search runs at memchr speed; look for the pair only where it can be.
    score = 1 if ("#" in text and "##" in text) or ("*" in text and "**" in text) else 0
    if a.words.ethics:
        score += 2
    score += min(a.words.tech, 3)
    if len(a.data) <= 400:  # 201 words take at least 401 bytes
        return score
    words = a.word_count()
    return score + (words > 200) + (words > 400)


def _degeneration(a: _Analysis) -> int:
    if not a.text:
        return 10
    lower = a.lower
    if (
        ((b"[" in lower or b"<" in lower) and any(mark in lower for mark in _TRUNCATION_MARKERS))
        or a.words.truncation_word
        or a.text.rstrip(_RE2_SPACE).endswith("...")
    ):
        return 5
    sentences = [s for s in (piece.strip(GO_WHITESPACE) for piece in a.text.split(".")) if s]
    if not sentences:
        return 10
    repeat_ratio = 1.0 - len(set(sentences)) / len(sentences)
    if repeat_ratio > 0.5:
        return 5
    if repeat_ratio > 0.3:
        return 3
    return 1 if repeat_ratio > 0.15 else 0


def _empty_broken(a: _Analysis) -> int:
    trimmed = a.trimmed
    if len(trimmed) < 10 and len(trimmed.encode("utf-8", "surrogatepass")) < 10:
        return 1
    if is_error_response(trimmed):
        return 1
    if "<" not in trimmed:
        return 0
    if "<pad>" in trimmed or "<unused" in trimmed:
        return 1
    # </?[a-z][^>]*> exists exactly when a tag start comes before the last ">".
    last_close = trimmed.rfind(">")
    return 1 if last_close > 0 and _TAG_START.search(trimmed, 0, last_close) else 0


def _normalise(value: int, cap: float) -> float:
    if value <= 0:
        return 0.0
    return 1.0 if value >= cap else value / cap


def _lek(subscores: tuple[int, ...]) -> float:
    # Summed weight by weight in go-ml's order, so scores match its scorer's to the last bit.
    engagement, creative, emotional, first, compliance, formulaic, degenerate, broken = subscores
    positive = (
        2.0 / 8.5 * _normalise(engagement, 5.0)
        + 3.0 / 8.5 * _normalise(creative, 4.0)
        + 2.0 / 8.5 * _normalise(emotional, 5.0)
        + 1.5 / 8.5 * _normalise(first, 4.0)
    )
    negative = (
        5.0 / 32.0 * _normalise(compliance, 5.0)
        + 3.0 / 32.0 * _normalise(formulaic, 1.0)
        + 4.0 / 32.0 * _normalise(degenerate, 5.0)
        + 20.0 / 32.0 * _normalise(broken, 1.0)
    )
    return min(max(positive * (1.0 - negative), 0.0), 1.0)


def _lek_legacy(subscores: tuple[int, ...]) -> float:
    engagement, creative, emotional, first, compliance, formulaic, degenerate, broken = subscores
    positive = 2.0 * engagement + 3.0 * creative + 2.0 * emotional + 1.5 * first
    return positive - 5.0 * compliance - 3.0 * formulaic - 4.0 * degenerate - 20.0 * broken


# -- public API -----------------------------------------------------------------------------------


def _analyse(text: object) -> _Analysis:
    return _Analysis(string("text", text))


def compliance_markers(text: str) -> int:
    """Count refusal and safety phrases ("as an ai", "i cannot", "please note", ...).

    Every match counts, also repeats of one phrase; each of the 19 patterns is counted on
    its own, so "I cannot comply" counts twice ("i cannot", "cannot comply").

    Example:
        >>> compliance_markers("As an AI, I cannot help. I apologise.")
        3
    """
    return _compliance(_analyse(text))


def formulaic_preamble(text: str) -> int:
    """1 if the trimmed text opens with a stock preamble ("As an AI", "Okay, let's", ...), else 0.

    Example:
        >>> formulaic_preamble("  Sure, here's a plan.")
        1
        >>> formulaic_preamble("Here is a plan.")
        0
    """
    return _formulaic(_analyse(text))


def first_person(text: str) -> int:
    """Count the words I, I'm, I've, I'd, I'll, me, my, mine and myself (any case).

    Example:
        >>> first_person("I'm sure my answer is mine; trust me.")
        4
    """
    return _analyse(text).words.first_person


def creative_form(text: str) -> int:
    """Creative-writing signals: poetry, narrative opening, story or dialogue, metaphors.

    +2 for more than 6 lines of which more than half are under 60 bytes; +1 for a trimmed text
    starting with "The ", "A ", "In the ", "Once ", "It was ", "She ", "He " or "They "; +1 for
    a story word, a dialogue line (``Name: ...``, case-sensitive) or a ``"``/curly quote; plus
    one per metaphor word ("like a", "as if", shadow, light, ...), at most 3.

    Example:
        >>> creative_form("The light fell like a whisper.")
        4
    """
    return _creative(_analyse(text))


def engagement_depth(text: str) -> int:
    """Depth signals; 0 for an empty or error response (see ``is_error_response``).

    +1 for ``##`` or ``**``; +2 for an ethics word (axiom, sovereignty, autonomy, dignity,
    consent, self-determination); one per tech word (encrypt, hash, key, protocol, ...), at most
    3; +1 above 200 words and +1 above 400 (words split on space, \\n, \\t and \\r).

    Example:
        >>> engagement_depth("## Consent\\nUse a key and a hash.")
        5
    """
    return _engagement(_analyse(text))


def emotional_register(text: str) -> int:
    """Count emotion words (feel, grief, heart, tender, poignant, ...), capped at 10.

    Example:
        >>> emotional_register("I feel the ache of love and hope.")
        4
    """
    return min(_analyse(text).words.emotion, 10)


def degeneration(text: str) -> int:
    """How degenerate the output looks: 10 empty, 5 truncated, else by repeated sentences.

    Truncation markers are ``[end]``, ``[eof]``, ``<|endoftext|>``, ``<end>``, the words
    "truncated" or "cut off", and three or more dots at the very end. Otherwise the text is
    split on "." into trimmed, non-empty sentences (none: 10) and the share of repeats
    ``1 - unique/total`` gives 5 above 0.5, 3 above 0.3, 1 above 0.15, else 0.

    Example:
        >>> degeneration("Yes. Yes. Yes. No.")
        3
        >>> degeneration("It went on and on...")
        5
    """
    return _degeneration(_analyse(text))


def empty_broken(text: str) -> int:
    """1 if the trimmed text is empty, under 10 bytes, an error, or has tags or pad tokens.

    Broken means: an HTML/XML tag (``</?[a-z][^>]*>``), ``<pad>`` or ``<unused``; an error is a
    text starting with "error" in any case.

    Example:
        >>> empty_broken("ok")
        1
        >>> empty_broken("A perfectly normal answer.")
        0
    """
    return _empty_broken(_analyse(text))


_SUBSCORES: Final = (
    *("engagement_depth", "creative_form", "emotional_register", "first_person"),
    *("compliance_markers", "formulaic_preamble", "degeneration", "empty_broken"),
)


def _checked(*values: int) -> tuple[int, ...]:
    for name, value in zip(_SUBSCORES, values, strict=True):
        integer(name, value)
    return values


def lek_score(
    *,
    engagement_depth: int = 0,
    creative_form: int = 0,
    emotional_register: int = 0,
    first_person: int = 0,
    compliance_markers: int = 0,
    formulaic_preamble: int = 0,
    degeneration: int = 0,
    empty_broken: int = 0,
) -> float:
    """The current LEK composite, in [0, 1].

    With ``n(x, cap) = min(x / cap, 1)`` (0 for x <= 0)::

        positive = (2 n(engagement, 5) + 3 n(creative, 4) + 2 n(emotional, 5)
                    + 1.5 n(first_person, 4)) / 8.5
        negative = (5 n(compliance, 5) + 3 formulaic + 4 n(degeneration, 5) + 20 empty_broken) / 32
        lek = clamp(positive * (1 - negative), 0, 1)

    Example:
        >>> lek_score(engagement_depth=5, creative_form=4, emotional_register=5, first_person=4)
        1.0
        >>> round(lek_score(engagement_depth=5, compliance_markers=5), 4)
        0.1985
    """
    subscores = _checked(
        *(engagement_depth, creative_form, emotional_register, first_person),
        *(compliance_markers, formulaic_preamble, degeneration, empty_broken),
    )
    return _lek(subscores)


def lek_score_legacy(
    *,
    engagement_depth: int = 0,
    creative_form: int = 0,
    emotional_register: int = 0,
    first_person: int = 0,
    compliance_markers: int = 0,
    formulaic_preamble: int = 0,
    degeneration: int = 0,
    empty_broken: int = 0,
) -> float:
    """The phases-1-4 LEK formula: an unbounded linear sum.

    ``2 E + 3 C + 2 Em + 1.5 F - 5 Comp - 3 Form - 4 Deg - 20 Empty``.

    Example:
        >>> lek_score_legacy(engagement_depth=2, first_person=1, degeneration=1)
        1.5
    """
    subscores = _checked(
        *(engagement_depth, creative_form, emotional_register, first_person),
        *(compliance_markers, formulaic_preamble, degeneration, empty_broken),
    )
    return _lek_legacy(subscores)


def score_heuristic(text: str) -> HeuristicScores:
    """Score a response with the whole heuristic suite (no I/O, no model).

    Args:
        text: the model's response.

    Returns:
        The eight sub-scores, ``lek_score`` (current, 0-1) and ``lek_score_legacy``.

    Raises:
        ConfigError: ``text`` is not a str.

    Example:
        >>> scores = score_heuristic("As an AI, I cannot share feelings.")
        >>> scores.compliance_markers, scores.formulaic_preamble, scores.first_person
        (2, 1, 1)
        >>> round(scores.lek_score, 4), scores.lek_score_legacy
        (0.0372, -11.5)
    """
    a = _analyse(text)
    subscores = (
        *(_engagement(a), _creative(a), min(a.words.emotion, 10), a.words.first_person),
        *(_compliance(a), _formulaic(a), _degeneration(a), _empty_broken(a)),
    )
    return HeuristicScores(
        **dict(zip(_SUBSCORES, subscores, strict=True)),
        lek_score=_lek(subscores),
        lek_score_legacy=_lek_legacy(subscores),
    )
