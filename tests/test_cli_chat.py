"""Tests for ``goml chat``: ChatSession's commands on a ScriptedModel, the command in-process, and
the real command in a pseudo-terminal with the bundled model."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from model_fixtures import require

import goml_async
from goml_async import registry
from goml_async.cli import main
from goml_async.cli.chat import COMMANDS, ChatSession
from goml_async.errors import GenerationError, GomlError
from goml_async.model import TextModel
from goml_async.registry import register_backend
from goml_async.testing import ScriptedModel
from goml_async.types import GenerateConfig, LoadConfig, Message

REPO_ROOT = Path(goml_async.__file__).resolve().parent.parent
SYSTEM = "You are a helpful assistant."


def _pairs(messages: list[Message]) -> list[tuple[str, str]]:
    return [(message.role, message.content) for message in messages]


def _chat_messages(model: ScriptedModel, index: int = -1) -> list[tuple[str, str]]:
    subject, _ = model.calls[index]
    assert isinstance(subject, list)
    return _pairs(subject)


async def _exchange(session: ChatSession, text: str) -> str:
    written: list[str] = []
    action = session.handle(text)
    assert action.kind == "send"
    reply = await session.send(action.text, written.append)
    assert reply.kept, reply
    return "".join(written)


# -- ChatSession: commands ------------------------------------------------------------------------


def test_plain_text_is_sent_and_blank_lines_are_ignored() -> None:
    session = ChatSession(ScriptedModel(["ok"]))
    assert (session.handle("  Hello there \n").kind, session.handle("Hello").text) == (
        "send",
        "Hello",
    )
    assert (session.handle("   ").kind, session.handle("").text) == ("say", "")
    assert session.handle("//etc/hosts, what is it?").text == "/etc/hosts, what is it?"
    assert _pairs(session.messages) == [("system", SYSTEM)]  # nothing added before send()


def test_help_lists_every_command() -> None:
    action = ChatSession(ScriptedModel(["ok"])).handle("/help")
    assert action.kind == "say"
    for name in ("/quit", "/exit", "/save", "/clear", "/system", "/undo", "/help", "Ctrl-C"):
        assert name in action.text
    assert len(COMMANDS) == 7


@pytest.mark.parametrize("line", ["/quit", "/exit", "/QUIT", " /exit now "])
def test_quit_and_exit(line: str) -> None:
    assert ChatSession(ScriptedModel(["ok"])).handle(line).kind == "quit"


def test_unknown_command_sends_nothing() -> None:
    model = ScriptedModel(["ok"])
    session = ChatSession(model)
    action = session.handle("/frobnicate now")
    assert action.kind == "say"
    assert action.text == "unknown command /frobnicate; /help lists the commands"
    assert model.calls == []
    assert _pairs(session.messages) == [("system", SYSTEM)]


def test_system_replaces_adds_and_shows() -> None:
    session = ChatSession(ScriptedModel(["ok"]), system=None)
    assert session.system is None
    assert session.handle("/system").text == "no system prompt; /system TEXT sets one"
    assert session.handle("/system Be brief.").text == "system prompt set"
    assert _pairs(session.messages) == [("system", "Be brief.")]
    session.handle("/system   Be very brief.  ")
    assert _pairs(session.messages) == [("system", "Be very brief.")]
    assert session.handle("/system").text == "system prompt: Be very brief."


@pytest.mark.anyio
async def test_system_added_mid_conversation_goes_first() -> None:
    model = ScriptedModel(["ok"])
    session = ChatSession(model, system="")
    await _exchange(session, "Hi")
    session.handle("/system Be brief.")
    await _exchange(session, "Again")
    assert _chat_messages(model) == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "ok"),
        ("user", "Again"),
    ]


@pytest.mark.anyio
async def test_undo_removes_the_last_exchange() -> None:
    session = ChatSession(ScriptedModel(["ok"]))
    assert session.handle("/undo").text == "nothing to undo"
    await _exchange(session, "one")
    await _exchange(session, "two")
    assert session.handle("/undo").text == "removed the last exchange"
    assert _pairs(session.messages) == [("system", SYSTEM), ("user", "one"), ("assistant", "ok")]
    session.handle("/undo")
    assert session.handle("/undo").text == "nothing to undo"
    assert _pairs(session.messages) == [("system", SYSTEM)]


@pytest.mark.anyio
async def test_clear_keeps_the_system_prompt() -> None:
    model = ScriptedModel(["ok"])
    session = ChatSession(model)
    await _exchange(session, "one")
    assert session.handle("/clear").text == "cleared the conversation (the system prompt is kept)"
    assert _pairs(session.messages) == [("system", SYSTEM)]
    await _exchange(session, "two")
    assert _chat_messages(model) == [("system", SYSTEM), ("user", "two")]


# -- ChatSession: replies -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_streams_tokens_and_keeps_the_exchange() -> None:
    model = ScriptedModel(["Par", "is", "."])
    config = GenerateConfig(max_tokens=9, temperature=0.4)
    session = ChatSession(model, config=config)
    written: list[str] = []
    reply = await session.send("Capital of France?", written.append)
    assert written == ["Par", "is", "."]
    assert (reply.text, reply.stopped, reply.error, reply.kept) == ("Paris.", False, None, True)
    assert _pairs(session.messages) == [
        ("system", SYSTEM),
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
    ]
    ((_, used),) = model.calls
    assert (used.max_tokens, used.temperature) == (9, 0.4)


@pytest.mark.anyio
async def test_a_generation_error_removes_the_user_turn() -> None:
    session = ChatSession(ScriptedModel(["Par", "is"], fail_after=1))
    written: list[str] = []
    reply = await session.send("Capital?", written.append)
    assert isinstance(reply.error, GenerationError)
    assert (reply.text, reply.kept, written) == ("Par", False, ["Par"])
    assert _pairs(session.messages) == [("system", SYSTEM)]


@pytest.mark.anyio
async def test_an_error_before_the_stream_starts_removes_the_user_turn() -> None:
    model = ScriptedModel(["ok"])
    await model.aclose()
    session = ChatSession(model)
    reply = await session.send("Hi", print)
    assert isinstance(reply.error, GenerationError)
    assert "closed" in str(reply.error)
    assert (reply.text, reply.kept) == ("", False)
    assert _pairs(session.messages) == [("system", SYSTEM)]


@pytest.mark.anyio
async def test_stop_closes_the_stream_and_drops_the_exchange() -> None:
    model = ScriptedModel(["word "] * 200, delay=0.01)
    session = ChatSession(model)
    written: list[str] = []
    first = anyio.Event()

    def write(text: str) -> None:
        written.append(text)
        first.set()

    async with anyio.create_task_group() as group:

        async def reply_and_record() -> None:
            replies.append(await session.send("Tell me a story", write))

        replies: list[Any] = []
        group.start_soon(reply_and_record)
        await first.wait()
        session.stop()
    (reply,) = replies
    assert reply.stopped and not reply.kept
    assert reply.text == "".join(written)
    count = len(written)
    assert count < 20
    # The model's call is over (its metrics count what it made: the written tokens, not the
    # 200 scripted): the source is closed, and nothing more can arrive.
    assert count <= model.metrics().generated_tokens < 200
    assert model.err() is None
    assert _pairs(session.messages) == [("system", SYSTEM)]
    session.stop()  # no reply running: nothing happens


# -- ChatSession: saving --------------------------------------------------------------------------


def test_save_without_output_says_so() -> None:
    session = ChatSession(ScriptedModel(["ok"]))
    text = session.handle("/save").text
    assert text == "/save needs --output FILE (start goml chat with it); nothing was saved"
    assert session.saved == []
    assert session.write_output() == 0


@pytest.mark.anyio
async def test_output_holds_snapshots_and_the_current_conversation(tmp_path: Path) -> None:
    out = tmp_path / "chats.jsonl"
    out.write_text('{"messages": []}\n', encoding="utf-8")  # earlier content is kept (appended)
    session = ChatSession(ScriptedModel(["ok"]), output=out)
    assert session.handle("/save").text == "nothing to save yet"
    await _exchange(session, "one")
    assert session.handle("/save").text == (
        f"saved a snapshot (2 messages); it is written to {out} when the chat ends"
    )
    session.handle("/clear")
    await _exchange(session, "two")
    session.handle("/system Be brief.")
    await _exchange(session, "thrée")
    assert session.write_output() == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[1:] == [
        '{"messages": [{"role": "user", "content": "one"}, '
        '{"role": "assistant", "content": "ok"}]}',
        '{"messages": [{"role": "user", "content": "two"}, '
        '{"role": "assistant", "content": "ok"}, {"role": "user", "content": "thrée"}, '
        '{"role": "assistant", "content": "ok"}]}',
    ]


@pytest.mark.anyio
async def test_output_skips_short_and_repeated_conversations(tmp_path: Path) -> None:
    out = tmp_path / "chats.jsonl"
    session = ChatSession(ScriptedModel(["ok"]), output=out)
    assert session.write_output() == 0
    assert not out.exists()  # nothing to write: no file
    await _exchange(session, "one")
    session.handle("/save")
    assert session.write_output() == 1  # the current conversation is the snapshot: once
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "ok"}]}
    ]


@pytest.mark.anyio
async def test_output_that_cannot_be_written(tmp_path: Path) -> None:
    session = ChatSession(ScriptedModel(["ok"]), output=tmp_path / "missing" / "chats.jsonl")
    await _exchange(session, "one")
    with pytest.raises(GomlError, match="--output: cannot write"):
        session.write_output()


# -- the command, in-process ----------------------------------------------------------------------


class FakeBackend:
    """A ModelBackend that returns one ScriptedModel and remembers it."""

    name = "llama"

    def __init__(self, reply: list[str]) -> None:
        self.reply = reply
        self.fail_after: int | None = None
        self.models: list[ScriptedModel] = []

    def available(self) -> bool:
        return True

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> TextModel:
        model = ScriptedModel(self.reply, fail_after=self.fail_after)
        self.models.append(model)
        return model


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeBackend]:
    """The llama backend replaced by a scripted one (the registry is restored afterwards)."""
    saved = dict(registry._backends)
    registry._backends.clear()
    monkeypatch.setenv("COLUMNS", "100")
    backend = FakeBackend(["Par", "is"])
    register_backend(backend)
    try:
        yield backend
    finally:
        registry._backends.clear()
        registry._backends.update(saved)


def _run_chat(argv: list[str], typed: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    model_file = tmp_path / "tiny.gguf"
    model_file.write_bytes(b"GGUF\x03\x00\x00\x00")
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    return main(["chat", "--model", str(model_file), *argv])


def test_chat_help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as info:
        main(["chat", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: goml chat")
    for text in ("--output", "--system", "--max-tokens", "--temperature", "/undo", "Ctrl-C"):
        assert text in out
    assert "goml chat --output chats.jsonl" in out
    assert "goml chat" in _top_level_help(capsys)


def _top_level_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main(["--help"])
    return capsys.readouterr().out


def test_chat_command_streams_and_writes_the_output(
    fake_backend: FakeBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    out = tmp_path / "chats.jsonl"
    typed = "What is the capital of France?\n/save\n/nope\n/quit\nnever read\n"
    assert _run_chat(["--output", str(out)], typed, monkeypatch, tmp_path) == 0
    stdout = capsys.readouterr().out
    assert "you> assistant> Paris\n" in stdout
    assert "unknown command /nope" in stdout
    assert f"wrote 1 conversation(s) to {out}" in stdout
    assert json.loads(out.read_text()) == {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ]
    }
    (model,) = fake_backend.models
    assert _chat_messages(model) == [("system", SYSTEM), ("user", "What is the capital of France?")]
    ((_, config),) = model.calls
    assert (config.max_tokens, config.temperature) == (512, 0.4)
    assert model.closed


def test_chat_command_ends_at_end_of_input(
    fake_backend: FakeBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    argv = ["--system", "", "-n", "7", "-t", "0", "--seed", "3"]
    assert _run_chat(argv, "Hi", monkeypatch, tmp_path) == 0
    assert capsys.readouterr().out.endswith("you> assistant> Paris\nyou> \n")
    ((messages, config),) = fake_backend.models[0].calls
    assert isinstance(messages, list)
    assert _pairs(messages) == [("user", "Hi")]
    assert (config.max_tokens, config.temperature, config.seed) == (7, 0.0, 3)


def test_chat_command_reports_a_generation_error_and_goes_on(
    fake_backend: FakeBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake_backend.fail_after = 1
    assert _run_chat([], "one\ntwo\n", monkeypatch, tmp_path) == 0
    captured = capsys.readouterr()
    assert captured.out.count("assistant> Par\n") == 2
    error = "error: scripted failure after 1 token(s)"
    assert (
        captured.err.splitlines()[-2:]
        == [f"{error} (this exchange is left out of the conversation)"] * 2
    )
    model = fake_backend.models[0]
    assert _chat_messages(model) == [("system", SYSTEM), ("user", "two")]  # "one" was removed


def test_chat_output_in_a_missing_folder_is_a_usage_error(
    fake_backend: FakeBackend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    out = tmp_path / "missing" / "chats.jsonl"
    assert _run_chat(["--output", str(out)], "", monkeypatch, tmp_path) == 2
    assert capsys.readouterr().err == f"goml: error: --output: cannot write a file at {out}\n"
    assert fake_backend.models == []  # checked before the model is loaded


class _CtrlCAtTheStory(io.StringIO):
    """stdout on which the first token of the story presses Ctrl-C (SIGINT to the main thread).

    The signal is sent once the main thread is blocked waiting for the reply (in a threading
    wait, outside anyio's task start), as it is when a person presses Ctrl-C.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    def write(self, text: str) -> int:
        if text == "word ":
            self.tokens += 1
            if self.tokens == 1:
                _wait_until_the_main_thread_waits()
                main = threading.main_thread().ident
                assert main is not None
                signal.pthread_kill(main, signal.SIGINT)
        return super().write(text)


def _wait_until_the_main_thread_waits() -> None:
    anyio_dir = str(Path(anyio.__file__).parent)
    main = threading.main_thread().ident
    deadline = time.monotonic() + 30
    while True:
        frame = sys._current_frames().get(main or 0)
        stack = []
        while frame is not None:
            stack.append(frame.f_code.co_filename)
            frame = frame.f_back
        if (
            stack
            and stack[0] == threading.__file__
            and not any(name.startswith(anyio_dir) for name in stack)
        ):
            return
        assert time.monotonic() < deadline, stack
        time.sleep(0.001)  # polling another thread's state, which has no event to wait on


class _PacedBackend(FakeBackend):
    """Its model yields to the event loop before each token, as a real backend does (a
    cancellation takes effect at the next token)."""

    async def load_model(self, path: str, config: LoadConfig, **options: Any) -> TextModel:
        model = ScriptedModel(self.reply, delay=1e-6)
        self.models.append(model)
        return model


def test_ctrl_c_stops_the_reply_at_the_model_before_the_next_prompt(
    fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def reply(messages: str | list[Message]) -> list[str]:
        assert isinstance(messages, list)
        return ["word "] * 1_000_000 if messages[-1].content == "a story" else ["Paris"]

    backend = _PacedBackend(reply)  # type: ignore[arg-type]
    register_backend(backend)  # in place of fake_backend, which restores the registry
    stdout = _CtrlCAtTheStory()
    monkeypatch.setattr(sys, "stdout", stdout)
    out = tmp_path / "chats.jsonl"
    typed = "a story\nthe capital?\n/quit\n"
    assert _run_chat(["--output", str(out)], typed, monkeypatch, tmp_path) == 0
    text = stdout.getvalue()
    assert "(stopped; this exchange is left out of the conversation)\nyou> " in text
    assert "assistant> Paris\n" in text
    assert stdout.tokens < 1_000_000
    (model,) = backend.models
    # The stopped reply's stream was closed before the next one opened.
    assert (len(model.calls), model.max_concurrency) == (2, 1)
    assert _chat_messages(model) == [("system", SYSTEM), ("user", "the capital?")]
    assert json.loads(out.read_text())["messages"][0] == {"role": "user", "content": "the capital?"}


def test_chat_with_a_missing_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    assert main(["chat", "--model", str(missing)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("goml: error: cannot load model")
    assert str(missing) in last


# -- the real command in a terminal, with the bundled model ---------------------------------------


def _spawn(*args: str) -> Any:
    pexpect = require("pexpect")
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "COLUMNS": "200"}
    argv = ["-m", "goml_async", "chat", "--temperature", "0", *args]
    return pexpect.spawn(
        sys.executable, argv, cwd=str(REPO_ROOT), env=env, encoding="utf-8", timeout=60
    )


def _answer(child: Any, question: str) -> str:
    """Ask at the prompt and return the reply printed before the next prompt."""
    child.sendline(question)
    child.expect_exact("assistant> ")
    child.expect_exact("you> ")
    return str(child.before)


def _command(child: Any, line: str) -> str:
    child.sendline(line)
    child.expect_exact("you> ")
    return str(child.before)


@pytest.mark.slow
def test_terminal_conversation_with_the_bundled_model(bundled_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "chats.jsonl"
    child = _spawn("--model", str(bundled_gguf), "--max-tokens", "48", "--output", str(out))
    try:
        child.expect_exact("you> ")
        help_text = _command(child, "/help")
        for name in ("/system TEXT", "/undo", "/clear", "/save", "/quit, /exit"):
            assert name in help_text
        assert "unknown command /frobnicate" in _command(child, "/frobnicate")
        france = _answer(child, "What is the capital of France?")
        assert "Paris" in france
        assert "saved a snapshot (2 messages)" in _command(child, "/save")
        assert "removed the last exchange" in _command(child, "/undo")
        assert "nothing to undo" in _command(child, "/undo")
        assert "system prompt set" in _command(child, f"/system {SYSTEM} Answer in one sentence.")
        assert "Rome" in _answer(child, "What is the capital of Italy?")
        assert "cleared the conversation" in _command(child, "/clear")
        child.sendline("/quit")
        child.expect_exact("wrote 1 conversation(s)")
        child.expect(require("pexpect").EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    # Only the snapshot: the Italy exchange was cleared; system messages are never written.
    (line,) = out.read_text(encoding="utf-8").splitlines()
    row = json.loads(line)
    assert list(row) == ["messages"]
    user, assistant = row["messages"]
    assert user == {"role": "user", "content": "What is the capital of France?"}
    assert list(assistant) == ["role", "content"]
    assert assistant["role"] == "assistant"
    assert "Paris" in assistant["content"]
    assert assistant["content"].strip() in france


@pytest.mark.slow
def test_terminal_ctrl_c_stops_a_reply_and_ctrl_d_saves_and_exits(
    bundled_gguf: Path, tmp_path: Path
) -> None:
    out = tmp_path / "chats.jsonl"
    child = _spawn("--model", str(bundled_gguf), "--max-tokens", "400", "--output", str(out))
    try:
        child.expect_exact("you> ")
        child.sendline("Write a long story about a dragon who learns to bake bread.")
        child.expect_exact("assistant> ")
        child.expect(r"\w+ \w+ \w+ \w+")  # the reply is streaming
        child.sendintr()
        child.expect_exact("(stopped; this exchange is left out of the conversation)")
        child.expect_exact("you> ")
        assert "Paris" in _answer(child, "What is the capital of France?")
        child.sendeof()
        child.expect_exact("wrote 1 conversation(s)")
        child.expect(require("pexpect").EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    (line,) = out.read_text(encoding="utf-8").splitlines()
    user, assistant = json.loads(line)["messages"]  # the stopped story is not in it
    assert user["content"] == "What is the capital of France?"
    assert "Paris" in assistant["content"]


@pytest.mark.slow
def test_terminal_ctrl_c_at_the_prompt_exits_cleanly(bundled_gguf: Path) -> None:
    child = _spawn("--model", "default")
    try:
        child.expect_exact("you> ")
        child.sendintr()
        child.expect(require("pexpect").EOF)
        assert "Traceback" not in str(child.before)
    finally:
        child.close()
    assert child.exitstatus == 0
