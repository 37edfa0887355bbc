"""MkDocs hook: the CLI reference page, rendered from ``goml``'s own argument parser.

``docs/cli.md`` holds an introduction and the marker ``<!-- cli-reference -->``; at build time
the marker is replaced with the ``--help`` text of ``goml`` and of every subcommand (and their
subcommands, such as ``goml models list``), taken from :func:`goml_async.cli.build_parser`. The
page therefore always matches the installed CLI. A subcommand registered without a ``help=``
one-liner stops the build: every command must say what it does.

Registered in mkdocs.yml under ``hooks:``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MARKER",
    "PAGE",
    "WIDTH",
    "CliReferenceError",
    "Command",
    "iter_commands",
    "on_page_markdown",
    "render_cli_reference",
]

PAGE = "cli.md"
MARKER = "<!-- cli-reference -->"
#: Help text is wrapped at this width whatever the terminal, so the page is the same everywhere.
WIDTH = 96


class CliReferenceError(RuntimeError):
    """The CLI cannot be documented as it is (a command without help, a missing marker)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command of the tree: its words (``("goml", "models", "list")``), help and parser."""

    words: tuple[str, ...]
    summary: str
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(self.words)

    @property
    def anchor(self) -> str:
        return "-".join(self.words)


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str | None, Any]]:
    """(name, help, parser) of each subcommand of ``parser``, aliases left out.

    argparse keeps a subcommand's help only when one was given, so every registered name is
    read from ``choices`` and its help looked up: a command without help is seen, not skipped.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) not in seen:  # an alias maps to a parser already listed
                    seen.add(id(child))
                    yield name, helps.get(name), child


def iter_commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ("goml",), summary: str = ""
) -> Iterator[Command]:
    """``parser`` and every subcommand below it, depth first, in registration order.

    Raises:
        CliReferenceError: a subcommand has no (or an empty) ``help=``.
    """
    description = (parser.description or "").strip().splitlines()
    yield Command(words, summary or (description[0] if description else ""), parser)
    for name, help_text, child in _subcommands(parser):
        path = (*words, name)
        if not help_text or not str(help_text).strip() or help_text == argparse.SUPPRESS:
            raise CliReferenceError(
                f"'{' '.join(path)}' has no help text: give it add_parser(..., help='...'), "
                "the one line the CLI reference and 'goml --help' show for it"
            )
        yield from iter_commands(child, path, str(help_text).strip())


def _help(parser: argparse.ArgumentParser) -> str:
    """``parser.format_help()`` wrapped at :data:`WIDTH` columns, whatever the terminal."""
    formatter_class = parser.formatter_class
    parser.formatter_class = functools.partial(formatter_class, width=WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = formatter_class


def render_cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Markdown for every command of ``parser`` (default: ``goml``'s): an index, then each
    command's ``--help`` under a heading of its own."""
    if parser is None:
        from goml_async.cli import build_parser

        parser = build_parser()
    commands = list(iter_commands(parser))
    lines = ["| command | what it does |", "| --- | --- |"]
    lines += [f"| [`{c.name}`](#{c.anchor}) | {c.summary} |" for c in commands[1:]]
    for command in commands:
        level = "##" if len(command.words) <= 2 else "###"
        lines += ["", f"{level} {command.name}", "", "```text", _help(command.parser), "```"]
    return "\n".join(lines)


def on_page_markdown(markdown: str, *, page: Any, **_: Any) -> str:
    """Fill the CLI page's marker with the rendered reference."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise CliReferenceError(f"docs/{PAGE} has lost its {MARKER} marker")
    return markdown.replace(MARKER, render_cli_reference())
