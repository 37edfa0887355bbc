"""The agent's shared data model: checkpoints, remote command results, transports and points.

The agent is three tasks joined by bounded streams: discovery yields :class:`Checkpoint`\\ s,
evaluation turns each into :class:`Point`\\ s, and the Influx sink publishes them durably.
Everything that crosses a task boundary is defined here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ..errors import ConfigError

__all__ = [
    "Checkpoint",
    "CommandResult",
    "FieldValue",
    "Point",
    "RemoteTransport",
    "escape_field_string",
    "escape_tag",
]

#: An Influx field value: ``int`` is written with the ``i`` suffix, ``bool`` as true/false.
FieldValue = int | float | str | bool

_TAG_ESCAPES = re.compile(r"([,= ])")
_MEASUREMENT_ESCAPES = re.compile(r"([, ])")


def escape_tag(value: str) -> str:
    r"""Escape a tag key or value (or a field key) for the line protocol.

    >>> escape_tag("G27 @0000100")
    'G27\\ @0000100'
    """
    return _TAG_ESCAPES.sub(r"\\\1", value)


def escape_field_string(value: str) -> str:
    r"""A string field value, quoted, with ``"`` and ``\`` escaped.

    >>> escape_field_string('say "hi"')
    '"say \\"hi\\""'
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One adapter checkpoint found by discovery.

    Attributes:
        remote_dir: the directory that holds the adapter file, on the transport's side.
        filename: the adapter file's name, e.g. ``0000100_adapters.safetensors``.
        dirname: ``remote_dir`` relative to the adapter base, e.g. ``adapters-27b-v2``.
        iteration: the first run of digits in ``filename`` (100 for the example above).
        model_tag: the model family's tag, e.g. ``gemma-3-27b``.
        label: ``"{short} @{iteration digits}"``, e.g. ``G27-v2 @0000100``.
        run_id: ``"{stem}-capability-auto"``.
        mtime: the adapter file's modification time (Unix seconds).
        time_base: the whole Unix second every point's time is counted from (None: the
            mtime, rounded down). The agent fixes it the first time it scores a checkpoint and
            keeps it in its state file (or reads it back from InfluxDB), so results of the same
            checkpoint always land on the same series and times, and a replay or a re-score
            overwrites instead of duplicating, even after a copy changed the file's mtime.
    """

    remote_dir: str
    filename: str
    dirname: str
    iteration: int
    model_tag: str
    label: str
    run_id: str
    mtime: float = 0.0
    time_base: int | None = None

    @property
    def points_time_base(self) -> int:
        """The time base of the checkpoint's points: :attr:`time_base`, else ``int(mtime)``."""
        return int(self.mtime) if self.time_base is None else self.time_base

    @property
    def remote_path(self) -> str:
        """``remote_dir/filename``."""
        return f"{self.remote_dir.rstrip('/')}/{self.filename}"

    @property
    def content_run_id(self) -> str:
        """The run id of the content probes (``-capability-`` becomes ``-content-``)."""
        return self.run_id.replace("-capability-", "-content-")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a remote command did: its exit status and its output."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@runtime_checkable
class RemoteTransport(Protocol):
    """Where checkpoints live: a host over SSH, or a local directory.

    Implementations: ``SSHTransport`` (asyncssh) and ``LocalTransport``. Every method raises
    ``TransportError`` (a GomlError) for a connection or I/O failure; a command that runs and
    fails is not an error: its exit code is in the CommandResult.
    """

    async def run(self, command: str) -> CommandResult:
        """Run a shell command (within the transport's timeout); its exit code and output."""
        ...

    async def copy_from(self, remote: str, local: str) -> None:
        """Copy the remote file ``remote`` to the local path ``local`` (parents are created)."""
        ...

    async def copy_to(self, local: str, remote: str) -> None:
        """Copy the local file ``local`` to the remote path ``remote``."""
        ...

    async def mtime(self, remote: str) -> float:
        """The remote file's modification time, in Unix seconds."""
        ...

    async def aclose(self) -> None:
        """Close connections; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Point:
    """One line-protocol point with an explicit timestamp in nanoseconds.

    A point's identity in Influx is (measurement, tags, time): writing the same identity again
    overwrites its fields, which is what makes replays idempotent.
    """

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int | None = None

    def __post_init__(self) -> None:
        if not self.measurement:
            raise ConfigError("measurement", "must be a non-empty str")
        if not self.fields:
            raise ConfigError("fields", f"a point needs at least one field ({self.measurement})")
        for key, value in self.fields.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"fields[{key!r}]", f"must be finite, got {value!r}")

    def to_line(self) -> str:
        """The point in InfluxDB line protocol; tags sorted by key, as Influx prefers."""
        head = _MEASUREMENT_ESCAPES.sub(r"\\\1", self.measurement)
        for key in sorted(self.tags):
            tag = self.tags[key]
            if tag != "":  # an empty tag value is not allowed in the line protocol
                head += f",{escape_tag(key)}={escape_tag(tag)}"
        parts = [f"{escape_tag(key)}={_field_value(value)}" for key, value in self.fields.items()]
        line = f"{head} {','.join(parts)}"
        return line if self.time_ns is None else f"{line} {self.time_ns}"


def _field_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return escape_field_string(value)
