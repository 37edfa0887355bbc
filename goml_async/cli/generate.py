"""``goml generate``: stream a completion to stdout."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
from rich.console import Console

from goml_async.errors import ConfigError
from goml_async.types import GenerateConfig, Message

from ._common import add_model_arguments, load_target

__all__ = ["DEFAULT_SYSTEM", "add_parser", "run"]

#: Small chat models answer far better with a system message than with their template's default.
DEFAULT_SYSTEM = "You are a helpful assistant."

_HELP = "stream a completion of PROMPT to stdout"
_DESCRIPTION = """\
Stream a completion of PROMPT to stdout, token by token.

With no --model, the bundled default model (SmolLM2-135M-Instruct) is used, or the server
in GOML_BASE_URL when that is set. --model takes a .gguf file (llama.cpp), an MLX model
folder, the base URL of an OpenAI-compatible server, or "default" (the bundled model).
PROMPT "-" reads the prompt from stdin. Without --raw the prompt is sent as a chat message.
"""
_EPILOG = """\
examples:
  goml generate "What is the capital of France?"
  goml generate --model models/smollm2.gguf --max-tokens 64 "Write a haiku"
  goml generate --model http://127.0.0.1:8080/v1 --stop "\\n\\n" "List three colours:"
  echo "Hi" | goml generate -
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "generate",
        help=_HELP,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", metavar="PROMPT", help='the prompt, or "-" for stdin')
    add_model_arguments(parser, default=None)
    parser.add_argument(
        "--system",
        default=DEFAULT_SYSTEM,
        help=f'the system message (default: "{DEFAULT_SYSTEM}"; "" for none)',
    )
    parser.add_argument("--raw", action="store_true", help="send PROMPT as raw text, not chat")
    parser.add_argument("-n", "--max-tokens", type=int, default=256, help="default: 256")
    parser.add_argument("-t", "--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=0.0, help="0 = off")
    parser.add_argument("--repeat-penalty", type=float, default=0.0, help="0 = off")
    parser.add_argument("--seed", type=int, help="sampling seed")
    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop sequence (repeatable)"
    )
    parser.add_argument("--stats", action="store_true", help="print metrics to stderr")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if args.raw and args.system not in ("", DEFAULT_SYSTEM):
        raise ConfigError("--system", "cannot be combined with --raw")
    config = GenerateConfig(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repeat_penalty=args.repeat_penalty,
        seed=args.seed,
        stop_sequences=tuple(args.stop),
    )
    return anyio.run(_generate, args, prompt, config)


async def _generate(args: argparse.Namespace, prompt: str, config: GenerateConfig) -> int:
    err = Console(stderr=True)
    model = await load_target(args.model, backend=args.backend, console=err)
    async with model:
        if args.raw:
            stream = model.generate(prompt, config)
        else:
            messages = [Message("user", prompt)]
            if args.system:
                messages.insert(0, Message("system", args.system))
            stream = model.chat(messages, config)
        async with stream:
            async for token in stream:
                sys.stdout.write(token.text)
                sys.stdout.flush()
        sys.stdout.write("\n")
        if args.stats and stream.metrics is not None:
            m = stream.metrics
            err.print(
                f"[dim]{m.generated_tokens} tokens, {m.decode_tokens_per_sec:.1f} tok/s, "
                f"first token {m.time_to_first_token * 1000:.0f} ms, "
                f"finish: {stream.finish_reason}[/dim]"
            )
    return 0
