"""WriteAheadBuffer: the agent's durable outbox of line-protocol records (a JSONL file).

Every result goes into this file, and is fsynced, before anything is sent to InfluxDB; once
InfluxDB has taken it, an acknowledgement line is appended. The records still pending after a
crash (even a ``kill -9``) are exactly those whose writes were never acknowledged, and a replay
sends them again, in order. Points carry explicit timestamps, so a repeat overwrites the same
series and time instead of adding a duplicate.

File format, one JSON object per line::

    {"seq": 7, "key": "G27 @0000100/capability", "lines": ["capability_score,..."], "at": "..."}
    {"ack": 7, "key": "G27 @0000100/capability"}
    {"ack": 8, "key": "...", "rejected": "400: field type conflict ..."}

A line counts only once its trailing newline is on disk: a process killed in the middle of an
append leaves a torn last line without one. Opening the file ignores that fragment, truncates it
away and reports it (:attr:`WriteAheadBuffer.torn` and a warning in the log). Any other line
that is not a valid record is corruption, not a crash artefact, and raises
:class:`~goml_async.errors.SinkError` naming the file and line rather than being dropped.

An append that fails (a full disk: ENOSPC, or an I/O error) leaves the file exactly as it was:
the bytes it managed to write are cut off again before the error is raised as a SinkError, so
a failed append is never glued to the next one, and the caller knows the record is not durable.

Lines are validated strictly: a record is ``seq`` (an int >= 1, not a bool), ``key`` (str),
``lines`` (a list of str) and an optional ``at`` (str); an ack is ``ack`` (an int >= 1),
``key`` and an optional ``rejected`` (str). A line with other keys or other types is corruption.

When every record is acknowledged the file is deleted; when acknowledged records pile up it is
compacted: the pending records are written to a temporary file, fsynced and renamed over it.
One process writes one buffer file at a time (the agent locks its work_dir for that).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..errors import ConfigError, SinkError
from ._durable import append_durably, fsync_dir, replace_durably

__all__ = ["BufferedRecord", "WriteAheadBuffer"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Compact once this many acknowledged records are in the file (and they outnumber the pending).
_COMPACT_AFTER = 256


@dataclass(frozen=True, slots=True)
class BufferedRecord:
    """One pending record: the lines of one publish, under a caller-chosen key.

    Attributes:
        seq: the record's sequence number in its buffer file (acks refer to it).
        key: what the lines are, for logs and humans (e.g. a checkpoint label and a kind).
        lines: InfluxDB line-protocol lines, each with an explicit timestamp.
    """

    seq: int
    key: str
    lines: tuple[str, ...]


class WriteAheadBuffer:
    """An append-only, fsynced JSONL file of pending line-protocol records.

    The file is read once, on first use (it is small: it holds only what InfluxDB has not
    taken yet). Appends, acks and compactions run in a worker thread, one at a time, and are
    shielded from cancellation so that the file and the in-memory view never disagree.

    Args:
        path: the buffer file (created with its parent folder on the first append).

    Example:
        >>> import anyio, tempfile, pathlib
        >>> async def main(folder):
        ...     wal = WriteAheadBuffer(pathlib.Path(folder) / "buffer.jsonl")
        ...     record = await wal.append("run-1", ["m,t=a v=1i 1"])
        ...     waiting = wal.pending
        ...     await wal.ack([record.seq])
        ...     return waiting, wal.pending
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     anyio.run(main, folder)
        (1, 0)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        #: The torn last line ignored when the file was opened (None if there was none).
        self.torn: str | None = None
        self._records: dict[int, BufferedRecord] | None = None
        self._next_seq = 1
        self._acked_in_file = 0
        #: Where the file's valid content ends: its size after the last write that succeeded.
        self._size = 0
        #: A failed append could not be cut off again: the next write cuts it off first.
        self._fragment = False
        self._lock = anyio.Lock()

    # -- reading ---------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many records are not acknowledged yet."""
        return len(self._loaded())

    def records(self) -> list[BufferedRecord]:
        """The pending records, oldest first."""
        return list(self._loaded().values())

    def is_pending(self, seq: int) -> bool:
        """Whether the record ``seq`` is still waiting for an ack."""
        return seq in self._loaded()

    def __len__(self) -> int:
        return self.pending

    def __repr__(self) -> str:
        return f"WriteAheadBuffer({str(self.path)!r})"

    def _loaded(self) -> dict[int, BufferedRecord]:
        if self._records is None:
            self._records = self._load()
        return self._records

    def _load(self) -> dict[int, BufferedRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._size = 0
            return {}
        except OSError as exc:
            raise SinkError(f"cannot read the Influx buffer {self.path}: {exc}") from exc
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self.torn = data[complete:].decode("utf-8", errors="replace")
            logger.warning(
                "%s: ignored a torn last line (%d bytes, never acknowledged; the process "
                "writing it was killed): %.80r",
                self.path,
                len(data) - complete,
                self.torn,
            )
            self._truncate(complete)
        self._size = complete
        records: dict[int, BufferedRecord] = {}
        acked = 0
        for number, raw in enumerate(data[:complete].split(b"\n")[:-1], start=1):
            if not raw.strip():
                continue
            entry = _parse(raw, self.path, number)
            if isinstance(entry, BufferedRecord):
                if entry.seq in records:
                    raise SinkError(f"{self.path} line {number}: duplicate record seq {entry.seq}")
                records[entry.seq] = entry
                self._next_seq = max(self._next_seq, entry.seq + 1)
            else:
                if records.pop(entry, None) is not None:
                    acked += 1
                self._next_seq = max(self._next_seq, entry + 1)
        self._acked_in_file = acked
        return records

    def _truncate(self, size: int) -> None:
        try:
            with self.path.open("r+b") as file:
                file.truncate(size)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            raise SinkError(f"cannot cut the torn tail off {self.path}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------------

    async def append(self, key: str, lines: Sequence[str]) -> BufferedRecord:
        """Append one record and fsync it; it is durable when this returns.

        Raises:
            SinkError: the file could not be written (disk full, permissions, ...).
        """
        if isinstance(lines, str):
            raise ConfigError("lines", "must be a sequence of line-protocol strings, not one str")
        async with self._lock:
            records = self._loaded()
            record = BufferedRecord(self._next_seq, key, tuple(lines))
            entry = {"seq": record.seq, "key": key, "lines": list(record.lines), "at": _now()}
            await _shielded(lambda: self._write([entry]))
            self._next_seq += 1
            records[record.seq] = record
            return record

    async def ack(self, seqs: Iterable[int], *, rejected: str | None = None) -> int:
        """Mark records as done (one fsynced write for all of them); returns how many were pending.

        Acking a record twice, or one that is not pending, does nothing. ``rejected`` records
        why InfluxDB refused the records, for whoever reads the file. When nothing is left
        pending the file is deleted; when many acknowledged records have piled up, it is
        compacted.
        """
        async with self._lock:
            records = self._loaded()
            done = [records[seq] for seq in dict.fromkeys(seqs) if seq in records]
            if not done:
                return 0
            entries: list[dict[str, Any]] = []
            for record in done:
                entry: dict[str, Any] = {"ack": record.seq, "key": record.key}
                if rejected is not None:
                    entry["rejected"] = rejected
                entries.append(entry)
            await _shielded(lambda: self._write(entries))
            for record in done:
                del records[record.seq]
            self._acked_in_file += len(done)
            if not records or (
                self._acked_in_file >= _COMPACT_AFTER and self._acked_in_file > len(records)
            ):
                try:
                    await self._compact_locked()
                except SinkError as exc:
                    # The acks are durable and the file is still valid, only longer: go on.
                    logger.warning("%s; it is compacted on a later ack", exc)
            return len(done)

    async def compact(self) -> None:
        """Rewrite the file with only the pending records (temp file, fsync, rename).

        With nothing pending, the file is removed.
        """
        async with self._lock:
            await self._compact_locked()

    async def replay(self, write: Callable[[BufferedRecord], Awaitable[bool]]) -> int:
        """Hand each pending record to ``write``, oldest first, acking those it took.

        ``write`` returns True once the record is written, False to stop here (the record and
        everything after it stay pending, in order). Its exceptions propagate, leaving the
        record pending. Returns how many records were written.
        """
        written = 0
        for record in self.records():
            if not await write(record):
                break
            written += await self.ack([record.seq])
        return written

    async def _compact_locked(self) -> None:
        pending = list(self._loaded().values())
        await _shielded(lambda: self._rewrite(pending))
        self._acked_in_file = 0

    def _write(self, entries: list[dict[str, Any]]) -> None:
        """Append entries durably; on failure the file is as it was and SinkError is raised."""
        payload = "".join(_dumps(entry) + "\n" for entry in entries).encode("utf-8")
        if self._fragment:
            self._truncate(self._size)
            self._fragment = False
        try:
            self._size = append_durably(self.path, payload, expected_size=self._size)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._fragment = self.path.stat().st_size > self._size
            raise SinkError(
                f"cannot write the Influx buffer {self.path}: {exc} (nothing was added to it)"
            ) from exc

    def _rewrite(self, pending: list[BufferedRecord]) -> None:
        try:
            if not pending:
                self.path.unlink(missing_ok=True)
                fsync_dir(self.path.parent)
                self._size = 0
                return
            entries = (
                {"seq": record.seq, "key": record.key, "lines": list(record.lines)}
                for record in pending
            )
            data = "".join(_dumps(entry) + "\n" for entry in entries).encode("utf-8")
            replace_durably(self.path, data)
            self._size = len(data)
        except OSError as exc:
            raise SinkError(f"cannot compact the Influx buffer {self.path}: {exc}") from exc


def _parse(raw: bytes, path: Path, number: int) -> BufferedRecord | int:
    """A record, or the seq of an ack; anything else is corruption."""
    try:
        entry = json.loads(raw)
    except ValueError as exc:
        raise SinkError(
            f"{path} line {number} is not valid JSON ({exc}); the buffer is corrupt: "
            "move it aside to start a fresh one (its pending points would then be lost)"
        ) from exc
    if isinstance(entry, dict):
        if "ack" in entry:
            if (
                entry.keys() <= _ACK_KEYS
                and _is_seq(entry["ack"])
                and all(isinstance(entry.get(name, ""), str) for name in ("key", "rejected"))
            ):
                return int(entry["ack"])
        elif (
            entry.keys() <= _RECORD_KEYS
            and _is_seq(entry.get("seq"))
            and isinstance(entry.get("key"), str)
            and isinstance(entry.get("lines"), list)
            and all(isinstance(line, str) for line in entry["lines"])
            and isinstance(entry.get("at", ""), str)
        ):
            return BufferedRecord(entry["seq"], entry["key"], tuple(entry["lines"]))
    raise SinkError(f"{path} line {number} is neither a record nor an ack: {raw[:80]!r}")


_ACK_KEYS = frozenset({"ack", "key", "rejected"})
_RECORD_KEYS = frozenset({"seq", "key", "lines", "at"})


def _is_seq(value: object) -> bool:
    """A sequence number: an int >= 1 (JSON ``true`` is a Python bool, an int subclass: no)."""
    return type(value) is int and value >= 1


def _dumps(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _shielded(work: Callable[[], _T]) -> _T:
    """Run blocking file work in a thread; a cancellation waits for it to finish."""
    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(work)
    return result
