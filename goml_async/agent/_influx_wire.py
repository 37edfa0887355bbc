"""The sans-I/O half of InfluxSink: answers classified, records packed, queries built and read.

Pure functions, no network and no event loop, so every decision the sink makes about a server's
answer is testable on its own.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
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
    "module_exists",
    "pack",
    "quote_influxql",
    "quote_sql",
    "raise_for_status",
    "running_under_trio",
    "sql_pairs",
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
    if not isinstance(data, dict):
        raise SinkError(f"InfluxQL query answered {type(data).__name__}, expected an object")
    if data.get("error"):
        raise SinkError(f"InfluxQL query failed: {data['error']}")
    pairs: set[tuple[str, str]] = set()
    for result in data.get("results") or []:
        error = result.get("error")
        if error:
            if "database not found" in str(error):
                return set()
            raise SinkError(f"InfluxQL query failed: {error}")
        for series in result.get("series") or []:
            tags = series.get("tags") or {}
            if tags.get("run_id") and tags.get("label"):
                pairs.add((str(tags["run_id"]), str(tags["label"])))
    return pairs


def sql_pairs(rows: Any) -> set[tuple[str, str]]:
    """``(run_id, label)`` pairs from a ``/api/v3/query_sql`` JSON answer (a list of rows)."""
    if not isinstance(rows, list):
        raise SinkError(f"SQL query answered {type(rows).__name__}, expected a list of rows")
    return {
        (str(row["run_id"]), str(row["label"]))
        for row in rows
        if isinstance(row, dict) and row.get("run_id") and row.get("label")
    }


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
