"""The ``goml`` command line.

Every command has ``--help``; bad input exits with status 2 and a one-line ``goml: error: ...``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from goml_async._version import __version__
from goml_async.errors import GomlError

from . import agent, bench, chat, compare, generate, mcp_server, models, probe, score, serve

__all__ = ["CommandParser", "Terminated", "build_parser", "main", "one_line"]

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


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command that was run.

    ``goml generate --bogus`` says ``goml generate: error: unrecognized arguments: --bogus (see
    goml generate --help)`` rather than printing the top-level usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            # Otherwise the top-level parser reports a subcommand's unknown arguments as its own.
            self._chosen(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _chosen(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The innermost (sub)command parser that ``parsed`` went through."""
        parser: argparse.ArgumentParser = self
        while True:
            chosen = None
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    chosen = action.choices.get(getattr(parsed, action.dest or "", None) or "")
            if chosen is None:
                return parser
            parser = chosen


class Terminated(SystemExit):
    """SIGTERM or SIGHUP ended the command: raised so that clean-up runs (models close)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def _clean_exit_on_termination() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` while a command runs.

    By default they end Python at once, skipping every ``finally`` and ``async with`` exit, so
    a model's server would only be stopped by the operating system. Commands that handle the
    signals themselves (``serve``, ``agent``) install their own handlers while they run.
    """
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _terminate)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_parser() -> argparse.ArgumentParser:
    """The ``goml`` argument parser with every subcommand."""
    parser = CommandParser(
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
        with _clean_exit_on_termination():
            status: int = args.run(args)
    except GomlError as exc:
        print(f"goml: error: {one_line(str(exc))}", file=sys.stderr)
        return _exit_status(exc)
    except KeyboardInterrupt:
        print("goml: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"goml: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    return status


def one_line(message: str, *, width: int = 200) -> str:
    """A message as one line: its first line, and the last of the others (for example a
    server's last log line, which usually says what went wrong)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else message
    last = lines[-1] if len(lines[-1]) <= width else lines[-1][: width - 3] + "..."
    return f"{lines[0]} ... {last}"


def _exit_status(exc: GomlError) -> int:
    """Exit status for an error: 1 when generation itself failed, 2 for setup and input."""
    from goml_async.errors import GenerationError

    return 1 if isinstance(exc, GenerationError) else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
