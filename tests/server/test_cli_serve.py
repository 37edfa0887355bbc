"""``goml serve`` on a ScriptedModel: bad flags, the printed URL, and the graceful shutdown.

The server runs as a subprocess (it owns its signals); a tiny launcher registers a backend that
returns a ScriptedModel, so no real model is loaded here (test_serve_llama.py does that).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import openai
import pytest

from goml_async.cli import main
from goml_async.registry import bundled_model_path

from .helpers import USER, sse_payloads

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://\S+)")

LAUNCHER = textwrap.dedent(
    """
    import os
    import sys
    from goml_async.cli import main
    from goml_async.registry import register_backend
    from goml_async.testing import ScriptedModel


    class Scripted:
        name = "scripted"

        def available(self):
            return True

        async def load_model(self, path, config, **options):
            # --model N: N tokens; any other --model (default included): 5 tokens.
            name = os.path.basename(path)
            return ScriptedModel(["tok "] * (int(name) if name.isdigit() else 5), delay=0.02)


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
    def __init__(
        self, process: subprocess.Popen[str], url: str, banner: str, log: Path | None = None
    ) -> None:
        self.process = process
        self.url = url
        self.banner = banner
        self.log = log

    def finish(self) -> str:
        output, _ = self.process.communicate(timeout=30)
        return output

    def stderr(self) -> str:
        """What the server wrote to stderr (when started with ``capture_stderr``)."""
        assert self.log is not None
        return self.log.read_text()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    started: list[subprocess.Popen[str]] = []

    def start(
        tokens: int | str,
        *flags: str,
        env: dict[str, str] | None = None,
        capture_stderr: bool = False,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Served:
        environ = {k: v for k, v in os.environ.items() if k != "GOML_SERVER_API_KEY"}
        log = tmp_path / f"stderr-{len(started)}.txt" if capture_stderr else None
        with open(log or os.devnull, "w") as stderr:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, str(launcher), "--model", str(tokens), "--port", "0", *flags],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**environ, "NO_PROXY": "127.0.0.1", **(env or {})},
                preexec_fn=preexec_fn,
            )
        started.append(process)
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while not (found := LISTENING.search(line := process.stdout.readline())):
            assert process.poll() is None, f"goml serve exited with {process.returncode}"
            assert time.monotonic() < deadline
        return Served(process, found.group(1), line, log)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


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


# -- the line, the names, the logs, the summary, the checks and the connection cap ----------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the openai client's async side: asyncio
async def test_a_burst_of_16_openai_clients_is_served_in_full(
    serve: Callable[..., Served], anyio_backend: str
) -> None:
    served: Served = serve(125)  # 2.5 s a request, 4 at once (the default): 10 s for all 16
    async with openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="unused") as client:

        async def ask() -> str:
            reply = await client.chat.completions.create(model="125", messages=[USER])
            return reply.choices[0].message.content or ""

        # openai's own retries (2, after Retry-After) are left on, as users have them.
        async with anyio.create_task_group() as group:
            answers: list[str] = []

            async def one() -> None:
                answers.append(await ask())

            for _ in range(16):
                group.start_soon(one)
    assert answers == ["tok " * 125] * 16  # not one RateLimitError
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{served.url}/healthz")).json()
    assert health["rejected_busy_total"] == 0
    assert (health["peak_active_requests"], health["peak_queued_requests"]) == (4, 12)
    served.process.send_signal(signal.SIGTERM)
    assert "16 request(s), 16 completed, 0 error(s)" in served.finish()


def test_the_queue_flags_reach_the_server(serve: Callable[..., Served]) -> None:
    served: Served = serve(100, "--max-concurrency", "1", "--max-queue", "0")
    health = httpx.get(f"{served.url}/healthz").json()
    assert (health["max_queue"], health["queue_timeout_seconds"]) == (0, 120.0)
    with httpx.stream(
        "POST", f"{served.url}/v1/chat/completions", json={"messages": [USER], "stream": True}
    ) as running:
        chunks = running.iter_raw()  # kept: a dropped iterator closes the response
        next(chunks)  # generating now
        refused = httpx.post(f"{served.url}/v1/chat/completions", json={"messages": [USER]})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    other: Served = serve(3, "--queue-timeout", "0")
    assert httpx.get(f"{other.url}/healthz").json()["queue_timeout_seconds"] is None


def test_the_name_it_was_started_with_is_served(serve: Callable[..., Served]) -> None:
    served: Served = serve("default", "--alias", "smol")
    real = bundled_model_path().stem
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client:
        assert [model.id for model in client.models.list().data] == [real, "default", "smol"]
        for name in ("default", real, "smol", ""):
            reply = client.chat.completions.create(model=name, messages=[USER])
            assert reply.choices[0].message.content == "tok " * 5
            assert reply.model == real
        assert client.models.retrieve("default").id == "default"
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=[USER])
    assert "'default'" in str(caught.value)
    assert f"model {real!r} (also 'default', 'smol')" in served.banner


