"""What the agent loop reports and where it publishes.

:class:`AgentEvent`\\ s describe each step as it happens (``goml agent`` draws its live display
from them), :class:`AgentSummary` is what a run did, and :class:`PointSink` is what the loop
publishes to (an :class:`~goml_async.agent.influx.InfluxSink`).

Example:
    ```python
    def show(event: AgentEvent) -> None:
        if event.kind == "probe":
            print(f"{event.checkpoint.label}: probe {event.done}/{event.total}")

    async with Agent(config, on_event=show) as agent:
        summary = await agent.run()
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from .types import Checkpoint, Point

if TYPE_CHECKING:
    from .config import AgentConfig

__all__ = ["AgentEvent", "AgentSummary", "EventCallback", "EventKind", "PointSink", "make_sink"]

logger = logging.getLogger(__name__)

#: What an :class:`AgentEvent` reports.
EventKind = Literal[
    "pass",  # a pass starts (pass_number, pending)
    "replayed",  # buffered records were written (done = how many)
    "discovered",  # total = checkpoints found, done = unscored ones
    "would_process",  # dry run: this checkpoint would be evaluated
    "evaluating",  # evaluation of checkpoint starts
    "probe",  # a capability probe finished (done/total, passed so far)
    "evaluated",  # checkpoint evaluated (passed/total)
    "published",  # checkpoint's points written (message "written") or buffered ("buffered")
    "failed",  # checkpoint could not be evaluated (message)
    "warning",  # something went wrong and the loop carries on (message)
    "idle",  # nothing to do; sleeping message seconds
]


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One thing the agent did, for a live display or a log.

    Attributes:
        kind: what happened (see :data:`EventKind`).
        pass_number: the current pass, from 1.
        checkpoint: the checkpoint concerned, if any.
        message: details (an error's text, "written"/"buffered", ...).
        done: probes done, records replayed, or unscored checkpoints, by ``kind``.
        passed: probes passed so far.
        total: probes in the suite, or checkpoints found.
        pending: write-ahead buffer records not yet written to Influx.
        seconds: the wall time of an ``evaluated`` checkpoint (probes run up to the model's
            parallel slots at once).
    """

    kind: EventKind
    pass_number: int = 0
    checkpoint: Checkpoint | None = None
    message: str = ""
    done: int = 0
    passed: int = 0
    total: int = 0
    pending: int = 0
    seconds: float = 0.0


#: Receives every :class:`AgentEvent`; may be a coroutine function.
EventCallback = Callable[[AgentEvent], object]


@dataclass(slots=True)
class AgentSummary:
    """What :meth:`Agent.run` did.

    Attributes:
        passes: passes started.
        evaluated: checkpoints evaluated.
        written: checkpoints whose points reached Influx.
        buffered: checkpoints whose points wait in the write-ahead buffer.
        replayed: buffered records written by replays.
        would_process: the checkpoints a dry run would have evaluated.
        failed: ``(label, error)`` for each evaluation that failed.
        warnings: every recoverable problem (Influx query failures, discovery failures...).
    """

    passes: int = 0
    evaluated: int = 0
    written: int = 0
    buffered: int = 0
    replayed: int = 0
    would_process: list[Checkpoint] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class PointSink(Protocol):
    """Where results go (:class:`~goml_async.agent.influx.InfluxSink` is one)."""

    @property
    def pending(self) -> int:
        """Buffered records not yet written."""
        ...

    async def publish(self, points: Sequence[Point], *, key: str) -> bool:
        """Buffer durably, then write; True when written, False when kept for a replay."""
        ...

    async def replay(self) -> int:
        """Write what is buffered, in order; how many records were written."""
        ...

    async def scored_times(self) -> dict[tuple[str, str], int]:
        """Each scored ``(run_id, label)`` and the time (ns) of its overall capability score."""
        ...

    async def aclose(self) -> None: ...


def make_sink(config: AgentConfig) -> PointSink:
    """The :class:`~goml_async.agent.influx.InfluxSink` for ``config``.

    Without ``influx_url`` the sink only fills the write-ahead buffer (a later run with a URL
    replays it) and a warning says so.
    """
    from .influx import InfluxSink

    if not config.influx_url:
        logger.warning(
            "no influx_url: results only go to the write-ahead buffer %s and the state file %s",
            config.buffer_path,
            config.state_path,
        )
    sink: PointSink = InfluxSink(
        config.influx_url,
        api=config.influx_api,
        database=config.influx_db,
        org=config.influx_org,
        bucket=config.influx_bucket,
        token=config.influx_token,
        query=config.influx_query,
        buffer_path=config.buffer_path,
        batch_size=config.influx_batch_size,
    )
    return sink
