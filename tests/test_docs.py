"""The documentation's generated and checked parts: the CLI reference, the go-ml name map, the
quickstart, the link checker, and the benchmark summary built from the recorded results."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from model_fixtures import require

from goml_async.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE_SPAN = re.compile(r"`([^`]+)`")


def load(path: Path) -> ModuleType:
    """Import a file that is not in a package (a MkDocs hook, a benchmark script)."""
    name = f"_docs_test_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli_reference() -> ModuleType:
    return load(DOCS / "hooks" / "cli_reference.py")


@pytest.fixture(scope="module")
def check_links() -> ModuleType:
    return load(DOCS / "hooks" / "check_links.py")


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load(ROOT / "benchmarks" / "report.py")


def walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ("goml",)) -> list[Any]:
    """(words, help, parser) of every subcommand, found independently of the hook."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():  # no aliases in goml
                path = (*words, name)
                found.append((path, helps.get(name), child))
                found += walk(child, path)
    return found


# -- the CLI reference ----------------------------------------------------------------------------


def test_cli_reference_documents_every_command(cli_reference: ModuleType) -> None:
    text = cli_reference.render_cli_reference(build_parser())
    commands = walk(build_parser())
    names = {" ".join(words) for words, _, _ in commands}
    assert {"goml generate", "goml serve", "goml models list", "goml models convert"} <= names
    for words, help_text, _ in commands:
        name = " ".join(words)
        assert re.search(rf"^#+ {re.escape(name)}$", text, re.MULTILINE), f"no heading for {name}"
        assert f"[`{name}`](#{'-'.join(words)}) | {help_text} |" in text
        assert f"usage: {name} " in text, f"no --help text for {name}"
    assert text.count("```text") == len(commands) + 1  # and goml itself


def test_cli_reference_ignores_the_terminal_width(
    cli_reference: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = cli_reference.render_cli_reference(build_parser())
    monkeypatch.setenv("COLUMNS", "300")
    assert cli_reference.render_cli_reference(build_parser()) == narrow


@pytest.mark.parametrize("nested", [False, True])
def test_cli_reference_refuses_a_command_without_help(
    cli_reference: ModuleType, nested: bool
) -> None:
    parser = argparse.ArgumentParser(prog="goml", description="test")
    commands = parser.add_subparsers()
    commands.add_parser("fine", help="has help")
    if nested:
        group = commands.add_parser("group", help="has help").add_subparsers()
        group.add_parser("silent")
        missing = "goml group silent"
    else:
        commands.add_parser("silent")
        missing = "goml silent"
    with pytest.raises(cli_reference.CliReferenceError, match=missing):
        cli_reference.render_cli_reference(parser)


def test_cli_page_is_filled_at_build_time(cli_reference: ModuleType) -> None:
    source = (DOCS / "cli.md").read_text()
    assert cli_reference.MARKER in source

    def page(uri: str) -> Any:
        return SimpleNamespace(file=SimpleNamespace(src_uri=uri))

    built = cli_reference.on_page_markdown(source, page=page("cli.md"), config={}, files=[])
    assert cli_reference.MARKER not in built
    assert "## goml serve" in built
    assert cli_reference.on_page_markdown("x", page=page("index.md"), config={}, files=[]) == "x"
    with pytest.raises(cli_reference.CliReferenceError, match="marker"):
        cli_reference.on_page_markdown("no marker", page=page("cli.md"), config={}, files=[])


# -- migrating from go-ml -------------------------------------------------------------------------


def tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every Markdown table, cells stripped."""

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    found: list[tuple[list[str], list[list[str]]]] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines) - 1:
        if lines[index].startswith("|") and re.match(r"^\|[\s:|-]+\|$", lines[index + 1]):
            header, rows = cells(lines[index]), []
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                rows.append(cells(lines[index]))
                index += 1
            found.append((header, rows))
        else:
            index += 1
    return found


def resolve(dotted: str) -> object:
    """The object a dotted name such as ``goml_async.agent.AgentConfig.host`` names."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for index, attribute in enumerate(parts[cut:], start=cut):
            last = index == len(parts) - 1
            if hasattr(target, attribute):
                target = getattr(target, attribute)
            elif last and attribute in getattr(target, "model_fields", {}):
                return target.model_fields[attribute]  # a pydantic field
            elif last and dataclasses.is_dataclass(target):
                return next(f for f in dataclasses.fields(target) if f.name == attribute)
            else:
                raise AttributeError(f"{dotted}: {'.'.join(parts[:index])} has no {attribute!r}")
        return target
    raise ImportError(f"{dotted}: no importable module")


MIGRATION = DOCS / "migrating-from-go-ml.md"


def migration_tables(kind: str) -> list[list[str]]:
    """Rows of the guide's tables whose second column is ``kind``."""
    found = tables(MIGRATION.read_text())
    rows = [row for header, body in found if header[1] == kind for row in body]
    assert rows, f"no table with a {kind!r} column"
    return rows


def test_every_python_name_in_the_go_ml_map_exists() -> None:
    checked = 0
    for row in migration_tables("goml_async"):
        go, python = row[0], row[1]
        names = [span for span in CODE_SPAN.findall(python) if span.startswith("goml_async")]
        if python == "none":  # not ported, said so in the notes
            continue
        assert names, f"{go}: no Python name given"
        for name in names:
            assert re.fullmatch(r"goml_async(\.\w+)+", name), name
            resolve(name)
            checked += 1
    assert checked > 100


def test_every_command_in_the_go_ml_map_exists() -> None:
    known = {words for words, _, _ in walk(build_parser())}
    for row in migration_tables("goml command"):
        for span in CODE_SPAN.findall(row[1]):
            words = tuple(word for word in span.split() if not word.startswith("-"))
            assert words in known, f"{span!r} is not a goml command"


@pytest.mark.parametrize(
    "go_name",
    [
        "inference.TextModel",
        "ml.Backend",
        "ml.StreamingBackend",
        "NewInferenceAdapter",
        "NewHTTPBackend",
        "NewLlamaBackend",
        "NewService",
        "ml.DefaultGenOpts",
        "Engine.ScoreAll",
        "Judge.ScoreSemantic",
        "CapabilityProbes",
        "StripThinkBlocks",
        "ComputeAverages",
        "RunCompare",
        "ReadResponses",
        "WriteScores",
        "M3Host",
        "RunAgentLoop",
        "DiscoverCheckpoints",
        "AdapterMeta",
        "InfluxClient",
        "BufferInfluxResult",
        "ReplayInfluxBuffer",
        "lem ml serve",
        "lem ml probe",
    ],
)
def test_the_go_ml_map_covers(go_name: str) -> None:
    go_column = " ".join(row[0] for header, body in tables(MIGRATION.read_text()) for row in body)
    assert f"`{go_name}`" in go_column


# -- the quickstart -------------------------------------------------------------------------------


def bash_blocks(markdown: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL)]


