"""ScoredState: the local record of which checkpoints have been scored.

The agent skips a checkpoint when InfluxDB already has its scores *or* this file lists it, so a
checkpoint whose results are still waiting in the write-ahead buffer (InfluxDB down) is not
evaluated twice. The file is small JSON::

    {"version": 1, "scored": [["gemma3-27b-v2-capability-auto", "G27-v2 @0000100"], ...]}

Every change is written atomically (temporary file, fsync, rename, fsync of the folder): after a
crash the file is either the old or the new version, never a mix. A file that cannot be read as
that shape raises :class:`~goml_async.errors.SinkError` naming it, instead of being treated as
empty (which would re-score everything silently).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

import anyio
import anyio.to_thread

from ..errors import SinkError
from .wal import _fsync_dir

__all__ = ["ScoredState"]

_VERSION = 1


class ScoredState:
    """The set of scored ``(run_id, label)`` pairs, persisted in one JSON file.

    The file is read on first use (or by :meth:`load`); a missing file is an empty set.
    :meth:`add` returns once the new set is durable on disk. Adds from concurrent tasks are
    serialised.

    Args:
        path: the JSON file (created with its parent folder on the first add).

    Example:
        >>> import anyio, tempfile, pathlib
        >>> async def main(folder):
        ...     state = ScoredState(pathlib.Path(folder) / "scored.json")
        ...     await state.add("run-capability-auto", "G27 @0000100")
        ...     return ("run-capability-auto", "G27 @0000100") in ScoredState(state.path)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     anyio.run(main, folder)
        True
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._pairs: frozenset[tuple[str, str]] | None = None
        self._lock = anyio.Lock()

    def load(self) -> Self:
        """(Re)read the file; returns self.

        Raises:
            SinkError: the file exists but is not a valid state file.
        """
        self._pairs = _read(self.path)
        return self

    @property
    def pairs(self) -> frozenset[tuple[str, str]]:
        """Every scored ``(run_id, label)`` pair."""
        if self._pairs is None:
            self._pairs = _read(self.path)
        return self._pairs

    def __contains__(self, pair: object) -> bool:
        return pair in self.pairs

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(sorted(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    async def add(self, run_id: str, label: str) -> bool:
        """Record one scored pair; True if it was new. Durable when this returns."""
        return await self.add_many([(run_id, label)]) == 1

    async def add_many(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Record several pairs in one atomic write; returns how many were new."""
        wanted = [(str(run_id), str(label)) for run_id, label in pairs]
        async with self._lock:
            current = self.pairs
            updated = current.union(wanted)
            added = len(updated) - len(current)
            if added:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_write, self.path, updated)
                self._pairs = updated
            return added


def _read(path: Path) -> frozenset[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return frozenset()
    except (OSError, UnicodeDecodeError) as exc:
        raise SinkError(f"cannot read the scored-state file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SinkError(_corrupt(path, f"not valid JSON ({exc})")) from exc
    if not isinstance(data, dict) or data.get("version") != _VERSION:
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
    return frozenset(pairs)


def _corrupt(path: Path, problem: str) -> str:
    return (
        f"the scored-state file {path} is corrupt: {problem}; restore it, or move it aside to "
        "rebuild it (checkpoints already in InfluxDB are still skipped)"
    )


def _write(path: Path, pairs: frozenset[tuple[str, str]]) -> None:
    body = {"version": _VERSION, "scored": [list(pair) for pair in sorted(pairs)]}
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as file:
            json.dump(body, file, ensure_ascii=False, indent=1)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise SinkError(f"cannot write the scored-state file {path}: {exc}") from exc
