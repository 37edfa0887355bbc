"""InfluxDB fixtures for the agent tests: a real influxd 1.x, and a checking v2 write endpoint.

``influxd`` is Debian's ``influxdb`` package (1.6.7, the only InfluxDB server this environment
has: it serves the v1 API only, no ``/api/v2``). Each server runs on free loopback ports with its
own config, meta, data and WAL folders in a temporary folder, with reporting, monitoring,
retention, shard precreation, subscriptions and continuous queries off and no listener but HTTP
(and influxd's backup RPC port, which 1.x always opens; both on loopback). It can be stopped
and restarted on the same ports and data. Without the binary, tests fail in CI and are skipped
locally.

``V2Endpoint`` is a small loopback HTTP server (stdlib, on its own thread, so it serves any
event loop) implementing ``POST /api/v2/write`` the way InfluxDB does: it checks the org,
bucket and precision parameters and the ``Authorization: Token`` header, parses every line
(measurement, escaped tags, typed fields, integer timestamp), answers 400 for a bad line and
stores the points; with ``upstream`` it forwards valid writes to an influxd's ``/write`` (and
passes ``/query`` through) so they can be read back with InfluxQL. ``POST /api/v3/query_sql``
answers ``SELECT DISTINCT run_id, label FROM "m"`` and ``SELECT run_id, label, time FROM "m"
WHERE category = 'overall'`` from the stored points.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from model_fixtures import _missing

__all__ = [
    "InfluxServer",
    "LineError",
    "ParsedPoint",
    "V2Endpoint",
    "find_influxd",
    "free_port",
    "influxd",
    "own_influxd",
    "parse_line",
    "v2_endpoint",
]

APT_HINT = "apt-get install -y influxdb influxdb-client"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_influxd() -> str:
    """The influxd binary; missing: fail in CI, skip locally with the apt hint."""
    found = shutil.which("influxd") or (
        "/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None
    )
    if found is None:
        _missing(f"influxd (InfluxDB 1.x) is not installed; install it with: {APT_HINT}")
        raise AssertionError("unreachable")
    return found


_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[ifql]
  enabled = false

[continuous_queries]
  enabled = false
"""


