"""The ``goml`` command line.

Every command has ``--help``; bad input exits with status 2 and a one-line ``goml: error: ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from goml_async import __version__
from goml_async.errors import GomlError

from . import agent, bench, chat, compare, generate, mcp_server, models, probe, score, serve

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  goml generate "What is the capital of France?"       use the bundled default model
  goml generate --model models/smollm2.gguf "Hello"    a local GGUF on llama.cpp
  goml generate --model http://127.0.0.1:8080/v1 "Hi"  any OpenAI-compatible server
  goml chat --output chats.jsonl                       chat in the terminal, saving to JSONL
  goml models list ~/models                            find MLX model folders
  goml serve --port 8090                               an OpenAI-compatible server
  goml score --input responses.jsonl --output s.json   score responses (heuristics, judge)
  goml probe --model http://127.0.0.1:8080/v1          the 23 capability probes, graded
  goml compare old.json new.json                       averages of two scores files
  goml agent --config agent.toml                       score training checkpoints into InfluxDB
  goml expand --prompts seeds.jsonl --worker w1 -o out generate responses for seed prompts
  goml mcp --model default                             MCP tools (generate, score, probe)
  goml bench --model models/m.gguf                     time to first token and tokens/s here

Settings come from GOML_* environment variables (GomlSettings in the API reference).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``goml`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="goml",
        description="goml_async: stream text from local and remote language models.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"goml {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    generate.add_parser(commands)
    chat.add_parser(commands)
    models.add_parser(commands)
    serve.add_parser(commands)
    score.add_parser(commands)
    probe.add_parser(commands)
    compare.add_parser(commands)
    agent.add_parser(commands)  # agent and expand
    mcp_server.add_parser(commands)
    bench.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``goml``; returns the exit status (0 ok, 1 generation failed, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except GomlError as exc:
        print(f"goml: error: {exc}", file=sys.stderr)
        return _exit_status(exc)
    except KeyboardInterrupt:
        print("goml: interrupted", file=sys.stderr)
        return 130
    return status


def _exit_status(exc: GomlError) -> int:
    """Exit status for an error: 1 when generation itself failed, 2 for setup and input."""
    from goml_async.errors import GenerationError

    return 1 if isinstance(exc, GenerationError) else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
