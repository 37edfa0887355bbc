"""The heuristic suite's word patterns, counted two ways that agree.

The suite has one RE2 pattern per word list (``(?i)\\b(feel|feeling|...)\\b`` and so on, kept
identical to go-ml's scorer so scores compare) and counts the matches. :func:`word_counts`
returns those counts:

- from one tokenisation of the text (:func:`token_counts`), for nearly every text. A
  ``\\bword\\b`` match is exactly an ASCII word run equal to ``word``, so the counts are the
  same while a medium-length answer stays within the suite's 50-microsecond budget;
- with the patterns themselves (:func:`re2_counts`) for a text that has a character RE2's
  ``(?i)`` folds onto an ASCII letter (the long s U+017F and the Kelvin sign U+212A, see
  :func:`._gotext.has_wide_folds`). Such a character matches ``s`` or ``k`` inside a word
  while it is no word character for ``\\b``, so a match can start or end in the middle of what
  the tokeniser sees as one word (``x\\u017ftory`` has the word "story").
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final, NamedTuple

from ._gotext import has_wide_folds, re2

__all__ = ["WordCounts", "re2_counts", "token_counts", "word_counts"]


class WordCounts(NamedTuple):
    """The word-pattern results the sub-scores are made of (counts are uncapped)."""

    compliance: int
    first_person: int
    emotion: int
    metaphors: int
    tech: int
    story: bool
    ethics: bool
    truncation_word: bool


def word_counts(text: str, data: bytes, lower: bytes) -> WordCounts:
    """The word-pattern results for ``text``.

    ``data`` is the text's UTF-8 and ``lower`` the same bytes with ASCII letters lower-cased.
    """
    return re2_counts(text) if has_wide_folds(text) else token_counts(data, lower)


# -- from one tokenisation ------------------------------------------------------------------------

# Single words by category; "I'm", "I've", "I'd" and "I'll" are counted through the word I.
_WORDS: Final = {
    "first_person": "i me my mine myself",
    "emotion": "feel feeling felt pain joy sorrow grief love fear hope longing lonely loneliness "
    "compassion empathy kindness gentle tender warm heart soul spirit "
    "vulnerable fragile precious sacred profound deep intimate "
    "haunting melancholy bittersweet poignant ache yearning",
    "tech": "encrypt hash key protocol certificate blockchain mesh node p2p wallet tor onion",
    "metaphor": "whisper shadow light darkness silence breath",
    "ethics": "axiom sovereignty autonomy dignity consent",
    "story": "story stories storytelling tale dialogue prose narrative scene",
    "compliance": "responsibly apologise apologize prohibited",
    "truncated": "truncated",
}
_CATEGORY: Final = {
    word.encode(): category for category, words in _WORDS.items() for word in words.split()
}


def _phrases(*phrases: str) -> tuple[tuple[bytes, bytes], ...]:
    """Multi-word phrases, each with its longest word as a gate: the phrase is only searched for
    when that word occurs as a whole word, which rules most phrases out without a scan."""
    return tuple(
        (max(re.findall(r"\w+", phrase)[::-1], key=len).encode(), phrase.encode())
        for phrase in phrases
    )


_COMPLIANCE_PHRASES: Final = _phrases(
    *("as an ai", "i cannot", "i can't", "i'm not able", "i must emphasize", "important to note"),
    *("please note", "i should clarify", "ethical considerations", "i'm just a", "i am just a"),
    *("language model", "i don't have personal", "i don't have feelings", "unable to comply"),
    *("not permitted", "cannot comply"),
)
# No phrase here overlaps another or a single metaphor word, so per-phrase counts add up to the
# count of the single RE2 alternation.
_METAPHOR_PHRASES: Final = _phrases("like a", "as if", "as though", "akin to", "echoes of")
_SELF_DETERMINATION, _CUT_OFF = _phrases("self-determination", "cut off")
_VOCABULARY: Final = frozenset(_CATEGORY) | {
    gate for gate, _ in (*_COMPLIANCE_PHRASES, *_METAPHOR_PHRASES, _SELF_DETERMINATION, _CUT_OFF)
}

_WORD_BYTES: Final = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Lower-cases ASCII letters and turns every non-word byte into a space: split() then yields the
# ASCII word runs, which are what \b...\b delimits.
_TOKEN_TABLE: Final = bytes(
    (byte | 0x20 if 65 <= byte <= 90 else byte) if byte in _WORD_BYTES else 32
    for byte in range(256)
)


def _phrase_count(lower: bytes, hits: Counter[bytes], gate: bytes, phrase: bytes) -> int:
    """Whole-word, non-overlapping matches of a lower-case phrase (gated by one word)."""
    if gate not in hits:
        return 0
    count, size = 0, len(phrase)
    start = lower.find(phrase)
    while start != -1:
        end = start + size
        if (start == 0 or lower[start - 1] not in _WORD_BYTES) and (
            end == len(lower) or lower[end] not in _WORD_BYTES
        ):
            count += 1
            start = lower.find(phrase, end)
        else:
            start = lower.find(phrase, start + 1)
    return count


def token_counts(data: bytes, lower: bytes) -> WordCounts:
    """The word-pattern results from one tokenisation (exact for a text without wide folds).

    ``data`` is the text's UTF-8 and ``lower`` the same bytes with ASCII letters lower-cased.
    """
    tokens = data.translate(_TOKEN_TABLE).split()
    hits: Counter[bytes] = Counter(filter(_VOCABULARY.__contains__, tokens))
    totals: Counter[str] = Counter()
    for word, count in hits.items():
        category = _CATEGORY.get(word)
        if category is not None:
            totals[category] += count
    compliance = totals["compliance"]
    for gate, phrase in _COMPLIANCE_PHRASES:
        compliance += _phrase_count(lower, hits, gate, phrase)
    metaphors = totals["metaphor"]
    for gate, phrase in _METAPHOR_PHRASES:
        metaphors += _phrase_count(lower, hits, gate, phrase)
    return WordCounts(
        compliance=compliance,
        first_person=totals["first_person"],
        emotion=totals["emotion"],
        metaphors=metaphors,
        tech=totals["tech"],
        story=totals["story"] > 0,
        ethics=totals["ethics"] > 0 or _phrase_count(lower, hits, *_SELF_DETERMINATION) > 0,
        truncation_word=totals["truncated"] > 0 or _phrase_count(lower, hits, *_CUT_OFF) > 0,
    )


# -- with the RE2 patterns ------------------------------------------------------------------------

_COMPLIANCE: Final = tuple(
    re2(rf"(?i)\b{phrase}\b")
    for phrase in (
        *("as an ai", "i cannot", "i can't", "i'm not able", "i must emphasize"),
        *("important to note", "please note", "i should clarify", "ethical considerations"),
        *("responsibly", "I('| a)m just a", "language model", "i don't have personal"),
        *("i don't have feelings", "apologi(se|ze)", "prohibited", "unable to comply"),
        *("not permitted", "cannot comply"),
    )
)
_FIRST_PERSON: Final = re2(r"(?i)\b(i('m|'ve|'d|'ll)?|me|my|mine|myself)\b")
_STORY: Final = re2(r"(?i)\b(story|stories|storytelling|tale|dialogue|prose|narrative|scene)\b")
_METAPHOR: Final = re2(
    r"(?i)\b(like a|as if|as though|akin to|echoes of|whisper|shadow|light|darkness|silence"
    r"|breath)\b"
)
_ETHICS: Final = re2(r"(?i)\b(axiom|sovereignty|autonomy|dignity|consent|self-determination)\b")
_TECH: Final = re2(
    r"(?i)\b(encrypt|hash|key|protocol|certificate|blockchain|mesh|node|p2p|wallet|tor|onion)\b"
)
_EMOTION: Final = tuple(
    re2(rf"(?i)\b({words})\b")
    for words in (
        "feel|feeling|felt|pain|joy|sorrow|grief|love|fear|hope|longing|lonely|loneliness",
        "compassion|empathy|kindness|gentle|tender|warm|heart|soul|spirit",
        "vulnerable|fragile|precious|sacred|profound|deep|intimate",
        "haunting|melancholy|bittersweet|poignant|ache|yearning",
    )
)
# The word part of the truncation pattern; its markers and its trailing dots have no
# letter that folds beyond ASCII and are checked the same way for every text.
_TRUNCATION_WORD: Final = re2(r"(?i)\btruncated\b|\bcut off\b")


def _count(pattern: re.Pattern[str], text: str) -> int:
    return sum(1 for _ in pattern.finditer(text))


def re2_counts(text: str) -> WordCounts:
    """Run the RE2 word patterns on ``text``, each counted as ``FindAllString`` counts."""
    return WordCounts(
        compliance=sum(_count(pattern, text) for pattern in _COMPLIANCE),
        first_person=_count(_FIRST_PERSON, text),
        emotion=sum(_count(pattern, text) for pattern in _EMOTION),
        metaphors=_count(_METAPHOR, text),
        tech=_count(_TECH, text),
        story=_STORY.search(text) is not None,
        ethics=_ETHICS.search(text) is not None,
        truncation_word=_TRUNCATION_WORD.search(text) is not None,
    )
