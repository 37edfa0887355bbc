"""The sans-I/O half of InfluxSink: answers classified, records packed, queries built and read.

Pure functions, no network and no event loop, so every decision the sink makes about a server's
answer is testable on its own.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import SinkError
from .wal import BufferedRecord

__all__ = [
    "MAX_REQUEST_BYTES",
    "REJECTED_DATA",
    "Unavailable",
    "describe",
    "error_message",
    "influxql_pairs",
    "influxql_times",
    "module_exists",
    "pack",
    "parse_time_ns",
    "quote_influxql",
    "quote_sql",
    "raise_for_status",
    "running_under_trio",
    "sql_pairs",
    "sql_times",
]

#: Records share one request up to this many bytes (InfluxDB's default body limit is 25 MB).
MAX_REQUEST_BYTES = 8 * 1024 * 1024
#: The server refused the data itself (bad line, type conflict, too large): a resend cannot work.
REJECTED_DATA = frozenset({400, 413, 422})


class Unavailable(Exception):
    """InfluxDB could not take the write now (down, timeout, 408/429/5xx): try again later."""


def raise_for_status(status: int, body: str, where: str) -> None:
    """Map an error answer: :class:`Unavailable` when a retry may succeed, else SinkError."""
    message = error_message(body)
    if status in (408, 429) or status >= 500:
        raise Unavailable(f"InfluxDB answered {status} at {where}: {message}")
    hint = ""
    if status in (401, 403):
        hint = " (check the token)"
    elif status == 404:
        hint = " (check the database or bucket exists and the URL is the server's base URL)"
    raise SinkError(f"InfluxDB answered {status} at {where}: {message}{hint}", status=status)


def error_message(body: str) -> str:
    """The message of an InfluxDB error body (1.x ``error``, 2.x/3.x ``message``), or the text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict):
        for field in ("error", "message"):
            if data.get(field):
                return str(data[field])[:500]
    return body.strip()[:500]


def describe(exc: BaseException) -> str:
    """``Type: message`` (some exceptions, like timeouts, have an empty message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def pack(
    queue: Sequence[BufferedRecord], start: int, max_lines: int, max_bytes: int = MAX_REQUEST_BYTES
) -> list[BufferedRecord]:
    """Consecutive records from ``start`` that fit in one request together (at least one)."""
    group = [queue[start]]
    lines, size = len(queue[start].lines), _size(queue[start])
    for record in queue[start + 1 :]:
        lines += len(record.lines)
        size += _size(record)
        if lines > max_lines or size > max_bytes:
            break
        group.append(record)
    return group


def _size(record: BufferedRecord) -> int:
    return sum(len(line) + 1 for line in record.lines)


def quote_influxql(identifier: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + identifier.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_sql(identifier: str) -> str:
    """A SQL double-quoted identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def influxql_pairs(data: Any) -> set[tuple[str, str]]:
    """``(run_id, label)`` pairs from a ``/query`` answer grouped by those tags.

    A database that does not exist has no pairs; any other error raises SinkError.
    """
    return {pair for pair, _ in _influxql_groups(data)}


def influxql_times(data: Any) -> dict[tuple[str, str], int]:
    """``(run_id, label) -> time (ns)`` from a ``/query`` answer grouped by those tags.

    Each group's first row gives the time (``epoch=ns``): for ``SELECT first(...)`` that is the
    time of the group's earliest point. Errors as for :func:`influxql_pairs`.
    """
    times: dict[tuple[str, str], int] = {}
    for pair, series in _influxql_groups(data):
        columns, values = series.get("columns") or [], series.get("values") or []
        if "time" not in columns or not values:
            continue
        time_ns = values[0][columns.index("time")]
        if type(time_ns) is not int:
            raise SinkError(f"InfluxQL answered a time that is not epoch nanoseconds: {time_ns!r}")
        times[pair] = min(time_ns, times.get(pair, time_ns))
    return times


def _influxql_groups(data: Any) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    """Each series of a ``/query`` answer with its ``(run_id, label)`` tags."""
    if not isinstance(data, dict):
        raise SinkError(f"InfluxQL query answered {type(data).__name__}, expected an object")
    if data.get("error"):
        raise SinkError(f"InfluxQL query failed: {data['error']}")
    for result in data.get("results") or []:
        error = result.get("error")
        if error:
            if "database not found" in str(error):
                return
            raise SinkError(f"InfluxQL query failed: {error}")
        for series in result.get("series") or []:
            tags = series.get("tags") or {}
            if tags.get("run_id") and tags.get("label"):
                yield (str(tags["run_id"]), str(tags["label"])), series


def sql_pairs(rows: Any) -> set[tuple[str, str]]:
    """``(run_id, label)`` pairs from a ``/api/v3/query_sql`` JSON answer (a list of rows)."""
    return {pair for pair, _ in _sql_rows(rows)}


def sql_times(rows: Any) -> dict[tuple[str, str], int]:
    """``(run_id, label) -> earliest time (ns)`` from ``/api/v3/query_sql`` rows with a ``time``.

    InfluxDB 3 writes a time in JSON as an RFC 3339 string without a zone (UTC), e.g.
    ``2025-02-15T00:00:00`` or ``...T00:00:00.000000001``; epoch nanoseconds are accepted too.
    """
    times: dict[tuple[str, str], int] = {}
    for pair, row in _sql_rows(rows):
        time_ns = parse_time_ns(row.get("time"))
        times[pair] = min(time_ns, times.get(pair, time_ns))
    return times


def _sql_rows(rows: Any) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    if not isinstance(rows, list):
        raise SinkError(f"SQL query answered {type(rows).__name__}, expected a list of rows")
    for row in rows:
        if isinstance(row, dict) and row.get("run_id") and row.get("label"):
            yield (str(row["run_id"]), str(row["label"])), row


def parse_time_ns(value: Any) -> int:
    """Epoch nanoseconds from an int, or from an RFC 3339 time (UTC when it has no zone).

    >>> parse_time_ns("1970-01-01T00:00:01.5"), parse_time_ns("2025-02-15T00:00:00Z")
    (1500000000, 1739577600000000000)
    """
    if type(value) is int:
        return value
    found = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise SinkError(f"the query answered a time that is not a time: {value!r}")
    whole, fraction, zone = found.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone in (None, "Z") else zone))
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def module_exists(name: str) -> bool:
    """Whether ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def running_under_trio() -> bool:
    """True inside ``trio.run`` (without importing trio, or needing sniffio)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True
