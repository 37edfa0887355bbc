"""A scripted judge model that declares no ``response_format`` it can enforce.

The judge asks a model that can enforce a JSON schema for its rubric's schema; ScriptedModel
accepts every format, so tests of the free-text path (go-ml's way: a prompt, then the first JSON
object of whatever comes back) use this one, as a backend without constrained decoding is.
"""

from __future__ import annotations

from goml_async.testing import ScriptedModel

__all__ = ["FreeTextModel"]


class FreeTextModel(ScriptedModel):
    """ScriptedModel that, like a backend without constrained decoding, enforces no format."""

    response_formats = frozenset()
