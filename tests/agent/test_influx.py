"""InfluxSink against a real InfluxDB 1.x (v1 API) and a checking v2 write endpoint.

The v1 tests run Debian's influxd 1.6.7 on loopback (see ``influxd.py``) under asyncio and trio
(the v1 path is httpx only). The v2 tests run on asyncio only: influxdb-client's
``InfluxDBClientAsync`` is built on aiohttp, which needs asyncio; under trio the sink refuses the
v2 path with a clear error (tested too). influxd 1.6 has no ``/api/v2`` endpoints, so the v2
path is checked against :class:`V2Endpoint`, which validates every line as InfluxDB does and can
forward to the real influxd so the points are read back with InfluxQL.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from goml_async.agent._influx_wire import (
    REJECTED_DATA,
    Unavailable,
    influxql_pairs,
    pack,
    raise_for_status,
    sql_pairs,
)
from goml_async.agent.influx import InfluxSink
from goml_async.agent.points import capability_points, content_points, judge_points
from goml_async.agent.types import FieldValue, Point
from goml_async.agent.wal import BufferedRecord, WriteAheadBuffer
from goml_async.errors import BackendUnavailable, ConfigError, NotSupported, SinkError

from .influxd import InfluxServer, V2Endpoint, free_port, influxd, own_influxd, v2_endpoint
from .test_points import CHECKPOINT, CONTENT, GO_ML_FIELD_TYPES, RESULT

#: The fixtures this module uses (imported so that pytest finds them here).
FIXTURES = (influxd, own_influxd, v2_endpoint)

pytestmark = pytest.mark.anyio

T0 = 1_750_000_000_000_000_000
RUN = "gemma3-27b-v2-capability-auto"
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def new_db(server: InfluxServer) -> str:
    return server.create_database(f"t_{uuid.uuid4().hex[:10]}")


def v1_sink(server: InfluxServer | str, db: str, tmp_path: Path, **options: Any) -> InfluxSink:
    url = server if isinstance(server, str) else server.url
    return InfluxSink(
        url, api="v1", database=db, buffer_path=tmp_path / "influx_buffer.jsonl", **options
    )


def score_points(label: str, n: int = 3, *, run_id: str = RUN, t0: int = T0) -> list[Point]:
    return [
        Point(
            "capability_score",
            {"model": "gemma-3-27b", "run_id": run_id, "label": label, "category": f"cat{i}"},
            {"accuracy": 50.5 + i, "correct": i, "total": 23, "iteration": 100},
            t0 + i,
        )
        for i in range(n)
    ]


# -- v1 against the real influxd ------------------------------------------------------------------


@pytest.mark.slow
async def test_v1_points_read_back_exactly(influxd: InfluxServer, tmp_path: Path) -> None:
    db = new_db(influxd)
    tags = {
        "run_id": "run with spaces, commas=and equals",
        "label": 'G27 @0000100 "quoted"',
        "model": "gemma-3-27b",
    }
    fields: dict[str, FieldValue] = {
        "text": 'she said "hi", then left\\back',
        "count": 42,
        "negative": -7,
        "ratio": 0.125,
        "passed": True,
        "failed": False,
    }
    async with v1_sink(influxd, db, tmp_path) as sink:
        assert await sink.publish([Point("probe_score", tags, fields, T0)], key="one") is True
        assert sink.pending == 0 and sink.written == 1
    rows = influxd.rows(db, "probe_score")
    assert rows == [{"time": T0, **tags, **fields}]
    kinds = influxd.query('SHOW FIELD KEYS FROM "probe_score"', db)["results"][0]["series"][0]
    assert dict(kinds["values"]) == {
        "text": "string",
        "count": "integer",
        "negative": "integer",
        "ratio": "float",
        "passed": "boolean",
        "failed": "boolean",
    }
    assert not sink.buffer.path.exists()  # everything acknowledged: the buffer is gone


@pytest.mark.slow
async def test_v1_points_without_time_get_one_fixed_in_the_buffer(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = new_db(influxd)
    async with v1_sink(influxd, db, tmp_path) as sink:
        await sink.publish([Point("m", {"k": "v"}, {"x": 1})], key="untimed")
        await sink.buffer.append("again", [sink_line(influxd, db)])
        await sink.replay()  # the same line again: same time, so no second point
    assert influxd.count(db, "m") == 1


def sink_line(server: InfluxServer, db: str) -> str:
    """The stored point of measurement m, as line protocol with its time."""
    (row,) = server.rows(db, "m")
    return f"m,k={row['k']} x={row['x']}i {row['time']}"


@pytest.mark.slow
async def test_v1_batches(influxd: InfluxServer, tmp_path: Path) -> None:
    db = new_db(influxd)
    async with v1_sink(influxd, db, tmp_path, batch_size=2) as sink:
        before = influxd.write_requests()
        assert await sink.publish(score_points("L1", 5), key="five") is True
        assert influxd.write_requests() - before == 3  # 2 + 2 + 1 lines
    assert influxd.count(db, "capability_score") == 5


@pytest.mark.slow
async def test_v1_replay_packs_small_records_into_one_request(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = new_db(influxd)
    async with v1_sink(influxd, db, tmp_path, batch_size=5) as sink:
        for i in range(3):
            lines = [p.to_line() for p in score_points(f"L{i}", 2, t0=T0 + 10 * i)]
            await sink.buffer.append(f"r{i}", lines)
        before = influxd.write_requests()
        assert await sink.replay() == 3
        assert influxd.write_requests() - before == 2  # 2+2 lines, then 2
    assert influxd.count(db, "capability_score") == 6


@pytest.mark.slow
async def test_v1_publishing_twice_and_replaying_do_not_duplicate(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = new_db(influxd)
    points = score_points("G27 @0000100", 4)
    async with v1_sink(influxd, db, tmp_path) as sink:
        assert await sink.publish(points, key="cp") is True
        assert await sink.publish(points, key="cp") is True
        # A crash after the write but before the ack leaves an already-written record pending.
        await sink.buffer.append("cp", [p.to_line() for p in points])
        assert sink.pending == 1
        assert await sink.replay() == 1
        assert await sink.replay() == 0
    assert influxd.count(db, "capability_score") == 4


@pytest.mark.slow
async def test_v1_scored_labels_with_influxql(influxd: InfluxServer, tmp_path: Path) -> None:
    db = new_db(influxd)
    async with v1_sink(influxd, db, tmp_path) as sink:
        assert await sink.scored_labels() == set()  # no measurement yet
        await sink.publish(score_points("G27 @0000100"), key="a")
        await sink.publish(score_points("G27 @0000200", t0=T0 + 100), key="b")
        await sink.publish(score_points("odd, label=x", run_id="other run"), key="c")
        content = [Point("content_score", {"run_id": "c-run", "label": "X"}, {"score": 1}, T0)]
        await sink.publish(content, key="d")
        assert await sink.scored_labels() == {
            (RUN, "G27 @0000100"),
            (RUN, "G27 @0000200"),
            ("other run", "odd, label=x"),
        }
        assert await sink.scored_labels("content_score") == {("c-run", "X")}
        shown = await sink.query_influxql("SHOW MEASUREMENTS")
        assert shown["results"][0]["series"][0]["values"] == [
            ["capability_score"],
            ["content_score"],
        ]
        with pytest.raises(SinkError, match="error parsing query") as caught:
            await sink.query_influxql("SELEKT nonsense")
        assert caught.value.status == 400
    async with v1_sink(influxd, "no_such_db", tmp_path) as sink:
        assert await sink.scored_labels() == set()


def overall_point(label: str, time_ns: int, *, run_id: str = RUN) -> Point:
    tags = {"model": "gemma-3-27b", "run_id": run_id, "label": label, "category": "overall"}
    return Point("capability_score", tags, {"accuracy": 50.0, "iteration": 100}, time_ns)


@pytest.mark.slow
async def test_v1_scored_times_with_influxql(influxd: InfluxServer, tmp_path: Path) -> None:
    db = new_db(influxd)
    async with v1_sink(influxd, db, tmp_path) as sink:
        assert await sink.scored_times() == {}  # no measurement yet
        await sink.publish(score_points("G27 @0000100"), key="categories only")
        await sink.publish([overall_point("G27 @0000100", T0 + 10**9)], key="a")
        await sink.publish([overall_point("G27 @0000100", T0)], key="a earlier")
        await sink.publish([overall_point("odd, label=x", T0 + 5, run_id="r 2")], key="b")
        assert await sink.scored_times() == {
            (RUN, "G27 @0000100"): T0,  # the earliest overall point
            ("r 2", "odd, label=x"): T0 + 5,
        }
    async with v1_sink(influxd, "no_such_db", tmp_path) as sink:
        assert await sink.scored_times() == {}


@ASYNCIO_ONLY
async def test_scored_times_with_sql(v2_endpoint: V2Endpoint, tmp_path: Path) -> None:
    """The same through ``/api/v3/query_sql`` (a fake InfluxDB 3.x: none exists here)."""
    async with v2_sink(v2_endpoint, tmp_path, query="sql", database="training") as sink:
        await sink.publish([overall_point("G27 @0000100", T0 + 7)], key="a")
        await sink.publish([overall_point("G27 @0000100", T0 + 3)], key="a earlier")
        await sink.publish(score_points("G27 @0000200"), key="categories only")
        assert await sink.scored_times() == {(RUN, "G27 @0000100"): T0 + 3}
    assert v2_endpoint.sql_queries[-1]["q"] == (
        "SELECT run_id, label, time FROM \"capability_score\" WHERE category = 'overall'"
    )


@pytest.mark.slow
async def test_goml_points_go_into_a_database_go_ml_filled(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    """go-ml's agent wrote ``score=%d`` (a float field) and ``%.2f`` judge scores: no conflict."""
    db = new_db(influxd)
    go_ml_time = (1_739_577_600 + 100 * 1000) * 10**9  # EpochBase + iteration * 1000 s
    tags = r"label=G27-v2\ @0000100,model=gemma-3-27b"
    go_ml_lines = [
        f"capability_score,category=overall,{tags},run_id=27b-v2-capability-auto "
        f"accuracy=66.7,correct=2i,total=3i,iteration=100i {go_ml_time}",
        f"probe_score,{tags},probe_id=math_01,run_id=27b-v2-capability-auto "
        f"passed=1i,iteration=100i {go_ml_time + 100 * 10**9}",
        f"capability_judge,category=arithmetic,{tags},probe_id=math_01,"
        "run_id=27b-v2-capability-auto reasoning=7.00,correctness=8.50,clarity=6.00,avg=7.17,"
        f"iteration=100i {go_ml_time}",
        f"content_score,dimension=ccp_compliance,has_kernel=true,{tags},"
        f"run_id=27b-v2-content-auto score=4,iteration=100i {go_ml_time}",
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        written = await client.post(
            f"{influxd.url}/write", params={"db": db}, content="\n".join(go_ml_lines)
        )
    assert written.status_code == 204, written.text
    # goml_async's points for the next checkpoint of the same run, in the same shard (week)
    checkpoint = replace(CHECKPOINT, label="G27-v2 @0000200", iteration=200, mtime=go_ml_time / 1e9)
    points = [
        *capability_points(checkpoint, RESULT),
        *judge_points(checkpoint, RESULT),
        *content_points(checkpoint, CONTENT),
    ]
    async with v1_sink(influxd, db, tmp_path) as sink:
        assert await sink.publish(points, key="goml") is True  # no 400 field type conflict
        assert sink.rejected == 0
    stored = {"float": float, "integer": int}
    for measurement, types in GO_ML_FIELD_TYPES.items():
        answer = influxd.query(f'SHOW FIELD KEYS FROM "{measurement}"', db)
        fields = answer["results"][0]["series"][0]["values"]
        assert {name: stored[kind] for name, kind in fields} == types, measurement
    assert influxd.count(db, "content_score") == 1 + len(content_points(checkpoint, CONTENT))


@pytest.mark.slow
async def test_v1_influx_stopped_mid_run(own_influxd: InfluxServer, tmp_path: Path) -> None:
    db = new_db(own_influxd)
    batches = 4
    async with v1_sink(own_influxd, db, tmp_path, timeout=2) as sink:
        assert await sink.publish(score_points("before", 3), key="before") is True
        own_influxd.stop()
        for i in range(batches):
            published = await sink.publish(score_points(f"L{i}", 3, t0=T0 + 10 * i), key=f"b{i}")
            assert published is False
        assert sink.pending == batches and sink.failures == batches
        assert "unavailable" in (sink.last_error or "")
        with pytest.raises(SinkError, match="unavailable"):
            await sink.scored_labels()
        assert await sink.replay() == 0  # still down: nothing lost, nothing written
        assert [r.key for r in WriteAheadBuffer(sink.buffer.path).records()] == [
            f"b{i}" for i in range(batches)
        ]
        own_influxd.start()
        assert await sink.replay() == batches
        assert sink.pending == 0
    assert own_influxd.count(db, "capability_score") == 3 + 3 * batches
    assert not sink.buffer.path.exists()


@pytest.mark.slow
async def test_v1_refused_data_is_a_sink_error_and_set_aside(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = new_db(influxd)
    async with v1_sink(influxd, db, tmp_path) as sink:
        await sink.publish([Point("m", {"k": "a"}, {"x": 1.5}, T0)], key="float")
        conflict = [Point("m", {"k": "b"}, {"x": "now a string"}, T0)]
        with pytest.raises(SinkError, match="field type conflict") as caught:
            await sink.publish(conflict, key="conflict")
        assert caught.value.status == 400
        assert sink.pending == 0 and sink.rejected == 1  # not buffered forever
        (kept,) = [json.loads(line) for line in sink.rejected_path.read_text().splitlines()]
        assert kept["key"] == "conflict" and kept["status"] == 400
        assert kept["lines"] == [conflict[0].to_line()]
        assert await sink.publish([Point("m", {"k": "c"}, {"x": 2.5}, T0)], key="next") is True
    assert influxd.count(db, "m") == 2


@pytest.mark.slow
async def test_v1_a_refused_record_among_pending_ones_is_found(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = new_db(influxd)
    async with v1_sink(influxd, db, tmp_path) as sink:
        await sink.publish([Point("m", {"k": "a"}, {"x": 1.5}, T0)], key="float")
        await sink.buffer.append("ok1", ["m,k=b x=2.5 1"])
        await sink.buffer.append("bad", ['m,k=c x="text" 2'])
        await sink.buffer.append("ok2", ["m,k=d x=3.5 3"])
        with pytest.raises(SinkError, match="field type conflict"):
            await sink.replay()  # one request for all three, then one by one to find "bad"
        assert [r.key for r in sink.buffer.records()] == ["ok2"]
        assert await sink.replay() == 1
    assert sorted(row["k"] for row in influxd.rows(db, "m")) == ["a", "b", "d"]


@pytest.mark.slow
async def test_v1_missing_database_is_an_error_that_keeps_the_record(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = f"t_{uuid.uuid4().hex[:10]}"
    async with v1_sink(influxd, db, tmp_path) as sink:
        with pytest.raises(SinkError, match="database not found") as caught:
            await sink.publish(score_points("L"), key="early")
        assert caught.value.status == 404 and sink.pending == 1
        influxd.create_database(db)
        assert await sink.replay() == 1
    assert influxd.count(db, "capability_score") == 3


@pytest.mark.slow
async def test_sink_survives_kill_9_without_loss_or_duplicates(
    own_influxd: InfluxServer, tmp_path: Path
) -> None:
    """A publisher killed at a random moment, three times, with InfluxDB down all along."""
    db = new_db(own_influxd)
    own_influxd.stop()
    buffer = tmp_path / "influx_buffer.jsonl"
    rng = random.Random()
    expected: list[str] = []
    for round_ in range(3):
        pad = 300_000 if round_ == 1 else 0  # big records: a kill mid-write tears the line
        returned = _publish_until_killed(own_influxd.url, db, buffer, f"r{round_}", rng, pad)
        keys = [record.key for record in WriteAheadBuffer(buffer).records()]
        assert keys[: len(expected)] == expected  # earlier rounds untouched
        this_round = keys[len(expected) :]
        # every publish that returned is pending; at most the one in flight is there too
        assert this_round[: len(returned)] == returned
        assert len(this_round) - len(returned) in (0, 1)
        assert this_round == [f"r{round_}-{i}" for i in range(len(this_round))]
        expected = keys
    own_influxd.start()
    async with v1_sink(own_influxd, db, tmp_path) as sink:
        assert sink.pending == len(expected)
        assert await sink.replay() == len(expected)
    assert own_influxd.count(db, "kill_test") == 3 * len(expected)


def _publish_until_killed(
    url: str, db: str, buffer: Path, prefix: str, rng: random.Random, pad: int = 0
) -> list[str]:
    """Run the publisher, SIGKILL it at a random moment; the keys whose publish returned."""
    child = subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, url, db, str(buffer), prefix, str(pad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    with child, child.stdout, child.stderr:
        printed = ""
        for _ in range(rng.randint(3, 25)):
            line = child.stdout.readline()
            assert line, child.stderr.read()
            printed += line
        time.sleep(rng.uniform(0, 0.05))
        child.kill()
        child.wait()
        printed += child.stdout.read()
    # a line is printed only after its publish returned; a cut-off last line does not count
    return [line.split()[0] for line in printed.splitlines(keepends=True) if line.endswith("\n")]


_PUBLISHER = """
import sys
import anyio
from goml_async.agent.influx import InfluxSink
from goml_async.agent.points import capability_points, content_points, judge_points
from goml_async.agent.types import FieldValue, Point

url, db, buffer, prefix, pad = sys.argv[1:]

async def main():
    async with InfluxSink(url, api="v1", database=db, buffer_path=buffer, timeout=2) as sink:
        i = 0
        while True:
            tags = {"round": prefix, "record": str(i)}
            fields = {"n": 0, "pad": "x" * int(pad)}  # big records make a torn write likelier
            points = [
                Point("kill_test", tags, {**fields, "n": j}, 10**18 + i * 1000 + j)
                for j in range(3)
            ]
            if await sink.publish(points, key=f"{prefix}-{i}"):
                raise SystemExit("InfluxDB was supposed to be down")
            print(f"{prefix}-{i} buffered", flush=True)
            i += 1

anyio.run(main)
"""


# -- v2 against the checking endpoint (asyncio only: influxdb-client needs aiohttp) --------------


def v2_sink(endpoint: V2Endpoint, tmp_path: Path, **options: Any) -> InfluxSink:
    settings: dict[str, Any] = {
        "api": "v2",
        "org": endpoint.org,
        "bucket": endpoint.bucket,
        "token": endpoint.token,
        "buffer_path": tmp_path / "influx_buffer.jsonl",
    }
    settings.update(options)
    return InfluxSink(endpoint.url, **settings)


@ASYNCIO_ONLY
async def test_v2_lines_arrive_valid_with_precision_token_org_and_bucket(
    v2_endpoint: V2Endpoint, tmp_path: Path
) -> None:
    tags = {"label": 'G27 @0000100 "q"', "run_id": "a b,c=d"}
    fields: dict[str, FieldValue] = {
        "accuracy": 91.5,
        "correct": 21,
        "note": 'said "hi" \\o/',
        "ok": True,
    }
    async with v2_sink(v2_endpoint, tmp_path) as sink:
        assert await sink.publish([Point("capability_score", tags, fields, T0)], key="k") is True
        assert sink.pending == 0
    (request,) = v2_endpoint.requests
    assert request.status == 204
    assert request.params == {"org": "test-org", "bucket": "training", "precision": "ns"}
    assert request.headers["authorization"] == "Token test-token"
    (point,) = v2_endpoint.points
    assert (point.measurement, point.tags, point.fields, point.time_ns) == (
        "capability_score",
        tags,
        fields,
        T0,
    )


@ASYNCIO_ONLY
async def test_v2_batches(v2_endpoint: V2Endpoint, tmp_path: Path) -> None:
    async with v2_sink(v2_endpoint, tmp_path, batch_size=2) as sink:
        assert await sink.publish(score_points("L", 5), key="five") is True
    assert [len(r.lines) for r in v2_endpoint.requests] == [2, 2, 1]
    assert [p.time_ns for p in v2_endpoint.points] == [T0 + i for i in range(5)]


@ASYNCIO_ONLY
async def test_v2_unavailable_then_replayed(v2_endpoint: V2Endpoint, tmp_path: Path) -> None:
    async with v2_sink(v2_endpoint, tmp_path) as sink:
        v2_endpoint.fail_with = 503
        assert await sink.publish(score_points("A"), key="a") is False
        assert await sink.publish(score_points("B", t0=T0 + 10), key="b") is False
        assert sink.pending == 2 and "503" in (sink.last_error or "")
        v2_endpoint.fail_with = None
        assert await sink.replay() == 2
    assert len(v2_endpoint.points) == 6


@ASYNCIO_ONLY
async def test_v2_server_down_is_buffered(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with InfluxSink(url, buffer_path=tmp_path / "b.jsonl", timeout=2) as sink:
        assert await sink.publish(score_points("A"), key="a") is False
        assert sink.pending == 1 and "unavailable" in (sink.last_error or "")


@ASYNCIO_ONLY
async def test_v2_bad_line_is_refused_with_400_and_set_aside(
    v2_endpoint: V2Endpoint, tmp_path: Path
) -> None:
    async with v2_sink(v2_endpoint, tmp_path) as sink:
        await sink.buffer.append("broken", ["m,tag=unescaped space x=1i 1"])
        with pytest.raises(SinkError, match="unable to parse") as caught:
            await sink.replay()
        assert caught.value.status == 400 and sink.pending == 0 and sink.rejected == 1
    assert v2_endpoint.points == []


@ASYNCIO_ONLY
async def test_v2_wrong_token_is_an_error_that_keeps_the_record(
    v2_endpoint: V2Endpoint, tmp_path: Path
) -> None:
    async with v2_sink(v2_endpoint, tmp_path, token="wrong") as sink:
        with pytest.raises(SinkError, match="check the token") as caught:
            await sink.publish(score_points("A"), key="a")
        assert caught.value.status == 401 and sink.pending == 1
    async with v2_sink(v2_endpoint, tmp_path) as sink:
        assert await sink.replay() == 1


@pytest.mark.slow
@ASYNCIO_ONLY
async def test_v2_into_real_influxd_through_the_endpoint(
    influxd: InfluxServer, tmp_path: Path
) -> None:
    db = new_db(influxd)
    endpoint = V2Endpoint(bucket=db, upstream=influxd.url).start()
    try:
        async with v2_sink(endpoint, tmp_path, database=db) as sink:
            assert await sink.publish(score_points("G27 @0000100"), key="a") is True
            assert await sink.scored_labels() == {(RUN, "G27 @0000100")}  # InfluxQL via /query
    finally:
        endpoint.stop()
    rows = influxd.rows(db, "capability_score")
    assert [(r["time"], r["category"], r["correct"]) for r in rows] == [
        (T0 + i, f"cat{i}", i) for i in range(3)
    ]


@ASYNCIO_ONLY
async def test_scored_labels_with_sql(v2_endpoint: V2Endpoint, tmp_path: Path) -> None:
    """SQL reads go to ``/api/v3/query_sql`` (InfluxDB 3.x).

    No real InfluxDB 3.x server exists in this environment, so the endpoint is a fake that
    answers the one query the sink sends, from the points written to it.
    """
    async with v2_sink(v2_endpoint, tmp_path, query="sql", database="training") as sink:
        await sink.publish(score_points("G27 @0000100"), key="a")
        await sink.publish(score_points("G27, @200", run_id="r2"), key="b")
        assert await sink.scored_labels() == {(RUN, "G27 @0000100"), ("r2", "G27, @200")}
    assert v2_endpoint.sql_queries[0] == {
        "db": "training",
        "q": 'SELECT DISTINCT run_id, label FROM "capability_score"',
        "format": "json",
    }
    async with v2_sink(v2_endpoint, tmp_path, query="sql", token="wrong") as sink:
        with pytest.raises(SinkError) as caught:
            await sink.scored_labels()
        assert caught.value.status == 401


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_v2_under_trio_is_a_clear_error(tmp_path: Path) -> None:
    sink = InfluxSink("http://127.0.0.1:1", buffer_path=tmp_path / "b.jsonl")
    with pytest.raises(NotSupported, match="asyncio only; under trio use api='v1'"):
        await sink.publish(score_points("A"), key="a")
    assert sink.pending == 0  # refused before anything was buffered
    with pytest.raises(NotSupported):
        async with sink:
            pass
    await sink.aclose()


@ASYNCIO_ONLY
async def test_v2_without_influxdb_client_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "influxdb_client", None)
    sink = InfluxSink("http://127.0.0.1:1", buffer_path=tmp_path / "b.jsonl")
    with pytest.raises(BackendUnavailable, match=r"pip install 'goml_async\[influx\]'"):
        await sink.publish(score_points("A"), key="a")
    await sink.aclose()


# -- no server needed -----------------------------------------------------------------------------


async def test_without_a_url_everything_stays_buffered(tmp_path: Path) -> None:
    async with InfluxSink(None, buffer_path=tmp_path / "b.jsonl") as sink:
        assert await sink.publish(score_points("A"), key="a") is False
        assert await sink.replay() == 0
        assert await sink.scored_labels() == set()
        assert sink.pending == 1
        assert await sink.publish([], key="nothing") is True and sink.pending == 1
        with pytest.raises(SinkError, match="no URL"):
            await sink.query_influxql("SHOW DATABASES")


async def test_a_closed_sink_refuses_work(tmp_path: Path) -> None:
    sink = InfluxSink("http://127.0.0.1:1", api="v1", buffer_path=tmp_path / "b.jsonl")
    await sink.aclose()
    await sink.aclose()  # idempotent
    with pytest.raises(SinkError, match="closed"):
        await sink.publish(score_points("A"), key="a")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"api": "v3"}, "api"),
        ({"query": "flux"}, "query"),
        ({"batch_size": 0}, "batch_size"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_options_name_the_field(tmp_path: Path, options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        InfluxSink("http://127.0.0.1:1", buffer_path=tmp_path / "b.jsonl", **options)
    with pytest.raises(ConfigError, match=r"^url:"):
        InfluxSink("127.0.0.1:8086", buffer_path=tmp_path / "b.jsonl")


# -- the sans-I/O decisions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, "refused"),
        (413, "refused"),
        (422, "refused"),
        (401, "error"),
        (403, "error"),
        (404, "error"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
    ],
)
def test_answers_are_classified(status: int, outcome: str) -> None:
    body = '{"code": "invalid", "message": "what went wrong"}'
    if outcome == "retry":
        with pytest.raises(Unavailable, match=f"{status} at here: what went wrong"):
            raise_for_status(status, body, "here")
        return
    with pytest.raises(SinkError, match="what went wrong") as caught:
        raise_for_status(status, body, "here")
    assert caught.value.status == status
    assert (status in REJECTED_DATA) is (outcome == "refused")


def test_records_are_packed_by_lines_and_bytes() -> None:
    queue = [BufferedRecord(i, f"k{i}", ("x" * 10,) * 2) for i in range(1, 6)]
    assert [r.seq for r in pack(queue, 0, max_lines=5)] == [1, 2]
    assert [r.seq for r in pack(queue, 3, max_lines=100)] == [4, 5]
    assert [r.seq for r in pack(queue, 0, max_lines=100, max_bytes=50)] == [1, 2]
    big = [BufferedRecord(1, "big", ("x",) * 10), *queue]
    assert [r.seq for r in pack(big, 0, max_lines=3)] == [1]  # a big record goes alone


def test_influxql_answers_are_read() -> None:
    answer = {
        "results": [
            {
                "statement_id": 0,
                "series": [
                    {"name": "m", "tags": {"run_id": "r", "label": "a b"}, "values": [[0, 3]]},
                    {"name": "m", "tags": {"run_id": "r", "label": ""}, "values": [[0, 1]]},
                ],
            }
        ]
    }
    assert influxql_pairs(answer) == {("r", "a b")}
    assert influxql_pairs({"results": [{"statement_id": 0}]}) == set()
    assert influxql_pairs({"results": [{"error": 'database not found: "x"'}]}) == set()
    with pytest.raises(SinkError, match="InfluxQL query failed: error parsing query"):
        influxql_pairs({"results": [{"error": "error parsing query"}]})
    with pytest.raises(SinkError, match="expected an object"):
        influxql_pairs([])
    assert sql_pairs([{"run_id": "r", "label": "l"}, {"run_id": "r"}]) == {("r", "l")}
    with pytest.raises(SinkError, match="expected a list of rows"):
        sql_pairs({"error": "x"})
