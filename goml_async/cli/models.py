"""``goml models``: find local models."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from goml_async.registry import discover_gguf_models, discover_models

__all__ = ["add_parser", "run_list"]


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "models",
        help="find local models",
        description="Work with local model folders.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="list GGUF files and MLX model folders in DIR and its subfolders",
        description=(
            "List the models in DIR and its immediate subfolders: GGUF files (llama backend) "
            "and MLX model folders (config.json plus *.safetensors), with their format, "
            "architecture, quantisation and size. Piped output is tab-separated."
        ),
    )
    listing.epilog = "examples:\n  goml models list ~/models\n  goml models list . | cut -f1"
    listing.formatter_class = argparse.RawDescriptionHelpFormatter
    listing.add_argument("directory", metavar="DIR", help="folder to search")
    listing.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    found = sorted(
        [*discover_models(args.directory), *discover_gguf_models(args.directory)],
        key=lambda model: model.path,
    )
    console = Console()
    if not found:
        console.print(f"no models found in {args.directory}")
        return 0
    rows = [
        (
            model.path,
            model.format,
            model.model_type or "?",
            f"{model.quant_bits}-bit/{model.quant_group}" if model.quant_bits else "none",
            _size(model.size_bytes),
        )
        for model in found
    ]
    if not console.is_terminal:
        # Piped output: whole paths, one tab-separated line per model, for cut/grep.
        for row in rows:
            print("\t".join(row))
        return 0
    table = Table("path", "format", "type", "quant", "size")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


def _size(size: int) -> str:
    """A size in bytes for people: 98.4 MB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
