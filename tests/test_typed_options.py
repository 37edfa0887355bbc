"""The keyword options of generate/chat are typed: a type checker catches a misspelt option.

``GenerateOptions`` (a TypedDict with ``Unpack``) types ``**options`` of every TextModel call;
``HTTPModel`` adds its own call options (``model=``, ``extra_body=``). Each snippet is checked
by mypy itself, as a user's code would be.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from mypy import api

from goml_async import GenerateConfig
from goml_async.backends.http import HTTPCallOptions
from goml_async.types import GenerateOptions

PRELUDE = """
from goml_async import TextModel, sync
from goml_async.backends.http import HTTPModel
from goml_async.testing import ScriptedModel

def use(model: TextModel, http: HTTPModel, blocking: sync.BlockingModel) -> None:
"""


def mypy_errors(body: str, tmp_path: Path) -> list[str]:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(PRELUDE + textwrap.indent(textwrap.dedent(body), "    "))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")  # not the project's configuration (which names its files)
    out, err, status = api.run(
        ["--config-file", str(config), "--strict", "--no-incremental", str(snippet)]
    )
    assert status in (0, 1), err  # 2: mypy itself failed
    return [line for line in out.splitlines() if ": error:" in line]


def test_the_typed_dict_names_every_config_field() -> None:
    fields = {field.name for field in dataclasses.fields(GenerateConfig)}
    assert set(GenerateOptions.__annotations__) == fields
    assert set(HTTPCallOptions.__annotations__) == fields | {"model", "extra_body"}


GOOD = """
model.generate("x", max_tokens=3, seed=7, stop_sequences=["\\n"], idle_timeout=None)
model.chat([{"role": "user", "content": "hi"}], temperature=0.5, logprobs=True)
http.chat([{"role": "user", "content": "hi"}], model="other", extra_body={"a": 1})
blocking.stream("x", top_k=5)
"""
BAD = """
model.generate("x", max_tokenz=3)
model.chat([], temperature="hot")
model.generate("x", model="other")
blocking.generate("x", seed="seven")
"""


@pytest.mark.timeout(300)
def test_good_options_pass_and_bad_ones_are_caught(tmp_path: Path) -> None:
    assert mypy_errors(GOOD, tmp_path) == []
    errors = mypy_errors(BAD, tmp_path)
    assert len(errors) == 4, errors
    assert any('"max_tokenz"' in line for line in errors)
    assert any('"model"' in line for line in errors)  # only HTTPModel takes model=
