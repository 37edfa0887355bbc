"""``goml chat``: an interactive chat in the terminal, each reply streamed as it is written.

The conversation and its slash commands live in :class:`ChatSession`, which does no terminal
I/O; :func:`run` is the terminal around it. The model runs on the blocking facade's event loop
(:mod:`goml_async.sync`), so that the main thread owns the terminal: ``input()`` with readline
line editing, and Ctrl-C as a plain KeyboardInterrupt, which stops the reply being streamed
(the stream is closed, so the model stops) or, at the prompt, ends the chat.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio

from goml_async import sync
from goml_async.errors import ConfigError, GomlError
from goml_async.model import TextModel
from goml_async.types import GenerateConfig, Message

from ._common import add_model_arguments, describe_target, load_target
from .generate import DEFAULT_SYSTEM

__all__ = ["Action", "COMMANDS", "ChatSession", "Reply", "add_parser", "run"]

#: The slash commands and what they do, as ``/help`` prints them.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("/help", "list these commands"),
    ("/system TEXT", "replace the system prompt (or add one); /system alone shows it"),
    ("/undo", "remove the last question and its answer"),
    ("/clear", "clear the conversation (the system prompt is kept)"),
    ("/save", "keep a snapshot of the conversation, written to --output when the chat ends"),
    ("/quit, /exit", "end the chat (Ctrl-D and Ctrl-C at the prompt do too)"),
    ("//TEXT", 'send TEXT starting with a single "/"'),
)

_HELP = "chat with a model in the terminal"
_DESCRIPTION = """\
Chat with a model in the terminal: type a message at "you> " and the reply is printed after
"assistant> " token by token. Ctrl-C stops a reply while it is being written (the stopped
exchange is left out of the conversation); at the prompt, Ctrl-C or Ctrl-D ends the chat.

Slash commands: /help, /system TEXT, /undo, /clear, /save, /quit (or /exit).

With no --model, the bundled default model (SmolLM2-135M-Instruct) is used. --model takes
"default", a .gguf file (llama.cpp), an MLX model folder, or the base URL of an
OpenAI-compatible server. With --output FILE, every conversation kept with /save, and the
current one, are appended to FILE as JSON lines {"messages": [...]} when the chat ends (system
messages left out; conversations with fewer than 2 messages skipped).
"""
_EPILOG = """\
examples:
  goml chat
  goml chat --output chats.jsonl --system "You are a terse assistant."
  goml chat --model models/smollm2.gguf --temperature 0 --max-tokens 128
  goml chat --model http://127.0.0.1:8080/v1
