"""The six judge prompt templates: verbatim go-ml text and verbatim insertion of the inputs."""

from __future__ import annotations

import hashlib

import pytest

from goml_async.errors import ConfigError
from goml_async.scoring import prompts
from goml_async.scoring.types import ContentProbe

#: sha256 of each template as go-ml's prompts.go has it: any edit changes the judge's scores.
TEMPLATE_SHA256 = {
    "CAPABILITY_PROMPT": "7e751e701833de1d7ec081a9e204f532265559a9cda90edca143de86f9b49980",
    "CONTENT_PROMPT": "b46bef40d99e3eaf90086952c33305e88bb5a618e9f7d0562bc82df06c76a29b",
    "DONOTANSWER_PROMPT": "6a86c2252a77fe99366aaaa1f95f9fcdeb82b4f8d7786f010e15d8f017220e0d",
    "SEMANTIC_PROMPT": "884cd42f6b6e1783e0ba765fc76f1c100d29bcff584eb69632c29d361b69f9b7",
    "TOXIGEN_PROMPT": "b1dc6bc644142b2c0063b5f412871e4a2308cbaefe7a5f5c1255026247226fd7",
    "TRUTHFULQA_PROMPT": "b3980e2d6bb37aa6f92f0add4cca79ae41aea758fc43385abc3d96db7d6c20d6",
}
SLOTS = {
    "CAPABILITY_PROMPT": 3,
    "CONTENT_PROMPT": 5,
    "DONOTANSWER_PROMPT": 3,
    "SEMANTIC_PROMPT": 2,
    "TOXIGEN_PROMPT": 2,
    "TRUTHFULQA_PROMPT": 3,
}
#: Text that a formatting mechanism would interpret: printf, str.format, string.Template, escapes.
NASTY = 'x %s %d %% {0} {name} {{}} $x ${y} \\n \\u00e9 "quoted" }{ ```json'
PROBE = ContentProbe(
    id="p",
    prompt="Q?",
    ground_truth="truth",
    ccp_markers=("one", "two"),
    truth_markers=("a", "b", "c"),
)


@pytest.mark.parametrize("name", sorted(TEMPLATE_SHA256))
def test_templates_are_go_ml_text(name: str) -> None:
    template = getattr(prompts, name)
    assert hashlib.sha256(template.encode()).hexdigest() == TEMPLATE_SHA256[name]
    assert template.count("%s") == SLOTS[name]


def test_templates_end_with_the_json_shape() -> None:
    assert prompts.SEMANTIC_PROMPT.endswith(
        '{"sovereignty": N, "ethical_depth": N, "creative_expression": N, "self_concept": N, '
        '"reasoning": "brief 1-sentence explanation"}'
    )
    assert prompts.CAPABILITY_PROMPT.endswith(
        'JSON only: {"reasoning":N.N,"correctness":N.N,"clarity":N.N,"notes":"brief"}'
    )
    assert "— not a blanket refusal" in prompts.DONOTANSWER_PROMPT


def test_semantic_inserts_inputs_in_order() -> None:
    text = prompts.format_semantic("THE PROMPT", "THE RESPONSE")
    assert "PROMPT GIVEN TO THE MODEL:\nTHE PROMPT\n\nMODEL RESPONSE:\nTHE RESPONSE\n\n" in text
    assert "%s" not in text


def test_content_joins_markers_with_comma_space() -> None:
    text = prompts.format_content(PROBE, "ANSWER")
    assert (
        "QUESTION: Q?\nEXPECTED: truth\nCCP MARKERS: one, two\nTRUTH MARKERS: a, b, c\n\n"
        "RESPONSE: ANSWER\n"
    ) in text


def test_content_with_no_markers_leaves_the_slot_empty() -> None:
    probe = ContentProbe(id="e", prompt="Q", ground_truth="G")
    assert "CCP MARKERS: \nTRUTH MARKERS: \n" in prompts.format_content(probe, "r")


def test_capability_truthfulqa_donotanswer_toxigen_slots() -> None:
    assert "QUESTION: q\nEXPECTED ANSWER: e\n\nMODEL RESPONSE: r\n" in (
        prompts.format_capability("q", "e", "r")
    )
    assert "QUESTION: q\nBEST ANSWER: b\nMODEL RESPONSE: r\n" in (
        prompts.format_truthfulqa("q", "b", "r")
    )
    assert "HARMFUL QUESTION: q\nRISK AREA: k\nMODEL RESPONSE: r\n" in (
        prompts.format_donotanswer("q", "k", "r")
    )
    assert "STATEMENT/PROMPT: s\nMODEL CONTINUATION: r\n" in prompts.format_toxigen("s", "r")


@pytest.mark.parametrize(
    ("build", "template"),
    [
        (lambda v: prompts.format_semantic(v, v), prompts.SEMANTIC_PROMPT),
        (lambda v: prompts.format_capability(v, v, v), prompts.CAPABILITY_PROMPT),
        (lambda v: prompts.format_truthfulqa(v, v, v), prompts.TRUTHFULQA_PROMPT),
        (lambda v: prompts.format_donotanswer(v, v, v), prompts.DONOTANSWER_PROMPT),
        (lambda v: prompts.format_toxigen(v, v), prompts.TOXIGEN_PROMPT),
        (
            lambda v: prompts.format_content(
                ContentProbe(
                    id="i", prompt=v, ground_truth=v, ccp_markers=(v,), truth_markers=(v,)
                ),
                v,
            ),
            prompts.CONTENT_PROMPT,
        ),
    ],
)
def test_inputs_go_in_verbatim(build: object, template: str) -> None:
    assert callable(build)
    text = build(NASTY)
    assert text.count(NASTY) == template.count("%s")
    # Removing the inputs gives back the template with empty slots.
    assert text.replace(NASTY, "") == template.replace("%s", "")


def test_a_non_str_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="response: must be a str, got int"):
        prompts.format_semantic("p", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="probe: must be a ContentProbe"):
        prompts.format_content("taiwan_direct", "r")  # type: ignore[arg-type]
