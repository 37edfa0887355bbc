"""ScoredState: the local record of which checkpoints have been scored, and on which times.

The agent skips a checkpoint when InfluxDB already has its scores *or* this file lists it, so a
checkpoint whose results are still waiting in the write-ahead buffer (InfluxDB down) is not
evaluated twice. The file also keeps each checkpoint's *time base*: the whole second its points'
times are counted from, fixed the first time the checkpoint is scored, so re-scoring it writes
onto the same times (and overwrites) even when the file's modification time changed since (a
copy without ``-p``). The file is small JSON::

    {"version": 2,
     "scored": [["gemma3-27b-v2-capability-auto", "G27-v2 @0000100"], ...],
     "time_bases": [["gemma3-27b-v2-capability-auto", "G27-v2 @0000100", 1750000100], ...]}

(A version 1 file, without ``time_bases``, is read as well.) Every change is written atomically
(temporary file, fsync, rename, fsync of the folder): after a crash the file is either the old
or the new version, never a mix. A file that cannot be read as that shape raises
:class:`~goml_async.errors.SinkError` naming it, instead of being treated as empty (which
would re-score everything silently).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import anyio
import anyio.to_thread

from ..errors import ConfigError, SinkError
from ._durable import replace_durably

__all__ = ["ScoredState"]

_VERSION = 2
_READABLE = (1, 2)

Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Content:
    scored: frozenset[Pair] = frozenset()
    time_bases: Mapping[Pair, int] = field(default_factory=dict)


class ScoredState:
    """The set of scored ``(run_id, label)`` pairs and their time bases, in one JSON file.

    The file is read on first use (or by :meth:`load`); a missing file is an empty state.
    :meth:`add` and :meth:`set_time_base` return once the new content is durable on disk.
    Changes from concurrent tasks are serialised.

    Args:
        path: the JSON file (created with its parent folder on the first change).

    Example:
        >>> import anyio, tempfile, pathlib
        >>> async def main(folder):
        ...     state = ScoredState(pathlib.Path(folder) / "scored.json")
        ...     await state.set_time_base("run-capability-auto", "G27 @0000100", 1750000100)
        ...     await state.add("run-capability-auto", "G27 @0000100")
        ...     again = ScoredState(state.path)
        ...     pair = ("run-capability-auto", "G27 @0000100")
        ...     return pair in again, again.time_base(*pair)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     anyio.run(main, folder)
        (True, 1750000100)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._content: _Content | None = None
        self._lock = anyio.Lock()

    def load(self) -> Self:
        """(Re)read the file; returns self.

        Raises:
            SinkError: the file exists but is not a valid state file.
        """
        self._content = _read(self.path)
        return self

    @property
    def pairs(self) -> frozenset[Pair]:
        """Every scored ``(run_id, label)`` pair."""
        return self._current().scored

    def time_base(self, run_id: str, label: str) -> int | None:
        """The time base (Unix seconds) recorded for a checkpoint, or None."""
        return self._current().time_bases.get((run_id, label))

    def __contains__(self, pair: object) -> bool:
        return pair in self.pairs

    def __iter__(self) -> Iterator[Pair]:
        return iter(sorted(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    async def add(self, run_id: str, label: str) -> bool:
        """Record one scored pair; True if it was new. Durable when this returns."""
        return await self.add_many([(run_id, label)]) == 1

    async def add_many(self, pairs: Iterable[Pair]) -> int:
        """Record several pairs in one atomic write; returns how many were new."""
        wanted = [(str(run_id), str(label)) for run_id, label in pairs]
        async with self._lock:
            current = self._current()
            scored = current.scored.union(wanted)
            added = len(scored) - len(current.scored)
            if added:
                await self._save(_Content(scored, current.time_bases))
            return added

    async def set_time_base(self, run_id: str, label: str, seconds: int) -> None:
        """Record the time base of a checkpoint's points. Durable when this returns.

        Raises:
            SinkError: the file could not be written (the state is unchanged).
        """
        if type(seconds) is not int:
            raise ConfigError("seconds", f"a time base is whole Unix seconds, got {seconds!r}")
        key = (str(run_id), str(label))
        async with self._lock:
            current = self._current()
            if current.time_bases.get(key) != seconds:
                await self._save(_Content(current.scored, {**current.time_bases, key: seconds}))

    def _current(self) -> _Content:
        if self._content is None:
            self._content = _read(self.path)
        return self._content

    async def _save(self, content: _Content) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_write, self.path, content)
        self._content = content


def _read(path: Path) -> _Content:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _Content()
    except (OSError, UnicodeDecodeError) as exc:
        raise SinkError(f"cannot read the scored-state file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SinkError(_corrupt(path, f"not valid JSON ({exc})")) from exc
    if not isinstance(data, dict) or data.get("version") not in _READABLE:
        raise SinkError(_corrupt(path, f'expected an object with "version": {_VERSION}'))
    scored = data.get("scored")
    if not isinstance(scored, list):
        raise SinkError(_corrupt(path, '"scored" must be a list of [run_id, label] pairs'))
    pairs = set()
    for item in scored:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)
        ):
            raise SinkError(_corrupt(path, f"not a [run_id, label] pair: {item!r}"))
        pairs.add((item[0], item[1]))
    bases = data.get("time_bases", [])
    if not isinstance(bases, list):
        raise SinkError(_corrupt(path, '"time_bases" must be a list of [run_id, label, seconds]'))
    time_bases: dict[Pair, int] = {}
    for item in bases:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and type(item[2]) is int  # not a bool, not a float
        ):
            raise SinkError(_corrupt(path, f"not a [run_id, label, seconds] time base: {item!r}"))
        time_bases[(item[0], item[1])] = item[2]
    return _Content(frozenset(pairs), time_bases)


def _corrupt(path: Path, problem: str) -> str:
    return (
        f"the scored-state file {path} is corrupt: {problem}; restore it, or move it aside to "
        "rebuild it (checkpoints already in InfluxDB are still skipped)"
    )


def _write(path: Path, content: _Content) -> None:
    body: dict[str, Any] = {
        "version": _VERSION,
        "scored": [list(pair) for pair in sorted(content.scored)],
        "time_bases": [[*pair, seconds] for pair, seconds in sorted(content.time_bases.items())],
    }
    data = (json.dumps(body, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    try:
        replace_durably(path, data)
    except OSError as exc:
        raise SinkError(f"cannot write the scored-state file {path}: {exc}") from exc
