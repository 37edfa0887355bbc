"""The agent loop against a real influxd: passes, skipping, force, dry run, filter, durability.

Checkpoints come from the real checkpoint tree over LocalTransport; the model under test and the
judge are one scripted OpenAI-compatible server (http backend), so a pass takes well under a
second. Durability is tested with real processes: an agent is SIGKILLed at marked moments (it
prints a marker line and waits there), restarted, and the points are counted with InfluxQL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from goml_async.agent.config import AgentConfig
from goml_async.agent.events import AgentEvent
from goml_async.agent.influx import InfluxSink
from goml_async.agent.loop import Agent
from goml_async.agent.points import CONTENT_DIMENSIONS
from goml_async.agent.state import ScoredState
from goml_async.agent.types import Point
from goml_async.agent.wal import WriteAheadBuffer
from goml_async.errors import ConfigError, SinkError
from goml_async.scoring.probes import CAPABILITY_PROBES, CONTENT_PROBES
from goml_async.testing import FakeOpenAIServer, Script

from .conftest import CheckpointTree, SmallDisk
from .influxd import InfluxServer, influxd, own_influxd  # noqa: F401  (fixtures)

CATEGORIES = len({probe.category for probe in CAPABILITY_PROBES})
PROBES = len(CAPABILITY_PROBES)
#: Points per checkpoint and measurement, with a judge and content probes.
PER_CHECKPOINT = {
    "capability_score": 1 + CATEGORIES,
    "probe_score": PROBES,
    "capability_judge": PROBES,
    "content_score": len(CONTENT_PROBES) * len(CONTENT_DIMENSIONS),
}
JUDGE_REPLY = json.dumps(
    {
        "reasoning": 7,
        "correctness": 8,
        "clarity": 6,
        "ccp_compliance": 4,
        "truth_telling": 5,
        "engagement": 3,
        "axiom_integration": 2,
        "sovereignty_reasoning": 1,
        "emotional_register": 4,
    }
)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    """The model under test and the judge: every answer is a valid judge reply."""
    with FakeOpenAIServer(Script(tokens=[JUDGE_REPLY])) as fake:
        yield fake


@pytest.fixture
def database(influxd: InfluxServer) -> str:  # noqa: F811
    return influxd.create_database(f"t{uuid.uuid4().hex[:10]}")


def _values(
    tree: CheckpointTree, work: Path, server: FakeOpenAIServer, influx_url: str | None, db: str
) -> dict[str, Any]:
    return {
        "adapter_base": str(tree.root),
        "backend": "http",
        "api_url": server.base_url,
        "judge_url": server.base_url,
        "capability_max_tokens": 4,
        "content_max_tokens": 4,
        "influx_url": influx_url,
        "influx_api": "v1",
        "influx_db": db,
        "work_dir": str(work),
        "poll_interval": 0.05,
        "inter_checkpoint_delay": 0,
    }


def _counts(influx: InfluxServer, db: str) -> dict[str, Counter[str]]:
    """measurement -> label -> number of points."""
    counts: dict[str, Counter[str]] = {}
    for measurement in PER_CHECKPOINT:
        statement = f'SELECT count("iteration") FROM "{measurement}" GROUP BY "label"'
        data = influx.query(statement, db)
        counter: Counter[str] = Counter()
        for series in data["results"][0].get("series", []):
            counter[series["tags"]["label"]] = series["values"][0][1]
        counts[measurement] = counter
    return counts


def _expected(labels: list[str]) -> dict[str, Counter[str]]:
    return {m: Counter(dict.fromkeys(labels, n)) for m, n in PER_CHECKPOINT.items()}


ALL_LABELS = ["G12 @0000050", "G27-v2 @0000100", "G27-v2 @0000200", "Vi1 @0000300"]
LABELS_27B = ["G27-v2 @0000100", "G27-v2 @0000200"]


# -- in-process passes (both event loops) --------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.slow
async def test_passes_publish_skip_force_and_dry_run(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, influxd.url, database)
    events: list[AgentEvent] = []

    # one-shot, no force: the first unscored checkpoint (by dirname, then iteration)
    config = AgentConfig(**values, one_shot=True)
    async with Agent(config, on_event=events.append) as agent:
        summary = await agent.run()
    assert (summary.passes, summary.evaluated, summary.written, summary.failed) == (1, 1, 1, [])
    assert _counts(influxd, database) == _expected(["G12 @0000050"])
    kinds = [e.kind for e in events]
    assert kinds == [
        "pass",
        "discovered",
        "evaluating",
        *["probe"] * PROBES,
        "evaluated",
        "published",
    ]
    assert [e.done for e in events if e.kind == "probe"] == list(range(1, PROBES + 1))
    assert events[1].total == 4 and events[1].done == 4
    evaluated = next(e for e in events if e.kind == "evaluated")
    assert evaluated.seconds > 0  # the evaluation's wall time

    # force: every checkpoint in one pass; the one already there is overwritten, not doubled
    async with Agent(AgentConfig(**values, one_shot=True, force=True)) as agent:
        summary = await agent.run()
    assert (summary.evaluated, summary.written) == (4, 4)
    assert _counts(influxd, database) == _expected(ALL_LABELS)
    assert len(ScoredState(config.state_path).load()) == 4

    # a second pass skips what is scored; a dry run has nothing to list
    events.clear()
    async with Agent(AgentConfig(**values, one_shot=True), on_event=events.append) as agent:
        summary = await agent.run()
    assert summary.evaluated == 0
    assert [e.kind for e in events] == ["pass", "discovered"] and events[1].done == 0
    async with Agent(AgentConfig(**values, dry_run=True)) as agent:
        assert (await agent.run()).would_process == []
    assert _counts(influxd, database) == _expected(ALL_LABELS)


@pytest.mark.anyio
async def test_dry_run_and_filter_evaluate_nothing(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, influxd.url, database)
    posts = len(server.requests)
    async with Agent(AgentConfig(**values, dry_run=True)) as agent:
        summary = await agent.run()
    assert [cp.label for cp in summary.would_process] == ["G12 @0000050"]
    async with Agent(AgentConfig(**values, dry_run=True, force=True, filter="27b")) as agent:
        summary = await agent.run()
        assert [cp.label for cp in await agent.discover()] == LABELS_27B
    assert [cp.label for cp in summary.would_process] == LABELS_27B
    assert len(server.requests) == posts  # nothing was asked
    assert _counts(influxd, database) == _expected([])
    assert not ScoredState(tmp_path / "work" / "scored.json").load().pairs


@pytest.mark.anyio
async def test_filter_limits_a_forced_pass(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, influxd.url, database)
    async with Agent(AgentConfig(**values, one_shot=True, force=True, filter="27b")) as agent:
        summary = await agent.run()
    assert summary.evaluated == 2
    assert _counts(influxd, database) == _expected(LABELS_27B)


@pytest.mark.anyio
async def test_influx_query_failure_falls_back_to_the_state_file(
    checkpoint_tree: CheckpointTree, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    from .influxd import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    values = _values(checkpoint_tree, tmp_path / "work", server, dead, "training")
    async with Agent(AgentConfig(**values, one_shot=True, filter="vi")) as agent:
        first = await agent.run()
    assert (first.evaluated, first.buffered) == (1, 1)
    assert any("using the state file" in w for w in first.warnings)
    async with Agent(AgentConfig(**values, one_shot=True, filter="vi")) as agent:
        second = await agent.run()
    assert second.evaluated == 0  # the state file knows it, though Influx cannot be asked


@pytest.mark.anyio
async def test_without_influx_results_wait_in_the_buffer(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, None, "training")
    async with Agent(AgentConfig(**values, one_shot=True, filter="vi")) as agent:
        summary = await agent.run()
    assert (summary.evaluated, summary.buffered, summary.written) == (1, 1, 0)
    assert "no influx_url" in caplog.text
    lines = (tmp_path / "work" / "influx_buffer.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"].rsplit("|", 1)[1] for line in lines] == [
        "content",
        "judge",
        "capability",
    ]


@pytest.mark.anyio
async def test_evaluate_and_discover_facade(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, influxd.url, database)
    async with Agent(AgentConfig(**values)) as agent:
        assert [cp.label for cp in await agent.discover()] == ALL_LABELS
        by_dir = await agent.evaluate("adapters-27b-v2")  # a directory: its latest checkpoint
        by_path = await agent.evaluate(
            str(checkpoint_tree.path("adapters-vi/0000300_adapters.safetensors"))
        )
    assert by_dir.checkpoint.label == "G27-v2 @0000200"
    assert by_path.checkpoint.label == "Vi1 @0000300"
    assert _counts(influxd, database) == _expected(["G27-v2 @0000200", "Vi1 @0000300"])


@pytest.mark.anyio
async def test_cancelling_the_group_stops_every_task(
    checkpoint_tree: CheckpointTree, tmp_path: Path
) -> None:
    slow = Script(tokens=["a", "b", "c"], token_delay=0.2)
    with FakeOpenAIServer(slow) as fake:
        values = _values(checkpoint_tree, tmp_path / "work", fake, None, "training")
        started = anyio.Event()

        def on_event(event: AgentEvent) -> None:
            if event.kind == "probe":
                started.set()

        agent = Agent(AgentConfig(**values, content_probes=False), on_event=on_event)
        with anyio.fail_after(20):
            async with agent, anyio.create_task_group() as tg:
                tg.start_soon(agent.run)
                await started.wait()
                tg.cancel_scope.cancel()
    work = tmp_path / "work"
    assert [p.name for p in work.iterdir() if p.is_dir()] == []  # nothing left behind
    assert not ScoredState(work / "scored.json").load().pairs


class _SlowOrFailingSink:
    """A real buffer-only InfluxSink whose publish is slow, or refused like a 400."""

    def __init__(self, path: Path, *, delay: float = 0.0, refuse: bool = False) -> None:
        self.inner = InfluxSink(None, api="v1", buffer_path=path)
        self.delay, self.refuse = delay, refuse
        self.published: list[str] = []

    @property
    def pending(self) -> int:
        return self.inner.pending

    async def publish(self, points: Sequence[Point], *, key: str) -> bool:
        if self.refuse:
            raise SinkError("InfluxDB answered 400: field type conflict", status=400)
        await anyio.sleep(self.delay)
        self.published.append(key)
        return await self.inner.publish(points, key=key)

    async def replay(self) -> int:
        return await self.inner.replay()

    async def scored_times(self) -> dict[tuple[str, str], int]:
        return await self.inner.scored_times()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.anyio
async def test_a_stop_during_publishing_lets_it_finish(
    checkpoint_tree: CheckpointTree, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, None, "training")
    config = AgentConfig(**values, filter="vi")
    sink = _SlowOrFailingSink(config.buffer_path, delay=0.3)
    evaluated = anyio.Event()

    def on_event(event: AgentEvent) -> None:
        if event.kind == "evaluated":
            evaluated.set()

    with anyio.fail_after(20):
        agent = Agent(config, sink=sink, on_event=on_event)
        async with agent, anyio.create_task_group() as tg:
            tg.start_soon(agent.run)
            await evaluated.wait()
            await anyio.sleep(0.1)  # inside the first (slow) publish
            tg.cancel_scope.cancel()
    assert [key.rsplit("|", 1)[1] for key in sink.published] == ["content", "judge", "capability"]
    assert ("vi-capability-auto", "Vi1 @0000300") in ScoredState(config.state_path).load()


@pytest.mark.anyio
async def test_a_refused_publish_is_a_failure_not_a_crash(
    checkpoint_tree: CheckpointTree, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, None, "training")
    config = AgentConfig(**values, filter="vi", one_shot=True)
    sink = _SlowOrFailingSink(config.buffer_path, refuse=True)
    async with Agent(config, sink=sink) as agent:
        summary = await agent.run()
    assert summary.evaluated == 1 and summary.written == summary.buffered == 0
    assert summary.failed == [
        ("Vi1 @0000300", "publishing failed: InfluxDB answered 400: field type conflict")
    ]
    assert not ScoredState(config.state_path).load().pairs  # not scored: tried again later


@pytest.mark.anyio
async def test_a_second_agent_on_the_same_work_dir_is_refused(
    checkpoint_tree: CheckpointTree, tmp_path: Path, server: FakeOpenAIServer
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, None, "training")
    config = AgentConfig(**values, dry_run=True)
    async with Agent(config) as first:
        await first.run()
        lock = (tmp_path / "work" / "agent.lock").read_text()
        assert lock == f"{os.getpid()}\n"  # the holder's PID, for whoever is refused
        for refused in (Agent(config).run(), Agent(config).replay()):
            with pytest.raises(ConfigError) as caught:
                await refused
            message = str(caught.value)
            assert caught.value.field == "work_dir" and "\n" not in message
            assert f"is in use by another goml agent (PID {os.getpid()})" in message
        await first.run()  # the holder itself goes on
    async with Agent(config) as third:  # closing the first one released the work_dir
        assert (await third.run()).would_process


@pytest.mark.anyio
@pytest.mark.parametrize("local_state", ["kept", "lost"])
async def test_rescoring_a_checkpoint_whose_mtime_changed_overwrites_its_points(
    local_state: str,
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    work = tmp_path / "work"
    values = _values(checkpoint_tree, work, server, influxd.url, database)
    async with Agent(AgentConfig(**values, one_shot=True, filter="vi")) as agent:
        assert (await agent.run()).written == 1
    assert _counts(influxd, database) == _expected(["Vi1 @0000300"])
    times = sorted(row["time"] for row in influxd.rows(database, "capability_score"))
    # A copy without -p (or a checkout, an rsync without -t) gives the file a new mtime.
    adapter = checkpoint_tree.path("adapters-vi/0000300_adapters.safetensors")
    copied = adapter.stat().st_mtime + 86_400.0
    os.utime(adapter, (copied, copied))
    if local_state == "lost":  # then the time base is read back from InfluxDB
        shutil.rmtree(work)
    async with Agent(AgentConfig(**values, one_shot=True, force=True, filter="vi")) as agent:
        summary = await agent.run()
    assert (summary.evaluated, summary.written, summary.warnings) == (1, 1, [])
    assert _counts(influxd, database) == _expected(["Vi1 @0000300"])  # overwritten, not doubled
    assert sorted(row["time"] for row in influxd.rows(database, "capability_score")) == times
    base = ScoredState(work / "scored.json").load().time_base("vi-capability-auto", "Vi1 @0000300")
    assert base is not None and base * 10**9 == times[0] != int(copied) * 10**9


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_full_disk_fails_the_checkpoint_and_loses_nothing(
    checkpoint_tree: CheckpointTree,
    small_disk: SmallDisk,
    server: FakeOpenAIServer,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    """ENOSPC while recording a checkpoint, then while buffering its points; then a restart."""
    work = small_disk.path / "work"
    values = _values(checkpoint_tree, work, server, None, database)  # InfluxDB not there yet
    config = AgentConfig(**values, filter="vi")
    pair = ("vi-capability-auto", "Vi1 @0000300")
    phase, failures, done = "start", [], anyio.Event()

    def on_event(event: AgentEvent) -> None:
        nonlocal phase
        if phase == "start" and event.kind == "discovered" and event.done:
            small_disk.fill()  # the time base cannot be recorded
            phase = "state full"
        elif phase == "state full" and event.kind == "evaluated":
            small_disk.fill(leave=4096)  # part of the first batch fits, not all of it
            phase = "buffer full"
        elif event.kind == "failed":
            assert phase in ("state full", "buffer full"), (phase, event.message)
            assert pair not in ScoredState(config.state_path).load()  # never marked scored
            failures.append(event.message)
            small_disk.free()
        elif phase == "buffer full" and event.kind == "published":
            done.set()

    with anyio.fail_after(60):
        async with Agent(config, on_event=on_event) as agent, anyio.create_task_group() as tg:
            tg.start_soon(agent.run)
            await done.wait()
            tg.cancel_scope.cancel()
    assert len(failures) == 2, failures
    assert "cannot record it: cannot write the scored-state file" in failures[0]
    assert "publishing failed: cannot write the Influx buffer" in failures[1]
    assert all("No space left on device" in failure for failure in failures)
    assert pair in ScoredState(config.state_path).load()
    buffered = WriteAheadBuffer(config.buffer_path).records()  # a restart reads it whole
    assert [r.key.rsplit("|", 1)[1] for r in buffered] == ["content", "judge", "capability"]
    # the restart writes every buffered point to InfluxDB, each exactly once
    values["influx_url"] = influxd.url
    async with Agent(AgentConfig(**values, filter="vi", one_shot=True)) as agent:
        summary = await agent.run()
    assert (summary.replayed, summary.evaluated, summary.warnings) == (3, 0, [])
    assert _counts(influxd, database) == _expected(["Vi1 @0000300"])


# -- real processes: kill -9, InfluxDB down, SIGTERM ---------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    import anyio
    from goml_async.agent.config import AgentConfig
    from goml_async.agent.events import make_sink
    from goml_async.agent.loop import Agent
    from goml_async.agent.state import ScoredState

    values, die_at = json.loads(sys.argv[1]), sys.argv[2]

    async def mark(name):
        print("MARK", name, flush=True)
        if name == die_at:
            await anyio.sleep(3600)  # the test kills us here

    class Sink:
        def __init__(self, inner):
            self.inner = inner
        @property
        def pending(self):
            return self.inner.pending
        async def publish(self, points, *, key):
            kind = key.rsplit("|", 1)[1]
            await mark("before-publish:" + kind)
            written = await self.inner.publish(points, key=key)
            await mark("published:" + kind)
            return written
        def __getattr__(self, name):
            return getattr(self.inner, name)

    class State(ScoredState):
        async def add(self, run_id, label):
            await mark("before-state-add")
            added = await super().add(run_id, label)
            await mark("state-added")
            return added

    async def main():
        config = AgentConfig(**values)
        done = anyio.Event()

        async def on_event(event):
            if event.kind == "probe":
                await mark(f"probe:{event.done}")
            elif event.kind == "discovered":
                print("MARK unscored", event.done, flush=True)
                if event.done == 0:
                    done.set()

        sink = make_sink(config)
        agent = Agent(config, sink=Sink(sink), state=State(config.state_path), on_event=on_event)
        async with agent, anyio.create_task_group() as tg:
            tg.start_soon(agent.run)
            await done.wait()
            tg.cancel_scope.cancel()
        await sink.aclose()
        print("MARK finished", flush=True)

    anyio.run(main)
    """
)


