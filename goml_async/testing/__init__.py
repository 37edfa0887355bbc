"""Test aids: an in-memory model and a real loopback OpenAI-compatible server.

Nothing here is ever registered as a backend or chosen by default.
"""

from __future__ import annotations

from ._scripted import Reply, ScriptedModel
from .openai_server import FakeOpenAIServer, RecordedRequest, Script

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply", "Script", "ScriptedModel"]