class InfluxServer:
    """One influxd process on loopback, with its own folders; start, stop, restart, query."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.config = root / "influxdb.conf"
        self.log = root / "influxd.log"
        self.config.write_text(
            _CONFIG.format(root=root, http_port=self.http_port, rpc_port=self.rpc_port)
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        assert not self.running, "influxd is already running"
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "run", "-config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"influxd exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"influxd did not answer /ping within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, size: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-size:] if self.log.exists() else ""

    def query(self, statement: str, db: str | None = None) -> dict[str, Any]:
        """Run InfluxQL through ``/query``; the JSON answer (errors raise AssertionError)."""
        params = {"q": statement, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        response = httpx.post(f"{self.url}/query", params=params, timeout=10)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        for result in data.get("results", []):
            assert "error" not in result, result["error"]
        return data

    def create_database(self, name: str) -> str:
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def rows(self, db: str, measurement: str) -> list[dict[str, Any]]:
        """Every point of ``measurement`` as one dict (time, tags and fields by column name)."""
        data = self.query(f'SELECT * FROM "{measurement}"', db)
        rows = []
        for series in data["results"][0].get("series", []):
            for values in series["values"]:
                rows.append(dict(zip(series["columns"], values, strict=True)))
        return rows

    def count(self, db: str, measurement: str) -> int:
        return len(self.rows(db, measurement))

    def write_requests(self) -> int:
        """How many ``/write`` requests this server has answered since it started."""
        series = self.query("SHOW STATS FOR 'httpd'")["results"][0]["series"][0]
        return int(dict(zip(series["columns"], series["values"][0], strict=True))["writeReq"])


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """A running influxd shared by a test module; give each test its own database."""
    server = InfluxServer(find_influxd(), tmp_path_factory.mktemp("influxd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """An influxd for one test, which may stop and restart it."""
    server = InfluxServer(find_influxd(), tmp_path_factory.mktemp("own-influxd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the line protocol, parsed strictly -----------------------------------------------------------


class LineError(ValueError):
    """A line InfluxDB would refuse."""


@dataclass(frozen=True)
class ParsedPoint:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, int | float | str | bool]
    time_ns: int | None


_INT = re.compile(r"-?\d+i")
_UINT = re.compile(r"\d+u")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_BOOLS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True}
_BOOLS |= {"f": False, "F": False, "false": False, "False": False, "FALSE": False}


def _split(text: str, separators: str, *, quotes: bool = False) -> tuple[str, str, str]:
    """Split at the first unescaped (and, with ``quotes``, unquoted) separator."""
    index, quoted = 0, False
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            index += 2
            continue
        if quotes and char == '"':
            quoted = not quoted
        elif not quoted and char in separators:
            return text[:index], char, text[index + 1 :]
        index += 1
    if quoted:
        raise LineError(f"unterminated string in {text!r}")
    return text, "", ""


def _unescape(text: str, specials: str) -> str:
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in specials:
            out.append(text[index + 1])
            index += 2
            continue
        if char in specials.replace("\\", ""):
            raise LineError(f"unescaped {char!r} in {text!r}")
        out.append(char)
        index += 1
    return "".join(out)


def _field_value(raw: str) -> int | float | str | bool:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise LineError(f"bad string field {raw!r}")
        body = raw[1:-1]
        return re.sub(r'\\([\\"])', r"\1", body)
    if _INT.fullmatch(raw) or _UINT.fullmatch(raw):
        return int(raw[:-1])
    if raw in _BOOLS:
        return _BOOLS[raw]
    if _FLOAT.fullmatch(raw):
        return float(raw)
    raise LineError(f"bad field value {raw!r}")


def parse_line(line: str) -> ParsedPoint:
    """Parse one line-protocol line as InfluxDB does; LineError where InfluxDB would refuse it."""
    if not line or line.startswith("#") or line != line.strip("\n"):
        raise LineError(f"not a point: {line!r}")
    key, sep, rest = _split(line, " ", quotes=False)
    if not sep:
        raise LineError(f"missing fields: {line!r}")
    field_text, sep, timestamp = _split(rest, " ", quotes=True)
    measurement, sep, tag_text = _split(key, ",")
    measurement = _unescape(measurement, ", \\")
    if not measurement:
        raise LineError(f"missing measurement: {line!r}")
    tags: dict[str, str] = {}
    while sep:
        pair, sep, tag_text = _split(tag_text, ",")
        name, eq, value = _split(pair, "=")
        if not eq or not name or not value:
            raise LineError(f"bad tag {pair!r} in {line!r}")
        tags[_unescape(name, ",= \\")] = _unescape(value, ",= \\")
    if list(tags) != sorted(tags):
        raise LineError(f"tags not sorted by key (InfluxDB prefers sorted tags): {line!r}")
    fields: dict[str, int | float | str | bool] = {}
    remaining = field_text
    while remaining:
        pair, _, remaining = _split(remaining, ",", quotes=True)
        name, eq, value = _split(pair, "=")
        if not eq or not name or not value:
            raise LineError(f"bad field {pair!r} in {line!r}")
        fields[_unescape(name, ",= \\")] = _field_value(value)
    if not fields:
        raise LineError(f"no fields: {line!r}")
    time_ns = None
    if timestamp:
        if not re.fullmatch(r"-?\d+", timestamp):
            raise LineError(f"bad timestamp {timestamp!r} in {line!r}")
        time_ns = int(timestamp)
    return ParsedPoint(measurement, tags, fields, time_ns)


# -- the checking v2 endpoint ---------------------------------------------------------------------


@dataclass
class WriteRequest:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    lines: list[str]
    status: int


@dataclass
class V2Endpoint:
    """A checking ``/api/v2/write``, plus ``/ping``, ``/health``, ``/query``, ``query_sql``."""

    token: str = "test-token"
    org: str = "test-org"
    bucket: str = "training"
    upstream: str | None = None
    requests: list[WriteRequest] = field(default_factory=list)
    points: list[ParsedPoint] = field(default_factory=list)
    sql_queries: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None  # answer every write with this status (e.g. 503)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> V2Endpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                endpoint._handle(self, "GET")

            def do_POST(self) -> None:
                endpoint._handle(self, "POST")

            def do_HEAD(self) -> None:
                endpoint._handle(self, "HEAD")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="V2Endpoint", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.points.clear()
            self.sql_queries.clear()
            self.fail_with = None

    # -- request handling (runs on the server's threads) --

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if url.path == "/ping":
            self._reply(handler, 204, b"", {"X-Influxdb-Version": "v2-checking-endpoint"})
        elif url.path == "/health":
            self._reply_json(handler, 200, {"name": "influxdb", "status": "pass"})
        elif url.path == "/api/v2/write" and method == "POST":
            self._write(handler, params, headers, body)
        elif url.path == "/api/v3/query_sql" and method == "POST":
            self._query_sql(handler, headers, body)
        elif url.path == "/query" and self.upstream is not None:
            answer = httpx.request(
                method, f"{self.upstream}/query", params=params, content=body, timeout=10
            )
            self._reply(
                handler, answer.status_code, answer.content, {"Content-Type": "application/json"}
            )
        else:
            self._reply_json(handler, 404, {"code": "not found", "message": "path not found"})

    def _write(
        self,
        handler: BaseHTTPRequestHandler,
        params: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        lines = [line for line in body.decode("utf-8").split("\n") if line]
        status, message = 204, ""
        if headers.get("authorization") != f"Token {self.token}":
            status, message = 401, "unauthorized access"
        elif params.get("org") != self.org:
            status, message = 404, f'organization name "{params.get("org")}" not found'
        elif params.get("bucket") != self.bucket:
            status, message = 404, f'bucket "{params.get("bucket")}" not found'
        elif params.get("precision") != "ns":
            status, message = 400, f"expected precision=ns, got {params.get('precision')!r}"
        elif self.fail_with is not None:
            status, message = self.fail_with, "injected failure"
        parsed: list[ParsedPoint] = []
        if status == 204:
            try:
                parsed = [parse_line(line) for line in lines]
                if not parsed:
                    raise LineError("no points in the body")
            except LineError as exc:
                status, message = 400, f"unable to parse: {exc}"
        if status == 204 and self.upstream is not None:
            answer = httpx.post(
                f"{self.upstream}/write",
                params={"db": self.bucket, "precision": "ns"},
                content=body,
                timeout=10,
            )
            if answer.status_code != 204:
                status, message = answer.status_code, answer.text
        with self._lock:
            self.requests.append(WriteRequest("/api/v2/write", params, headers, lines, status))
            if status == 204:
                self.points.extend(parsed)
        if status == 204:
            self._reply(handler, 204, b"")
        else:
            self._reply_json(handler, status, {"code": "invalid", "message": message})

    def _query_sql(
        self, handler: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes
    ) -> None:
        if headers.get("authorization") != f"Bearer {self.token}":
            self._reply_json(handler, 401, {"error": "unauthorized"})
            return
        request = json.loads(body)
        with self._lock:
            self.sql_queries.append(request)
        query = request.get("q", "")
        distinct = re.fullmatch(r'SELECT DISTINCT run_id, label FROM "([^"]+)"', query)
        timed = re.fullmatch(
            r'SELECT run_id, label, time FROM "([^"]+)" WHERE category = \'overall\'', query
        )
        found = distinct or timed
        if found is None or request.get("db") != self.bucket:
            self._reply_json(handler, 400, {"error": f"unsupported query {request!r}"})
            return
        with self._lock:
            points = [
                p
                for p in self.points
                if p.measurement == found.group(1) and "run_id" in p.tags and "label" in p.tags
            ]
        if distinct is not None:
            pairs = sorted({(p.tags["run_id"], p.tags["label"]) for p in points})
            self._reply_json(handler, 200, [{"run_id": r, "label": lab} for r, lab in pairs])
            return
        # InfluxDB 3 writes times in JSON as RFC 3339 without a zone, in UTC.
        rows = [
            {"run_id": p.tags["run_id"], "label": p.tags["label"], "time": _rfc3339(p.time_ns)}
            for p in points
            if p.tags.get("category") == "overall" and p.time_ns is not None
        ]
        self._reply_json(handler, 200, rows)

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if body:
            handler.wfile.write(body)

    def _reply_json(self, handler: BaseHTTPRequestHandler, status: int, data: Any) -> None:
        self._reply(
            handler, status, json.dumps(data).encode(), {"Content-Type": "application/json"}
        )


def _rfc3339(time_ns: int) -> str:
    seconds, fraction = divmod(time_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{fraction:09d}" if fraction else moment


@pytest.fixture
def v2_endpoint() -> Iterator[V2Endpoint]:
    """A checking v2 write endpoint on a free loopback port (not forwarding)."""
    endpoint = V2Endpoint().start()
    try:
        yield endpoint
    finally:
        endpoint.stop()
