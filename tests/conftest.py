"""Shared fixtures: the core runs on both asyncio and trio."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)


# Real models and servers (tiny GGUFs, the bundled SmolLM2, llama-server) for every test folder.
pytest_plugins = ["model_fixtures"]