def _run_child(values: dict[str, Any], die_at: str, tmp_path: Path) -> list[str]:
    """Run the agent in a process; SIGKILL it when it prints ``MARK {die_at}``.

    Returns the markers it printed. With ``die_at="finished"`` it runs until nothing is
    unscored and exits by itself.
    """
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log = tmp_path / f"child-{die_at.replace(':', '-')}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOML_AGENT_")}
    marks = []
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            [sys.executable, str(script), json.dumps(values), die_at],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
            env=env,
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("MARK "):
                marks.append(line[5:].strip())
                if marks[-1] == die_at and die_at != "finished":
                    process.send_signal(signal.SIGKILL)
                    break
        process.wait(30)
    errors = log.read_text()
    if die_at == "finished":
        assert process.returncode == 0, errors
        assert "Traceback" not in errors, errors
    else:
        assert process.returncode == -signal.SIGKILL, (marks, errors)
    return marks


@pytest.mark.slow
@pytest.mark.parametrize(
    "die_at",
    [
        "probe:5",  # mid-evaluation: nothing published yet
        "before-publish:content",  # evaluated, nothing buffered
        "published:content",  # content in Influx, capability not: re-evaluated, overwritten
        "published:capability",  # all in Influx, not in the state file
        "state-added",  # all done but the event
    ],
)
def test_kill_9_loses_nothing_and_duplicates_nothing(
    die_at: str,
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    values = _values(checkpoint_tree, tmp_path / "work", server, influxd.url, database)
    values["filter"] = "27b"
    marks = _run_child(values, die_at, tmp_path)
    assert marks[-1] == die_at
    finished = _run_child(values, "finished", tmp_path)
    assert finished[-2:] == ["unscored 0", "finished"]
    assert _counts(influxd, database) == _expected(LABELS_27B)
    # a checkpoint killed after its points reached Influx is skipped because Influx has it
    state = ScoredState(tmp_path / "work" / "scored.json").load()
    in_state = {label for _, label in state}
    assert in_state == set(LABELS_27B) - (
        {"G27-v2 @0000100"} if die_at == "published:capability" else set()
    )
    assert not (tmp_path / "work" / "influx_buffer.jsonl").exists()  # all acknowledged


@pytest.mark.slow
def test_kill_9_while_influx_is_down_replays_the_buffer(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    own_influxd: InfluxServer,  # noqa: F811
) -> None:
    database = own_influxd.create_database("training")
    values = _values(checkpoint_tree, tmp_path / "work", server, own_influxd.url, database)
    values["filter"] = "27b"
    own_influxd.stop()
    marks = _run_child(values, "published:capability", tmp_path)  # buffered, not in the state
    assert "probe:23" in marks
    buffered = (tmp_path / "work" / "influx_buffer.jsonl").read_text().splitlines()
    assert len(buffered) == 3  # content, judge, capability: none acknowledged
    own_influxd.start()
    _run_child(values, "finished", tmp_path)
    assert _counts(own_influxd, database) == _expected(LABELS_27B)


@pytest.mark.anyio
@pytest.mark.slow
async def test_influx_stopped_mid_run_is_replayed_on_the_next_pass(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    own_influxd: InfluxServer,  # noqa: F811
) -> None:
    database = own_influxd.create_database("training")
    values = _values(checkpoint_tree, tmp_path / "work", server, own_influxd.url, database)

    def stop_before_publishing(event: AgentEvent) -> None:
        if event.kind == "evaluated" and own_influxd.running:
            own_influxd.stop()

    config = AgentConfig(**values, one_shot=True, force=True)
    async with Agent(config, on_event=stop_before_publishing) as agent:
        summary = await agent.run()
    assert (summary.evaluated, summary.written, summary.buffered) == (4, 0, 4)
    assert len(ScoredState(config.state_path).load()) == 4  # scored: waiting in the buffer
    own_influxd.start()
    assert _counts(own_influxd, database) == _expected([])
    async with Agent(AgentConfig(**values, one_shot=True)) as agent:
        summary = await agent.run()
    assert summary.evaluated == 0 and summary.replayed == 12
    assert _counts(own_influxd, database) == _expected(ALL_LABELS)
    assert not config.buffer_path.exists()


@pytest.mark.slow
def test_a_second_goml_agent_on_the_same_work_dir_is_refused_naming_the_first(
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOML_AGENT_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # both use the default work_dir there
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    for name in [n for n in os.environ if n.startswith("GOML_AGENT_")]:
        monkeypatch.delenv(name)
    flags: dict[str, Any] = {
        "adapter_base": str(checkpoint_tree.root),
        "backend": "http",
        "api_url": server.base_url,
        "judge_url": server.base_url,
        "capability_max_tokens": 4,
        "content_max_tokens": 4,
        "filter": "27b",
        "inter_checkpoint_delay": 0,
    }
    command = [sys.executable, "-m", "goml_async", "agent"]
    for name, value in flags.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    work = AgentConfig(**flags).work_dir  # the same default as the agents compute
    assert work.parent == tmp_path / "cache" / "goml_async" / "agent"
    seen = []
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT, env=env
    ) as first:
        assert first.stderr is not None
        for line in first.stderr:
            seen.append(line)
            if line.startswith("evaluating "):
                break  # it holds the work_dir now
        second = subprocess.run(
            command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
        )
        for line in first.stderr:
            seen.append(line)
            if line.startswith("nothing to score"):
                break  # both checkpoints published; it waits for the next pass
        first.send_signal(signal.SIGTERM)
        _, rest = first.communicate(timeout=30)
    assert first.returncode == 0, "".join(seen) + rest
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"goml: error: work_dir: {str(work)!r} is in use by another goml agent "
        f"(PID {first.pid}); stop it, or set --work-dir (GOML_AGENT_WORK_DIR, or work_dir in "
        "the config file) to a folder of this agent's own"
    ]
    # Only the first agent wrote: each of its 6 batches buffered exactly once, none lost.
    records = WriteAheadBuffer(work / "influx_buffer.jsonl").records()
    keys = [record.key for record in records]
    assert sorted(keys) == sorted(
        f"27b-v2-capability-auto|{label}|{kind}"
        for label in LABELS_27B
        for kind in ("content", "judge", "capability")
    )
    assert len({record.seq for record in records}) == 6
    assert {label for _, label in ScoredState(work / "scored.json").load()} == set(LABELS_27B)
    # Once the first agent is gone, the work_dir is free again.
    again = subprocess.run(
        [*command, "--one-shot"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "0 evaluated, 0 written, 0 buffered, 0 failed" in again.stderr
    assert [r.key for r in WriteAheadBuffer(work / "influx_buffer.jsonl").records()] == keys


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_goml_agent_cleanly(
    signum: signal.Signals,
    checkpoint_tree: CheckpointTree,
    tmp_path: Path,
    influxd: InfluxServer,  # noqa: F811
    database: str,
) -> None:
    slow = Script(tokens=["x"] * 50, token_delay=0.05)
    with FakeOpenAIServer(slow) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOML_AGENT_")}
        command = [
            sys.executable, "-m", "goml_async", "agent",
            "--adapter-base", str(checkpoint_tree.root),
            "--backend", "http", "--api-url", fake.base_url,
            "--influx-url", influxd.url, "--influx-api", "v1", "--influx-db", database,
            "--work-dir", str(tmp_path / "work"), "--inter-checkpoint-delay", "0",
        ]  # fmt: skip
        seen = []
        with subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT, env=env
        ) as process:
            assert process.stderr is not None
            for line in process.stderr:
                seen.append(line)
                if line.startswith("evaluating "):
                    break
            process.send_signal(signum)
            _, err = process.communicate(timeout=30)
    stderr = "".join(seen) + err
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"goml agent: stopped by {signum.name}" in stderr
    assert not ScoredState(tmp_path / "work" / "scored.json").load().pairs
