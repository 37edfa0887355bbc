"""Tool calling on llama.cpp: the tools described in the prompt, the reply held to a JSON schema.

llama-server hands ``tools`` to the model's chat template, and where the template has no tool
format (SmolLM2's, and most small models') it drops them without a word. So
:class:`~goml_async.backends.llama.LlamaModel` does not send ``tools`` at all: it uses the
backend-neutral reply of :mod:`~goml_async.backends._tool_reply` (shared with MLX), and
llama-server enforces the reply's JSON schema with its grammar.
"""

from __future__ import annotations

from ._tool_reply import decoded_reply, prompt_messages, reply_format

__all__ = ["decoded_reply", "prompt_messages", "reply_format"]
