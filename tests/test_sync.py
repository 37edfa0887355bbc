"""The blocking facade: plain scripts, other threads, and inside a running event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import anyio
import anyio.lowlevel
import pytest
import trio

from goml_async import (
    GenerationError,
    GenOpts,
    GomlError,
    InferenceAdapter,
    StreamInterrupted,
    TextModel,
)
from goml_async import sync as goml_sync
from goml_async.testing import FakeOpenAIServer, Script, ScriptedModel


def test_generate_in_a_plain_script() -> None:
    model = ScriptedModel(["The", " capital", " is", " Paris"])
    result = goml_sync.generate(model, "capital?", max_tokens=3)
    assert result.text == "The capital is"
    assert result.finish_reason == "length"
    assert model.calls[0][1].max_tokens == 3


def test_chat_in_a_plain_script() -> None:
    model = ScriptedModel(lambda messages: ["got ", str(len(messages))])
    result = goml_sync.chat(model, [{"role": "user", "content": "hi"}])
    assert result.text == "got 1"


def test_generate_from_other_threads_at_once() -> None:
    model = ScriptedModel(lambda prompt: [str(prompt)], delay=0.01)
    results: dict[int, str] = {}

    def work(index: int) -> None:
        results[index] = goml_sync.generate(model, f"p{index}").text

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {index: f"p{index}" for index in range(8)}
    assert model.max_concurrency > 1  # they really ran concurrently on the background loop


@pytest.mark.parametrize("runner", ["asyncio", "trio"])
def test_blocking_calls_work_inside_a_running_event_loop(runner: str) -> None:
    """As in a Jupyter cell: a loop is running in this thread and the code calls sync APIs."""
    model = ScriptedModel(["inside", " a", " loop"])

    async def cell() -> str:
        return goml_sync.generate(model, "x").text

    text = asyncio.run(cell()) if runner == "asyncio" else trio.run(cell)
    assert text == "inside a loop"


def test_blocking_model_wraps_every_method() -> None:
    scripted = ScriptedModel(lambda prompt: [str(prompt)[:1], "!"])
    with goml_sync.BlockingModel(scripted) as model:
        assert model.model is scripted
        assert isinstance(model.model, TextModel)
        assert model.model_type == "scripted"
        assert model.generate("yes").text == "y!"
        assert model.chat([{"role": "user", "content": "x"}]).text[-1] == "!"
        assert [r.text for r in model.batch_generate(["a", "b"])] == ["a!", "b!"]
        assert model.classify(["q"])[0].token.text == "q"
        assert model.metrics().generated_tokens == 2
        assert model.err() is None
        assert model.info().architecture == "scripted"
        assert "BlockingModel" in repr(model)
    assert scripted.closed


def test_streaming_yields_tokens_and_leaving_early_stops_generation() -> None:
    scripted = ScriptedModel(["a", "b", "c", "d"])
    model = goml_sync.BlockingModel(scripted)
    assert [token.text for token in model.stream("x")] == ["a", "b", "c", "d"]

    tokens = model.stream("x")
    for token in tokens:
        assert token.text == "a"
        break
    tokens.close()  # what leaving a for loop over a dropped generator does
    assert scripted._open == 0
    assert scripted.metrics().generated_tokens == 1


def test_streaming_over_http_keeps_each_stream_in_one_task() -> None:
    # The HTTP backend holds a limiter token and a response across tokens: stepping its stream
    # from a new task per token failed at the end of every stream.
    with FakeOpenAIServer(Script(tokens=["Hel", "lo", " there"])) as server:
        model = goml_sync.load_model(server.base_url)
        try:
            assert [t.text for t in model.stream_chat([{"role": "user", "content": "q"}])] == [
                "Hel",
                "lo",
                " there",
            ]
            assert "".join(t.text for t in model.stream("x")) == "Hello there"
            # Leaving early closes the response on the server side, and the stream's error
            # (a server disconnect after the first token) reaches the caller.
            tokens = model.stream("x")
            assert next(tokens).text == "Hel"
            tokens.close()
            assert server.wait_for(lambda: server.streams_aborted + server.streams_completed == 3)
            server.script = Script(tokens=["a", "b", "c"], disconnect_after=1)
            with pytest.raises(StreamInterrupted) as caught:
                list(model.stream("x"))
            assert caught.value.partial_text == "a"
        finally:
            goml_sync.run(model.model.aclose)


def test_stream_chat() -> None:
    model = goml_sync.BlockingModel(ScriptedModel(["x", "y"]))
    assert [t.text for t in model.stream_chat([{"role": "user", "content": "q"}])] == ["x", "y"]


def test_errors_keep_their_partial_text() -> None:
    model = ScriptedModel(["par", "tial", "x"], fail_after=2)
    with pytest.raises(GenerationError) as caught:
        goml_sync.generate(model, "x")
    assert caught.value.partial_text == "partial"


def test_blocking_backend() -> None:
    scripted = ScriptedModel(["o", "k"])
    with goml_sync.BlockingBackend(InferenceAdapter(scripted, "mlx")) as backend:
        assert backend.name == "mlx"
        assert backend.available()
        assert backend.generate("x", GenOpts(max_tokens=1)).text == "o"
        assert backend.chat([{"role": "user", "content": "x"}]).text == "ok"
        assert isinstance(backend.backend, InferenceAdapter)
    assert scripted.closed


def test_calling_the_facade_from_its_own_loop_is_an_error_not_a_deadlock() -> None:
    async def reenter() -> str:
        return goml_sync.generate(ScriptedModel(["x"]), "x").text

    with pytest.raises(GomlError, match="own event loop thread"):
        goml_sync.run(reenter)


def test_run_executes_any_coroutine_function() -> None:
    async def add(a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a + b

    assert goml_sync.run(add, 2, 3) == 5


def test_shutdown_and_restart() -> None:
    model = ScriptedModel(["again"])
    goml_sync.shutdown()
    goml_sync.shutdown()  # idempotent
    assert goml_sync.generate(model, "x").text == "again"


def test_bad_model_argument() -> None:
    with pytest.raises(GomlError, match="TextModel or BlockingModel"):
        goml_sync.generate("model.gguf", "x")  # type: ignore[arg-type]


def test_load_model_reports_a_missing_file(tmp_path: object) -> None:
    with pytest.raises(GomlError, match="no such file"):
        goml_sync.load_model(f"{tmp_path}/missing.gguf")


def test_a_script_exits_promptly_with_the_loop_thread_running() -> None:
    """The background loop thread must never keep the interpreter alive at exit."""
    script = textwrap.dedent(
        """
        from goml_async import sync
        from goml_async.testing import FakeOpenAIServer, Script, ScriptedModel
        print(sync.generate(ScriptedModel(["bye"]), "x").text)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "bye"


CTRL_C_SCRIPT = """
import os, signal, threading, time
from goml_async import sync
from goml_async.testing import ScriptedModel

model = ScriptedModel(["tok"] * 1000, delay=0.01)
blocking = sync.BlockingModel(model)
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    if MODE == "generate":
        blocking.generate("x")
    else:
        for _ in blocking.stream("x"):
            pass
except KeyboardInterrupt:
    print("interrupted")
deadline = time.monotonic() + 2
while model._open and time.monotonic() < deadline:
    time.sleep(0.01)
count = len(model.calls) and model.metrics().generated_tokens
time.sleep(0.2)  # had the generation gone on unseen, it would have produced ~20 more tokens
print("open", model._open, "stopped", count == model.metrics().generated_tokens)
"""


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_ctrl_c_stops_the_generation_behind_a_blocking_call(mode: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"MODE = {mode!r}\n{CTRL_C_SCRIPT}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interrupted", "open", "0", "stopped", "True"], done.stderr
