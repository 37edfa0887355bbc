"""``goml models``: find local models and convert GGUF files to MLX folders."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from goml_async.errors import ConfigError, ModelLoadError
from goml_async.registry import bundled_model_path, discover_gguf_models, discover_models
from goml_async.settings import current_settings
from goml_async.types import DiscoveredModel

__all__ = ["add_parser", "run_convert", "run_list"]


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "models",
        help="find local models",
        description="Work with local models: list them, convert GGUF files to MLX folders.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="list GGUF files and MLX model folders in DIR and its subfolders",
        description=(
            "List the models in DIR and its immediate subfolders: GGUF files (llama backend) "
            "and MLX model folders (config.json plus *.safetensors), with their format, "
            "architecture, quantisation and size. Without DIR: the models in GOML_MODEL_DIR "
            "(when set), the bundled default model, and the MLX folders converted into the "
            "cache (GOML_CACHE_DIR/mlx). Piped output is tab-separated."
        ),
    )
    listing.epilog = (
        "examples:\n  goml models list\n  goml models list ~/models\n  goml models list . | cut -f1"
    )
    listing.formatter_class = argparse.RawDescriptionHelpFormatter
    listing.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        help="folder to search (default: GOML_MODEL_DIR, the bundled model and the cache)",
    )
    listing.set_defaults(run=run_list)

    convert = actions.add_parser(
        "convert",
        help="convert a llama GGUF file into an MLX model folder",
        description=(
            "Convert the llama-architecture GGUF file SOURCE into the MLX model folder DEST:\n"
            "config.json, float32 model.safetensors (quantised weights are dequantised; float32\n"
            "is the fast format on CPU), tokenizer.json, and tokenizer_config.json with the\n"
            "GGUF's chat template. Load the folder with `goml generate --model DEST` or\n"
            "mlx_lm.load(DEST). DEST appears only once the conversion is complete.\n\n"
            "Needs gguf, numpy and tokenizers: pip install 'goml_async[mlx,llama]'"
        ),
    )
    convert.epilog = (
        "examples:\n"
        "  goml models convert smollm2.Q4_1.gguf models/smollm2-mlx\n"
        "  goml models convert model.gguf models/model-mlx --overwrite"
    )
    convert.formatter_class = argparse.RawDescriptionHelpFormatter
    convert.add_argument("source", metavar="SOURCE", help="the .gguf file to convert")
    convert.add_argument("dest", metavar="DEST", help="the model folder to create")
    convert.add_argument(
        "--overwrite", action="store_true", help="replace DEST when it already exists"
    )
    convert.set_defaults(run=run_convert)


def _known_models() -> tuple[list[DiscoveredModel], str]:
    """The models of GOML_MODEL_DIR, the bundled model and the MLX cache, and where we looked."""
    settings = current_settings()
    found: list[DiscoveredModel] = []
    places = []
    if settings.model_dir is not None:
        found += _models_in(str(settings.model_dir), "GOML_MODEL_DIR")
        places.append(f"GOML_MODEL_DIR ({settings.model_dir})")
    try:
        bundled = bundled_model_path()
    except ModelLoadError:
        places.append("the bundled model (not installed)")
    else:
        found += [m for m in discover_gguf_models(bundled.parent) if m.path == str(bundled)]
        places.append("the bundled model")
    cache = settings.cache_dir / "mlx"
    if cache.is_dir():
        found += discover_models(cache)
    places.append(f"the MLX cache ({cache})")
    return found, ", ".join(places)


def _models_in(directory: str, source: str = "DIR") -> list[DiscoveredModel]:
    try:
        return [*discover_models(directory), *discover_gguf_models(directory)]
    except ConfigError as exc:
        raise ConfigError(source, exc.problem) from None


def run_list(args: argparse.Namespace) -> int:
    if args.directory is None:
        models, where = _known_models()
    else:
        models, where = _models_in(args.directory), args.directory
    found = sorted({model.path: model for model in models}.values(), key=lambda m: m.path)
    console = Console()
    if not found:
        console.print(f"no models found in {where}", highlight=False)
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


def run_convert(args: argparse.Namespace) -> int:
    from goml_async.convert.gguf_to_mlx import convert_gguf_to_mlx

    interactive = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        # Printed once the checks have passed, so a bad argument gets only the error line.
        if done == 1:
            print(f"converting {args.source} -> {args.dest}", file=sys.stderr, flush=True)
        if interactive:  # one line, redrawn; a log gets only the start and end lines
            print(f"\r  {done}/{total} tensors", end="", file=sys.stderr, flush=True)

    started = time.perf_counter()
    folder = convert_gguf_to_mlx(
        args.source, args.dest, overwrite=args.overwrite, progress=progress
    )
    elapsed = time.perf_counter() - started
    if interactive:
        print(file=sys.stderr)
    print(f"converted in {elapsed:.1f} s", file=sys.stderr)
    print(folder)
    return 0


def _size(size: int) -> str:
    """A size in bytes for people: 98.4 MB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
