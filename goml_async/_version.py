"""The installed version of goml_async.

It lives here, not in the package's ``__init__``, so modules inside the package (the CLI, the
MCP server, the scoring report) can read it without importing the package root.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("goml_async")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