def test_a_model_name_keeps_the_real_name_accepted(serve: Callable[..., Served]) -> None:
    served: Served = serve("default", "--model-name", "mine")
    real = bundled_model_path().stem
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client:
        assert [model.id for model in client.models.list().data] == ["mine", real, "default"]
        assert client.chat.completions.create(model=real, messages=[USER]).model == "mine"


def test_any_name_with_the_star_alias(serve: Callable[..., Served]) -> None:
    served: Served = serve(3, "--alias", "*")
    reply = httpx.post(
        f"{served.url}/v1/chat/completions", json={"messages": [USER], "model": "gpt-4o"}
    )
    assert reply.status_code == 200
    assert [card["id"] for card in httpx.get(f"{served.url}/v1/models").json()["data"]] == ["3"]


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")
def test_litellm_reaches_the_served_model_by_the_name_default(
    serve: Callable[..., Served],
) -> None:
    import litellm

    served: Served = serve("default")
    reply = litellm.completion(
        model="openai/default",
        api_base=f"{served.url}/v1",
        api_key="unused",
        messages=[USER],
        num_retries=0,
    )
    assert reply.choices[0].message.content == "tok " * 5


@pytest.mark.parametrize("log_level", ["warning", "error"])
def test_the_access_log_prints_at_any_level(serve: Callable[..., Served], log_level: str) -> None:
    served: Served = serve(3, "--access-log", "--log-level", log_level, capture_stderr=True)
    httpx.post(f"{served.url}/v1/chat/completions", json={"messages": [USER]})
    httpx.get(f"{served.url}/v1/nothing")
    served.process.send_signal(signal.SIGTERM)
    served.finish()
    log = served.stderr()
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log
    assert '"GET /v1/nothing HTTP/1.1" 404' in log


def test_without_the_flag_no_access_log(serve: Callable[..., Served]) -> None:
    served: Served = serve(3, "--log-level", "info", capture_stderr=True)
    httpx.post(f"{served.url}/v1/chat/completions", json={"messages": [USER]})
    served.process.send_signal(signal.SIGTERM)
    served.finish()
    assert "/v1/chat/completions" not in served.stderr()


def test_the_summary_counts_4xx_and_5xx_errors(serve: Callable[..., Served]) -> None:
    served: Served = serve(3)
    url = f"{served.url}/v1/chat/completions"
    assert httpx.post(url, json={"messages": [USER]}).status_code == 200
    assert httpx.post(url, json={"messages": [USER], "model": "nope"}).status_code == 404
    assert httpx.post(url, json={"messages": [USER], "temperature": 9}).status_code == 400
    served.process.send_signal(signal.SIGTERM)
    output = served.finish()
    assert "3 request(s), 1 completed, 2 error(s) (2 4xx, 0 5xx)" in output


def test_a_rebinding_host_and_a_text_plain_post_are_refused(serve: Callable[..., Served]) -> None:
    served: Served = serve(3)
    url = f"{served.url}/v1/chat/completions"
    body = json.dumps({"messages": [USER]})
    rebound = httpx.post(url, content=body, headers={"host": "rebind.evil.example"})
    plain = httpx.post(url, content=body, headers={"content-type": "text/plain"})
    assert (rebound.status_code, plain.status_code) == (400, 415)
    named: Served = serve(3, "--allowed-host", "rebind.evil.example")
    allowed = httpx.post(
        f"{named.url}/v1/chat/completions",
        content=body,
        headers={"host": "rebind.evil.example", "content-type": "application/json"},
    )
    assert allowed.status_code == 200


def _descriptor_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def test_400_slow_connections_at_a_300_descriptor_limit_leave_room_for_a_probe(
    serve: Callable[..., Served],
) -> None:
    # A header timeout far longer than the test: what makes room is the connection cap.
    served: Served = serve(3, "--header-timeout", "120", preexec_fn=_descriptor_limit(300))
    host, port = served.url.removeprefix("http://").split(":")
    slow: list[socket.socket] = []
    try:
        for _ in range(400):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            slow.append(sock)
        asked = time.monotonic()
        probe = httpx.get(f"{served.url}/healthz", timeout=10)
        probed_in = time.monotonic() - asked
    finally:
        for sock in slow:
            sock.close()
    assert probe.status_code == 200
    assert probed_in < 5.0
    connections = probe.json()["connections"]
    assert connections["max_connections"] == 150  # half the descriptor limit
    assert connections["open"] <= 150
    assert connections["shed_total"] >= 400 - 150
    served.process.send_signal(signal.SIGTERM)
    assert served.finish()
    assert served.process.returncode == 0