def test_quickstart_shows_the_readmes_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set up") : readme.index("\n## ", readme.index("## Set up") + 1)]
    commands = bash_blocks(setup)
    assert len(commands) == 2, commands
    assert commands[0].startswith("bash scripts/setup && ")
    assert bash_blocks((DOCS / "quickstart.md").read_text())[:2] == commands


# -- mkdocs.yml -----------------------------------------------------------------------------------


def test_mkdocs_config_is_strict_and_checks_links() -> None:
    yaml = require("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True
    assert config["validation"]["links"] == {
        "not_found": "warn",
        "anchors": "warn",
        "absolute_links": "warn",
        "unrecognized_links": "warn",
    }
    assert "docs/hooks/cli_reference.py" in config["hooks"]
    assert "docs/hooks/check_links.py" in config["hooks"]
    pages = json.dumps(config["nav"])
    for page in (
        "concepts/cancellation.md",
        "cli.md",
        "migrating-from-go-ml.md",
        "troubleshooting.md",
    ):
        assert page in pages
        assert f"]({page})" in (DOCS / "index.md").read_text()


# -- the link checker -----------------------------------------------------------------------------


def write_site(root: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{body}</body></html>")
    return root


def test_link_checker_finds_missing_files_and_anchors(
    check_links: ModuleType, tmp_path: Path
) -> None:
    site = write_site(
        tmp_path,
        {
            "index.html": (
                '<h1 id="top">Home</h1>'
                '<a href="guide/">ok</a> <a href="guide/#usage">ok</a> <a href="#top">ok</a>'
                '<a href="guide/index.html#usage">ok</a> <a href="https://example.org/x">ext</a>'
                '<a href="mailto:a@b.c">mail</a> <img src="img/plot.png">'
                '<a href="missing/">bad</a> <a href="guide/#nowhere">bad</a>'
                '<a href="#gone">bad</a>'
                '<a href="../outside.html">bad</a> <img src="img/none.png">'
            ),
            "guide/index.html": '<h2 id="usage">Usage</h2><a href="../#top">ok</a><a name="old">',
            "img/plot.png": "",
        },
    )
    broken = check_links.check_site(site)
    assert [(link.page, link.url) for link in broken] == [
        ("index.html", "missing/"),
        ("index.html", "guide/#nowhere"),
        ("index.html", "#gone"),
        ("index.html", "../outside.html"),
        ("index.html", "img/none.png"),
    ]
    assert "no id 'nowhere' in guide/index.html" in str(broken[1])
    assert check_links.main([str(site)]) == 1
    (site / "index.html").write_text('<h1 id="top">Home</h1><a href="guide/#old">ok</a>')
    assert check_links.main([str(site)]) == 0


def test_link_checker_warns_from_mkdocs(
    check_links: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = write_site(tmp_path, {"index.html": '<a href="nope/">x</a>'})
    with caplog.at_level("WARNING", logger="mkdocs"):
        check_links.on_post_build(config={"site_dir": str(site)})
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert caplog.records[0].name.startswith("mkdocs.")  # what --strict counts


# -- the benchmark report -------------------------------------------------------------------------


def record(name: str, heading: str, rates: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "benchmark": name,
        "title": name.removeprefix("bench_").upper(),
        "heading": heading,
        "date": "2026-01-02 03:04 UTC",
        "command": f"python benchmarks/{name}.py",
        "machine": "m",
        "platform": "Linux",
        "cpu": "CPU",
        "cores": 2,
        "python": "3.11.7",
        "measures": [
            {
                "measure": "one stream",
                "unit": "tokens/s",
                "goml": 290_000.0,
                "peer": 14_000.0,
                "peer_name": "openai-python",
                "ratio": 20.7,
                "target": ">= 10x",
                "passed": True,
            },
            {
                "measure": "break to idle",
                "unit": "ms",
                "goml": 15.2,
                "peer": None,
                "peer_name": "",
                "ratio": None,
                "target": "",
                "passed": None,
            },
        ],
        "throughput": [{"scenario": "s", "goml": "goml", "rates": rates}] if rates else [],
    }


def test_report_builds_the_summary_and_the_plot(report: ModuleType, tmp_path: Path) -> None:
    require("matplotlib")
    results = tmp_path / "results"
    results.mkdir()
    for item in (
        record("bench_http", "HTTP SSE client (bench_http.py)", {"goml": 290.0, "peer": 14.0}),
        record("bench_stream", "Stream overhead (bench_stream.py)"),
    ):
        (results / f"{item['benchmark']}.json").write_text(json.dumps(item))
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text(
        "# Benchmarks\n\nIntro.\n\n<!-- bench_stream:start -->\nS\n<!-- bench_stream:end -->\n"
    )
    plot = tmp_path / "docs" / "img" / "plot.png"
    args = ["--results", str(results), "--markdown", str(page), "--plot", str(plot)]
    assert report.main(args) == 0
    text = page.read_text()
    assert text.index("Intro.") < text.index(report.START) < text.index("<!-- bench_stream:start")
    assert "[STREAM](#stream-overhead-bench_streampy)" in text
    # page order (stream before http), not the files' order
    assert text.index("(#stream-overhead") < text.index("(#http-sse-client-bench_httppy)")
    assert "| 290,000 tok/s | 14,000 tok/s (openai-python) | 20.7x | >= 10x | pass |" in text
    assert "| 15.2 ms | - | - | - | - |" in text
    assert "Machine: Linux, CPU, nproc 2, Python 3.11.7" in text
    assert "![Median tokens/s of goml_async against each peer" in text
    assert "](img/plot.png)" in text
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert report.main(args) == 0
    assert page.read_text() == text  # idempotent: one summary, replaced in place


def test_recorded_results_match_the_page(report: ModuleType) -> None:
    records = report.load_results(report.RESULTS)
    assert records, "no benchmarks/results/*.json: run the benchmarks with --markdown"
    text = report.MARKDOWN.read_text()
    for item in records:
        assert f"\n## {item['heading']}\n" in text or f"\n### {item['heading']}\n" in text
        assert set(item) >= {"benchmark", "title", "date", "machine", "measures", "throughput"}
    start, end = text.index(report.START), text.index(report.END) + len(report.END)
    expected = report.render_summary(records, "img/benchmarks-throughput.png")
    assert text[start:end] == expected, (
        "docs/benchmarks.md's summary is out of date: run python benchmarks/report.py"
    )
    assert report.PLOT.is_file()
