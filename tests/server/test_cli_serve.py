"""``goml serve`` on a ScriptedModel: bad flags, the printed URL, and the graceful shutdown.

The server runs as a subprocess (it owns its signals); a tiny launcher registers a backend that
returns a ScriptedModel, so no real model is loaded here (test_serve_llama.py does that).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from goml_async.cli import main

from .helpers import USER, sse_payloads

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://\S+)")

LAUNCHER = textwrap.dedent(
    """
    import sys
    from goml_async.cli import main
    from goml_async.registry import register_backend
    from goml_async.testing import ScriptedModel


    class Scripted:
        name = "scripted"

        def available(self):
            return True

        async def load_model(self, path, config, **options):
            return ScriptedModel(["tok "] * int(path), delay=0.02)


    register_backend(Scripted())
    sys.exit(main(["serve", "--backend", "scripted", *sys.argv[1:]]))
    """
)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port: must be in 0..65535"),
        (["--max-concurrency", "0"], "--max-concurrency: must be an int >= 1"),
        (["--max-tokens", "0"], "--max-tokens: must be an int >= 1"),
        (["--timeout", "-1"], "--timeout: must be > 0 seconds"),
        (["--max-body-bytes", "0"], "--max-body-bytes: must be an int >= 1"),
        (["--grace", "-1"], "--grace: must be >= 0 seconds"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *flags]) == 2
    assert capsys.readouterr().err.strip().startswith(f"goml: error: {message}")


def test_an_empty_api_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOML_SERVER_API_KEY", "")
    assert main(["serve"]) == 2
    assert "goml: error: GOML_SERVER_API_KEY:" in capsys.readouterr().err


def test_a_port_in_use_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", "/no/such/model.gguf"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_missing_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--model", "/no/such/model.gguf"]) == 2
    assert "cannot load model '/no/such/model.gguf'" in capsys.readouterr().err


def test_help_lists_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--max-tokens", "--max-concurrency", "--timeout", "--max-context", "--grace"):
        assert flag in out


# -- a served ScriptedModel -----------------------------------------------------------------------


class Served:
    def __init__(self, process: subprocess.Popen[str], url: str, banner: str) -> None:
        self.process = process
        self.url = url
        self.banner = banner

    def finish(self) -> str:
        output, _ = self.process.communicate(timeout=30)
        return output


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    started: list[subprocess.Popen[str]] = []

    def start(tokens: int, *flags: str, env: dict[str, str] | None = None) -> Served:
        environ = {k: v for k, v in os.environ.items() if k != "GOML_SERVER_API_KEY"}
        process = subprocess.Popen(
            [sys.executable, str(launcher), "--model", str(tokens), "--port", "0", *flags],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**environ, "NO_PROXY": "127.0.0.1", **(env or {})},
        )
        started.append(process)
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while not (found := LISTENING.search(line := process.stdout.readline())):
            assert process.poll() is None, f"goml serve exited with {process.returncode}"
            assert time.monotonic() < deadline
        return Served(process, found.group(1), line)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def stream_with_signals(served: Served, signals: list[signal.Signals], *, after: int) -> bytes:
    """Stream a chat; after ``after`` chunks send each signal (0.2 s apart); return the body."""
    body = {"messages": [USER], "stream": True}
    raw = b""
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, timeout=30) as reply:
        for chunk in reply.iter_raw():
            raw += chunk
            if signals and raw.count(b"data: {") >= after:
                served.process.send_signal(signals.pop(0))
                after += 3
    return raw


def test_the_printed_url_serves_and_sigint_exits_0(serve: Callable[..., Served]) -> None:
    served: Served = serve(3)
    assert served.url.startswith("http://127.0.0.1:")
    reply = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": [USER]}).json()
    assert reply["choices"][0]["message"]["content"] == "tok tok tok "
    assert reply["model"] == "3"  # the default name: the --model's file name
    served.process.send_signal(signal.SIGINT)
    output = served.finish()
    assert served.process.returncode == 0
    assert "SIGINT received" in output
    assert "1 request(s), 1 completed, 0 error(s)" in output


def test_sigterm_finishes_a_stream_within_the_grace_period(serve: Callable[..., Served]) -> None:
    served: Served = serve(30, "--grace", "10")
    raw = stream_with_signals(served, [signal.SIGTERM], after=3)
    assert sse_payloads(raw)[-1] == "[DONE]"
    output = served.finish()
    assert served.process.returncode == 0, output
    assert "0 stopped at shutdown" in output


def test_a_stream_outliving_the_grace_period_ends_with_an_error_event(
    serve: Callable[..., Served],
) -> None:
    served: Served = serve(1000, "--grace", "0.3")
    started = time.monotonic()
    raw = stream_with_signals(served, [signal.SIGTERM], after=2)
    assert time.monotonic() - started < 10
    last = sse_payloads(raw)[-1]
    assert last["error"]["code"] == "shutting_down"
    output = served.finish()
    assert served.process.returncode == 0, output
    assert "1 stopped at shutdown" in output


def test_a_second_signal_stops_at_once(serve: Callable[..., Served]) -> None:
    served: Served = serve(1000, "--grace", "60")
    started = time.monotonic()
    raw = stream_with_signals(served, [signal.SIGTERM, signal.SIGINT], after=2)
    assert time.monotonic() - started < 10  # not the 60 s grace period
    assert sse_payloads(raw)[-1]["error"]["code"] == "shutting_down"
    output = served.finish()
    assert served.process.returncode == 0, output
    assert "received again" in output


def test_the_api_key_comes_from_the_environment(serve: Callable[..., Served]) -> None:
    key = "k-" + os.urandom(4).hex()
    served: Served = serve(3, env={"GOML_SERVER_API_KEY": key})
    assert "API key required" in served.banner and key not in served.banner
    body = {"messages": [USER]}
    anonymous = httpx.post(f"{served.url}/v1/chat/completions", json=body)
    assert anonymous.status_code == 401
    headers = {"Authorization": f"Bearer {key}"}
    allowed = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=headers)
    assert allowed.status_code == 200
    assert httpx.get(f"{served.url}/healthz").json()["auth_required"] is True
    served.process.send_signal(signal.SIGTERM)
    output = served.finish()
    assert served.process.returncode == 0
    assert key not in output


def test_the_listening_socket_makes_connections_without_nagles_delay() -> None:
    # asyncio sets TCP_NODELAY on accepted connections only when the listening socket carries
    # the TCP protocol number; without it a stream's first token waits for a delayed ACK.
    from goml_async.cli.serve import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        sock.listen()
        with socket.create_connection(sock.getsockname()[:2]):
            accepted, _ = sock.accept()
        with accepted:
            assert accepted.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
