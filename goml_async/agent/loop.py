"""The agent loop: find unscored checkpoints, evaluate them, publish the results durably.

:meth:`Agent.run` is one anyio task group of three tasks joined by bounded memory streams::

    discovery --(checkpoints)--> evaluation --(evaluations)--> publishing

The agent first locks its ``work_dir`` (a second agent there fails, naming the first one's
PID). Each pass replays the write-ahead buffer, discovers the checkpoints, drops the scored
ones (Influx's overall ``capability_score`` points plus the state file; an Influx query failure
falls back to the state file), and takes the first unscored one (all with ``force``), or in
``dry_run`` only reports it. When they are published the next pass
starts at once, or after ``poll_interval`` when nothing was left; ``one_shot`` stops after one.

Before evaluation a checkpoint's time base is fixed in the state file: the one recorded when
it was first scored, else its overall score's time in InfluxDB, else its mtime. Publishing
buffers every batch durably before writing it, ``capability_score`` (the "scored" mark) last,
and only then records the checkpoint in the state file; a batch that cannot be buffered (disk
full) fails the checkpoint, unrecorded, to be tried again. Points have fixed identities (series
+ time base), so a ``kill -9`` at any moment loses nothing (buffered batches are replayed, the
rest is evaluated again) and duplicates nothing (rewrites and re-scores overwrite). Cancelling
the group (SIGINT/SIGTERM in ``goml agent``) stops all three tasks; a publish in progress gets
:data:`PUBLISH_GRACE` seconds to finish.

Example:
    ```python
    config = AgentConfig.load("agent.toml", one_shot=True)
    async with Agent(config, on_event=print) as agent:
        summary = await agent.run()
    print(summary.evaluated, "evaluated,", len(summary.failed), "failed")
    ```
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread
from anyio.abc import AsyncResource, ObjectReceiveStream, ObjectSendStream

from .._concurrency import maybe_await, task_group
from ..errors import GomlError, SinkError
from ..scoring.probes import CAPABILITY_PROBES
from ..scoring.types import ProbeOutcome
from .evaluate import Evaluation, evaluate_checkpoint, resolve_target
from .events import AgentEvent, AgentSummary, EventCallback, EventKind, PointSink, make_sink
from .types import Checkpoint, RemoteTransport

if TYPE_CHECKING:
    from .config import AgentConfig
    from .state import ScoredState
    from .workdir import WorkDirLock

__all__ = ["Agent", "PUBLISH_GRACE"]

logger = logging.getLogger(__name__)

#: Seconds a publish in progress may still take after the loop was cancelled.
PUBLISH_GRACE: Final = 30.0

_NS: Final = 1_000_000_000

#: ``(run_id, label) -> time (ns)`` of each checkpoint InfluxDB has scored; None: unknown.
_InInflux = Mapping[tuple[str, str], int] | None


@dataclass(eq=False, slots=True)
class _PassEnd:
    """Sent down the pipeline after a pass's targets; set once they are all published."""

    done: anyio.Event = field(default_factory=anyio.Event)