"""


@dataclass(frozen=True, slots=True)
class Action:
    """What the terminal does after :meth:`ChatSession.handle`.

    Attributes:
        kind: ``"send"`` (call :meth:`ChatSession.send` with ``text``), ``"say"`` (print
            ``text``, if any) or ``"quit"`` (print ``text``, if any, and end the chat).
        text: the message to send, or the text to print.
    """

    kind: Literal["send", "say", "quit"]
    text: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    """How one reply ended.

    Attributes:
        text: the reply's text (partial when stopped or failed).
        stopped: the reply was stopped (:meth:`ChatSession.stop`) before it ended.
        error: the error that ended the generation, if any.
    """

    text: str
    stopped: bool = False
    error: GomlError | None = None

    @property
    def kept(self) -> bool:
        """Whether the exchange was added to the conversation (only a complete reply is)."""
        return not self.stopped and self.error is None


class ChatSession:
    """A chat conversation with slash commands, independent of any terminal.

    Args:
        model: the model that answers.
        system: the first system prompt (None or "" for none).
        config: sampling options for every reply.
        output: the JSONL file :meth:`write_output` appends to (None: nothing is written).

    Example:
        ```python
        session = ChatSession(model, output=Path("chats.jsonl"))
        action = session.handle("What is the capital of France?")
        if action.kind == "send":
            reply = await session.send(action.text, lambda text: print(text, end=""))
        session.write_output()
        ```
    """

    def __init__(
        self,
        model: TextModel,
        *,
        system: str | None = DEFAULT_SYSTEM,
        config: GenerateConfig | None = None,
        output: Path | None = None,
    ) -> None:
        self._model = model
        self._config = config
        self._output = output
        self._messages: list[Message] = [Message("system", system)] if system else []
        self._saved: list[list[Message]] = []
        self._scope: anyio.CancelScope | None = None

    @property
    def messages(self) -> list[Message]:
        """The conversation, system prompt included (a copy)."""
        return list(self._messages)

    @property
    def system(self) -> str | None:
        """The current system prompt, if there is one."""
        first = self._messages[0] if self._messages else None
        return first.content if first is not None and first.role == "system" else None

    @property
    def output(self) -> Path | None:
        """The JSONL file the conversations are appended to, if any."""
        return self._output

    @property
    def saved(self) -> list[list[Message]]:
        """The snapshots taken with ``/save`` (system messages left out)."""
        return [list(conversation) for conversation in self._saved]

    # -- commands ---------------------------------------------------------------------------------

    def handle(self, line: str) -> Action:
        """Interpret one line typed at the prompt.

        A slash command is carried out at once and returns ``say``/``quit``; any other text
        returns ``send`` (nothing is added to the conversation until :meth:`send`).
        """
        text = line.strip()
        if not text:
            return Action("say")
        if text.startswith("//"):
            return Action("send", text[1:])
        if not text.startswith("/"):
            return Action("send", text)
        word, _, rest = text.partition(" ")
        command = word.lower()
        rest = rest.strip()
        if command in ("/quit", "/exit"):
            return Action("quit")
        if command == "/help":
            return Action("say", self.help_text())
        if command == "/system":
            return Action("say", self._set_system(rest))
        if command == "/undo":
            return Action("say", self._undo())
        if command == "/clear":
            self._messages = [m for m in self._messages if m.role == "system"]
            return Action("say", "cleared the conversation (the system prompt is kept)")
        if command == "/save":
            return Action("say", self._save())
        return Action("say", f"unknown command {word}; /help lists the commands")

    @staticmethod
    def help_text() -> str:
        """The list of slash commands."""
        width = max(len(name) for name, _ in COMMANDS)
        lines = [f"  {name.ljust(width)}  {what}" for name, what in COMMANDS]
        lines.append(f"  {'Ctrl-C'.ljust(width)}  stop the reply being written")
        return "\n".join(["commands:", *lines])

    def _set_system(self, text: str) -> str:
        if not text:
            current = self.system
            return (
                f"system prompt: {current}"
                if current
                else "no system prompt; /system TEXT sets one"
            )
        if self.system is not None:
            self._messages[0] = Message("system", text)
        else:
            self._messages.insert(0, Message("system", text))
        return "system prompt set"

    def _undo(self) -> str:
        messages = self._messages
        if len(messages) >= 2 and messages[-1].role == "assistant" and messages[-2].role == "user":
            del messages[-2:]
            return "removed the last exchange"
        return "nothing to undo"

    def _conversation(self) -> list[Message]:
        return [message for message in self._messages if message.role != "system"]

    def _save(self) -> str:
        if self._output is None:
            return "/save needs --output FILE (start goml chat with it); nothing was saved"
        conversation = self._conversation()
        if len(conversation) < 2:
            return "nothing to save yet"
        self._saved.append(conversation)
        return (
            f"saved a snapshot ({len(conversation)} messages); "
            f"it is written to {self._output} when the chat ends"
        )

    # -- replies ----------------------------------------------------------------------------------

    async def send(self, text: str, write: Callable[[str], object]) -> Reply:
        """Add ``text`` as the user's turn and stream the model's reply through ``write``.

        Only a complete reply is kept: when the generation fails, or :meth:`stop` is called
        while it runs, the user's turn is removed again and the conversation is as before.
        """
        self._messages.append(Message("user", text))
        parts: list[str] = []
        reply: Reply | None = None
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    async with self._model.chat(list(self._messages), self._config) as stream:
                        async for token in stream:
                            parts.append(token.text)
                            write(token.text)
                except GomlError as exc:
                    reply = Reply("".join(parts), error=exc)
            if reply is None:
                reply = Reply("".join(parts), stopped=scope.cancelled_caught)
                if reply.kept:
                    self._messages.append(Message("assistant", reply.text))
        finally:
            self._scope = None
            if reply is None or not reply.kept:
                self._messages.pop()
        return reply

    def stop(self) -> None:
        """Stop the reply being streamed, if any (call it from the event loop's thread)."""
        if self._scope is not None:
            self._scope.cancel()

    # -- output -----------------------------------------------------------------------------------

    def conversations(self) -> list[list[Message]]:
        """What :meth:`write_output` writes: the snapshots, then the current conversation.

        System messages are left out, conversations with fewer than 2 messages are skipped, and
        the current conversation is left out when it is the same as the last snapshot.
        """
        found = list(self._saved)
        current = self._conversation()
        if not found or current != found[-1]:
            found.append(current)
        return [conversation for conversation in found if len(conversation) >= 2]

    def write_output(self) -> int:
        """Append :meth:`conversations` to ``output`` as JSON lines; returns how many.

        Call it once, when the chat ends. Nothing is written (and no file created) without
        ``output`` or without a conversation to write.

        Raises:
            ConfigError: the file cannot be written.
        """
        if self._output is None:
            return 0
        rows = [
            json.dumps({"messages": [m.to_dict() for m in conversation]}, ensure_ascii=False)
            for conversation in self.conversations()
        ]
        if not rows:
            return 0
        try:
            with self._output.open("a", encoding="utf-8") as file:
                file.write("".join(row + "\n" for row in rows))
        except OSError as exc:
            raise ConfigError("--output", f"cannot write {self._output}: {exc}") from exc
        return len(rows)


# -- the command -----------------------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    """Add ``goml chat`` to the ``goml`` subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "chat",
        help=_HELP,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, default=None)
    parser.add_argument(
        "--system",
        default=DEFAULT_SYSTEM,
        help=f'the first system prompt (default: "{DEFAULT_SYSTEM}"; "" for none)',
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="JSONL file the conversations go to"
    )
    parser.add_argument("-n", "--max-tokens", type=int, default=512, help="per reply; default: 512")
    parser.add_argument("-t", "--temperature", type=float, default=0.4, help="default: 0.4")
    parser.add_argument("--seed", type=int, help="sampling seed")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``goml chat`` until /quit, Ctrl-D or Ctrl-C at the prompt."""
    config = GenerateConfig(
        max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
    )
    output: Path | None = args.output
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise ConfigError("--output", f"cannot write a file at {output}")
    model = sync.run(partial(load_target, args.model, backend=args.backend))
    with sync.BlockingModel(model):  # closed when the chat ends, however it ends
        session = ChatSession(model, system=args.system, config=config, output=output)
        _Terminal(session).loop(describe_target(args.model))
    return 0


class _Terminal:
    """Reads lines in the main thread; each reply streams on the blocking facade's loop."""

    def __init__(self, session: ChatSession) -> None:
        self._session = session

    def loop(self, label: str) -> None:
        _enable_line_editing()
        print(f"chatting with {label}; /help lists the commands, /quit or Ctrl-D ends the chat")
        try:
            while True:
                try:
                    line = input("you> ")
                except (EOFError, KeyboardInterrupt):
                    print()
                    return
                action = self._session.handle(line)
                if action.kind == "send":
                    self._reply(action.text)
                elif action.text:
                    print(action.text)
                if action.kind == "quit":
                    return
        finally:
            written = self._session.write_output()
            if written:
                print(f"wrote {written} conversation(s) to {self._session.output}")

    def _reply(self, text: str) -> None:
        _write("assistant> ")
        finished = threading.Event()
        try:
            reply = sync.run(self._send, text, finished)
        except KeyboardInterrupt:
            # sync.run has cancelled the reply: its stream closes (so the model stops) and the
            # exchange is taken out of the conversation. Wait for that before the next line is
            # read; a second Ctrl-C while waiting ends the chat.
            finished.wait()
            reply = Reply("", stopped=True)
        print()
        if reply.stopped:
            print("(stopped; this exchange is left out of the conversation)")
        elif reply.error is not None:
            print(
                f"error: {reply.error} (this exchange is left out of the conversation)",
                file=sys.stderr,
            )

    async def _send(self, text: str, finished: threading.Event) -> Reply:
        try:
            return await self._session.send(text, _write)
        finally:
            finished.set()


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _enable_line_editing() -> None:
    """Use readline for ``input()`` (history, cursor keys) where there is a terminal and it."""
    if not sys.stdin.isatty():
        return
    with contextlib.suppress(ImportError):  # e.g. Windows without pyreadline
        import readline  # noqa: F401 - importing it is what makes input() use it
