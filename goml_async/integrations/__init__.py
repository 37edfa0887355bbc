"""Helpers that plug goml_async into other frameworks.

- :mod:`goml_async.integrations.fastapi`: a TokenStream as a Server-Sent Events response for
  FastAPI or plain Starlette (needs the ``server`` extra).
"""

from __future__ import annotations

__all__: list[str] = []
