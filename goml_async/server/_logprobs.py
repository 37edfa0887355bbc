"""Log-probabilities in OpenAI's two wire shapes, as the server writes them.

They live in :mod:`goml_async._openai_wire.logprobs`, beside the client's reading of the same
shapes; the server's modules import them from here.
"""

from __future__ import annotations

from .._openai_wire.logprobs import LogprobsCollector, chat_entry, completion_part

__all__ = ["LogprobsCollector", "chat_entry", "completion_part"]
