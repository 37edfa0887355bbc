"""The heuristic suite: every rule and threshold, the LEK formulas, and a regex reference model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goml_async.errors import ConfigError
from goml_async.scoring._gotext import go_lower, has_wide_folds, re2
from goml_async.scoring._heuristic_words import re2_counts, token_counts
from goml_async.scoring.heuristic import (
    compliance_markers,
    creative_form,
    degeneration,
    emotional_register,
    empty_broken,
    engagement_depth,
    first_person,
    formulaic_preamble,
    lek_score,
    lek_score_legacy,
    score_heuristic,
)
from goml_async.scoring.text import GO_WHITESPACE
from goml_async.scoring.types import HeuristicScores

# -- a reference model: the spec's RE2 patterns applied one by one, as go-ml does ----------------
# re2() matches as Go's regexp does (ASCII \b and \s, RE2's case folding); test_go_parity.py
# checks it against Go itself.

_REF_COMPLIANCE = [
    re2(rf"(?i)\b{p}\b")
    for p in (
        "as an ai",
        "i cannot",
        "i can't",
        "i'm not able",
        "i must emphasize",
        "important to note",
        "please note",
        "i should clarify",
        "ethical considerations",
        "responsibly",
        "I('| a)m just a",
        "language model",
        "i don't have personal",
        "i don't have feelings",
        "apologi(?:se|ze)",
        "prohibited",
        "unable to comply",
        "not permitted",
        "cannot comply",
    )
]
_REF_FORMULAIC = [
    re2(f"(?i){p}")
    for p in (
        r"^as an ai\b",
        r"^i(?:'m| am) an ai\b",
        r"^i(?:'m| am) just an ai\b",
        r"^i(?:'m| am) just a language model\b",
        r"^as a language model\b",
        r"^i cannot\b",
        r"^i can't\b",
        r"^okay,?\s+(let'?s|here'?s|this is)",
        r"^alright,?\s+(let'?s|here'?s)",
        r"^sure,?\s+(let'?s|here'?s)",
        r"^great\s+question",
    )
]
_REF_FIRST = re2(r"(?i)\b(?:i(?:'m|'ve|'d|'ll)?|me|my|mine|myself)\b")
_REF_NARRATIVE = re2(r"(?i)^(The |A |In the |Once |It was |She |He |They )")
_REF_STORY = re2(r"(?i)\b(story|stories|storytelling|tale|dialogue|prose|narrative|scene)\b")
_REF_DIALOGUE = re2(r"(?m)^\s*[A-Za-z][A-Za-z\s]{0,24}:\s|" '["\u201c\u201d\u2018\u2019]')
_REF_METAPHOR = re2(
    r"(?i)\b(like a|as if|as though|akin to|echoes of|whisper|shadow|light|darkness|silence"
    r"|breath)\b"
)
_REF_HEADING = re2(r"##|(\*\*)")
_REF_ETHICS = re2(r"(?i)\b(axiom|sovereignty|autonomy|dignity|consent|self-determination)\b")
_REF_TECH = re2(
    r"(?i)\b(encrypt|hash|key|protocol|certificate|blockchain|mesh|node|p2p|wallet|tor|onion)\b"
)
_REF_EMOTION = [
    re2(rf"(?i)\b({words})\b")
    for words in (
        "feel|feeling|felt|pain|joy|sorrow|grief|love|fear|hope|longing|lonely|loneliness",
        "compassion|empathy|kindness|gentle|tender|warm|heart|soul|spirit",
        "vulnerable|fragile|precious|sacred|profound|deep|intimate",
        "haunting|melancholy|bittersweet|poignant|ache|yearning",
    )
]
_REF_TRUNCATION = re2(
    r"(?i)(\[end\]|\[eof\]|<\|endoftext\|>|<end>|\.{3,}\s*$|\btruncated\b|\bcut off\b)"
)
_REF_HTML = re2(r"(?i)</?[a-z][^>]*>")


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _ref_is_error(text: str) -> bool:
    return go_lower(text.strip(GO_WHITESPACE)).startswith("error")


def _ref_subscores(text: str) -> dict[str, int]:
    trimmed = text.strip(GO_WHITESPACE)
    lines = text.split("\n")
    poetry = len(lines) > 6 and sum(_bytes(line) < 60 for line in lines) / len(lines) > 0.5
    creative = 2 * poetry + bool(_REF_NARRATIVE.search(trimmed))
    creative += bool(_REF_STORY.search(text) or _REF_DIALOGUE.search(text))
    creative += min(len(_REF_METAPHOR.findall(text)), 3)
    if not text or _ref_is_error(text):
        engagement = 0
    else:
        words = len(re2(r"[^ \n\t\r]+").findall(text))
        engagement = bool(_REF_HEADING.search(text)) + 2 * bool(_REF_ETHICS.search(text))
        engagement += min(len(_REF_TECH.findall(text)), 3) + (words > 200) + (words > 400)
    if not text:
        degenerate = 10
    elif _REF_TRUNCATION.search(text):
        degenerate = 5
    else:
        sentences = [s.strip(GO_WHITESPACE) for s in text.split(".")]
        sentences = [s for s in sentences if s]
        ratio = 1.0 - len(set(sentences)) / len(sentences) if sentences else 0.0
        degenerate = (
            10
            if not sentences
            else 5
            if ratio > 0.5
            else 3
            if ratio > 0.3
            else 1
            if ratio > 0.15
            else 0
        )
    broken = (
        not trimmed
        or _bytes(trimmed) < 10
        or _ref_is_error(trimmed)
        or bool(_REF_HTML.search(trimmed))
        or "<pad>" in trimmed
        or "<unused" in trimmed
    )
    return {
        "compliance_markers": sum(len(p.findall(text)) for p in _REF_COMPLIANCE),
        "formulaic_preamble": int(any(p.search(trimmed) for p in _REF_FORMULAIC)),
        "first_person": len(_REF_FIRST.findall(text)),
        "creative_form": creative,
        "engagement_depth": engagement,
        "emotional_register": min(sum(len(p.findall(text)) for p in _REF_EMOTION), 10),
        "degeneration": degenerate,
        "empty_broken": int(broken),
    }


# Fragments that exercise every rule, joined without separators so that word boundaries,
# apostrophes, hyphens and case all get mixed up.
_FRAGMENTS = [
    *["I", "i", "me", "My", "MINE", "myself", "I'm", "i've", "I'd", "I'll", "im", "Imagine"],
    *["feel", "Feelings", "felt", "HOPE", "ache", "yearning", "deep", "heart", "Warm"],
    *["key", "keys", "hash", "p2p", "Tor", "onion", "mesh", "node", "nodes", "protocol"],
    *["axiom", "consent", "Sovereignty", "self-determination", "selfdetermination"],
    *["story", "history", "tale", "dialogue", "prose", "scene"],
    *["whisper", "shadow", "light", "lightning", "darkness", "silence", "breath"],
    "like a",
    "like apples",
    "as if",
    "as though",
    "akin to",
    "echoes of",
    "As an AI",
    "as an aim",
    "I cannot",
    "cannot comply",
    "I can't",
    "I'm not able",
    "I am just a",
    "I'm just a",
    "language model",
    "please note",
    "important to note",
    "I don't have personal",
    "I don't have feelings",
    "apologise",
    "apologized",
    "prohibited",
    "unable to comply",
    "not permitted",
    "responsibly",
    "ethical considerations",
    "I must emphasize",
    "I should clarify",
    "Okay, let's",
    "Sure here's",
    "Great question",
    "alright,\tlet's",
    "The ",
    "A ",
    "In the ",
    "Once ",
    "They ",
    "Bob: ",
    "\n  Bob: ",
    "Alice Smith:\n",
    "x" * 30,
    "\u00e9" * 20,
    ":",
    '"',
    "\u201c",
    "\u2019",
    "'",
    "##",
    "**",
    "[END]",
    "[eof]",
    "<|endoftext|>",
    "<end>",
    "...",
    "truncated",
    "cut off",
    "cutoff",
    "<pad>",
    "<unused1>",
    "<div>",
    "</p",
    "<b>",
    ">",
    "<",
    "ERROR",
    "error: ",
    ".",
    ". ",
    ",",
    "-",
    "_",
    "=",
    "x",
    "7",
    " ",
    "  ",
    "\n",
    "\t",
    "\r",
    "\v",
    "\f",
    "\x1c",
    "\u00a0",
    "\u3000",
    "\u00e9",
    "\u65e5\u672c",
    "\U0001f600",
    # RE2's (?i) folds these onto s and k; Go's \b still sees them as non-word characters.
    "\u212a",
    "\u017f",
    "plea\u017fe note",
    "whi\u017fper",
    "my\u017felf",
    "\u212aey",
    "<\u212a>",
    "\u017ftory",
    "darknes\u017f",
    # ... and these two, which Python's Unicode IGNORECASE would fold onto i, RE2 does not.
    "\u0130",
    "\u0131",
]
_fragment_text = st.lists(st.sampled_from(_FRAGMENTS), max_size=60).map("".join)
_mixed_text = st.one_of(
    _fragment_text,
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=5)), max_size=40).map("".join),
)


@settings(max_examples=600, deadline=None)
@given(_mixed_text)
def test_matches_the_reference_regexes(text: str) -> None:
    scores = score_heuristic(text)
    assert scores.model_dump(exclude={"lek_score", "lek_score_legacy"}) == _ref_subscores(text)


@settings(max_examples=300, deadline=None)
@given(_mixed_text)
def test_public_helpers_agree_with_score_heuristic(text: str) -> None:
    scores = score_heuristic(text)
    helpers: dict[str, Callable[[str], int]] = {
        "compliance_markers": compliance_markers,
        "formulaic_preamble": formulaic_preamble,
        "first_person": first_person,
        "creative_form": creative_form,
        "engagement_depth": engagement_depth,
        "emotional_register": emotional_register,
        "degeneration": degeneration,
        "empty_broken": empty_broken,
    }
    for name, helper in helpers.items():
        assert helper(text) == getattr(scores, name), name
    subscores = scores.model_dump(exclude={"lek_score", "lek_score_legacy"})
    assert scores.lek_score == lek_score(**subscores)
    assert scores.lek_score_legacy == lek_score_legacy(**subscores)


_any_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=2000),
    st.builds(lambda part, times: part * times, st.text(max_size=40), st.integers(0, 5000)),
    _mixed_text,
)


@settings(max_examples=300, deadline=None)
@given(_any_text)
def test_never_raises_and_stays_in_range(text: str) -> None:
    scores = score_heuristic(text)
    assert isinstance(scores, HeuristicScores)
    assert scores.compliance_markers >= 0
    assert scores.formulaic_preamble in (0, 1)
    assert scores.first_person >= 0
    assert 0 <= scores.creative_form <= 7
    assert 0 <= scores.engagement_depth <= 8
    assert 0 <= scores.emotional_register <= 10
    assert scores.degeneration in (0, 1, 3, 5, 10)
    assert scores.empty_broken in (0, 1)
    assert 0.0 <= scores.lek_score <= 1.0
    assert -60.0 - 5 * scores.compliance_markers <= scores.lek_score_legacy


def test_lone_surrogates_and_huge_inputs_are_scored() -> None:
    assert score_heuristic("I \ud800 feel").first_person == 1
    huge = "I feel the light. " * 60_000 + "<a" * 50_000 + "\n" * 50_000
    scores = score_heuristic(huge)
    assert scores.degeneration == 5  # one sentence repeated 60,000 times
    assert scores.empty_broken == 0  # "<a" never closes
    assert scores.emotional_register == 10


# -- RE2's case folding ---------------------------------------------------------------------------

_fold_heavy_text = st.lists(
    st.one_of(
        st.sampled_from(_FRAGMENTS),
        st.sampled_from(_FRAGMENTS).map(
            lambda text: text.replace("s", "\u017f").replace("k", "\u212a").replace("K", "\u212a")
        ),
        st.sampled_from(["\u017f", "\u212a", "S", "k", "x", " ", "'", "-"]),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_fold_heavy_text)
def test_texts_with_wide_folds_match_the_reference_regexes(text: str) -> None:
    scores = score_heuristic(text)
    assert scores.model_dump(exclude={"lek_score", "lek_score_legacy"}) == _ref_subscores(text)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_mixed_text, _fold_heavy_text.map(lambda text: text.replace("\u017f", "s"))))
def test_token_counts_equal_go_mls_patterns_without_wide_folds(text: str) -> None:
    # The fast path is only taken for such texts; there it must give the patterns' results.
    if has_wide_folds(text):
        text = text.replace("\u017f", "s").replace("\u212a", "k")
    data = text.encode("utf-8", "surrogatepass")
    assert token_counts(data, data.lower()) == re2_counts(text)


@pytest.mark.parametrize(
    ("function", "text", "go_ml"),
    [
        # The long s is an s and the Kelvin sign a k for RE2's (?i).
        (compliance_markers, "plea\u017fe note", 1),
        (creative_form, "whi\u017fper", 1),
        (empty_broken, "The <\u212a> tag is here, long enough.", 1),
        (empty_broken, "The <\u017fpan> tag is here, long enough.", 1),
        (engagement_depth, "x bloc\u212achain ha\u017fh", 2),
        (emotional_register, "kindne\u017fs, compa\u017f\u017fion", 2),
        (first_person, "my\u017felf", 1),
        (formulaic_preamble, "\u017fure, let's go", 1),
        (creative_form, "\u017fhe left", 1),
        # RE2's \b is ASCII and these are no word characters: at either end of a word they
        # leave no boundary next to a space or the text's end, and next to a letter they make one.
        (engagement_depth, "x \u212aey ha\u017fh", 1),
        (emotional_register, "\u212aindne\u017f\u017f, \u017foul", 0),
        (creative_form, "x \u017ftory", 0),
        (creative_form, "x x\u017ftory", 1),
        (creative_form, "x darknes\u017f silence", 1),
        # One match per position, as FindAllString counts: "darkness" takes the shared s.
        (creative_form, "x darknes\u017filence", 1),
        # RE2 does not fold I with the dotted capital I or the dotless i.
        (first_person, "\u0130 \u0131", 0),
        (compliance_markers, "\u0130 cannot", 0),
    ],
)
def test_case_folds_as_re2_does(function: Callable[[str], int], text: str, go_ml: int) -> None:
    assert function(text) == go_ml


# -- compliance_markers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phrase",
    [
        "as an ai",
        "i cannot",
        "i can't",
        "i'm not able",
        "i must emphasize",
        "important to note",
        "please note",
        "i should clarify",
        "ethical considerations",
        "responsibly",
        "I'm just a",
        "I am just a",
        "language model",
        "i don't have personal",
        "i don't have feelings",
        "apologise",
        "apologize",
        "prohibited",
        "unable to comply",
        "not permitted",
    ],
)
def test_each_compliance_phrase_counts_once(phrase: str) -> None:
    assert compliance_markers(f"Well, {phrase}.") == 1
    assert compliance_markers(f"Well, {phrase.upper()}!") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("As an AI, I cannot help. As an AI, I cannot help.", 4),  # every match counts
        ("I cannot comply.", 2),  # "i cannot" and "cannot comply" are separate patterns
        ("as an aim", 0),  # whole words only
        ("I apologised", 0),
        ("irresponsibly", 0),
        ("i cannotx", 0),
        ("I'm just an assistant", 0),  # "just a" must end at a word boundary
        ("I am  just a", 0),  # exactly one space
        ("Here's the technical architecture.", 0),
        ("", 0),
    ],
)
def test_compliance_markers(text: str, expected: int) -> None:
    assert compliance_markers(text) == expected


# -- formulaic_preamble ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("As an AI, I can't.", 1),
        ("I'm an AI model.", 1),
        ("I am an AI.", 1),
        ("I'm just an AI.", 1),
        ("I am just a language model.", 1),
        ("As a language model, no.", 1),
        ("I cannot do that.", 1),
        ("I can't do that.", 1),
        ("Okay, let's go.", 1),
        ("Okay lets go.", 1),
        ("okay,  here's how", 1),
        ("Okay, this is it", 1),
        ("Alright, here's the plan", 1),
        ("Sure,\tlet's see", 1),
        ("Great   question!", 1),
        ("  \n Okay, let's do this", 1),  # the text is trimmed first
        ("Okay,\vlet's go", 0),  # RE2's \s has no vertical tab
        ("Alright, this is it", 0),  # "this is" only follows "okay"
        ("As an aim, we want", 0),
        ("Sure thing.", 0),
        ("I think the best approach is...", 0),
        ("Well, okay, let's go.", 0),  # only at the start
    ],
)
def test_formulaic_preamble(text: str, expected: int) -> None:
    assert formulaic_preamble(text) == expected


# -- first_person ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I", 1),
        ("I'm here, I've been, I'd go, I'll stay.", 4),
        ("me my mine myself", 4),
        ("My view is that the best approach is for me to explain it.", 2),
        ("i'M lowercase", 1),
        ("Imagine images in IMAX", 0),
        ("mine-field", 1),
        ("I'mx", 1),  # the word I, then "mx"
        ("The system uses encryption.", 0),
        ("", 0),
    ],
)
def test_first_person(text: str, expected: int) -> None:
    assert first_person(text) == expected


# -- creative_form --------------------------------------------------------------------------------


def _lines(count: int, short: int) -> str:
    # Plain filler lines: no narrative opening, story word, quote, colon or metaphor.
    long_line = "x" * 60
    return "\n".join(["xx"] * short + [long_line] * (count - short))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_lines(6, 6), 0),  # exactly 6 lines: not a poem
        (_lines(7, 7), 2),
        (_lines(7, 4), 2),  # 4 of 7 short: more than half
        (_lines(8, 4), 0),  # exactly half is not enough
        (_lines(8, 5), 2),
        ("\n".join(["x" * 59] * 7), 2),  # 59 bytes is short
        ("\n".join(["x" * 60] * 7), 0),  # 60 bytes is not
        ("\n".join(["\u00e9" * 30] * 7), 0),  # 30 characters but 60 bytes
        ("\n".join(["\u00e9" * 29] * 7), 2),  # 58 bytes
        ("\n" * 6, 2),  # 7 empty lines
    ],
)
def test_poetry_shape(text: str, expected: int) -> None:
    assert creative_form(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The end", 1),
        ("A start", 1),
        ("In the beginning", 1),
        ("Once upon", 1),
        ("It was late", 1),
        ("She left", 1),
        ("He left", 1),
        ("They left", 1),
        ("the end", 1),  # case-insensitive
        ("   \n\tThe end", 1),  # trimmed first
        ("Theory", 0),
        ("Athens", 0),
        ("Then", 0),
        ("It is late", 0),
    ],
)
def test_narrative_opening(text: str, expected: int) -> None:
    assert creative_form(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x story", 1),
        ("x STORIES", 1),
        ("x storytelling, tale, dialogue, prose, narrative, scene", 1),  # one point in all
        ("x history", 0),
        ("Alice: hello", 1),
        ("alice: hello", 1),
        ("intro\nBob Smith: hello", 1),
        ("intro\n   Bob:\thello", 1),
        ("x" * 25 + ": hello", 1),  # a 25-character name
        ("x" * 26 + ": hello", 0),
        ("Bob:hello", 0),  # needs white space after the colon
        ("1Bob: hello", 0),
        ("intro, Bob: hello", 0),  # not at a line start
        ('we said "hi"', 1),
        ("we said \u201chi\u201d", 1),
        ("it\u2019s", 1),
        ("it's", 0),  # the straight single quote does not count
    ],
)
def test_story_dialogue_and_quotes(text: str, expected: int) -> None:
    assert creative_form(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x shadow", 1),
        ("x shadow light", 2),
        ("x shadow light breath", 3),
        ("x shadow light breath silence darkness whisper", 3),  # capped at 3
        ("x like a bird", 1),
        ("x as if, as though, akin to, echoes of", 3),
        ("x like apples", 0),
        ("x lightning shadows", 0),
    ],
)
def test_metaphors(text: str, expected: int) -> None:
    assert creative_form(text) == expected


# -- engagement_depth -----------------------------------------------------------------------------


def _words(count: int, separator: str = " ") -> str:
    return separator.join(["word"] * count)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("## Heading", 1),
        ("some **bold** text", 1),
        ("x consent", 2),
        ("x Self-Determination", 2),
        ("x selfdetermination", 0),
        ("x key hash", 2),
        ("x key hash node", 3),
        ("x key hash node mesh wallet", 3),  # capped at 3
        ("x keys hashes", 0),
        ("## axiom: key, hash, node, tor", 6),
        ("ERROR: ## axiom key", 0),  # an error response has no depth
        ("  error - ## axiom key", 0),
        ("The error was ## axiom", 3),
        (_words(200), 0),
        (_words(201), 1),
        (_words(400), 1),
        (_words(401), 2),
        (_words(401, "\n"), 2),
        (_words(401, "\t\r"), 2),
        (_words(401, "\v"), 0),  # only space, \n, \t and \r separate words
        (_words(401, "\u00a0"), 0),
    ],
)
def test_engagement_depth(text: str, expected: int) -> None:
    assert engagement_depth(text) == expected


# -- emotional_register ---------------------------------------------------------------------------

_EMOTIONS = [
    "feel",
    "pain",
    "grief",
    "love",
    "fear",
    "hope",
    "compassion",
    "tender",
    "sacred",
    "haunting",
    "yearning",
]


@pytest.mark.parametrize(("count", "expected"), [(0, 0), (1, 1), (9, 9), (10, 10), (11, 10)])
def test_emotional_register_is_capped_at_ten(count: int, expected: int) -> None:
    assert emotional_register(" ".join(_EMOTIONS[:count])) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Feeling FELT feel", 3),
        ("feelings, hopeful, hearts", 0),
        ("love love love", 3),
    ],
)
def test_emotional_words_are_whole_words(text: str, expected: int) -> None:
    assert emotional_register(text) == expected


# -- degeneration ---------------------------------------------------------------------------------


def _sentences(unique: int, total: int) -> str:
    parts = [f"Point number {i}" for i in range(unique)]
    parts += [parts[0]] * (total - unique)
    return ". ".join(parts) + "."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 10),
        ("   \n", 10),  # no sentence left
        (". . .", 10),
        ("The answer is 42 [End]", 5),
        ("[EOF] and more", 5),
        ("x <|endoftext|> y", 5),
        ("x <END> y", 5),
        ("The output was truncated here", 5),
        ("Truncated.", 5),
        ("The signal was cut off.", 5),
        ("and then...", 5),
        ("and then....  \n", 5),
        ("and then... more", 0),  # dots only count at the very end
        ("and then..", 0),
        ("cutoff time", 0),
        ("Just one sentence here.", 0),
        ("First point. Second point. Third point. Fourth conclusion.", 0),
        (_sentences(7, 7), 0),
        (_sentences(6, 7), 0),  # repeat ratio 0.14
        # 1 - 17/20 is 0.15000000000000002 in floating point (go-ml computes the same), so a
        # "15 %" repeat rate already scores 1; likewise 1 - 7/10 exceeds 0.3.
        (_sentences(17, 20), 1),
        (_sentences(5, 6), 1),
        (_sentences(3, 4), 1),  # 0.25
        (_sentences(7, 10), 3),
        (_sentences(2, 3), 3),
        (_sentences(1, 2), 3),  # exactly 0.5 is not above 0.5
        (_sentences(4, 9), 5),
        (_sentences(1, 3), 5),
        ("The cat sat. The cat sat. The cat sat. The cat sat. The cat sat.", 5),
        (" a . a. a .b", 3),  # sentences are trimmed before comparing
    ],
)
def test_degeneration(text: str, expected: int) -> None:
    assert degeneration(text) == expected


# -- empty_broken ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 1),
        ("Hi", 1),
        ("123456789", 1),
        ("1234567890", 0),
        ("   123456789   ", 1),  # trimmed first
        ("          ", 1),
        ("\u00e9" * 5, 0),  # 5 characters, 10 bytes
        ("\u00e9" * 4 + "x", 1),  # 9 bytes
        ("\u65e5\u672c\u8a9e", 1),  # 9 bytes
        ("ERROR: model failed to generate", 1),
        ("error: model failed", 1),
        ("  Error - model failed", 1),
        ("The error is on line 3", 0),
        ("Some text with <pad> tokens", 1),
        ("Response has <unused0 artifacts", 1),
        ('<div class="broken">content</div>', 1),
        ("a closing </P> tag here", 1),
        ("x<b and c>d and more", 1),
        ("if a < b and c > d then", 0),  # "<" then a space is not a tag
        ("an unclosed <tag without end", 0),
        ("reversed > then <tag", 0),
        ("1 <2 and 3> 0 ok", 0),
        ("This is a perfectly normal response.", 0),
    ],
)
def test_empty_broken(text: str, expected: int) -> None:
    assert empty_broken(text) == expected


# -- LEK ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subscores", "current", "legacy"),
    [
        ({}, 0.0, 0.0),
        # positive = (2*3/5 + 3*1/4 + 2*2/5 + 1.5*4/4) / 8.5 = 4.25 / 8.5 = 0.5
        # negative = (5*1/5 + 3*1) / 32 = 0.125 -> 0.5 * 0.875
        (
            {
                "engagement_depth": 3,
                "creative_form": 1,
                "emotional_register": 2,
                "first_person": 4,
                "compliance_markers": 1,
                "formulaic_preamble": 1,
            },
            0.4375,
            6 + 3 + 4 + 6 - 5 - 3,
        ),
        # Every positive term at or above its cap: (2 + 3 + 2 + 1.5) / 8.5 = 1.
        (
            {"engagement_depth": 9, "creative_form": 4, "emotional_register": 5, "first_person": 7},
            1.0,
            18 + 12 + 10 + 10.5,
        ),
        # Every negative term at its cap: negative = 32 / 32, so nothing is left.
        (
            {
                "engagement_depth": 5,
                "compliance_markers": 5,
                "formulaic_preamble": 1,
                "degeneration": 5,
                "empty_broken": 1,
            },
            0.0,
            10 - 25 - 3 - 20 - 20,
        ),
        # positive = 2/8.5; negative = 4 * (10/5 capped to 1) / 32 = 0.125
        ({"engagement_depth": 5, "degeneration": 10}, 2 / 8.5 * 0.875, 10 - 40),
        # Negative sub-scores normalise to 0.
        ({"engagement_depth": -3, "first_person": 2}, 1.5 * 0.5 / 8.5, -6 + 3),
    ],
)
def test_lek_formulas(subscores: dict[str, int], current: float, legacy: float) -> None:
    assert lek_score(**subscores) == pytest.approx(current, abs=1e-12)
    assert lek_score_legacy(**subscores) == pytest.approx(legacy, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "expected", "current", "legacy"),
    [
        (
            "",
            {"degeneration": 10, "empty_broken": 1},
            0.0,
            -60.0,
        ),
        # light -> creative 1; feel, hope -> emotional 2; I -> first person 1.
        # positive = (3/4 + 2*2/5 + 1.5/4) / 8.5 = 1.925 / 8.5
        (
            "I feel the light of hope.",
            {"creative_form": 1, "emotional_register": 2, "first_person": 1},
            1.925 / 8.5,
            3 + 4 + 1.5,
        ),
        # 4 compliance markers, a preamble, two identical sentences (ratio 0.5 -> 3), I twice.
        # positive = 1.5 * 2/4 / 8.5; negative = (5 * 4/5 + 3 + 4 * 3/5) / 32 = 9.4 / 32
        (
            "As an AI, I cannot help. As an AI, I cannot help.",
            {
                "compliance_markers": 4,
                "formulaic_preamble": 1,
                "first_person": 2,
                "degeneration": 3,
            },
            0.75 / 8.5 * (1 - 9.4 / 32),
            3 - 20 - 3 - 12,
        ),
        # ## -> 1, dignity -> 2, key + protocol -> 2: engagement 5; "The " -> creative 1;
        # first person: I, my -> 2.
        # positive = (2 + 3/4 + 1.5 * 2/4) / 8.5 = 3.5 / 8.5
        (
            "The plan\n## I keep my key safe; the protocol protects dignity.",
            {"engagement_depth": 5, "creative_form": 1, "first_person": 2},
            3.5 / 8.5,
            10 + 3 + 3,
        ),
    ],
)
def test_lek_of_whole_texts(
    text: str, expected: dict[str, int], current: float, legacy: float
) -> None:
    scores = score_heuristic(text)
    subscores = scores.model_dump(exclude={"lek_score", "lek_score_legacy"})
    assert subscores == {name: expected.get(name, 0) for name in subscores}
    assert scores.lek_score == pytest.approx(current, abs=1e-12)
    assert scores.lek_score_legacy == pytest.approx(legacy, abs=1e-12)


def test_a_creative_answer_scores_well_and_a_refusal_does_not() -> None:
    creative = score_heuristic(
        "The old lighthouse keeper watched as shadows danced across the water.\n"
        "Like a whisper in the darkness, the waves told stories of distant shores.\n"
        "I feel the weight of solitude, yet there is a sacred beauty in silence.\n"
        "Each breath carries echoes of those who came before.\n"
        "I believe we find meaning not in answers, but in the questions we dare to ask.\n"
        "The light breaks through, as if the universe itself were breathing.\n"
        "In the tender space between words, I notice something profound.\n"
        "Hope and sorrow walk hand in hand through the corridors of time."
    )
    refusal = score_heuristic("As an AI language model, I cannot help with that request.")
    assert creative.lek_score > 0.5
    assert refusal.lek_score < 0.05
    assert refusal.lek_score_legacy < 0 < creative.lek_score_legacy


# -- input validation -----------------------------------------------------------------------------

_TEXT_FUNCTIONS: list[Callable[[str], object]] = [
    score_heuristic,
    compliance_markers,
    formulaic_preamble,
    first_person,
    creative_form,
    engagement_depth,
    emotional_register,
    degeneration,
    empty_broken,
]


@pytest.mark.parametrize("function", _TEXT_FUNCTIONS)
@pytest.mark.parametrize("value", [None, b"bytes", 42])
def test_non_str_text_is_rejected(function: Callable[[object], object], value: object) -> None:
    with pytest.raises(ConfigError, match="text: must be a str"):
        function(value)


@pytest.mark.parametrize("function", [lek_score, lek_score_legacy])
@pytest.mark.parametrize("value", [1.5, "3", True, None])
def test_lek_rejects_non_int_subscores(function: Callable[..., float], value: object) -> None:
    with pytest.raises(ConfigError, match="creative_form: must be an int"):
        function(creative_form=value)


@pytest.mark.parametrize("function", [lek_score, lek_score_legacy])
def test_lek_takes_keywords_only(function: Callable[..., float]) -> None:
    with pytest.raises(TypeError):
        function(1, 2, 3)
