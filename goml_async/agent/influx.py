"""InfluxSink: durable, batched, idempotent publishing of agent results to InfluxDB.

Two write APIs, chosen with ``api=``:

- ``"v2"``: ``POST /api/v2/write`` through influxdb-client's ``InfluxDBClientAsync`` (InfluxDB
  1.8+, 2.x and 3.x; on 1.8 the bucket is ``db/rp`` and the token ``user:password``).
  influxdb-client runs on **asyncio only**: under trio this path raises
  :class:`~goml_async.errors.NotSupported`; use ``api="v1"`` there.
- ``"v1"``: ``POST /write?db=...&precision=ns`` with httpx (InfluxDB 1.x, and the
  v1-compatible endpoint of 2.x and 3.x). Runs on asyncio and trio.

Every publish goes through the :class:`~goml_async.agent.wal.WriteAheadBuffer` first: the lines
are fsynced to the buffer file before any request, and acknowledged there once InfluxDB took
them. What InfluxDB does not take stays buffered for :meth:`InfluxSink.replay`, which sends
pending records oldest first (consecutive small records share a request). Every point carries
a timestamp (points without one get the publish time, fixed in the buffer), so a repeated
write lands on the same series and time and overwrites instead of duplicating.

What each server answer does:

| answer | outcome |
|---|---|
| 2xx | written, acknowledged in the buffer |
| connection error, timeout, 408, 429, 5xx | kept in the buffer; ``publish`` returns False |
| 400, 413, 422 (InfluxDB refused the data) | moved to ``<buffer>.rejected.jsonl``; SinkError |
| 401, 403, 404, other 4xx (configuration) | kept in the buffer; SinkError |

Reads (:meth:`InfluxSink.scored_labels`, :meth:`InfluxSink.scored_times`) use InfluxQL through
``/query`` (1.x, and the compatibility endpoint of 2.x and 3.x), or SQL through
``/api/v3/query_sql`` (3.x).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
import anyio.to_thread
import httpx
from anyio.abc import AsyncResource
from pydantic import SecretStr

from ..errors import BackendUnavailable, ConfigError, NotSupported, SinkError
from ._durable import append_durably
from ._influx_wire import (
    REJECTED_DATA,
    Unavailable,
    describe,
    influxql_pairs,
    influxql_times,
    module_exists,
    pack,
    quote_influxql,
    quote_sql,
    raise_for_status,
    running_under_trio,
    sql_pairs,
    sql_times,
)
from .points import CAPABILITY_SCORE as CAPABILITY
from .types import Point
from .wal import BufferedRecord, WriteAheadBuffer

if TYPE_CHECKING:
    from ._influx_v2 import V2Writer

__all__ = ["InfluxSink"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'goml_async[influx]'"


class InfluxSink(AsyncResource):
    """Publish line-protocol points to InfluxDB through a write-ahead buffer.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8086``. None: nothing is sent;
            every publish stays in the buffer (for a later replay) and returns False.
        api: ``"v2"`` (influxdb-client, asyncio only) or ``"v1"`` (httpx, ``/write``).
        database: the v1 database, and the database InfluxQL and SQL queries read.
        org: the v2 organisation (``"-"`` when empty, which 1.8 and 3.x ignore).
        bucket: the v2 bucket (default: ``database``; on 1.8 ``db/rp``).
        token: the API token; a ``user:password`` token uses basic auth on the v1 API.
        query: ``"influxql"`` (``/query``) or ``"sql"`` (``/api/v3/query_sql``, 3.x).
        buffer_path: the write-ahead buffer file (JSONL).
        batch_size: the most lines per write request.
        timeout: seconds per HTTP request.

    Attributes:
        written: records written to InfluxDB by this sink.
        rejected: records InfluxDB refused (moved to :attr:`rejected_path`).
        failures: write attempts that found InfluxDB unavailable.
        last_error: the last write or query problem, or None.

    Example:
        >>> async def main(points):  # doctest: +SKIP
        ...     async with InfluxSink("http://127.0.0.1:8086", api="v1",
        ...                           buffer_path="work/influx_buffer.jsonl") as sink:
        ...         await sink.replay()  # whatever an earlier run could not write
        ...         if not await sink.publish(points, key="G27 @0000100/capability"):
        ...             print(f"InfluxDB is down: {sink.pending} records buffered")
    """

    def __init__(
        self,
        url: str | None,
        *,
        api: Literal["v1", "v2"] = "v2",
        database: str = "training",
        org: str = "",
        bucket: str = "",
        token: str | SecretStr | None = None,
        query: Literal["influxql", "sql"] = "influxql",
        buffer_path: str | Path,
        batch_size: int = 5000,
        timeout: float = 10,
    ) -> None:
        if api not in ("v1", "v2"):
            raise ConfigError("api", f'must be "v1" or "v2", got {api!r}')
        if query not in ("influxql", "sql"):
            raise ConfigError("query", f'must be "influxql" or "sql", got {query!r}')
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
        if timeout <= 0:
            raise ConfigError("timeout", f"must be > 0, got {timeout}")
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError("url", f"must be an http(s):// URL, got {url!r}")
        self.url = None if url is None else url.rstrip("/")
        self.api = api
        self.database = database
        self.org = org or "-"
        self.bucket = bucket or database
        self.query = query
        self.batch_size = batch_size
        self.timeout = timeout
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._wal = WriteAheadBuffer(buffer_path)
        self._http = httpx.AsyncClient(timeout=timeout, auth=self._v1_auth())
        self._v2: V2Writer | None = None  # created on the first v2 write
        self._send_lock = anyio.Lock()
        self._closed = False
        self.written = 0
        self.rejected = 0
        self.failures = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"InfluxSink({self.url!r}, api={self.api!r}, buffer={str(self._wal.path)!r})"

    @property
    def pending(self) -> int:
        """Records in the buffer that InfluxDB has not taken yet."""
        return self._wal.pending

    @property
    def buffer(self) -> WriteAheadBuffer:
        """The write-ahead buffer."""
        return self._wal

    @property
    def rejected_path(self) -> Path:
        """Where records InfluxDB refused are kept (JSONL, with the server's message)."""
        path = self._wal.path
        return path.with_name(f"{path.stem}.rejected{path.suffix or '.jsonl'}")

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_usable()
        self._wal.records()  # read the buffer now: a corrupt file fails here, not mid-run
        return self

    async def aclose(self) -> None:
        """Close the HTTP clients; idempotent. The buffer keeps what is pending."""
        self._closed = True
        writer, self._v2 = self._v2, None
        with anyio.CancelScope(shield=True):
            if writer is not None:
                await writer.aclose()
            await self._http.aclose()

    # -- writing ---------------------------------------------------------------------------------

    async def publish(self, points: Sequence[Point], *, key: str) -> bool:
        """Buffer ``points`` durably, then write them (after any older pending records).

        Args:
            points: the points of one result (e.g. one checkpoint's capability scores).
            key: names the record in the buffer and in logs.

        Returns:
            True once InfluxDB took the points; False when InfluxDB is unavailable (or no URL
            is configured) and they stay buffered for :meth:`replay`.

        Raises:
            SinkError: InfluxDB refused the data (400/413/422: the record is moved to
                :attr:`rejected_path`) or the request (401/403/404: it stays buffered); or the
                buffer file cannot be written. The points are durable either way.
            NotSupported: ``api="v2"`` under trio.
            BackendUnavailable: ``api="v2"`` without influxdb-client installed.

        Example:
            >>> point = Point("m", {"run": "a"}, {"v": 1}, 1)
            >>> await sink.publish([point], key="a")  # doctest: +SKIP
            True
        """
        self._check_usable()
        if not points:
            return True
        now = time.time_ns()
        lines = [
            (p if p.time_ns is not None else replace(p, time_ns=now)).to_line() for p in points
        ]
        record = await self._wal.append(key, lines)
        if self.url is not None:
            async with self._send_lock:
                if self._wal.is_pending(record.seq):
                    await self._drain()
        return not self._wal.is_pending(record.seq)

    async def replay(self) -> int:
        """Write the pending records, oldest first; returns how many were written.

        Stops at the first record InfluxDB cannot take now (it and the rest stay pending).
        Safe to repeat: a record written twice overwrites the same points.

        Raises:
            SinkError: as for :meth:`publish`; the records before it are written.
        """
        self._check_usable()
        if self.url is None:
            return 0
        async with self._send_lock:
            return await self._drain()

    async def _drain(self) -> int:
        """Send pending records in order until done or InfluxDB is unavailable."""
        queue = self._wal.records()
        written = one_by_one = 0
        position = 0
        while position < len(queue):
            if one_by_one:
                group, one_by_one = queue[position : position + 1], one_by_one - 1
            else:
                group = pack(queue, position, self.batch_size)
            try:
                await self._send([line for record in group for line in record.lines])
            except Unavailable as exc:
                self.failures += 1
                self.last_error = str(exc)
                logger.warning(
                    "%s; %d records stay buffered in %s", exc, self.pending, self._wal.path
                )
                break
            except SinkError as exc:
                self.last_error = str(exc)
                if exc.status not in REJECTED_DATA:
                    raise
                if len(group) > 1:
                    one_by_one = len(group)  # find the record InfluxDB refuses
                    continue
                await self._reject(group[0], exc)
                raise
            acked = await self._wal.ack(record.seq for record in group)
            written += acked
            self.written += acked
            position += len(group)
        return written

    async def _send(self, lines: list[str]) -> None:
        for start in range(0, len(lines), self.batch_size):
            batch = lines[start : start + self.batch_size]
            if self.api == "v1":
                await self._write_v1(batch)
            else:
                await (await self._v2_writer()).write(batch)

    async def _write_v1(self, lines: list[str]) -> None:
        try:
            response = await self._http.post(
                f"{self.url}/write",
                params={"db": self.database, "precision": "ns"},
                content="\n".join(lines).encode("utf-8"),
                headers=self._headers("Token", {"Content-Type": "text/plain; charset=utf-8"}),
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"InfluxDB at {self.url} is unavailable: {describe(exc)}") from exc
        if not response.is_success:
            raise_for_status(response.status_code, response.text, f"{self.url}/write")

    async def _v2_writer(self) -> V2Writer:
        if self._v2 is None:
            assert self.url is not None
            # influxdb-client takes about half a second to import: not on the event loop
            module = await anyio.to_thread.run_sync(
                importlib.import_module, "goml_async.agent._influx_v2"
            )
            if self._v2 is None:
                self._v2 = module.V2Writer(
                    self.url,
                    token=self._token or "",
                    org=self.org,
                    bucket=self.bucket,
                    timeout=self.timeout,
                )
        return self._v2

    async def _reject(self, record: BufferedRecord, exc: SinkError) -> None:
        """Keep a refused record in the rejected file, then take it out of the buffer."""
        entry = {
            "seq": record.seq,
            "key": record.key,
            "lines": list(record.lines),
            "status": exc.status,
            "error": str(exc),
            "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        path = self.rejected_path
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_keep_rejected, path, json.dumps(entry) + "\n")
            await self._wal.ack([record.seq], rejected=f"{exc.status}: {exc}")
        self.rejected += 1
        logger.error("InfluxDB refused record %r (kept in %s): %s", record.key, path, exc)

    # -- reading ---------------------------------------------------------------------------------

    async def scored_labels(self, measurement: str = "capability_score") -> set[tuple[str, str]]:
        """The ``(run_id, label)`` pairs that have points in ``measurement``.

        InfluxQL (``query="influxql"``): ``SELECT count(*) FROM measurement GROUP BY run_id,
        label`` through ``/query``. SQL (``query="sql"``): ``SELECT DISTINCT run_id, label``
        through ``/api/v3/query_sql``. A database that does not exist yet has no pairs.

        Raises:
            SinkError: the server is unreachable or refused the query.
        """
        self._check_open()
        if self.url is None:
            return set()
        if self.query == "sql":
            return await self._scored_sql(measurement)
        return await self._scored_influxql(measurement)

    async def scored_times(self) -> dict[tuple[str, str], int]:
        """Each scored checkpoint's ``(run_id, label)`` and the time of its overall score (ns).

        The time is that of the earliest ``capability_score`` point with ``category=overall``
        (offset 0: the checkpoint's time base, in ns), read with InfluxQL ``SELECT
        first("iteration") ... WHERE "category" = 'overall' GROUP BY "run_id", "label"`` or
        SQL ``SELECT run_id, label, time ... WHERE category = 'overall'``. The agent skips the
        checkpoints listed and writes a re-score onto the same times.

        Raises:
            SinkError: the server is unreachable or refused the query.
        """
        self._check_open()
        if self.url is None:
            return {}
        if self.query == "sql":
            statement = (
                f"SELECT run_id, label, time FROM {quote_sql(CAPABILITY)} "
                "WHERE category = 'overall'"
            )
            return sql_times(await self.query_sql(statement))
        statement = (
            f'SELECT first("iteration") FROM {quote_influxql(CAPABILITY)} '
            f'WHERE "category" = \'overall\' GROUP BY "run_id", "label"'
        )
        return influxql_times(await self.query_influxql(statement))

    async def _scored_influxql(self, measurement: str) -> set[tuple[str, str]]:
        statement = f'SELECT count(*) FROM {quote_influxql(measurement)} GROUP BY "run_id", "label"'
        return influxql_pairs(await self.query_influxql(statement))

    async def _scored_sql(self, measurement: str) -> set[tuple[str, str]]:
        statement = f"SELECT DISTINCT run_id, label FROM {quote_sql(measurement)}"
        return sql_pairs(await self.query_sql(statement))

    async def query_influxql(self, statement: str) -> dict[str, Any]:
        """Run InfluxQL on :attr:`database` through ``/query``; the JSON answer.

        Errors while running a statement are in the answer's ``results`` (InfluxDB's shape); a
        database that does not exist answers ``{"results": []}``.

        Raises:
            SinkError: no URL, the server is unreachable, or it refused the query (e.g. 400
                for a statement that does not parse).
        """
        self._check_open()
        params = {"db": self.database, "q": statement, "epoch": "ns"}
        data = await self._query("GET", "/query", params=params, headers=self._headers("Token"))
        if not isinstance(data, dict):
            raise SinkError(f"InfluxQL query answered {type(data).__name__}, expected an object")
        return data

    async def query_sql(self, statement: str) -> list[Any]:
        """Run SQL on :attr:`database` through ``/api/v3/query_sql`` (InfluxDB 3.x); the rows.

        Raises:
            SinkError: no URL, the server is unreachable, or it refused the query.
        """
        self._check_open()
        body = {"db": self.database, "q": statement, "format": "json"}
        rows = await self._query(
            "POST", "/api/v3/query_sql", json=body, headers=self._headers("Bearer")
        )
        if not isinstance(rows, list):
            raise SinkError(f"SQL query answered {type(rows).__name__}, expected a list of rows")
        return rows

    async def _query(self, method: str, path: str, **kwargs: Any) -> Any:
        if self.url is None:
            raise SinkError("the InfluxSink has no URL to query")
        try:
            response = await self._http.request(method, f"{self.url}{path}", **kwargs)
        except httpx.TransportError as exc:
            self.last_error = f"InfluxDB at {self.url} is unavailable: {describe(exc)}"
            raise SinkError(self.last_error) from exc
        if response.status_code == 404 and "database not found" in response.text:
            return [] if path.endswith("query_sql") else {"results": []}
        if not response.is_success:
            try:
                raise_for_status(response.status_code, response.text, f"{self.url}{path}")
            except (SinkError, Unavailable) as exc:
                self.last_error = str(exc)
                raise SinkError(str(exc), status=response.status_code) from exc
        try:
            return response.json()
        except ValueError as exc:
            raise SinkError(
                f"{self.url}{path} answered invalid JSON: {response.text[:200]!r}"
            ) from exc

    # -- helpers ---------------------------------------------------------------------------------

    def _v1_auth(self) -> httpx.BasicAuth | None:
        if self._token and ":" in self._token:
            user, _, password = self._token.partition(":")
            return httpx.BasicAuth(user, password)
        return None

    def _headers(self, scheme: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self._token and ":" not in self._token:
            headers["Authorization"] = f"{scheme} {self._token}"
        return headers

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError("the InfluxSink is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self.api != "v2" or self.url is None:
            return
        if running_under_trio():
            raise NotSupported(
                "InfluxSink(api='v2') uses influxdb-client, which runs on asyncio only; "
                "under trio use api='v1' (InfluxDB 1.x, or the /write endpoint of 2.x and 3.x)"
            )
        missing = [name for name in ("influxdb_client", "aiohttp") if not module_exists(name)]
        if missing:
            raise BackendUnavailable(
                f"InfluxSink(api='v2') needs influxdb-client[async] ({', '.join(missing)} missing)",
                backend="influx",
                install_hint=_INSTALL_HINT,
            )


def _keep_rejected(path: Path, text: str) -> None:
    try:
        append_durably(path, text.encode("utf-8"))
    except OSError as exc:
        raise SinkError(f"cannot write the rejected-records file {path}: {exc}") from exc