class Agent(AsyncResource):
    """The checkpoint-scoring agent, over one :class:`AgentConfig`.

    Args:
        config: the settings.
        transport: where checkpoints live (default: ``config.make_transport()``).
        sink: where points go (default: an :class:`~goml_async.agent.influx.InfluxSink` for
            ``config.influx_url``; without one, a buffer-only sink, with a warning).
        state: the local scored set (default: ``ScoredState(config.state_path)``).
        on_event: called with every :class:`AgentEvent` (sync or async).

    What the agent creates it also closes (``aclose`` or ``async with``); a transport or sink
    given to it stays open. :meth:`run`, :meth:`evaluate` and :meth:`replay` lock
    ``config.work_dir`` first, and the lock is held until ``aclose``: one agent at a time
    uses a work_dir.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: RemoteTransport | None = None,
        sink: PointSink | None = None,
        state: ScoredState | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._owns_transport = transport is None
        self._sink = sink
        self._owns_sink = sink is None
        self._state = state
        self._on_event = on_event
        self._failed_at: dict[tuple[str, str], float] = {}
        self._pass = 0
        self._work_dir_lock: WorkDirLock | None = None

    @property
    def config(self) -> AgentConfig:
        return self._config

    async def aclose(self) -> None:
        """Close the transport and sink this agent created, release the work_dir; idempotent."""
        with anyio.CancelScope(shield=True):
            if self._owns_sink and self._sink is not None:
                sink, self._sink = self._sink, None
                await sink.aclose()
            if self._owns_transport and self._transport is not None:
                transport, self._transport = self._transport, None
                await transport.aclose()
            if self._work_dir_lock is not None:
                self._work_dir_lock.release()

    # -- the facade ------------------------------------------------------------------------------

    async def discover(self) -> list[Checkpoint]:
        """Every checkpoint under ``adapter_base`` (``filter`` applied), by dirname, iteration."""
        from .discovery import discover_checkpoints

        config = self._config
        return await discover_checkpoints(self._get_transport(), config.adapter_base, config.filter)

    async def evaluate(self, target: Checkpoint | str) -> Evaluation:
        """Evaluate one checkpoint and publish its points, whether scored before or not.

        ``target`` is a Checkpoint or a path on the transport's side: the adapter file, its
        directory (its latest checkpoint), or a dirname relative to ``adapter_base``. A path
        discovery does not know is taken as is (``adapters.safetensors`` in a directory).

        Raises:
            ConfigError: ``target`` matches nothing usable, or ``work_dir`` is unusable or in
                use by another agent.
            GomlError: the evaluation failed (see :func:`evaluate_checkpoint`).
        """
        await self._hold_work_dir()
        transport = self._get_transport()
        checkpoint = (
            target
            if isinstance(target, Checkpoint)
            else await resolve_target(self._config, transport, target)
        )
        summary = AgentSummary()
        checkpoint = await self._with_time_base(checkpoint, await self._in_influx(summary))
        evaluation = await evaluate_checkpoint(self._config, transport, checkpoint)
        await self._publish(evaluation, summary)
        return evaluation

    async def replay(self) -> int:
        """Write the buffered records to Influx; how many."""
        await self._hold_work_dir()
        return await self._get_sink().replay()

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> AgentSummary:
        """Run passes until ``one_shot``/``dry_run`` stop it, or until cancelled.

        Returns:
            What was done. An evaluation that fails is recorded in ``failed`` (and retried
            after ``poll_interval``), never raised.

        Raises:
            ConfigError: ``work_dir`` is unusable or in use by another agent.
            GomlError: discovery failed in a one-shot or dry run (a continuous run retries).
        """
        await self._hold_work_dir()
        summary = AgentSummary()
        targets_send, targets_receive = anyio.create_memory_object_stream[Checkpoint | _PassEnd](1)
        results_send, results_receive = anyio.create_memory_object_stream[Evaluation | _PassEnd](1)
        async with task_group() as tg:  # a task's failure is raised as itself
            tg.start_soon(self._evaluation_task, targets_receive, results_send, summary)
            tg.start_soon(self._publishing_task, results_receive, summary)
            await self._discovery_task(targets_send, summary)
        return summary

    async def _discovery_task(
        self, send: ObjectSendStream[Checkpoint | _PassEnd], summary: AgentSummary
    ) -> None:
        config = self._config
        stop_after_pass = config.one_shot or config.dry_run
        async with send:
            while True:
                self._pass += 1
                summary.passes += 1
                await self._emit("pass", pending=self._get_sink().pending)
                await self._replay(summary)
                try:
                    checkpoints = await self.discover()
                except GomlError as exc:
                    if stop_after_pass:
                        raise
                    await self._warn(summary, f"discovery failed: {exc}")
                    await self._idle(config.poll_interval)
                    continue
                in_influx = await self._in_influx(summary)
                force = config.force and summary.passes == 1
                unscored = checkpoints if force else self._unscored(checkpoints, in_influx)
                await self._emit("discovered", done=len(unscored), total=len(checkpoints))
                if not unscored:
                    if stop_after_pass:
                        return
                    await self._idle(config.poll_interval)
                    continue
                targets = unscored if force else unscored[:1]
                if config.dry_run:
                    for checkpoint in targets:
                        summary.would_process.append(checkpoint)
                        await self._emit("would_process", checkpoint=checkpoint)
                    return
                marker = _PassEnd()
                for checkpoint in targets:
                    try:
                        target = await self._with_time_base(checkpoint, in_influx)
                    except SinkError as exc:  # the state file cannot be written (disk full)
                        await self._failure(checkpoint, f"cannot record it: {exc}", summary)
                        continue
                    await send.send(target)
                await send.send(marker)
                await marker.done.wait()
                if config.one_shot:
                    return

    async def _evaluation_task(
        self,
        receive: ObjectReceiveStream[Checkpoint | _PassEnd],
        send: ObjectSendStream[Evaluation | _PassEnd],
        summary: AgentSummary,
    ) -> None:
        last_finished = -math.inf
        async with receive, send:
            async for item in receive:
                if isinstance(item, _PassEnd):
                    await send.send(item)
                    continue
                # The pause between checkpoints, so the host is never hammered back to back.
                await anyio.sleep_until(last_finished + self._config.inter_checkpoint_delay)
                evaluation = await self._evaluate_one(item, summary)
                last_finished = anyio.current_time()
                if evaluation is not None:
                    await send.send(evaluation)

    async def _publishing_task(
        self, receive: ObjectReceiveStream[Evaluation | _PassEnd], summary: AgentSummary
    ) -> None:
        async with receive:
            async for item in receive:
                if isinstance(item, _PassEnd):
                    item.done.set()
                    continue
                try:
                    await self._publish(item, summary)
                except GomlError as exc:  # InfluxDB refused the data or the request
                    await self._failure(item.checkpoint, f"publishing failed: {exc}", summary)

    async def _evaluate_one(
        self, checkpoint: Checkpoint, summary: AgentSummary
    ) -> Evaluation | None:
        await self._emit("evaluating", checkpoint=checkpoint, total=len(CAPABILITY_PROBES))

        async def on_probe(outcome: ProbeOutcome, passed: int, done: int) -> None:
            await self._emit(
                "probe",
                checkpoint=checkpoint,
                message=outcome.probe_id,
                done=done,
                passed=passed,
                total=len(CAPABILITY_PROBES),
            )

        try:
            evaluation = await evaluate_checkpoint(
                self._config, self._get_transport(), checkpoint, on_probe=on_probe
            )
        except GomlError as exc:
            await self._failure(checkpoint, f"{type(exc).__name__}: {exc}", summary)
            return None
        summary.evaluated += 1
        result = evaluation.result
        await self._emit(
            "evaluated",
            checkpoint=checkpoint,
            passed=result.passed,
            total=result.total,
            seconds=evaluation.seconds,
        )
        return evaluation

    async def _failure(self, checkpoint: Checkpoint, message: str, summary: AgentSummary) -> None:
        """Record a failed checkpoint; it is tried again after a poll interval."""
        logger.error("%s: %s", checkpoint.label, message)
        self._failed_at[(checkpoint.run_id, checkpoint.label)] = anyio.current_time()
        summary.failed.append((checkpoint.label, message))
        await self._emit("failed", checkpoint=checkpoint, message=message)

    async def _publish(self, evaluation: Evaluation, summary: AgentSummary) -> None:
        """Publish every batch (capability last), then record the checkpoint as scored.

        Raises:
            SinkError: InfluxDB refused a batch; the checkpoint is not recorded as scored.
        """
        checkpoint = evaluation.checkpoint
        sink, state = self._get_sink(), self._get_state()
        written = True
        async with _finish_within(PUBLISH_GRACE) as scope:
            for kind, points in evaluation.batches():
                key = f"{checkpoint.run_id}|{checkpoint.label}|{kind}"
                written = await sink.publish(points, key=key) and written
            await state.add(checkpoint.run_id, checkpoint.label)
        if scope.cancelled_caught:
            logger.warning("publishing %s did not finish in time", checkpoint.label)
            return
        self._failed_at.pop((checkpoint.run_id, checkpoint.label), None)
        if written:
            summary.written += 1
        else:
            summary.buffered += 1
        await self._emit(
            "published",
            checkpoint=checkpoint,
            message="written" if written else "buffered",
            pending=sink.pending,
        )

    # -- helpers ---------------------------------------------------------------------------------

    async def _hold_work_dir(self) -> None:
        """Lock ``work_dir`` (creating it) before anything in it is read or written."""
        if self._work_dir_lock is None:
            from .workdir import WorkDirLock

            self._work_dir_lock = WorkDirLock(self._config.work_dir)
        await anyio.to_thread.run_sync(self._work_dir_lock.acquire)

    async def _in_influx(self, summary: AgentSummary) -> _InInflux:
        """The checkpoints InfluxDB has scored, with their times; None when it cannot say."""
        try:
            return await self._get_sink().scored_times()
        except SinkError as exc:
            await self._warn(
                summary, f"cannot ask Influx what is scored ({exc}); using the state file"
            )
            return None

    async def _with_time_base(self, checkpoint: Checkpoint, in_influx: _InInflux) -> Checkpoint:
        """The checkpoint with the time base of its points, recorded in the state file.

        The base recorded the first time it was scored, else the time of its overall score in
        InfluxDB (its local state was lost), else its own (its mtime): so a re-score overwrites
        even when the file's mtime changed since (a copy without ``-p``).

        Raises:
            SinkError: the state file cannot be written.
        """
        state = self._get_state()
        base = state.time_base(checkpoint.run_id, checkpoint.label)
        if base is None:
            found = (in_influx or {}).get((checkpoint.run_id, checkpoint.label))
            base = checkpoint.points_time_base if found is None else found // _NS
            await state.set_time_base(checkpoint.run_id, checkpoint.label, base)
        return replace(checkpoint, time_base=base)

    def _unscored(self, checkpoints: list[Checkpoint], in_influx: _InInflux) -> list[Checkpoint]:
        scored = in_influx or {}
        state = self._get_state()
        retry_after = anyio.current_time() - self._config.poll_interval
        unscored = []
        for checkpoint in checkpoints:
            key = (checkpoint.run_id, checkpoint.label)
            if key in scored or key in state:
                continue
            if self._failed_at.get(key, -math.inf) > retry_after:
                continue  # failed recently: retried after a poll interval
            unscored.append(checkpoint)
        return unscored

    async def _replay(self, summary: AgentSummary) -> None:
        sink = self._get_sink()
        if not sink.pending:
            return
        try:
            count = await sink.replay()
        except SinkError as exc:
            await self._warn(summary, f"replaying the buffer failed: {exc}")
            return
        summary.replayed += count
        if count:
            await self._emit("replayed", done=count, pending=sink.pending)

    async def _idle(self, seconds: float) -> None:
        await self._emit("idle", message=f"{seconds:g}", pending=self._get_sink().pending)
        await anyio.sleep(seconds)

    async def _warn(self, summary: AgentSummary, message: str) -> None:
        logger.warning("%s", message)
        summary.warnings.append(message)
        await self._emit("warning", message=message)

    async def _emit(
        self,
        kind: EventKind,
        *,
        checkpoint: Checkpoint | None = None,
        message: str = "",
        done: int = 0,
        passed: int = 0,
        total: int = 0,
        pending: int = 0,
        seconds: float = 0.0,
    ) -> None:
        if self._on_event is None:
            return
        event = AgentEvent(
            kind, self._pass, checkpoint, message, done, passed, total, pending, seconds
        )
        await maybe_await(self._on_event(event))

    def _get_transport(self) -> RemoteTransport:
        if self._transport is None:
            self._transport = self._config.make_transport()
        return self._transport

    def _get_sink(self) -> PointSink:
        if self._sink is None:
            self._sink = make_sink(self._config)
        return self._sink

    def _get_state(self) -> ScoredState:
        if self._state is None:
            from .state import ScoredState

            self._state = ScoredState(self._config.state_path)
        return self._state


@asynccontextmanager
async def _finish_within(grace: float) -> AsyncIterator[anyio.CancelScope]:
    """Shield the body from cancellation, but once cancelled give it only ``grace`` seconds.

    A watcher task outside the shield sees the cancellation and sets the shield's deadline, so
    a publish is never cut short in normal operation (draining a long buffer may take a while)
    and a stop request still ends it in bounded time.
    """
    shield = anyio.CancelScope(shield=True)

    async def arm() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            shield.deadline = anyio.current_time() + grace

    async with task_group() as tg:  # the body's error is raised as itself
        tg.start_soon(arm)
        try:
            with shield:
                yield shield
        finally:
            tg.cancel_scope.cancel()
