"""``goml models``: find local models."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from goml_async.registry import discover_models

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
        help="list MLX model folders in DIR and its subfolders",
        description=(
            "List model folders (config.json plus *.safetensors) in DIR and its immediate "
            "subfolders, with their architecture and quantisation."
        ),
    )
    listing.epilog = "examples:\n  goml models list ~/models\n  goml models list . | cut -f1"
    listing.formatter_class = argparse.RawDescriptionHelpFormatter
    listing.add_argument("directory", metavar="DIR", help="folder to search")
    listing.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    found = discover_models(args.directory)
    console = Console()
    if not found:
        console.print(f"no models found in {args.directory}")
        return 0
    rows = [
        (
            model.path,
            model.model_type or "?",
            f"{model.quant_bits}-bit/{model.quant_group}" if model.quant_bits else "none",
            str(model.num_files),
        )
        for model in found
    ]
    if not console.is_terminal:
        # Piped output: whole paths, one tab-separated line per model, for cut/grep.
        for row in rows:
            print("\t".join(row))
        return 0
    table = Table("path", "type", "quant", "files")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0
