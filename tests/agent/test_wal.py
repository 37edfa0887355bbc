"""WriteAheadBuffer: durable appends, acks, ordered replay, compaction and torn-line recovery."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goml_async.agent.wal import BufferedRecord, WriteAheadBuffer
from goml_async.errors import SinkError

from .conftest import SmallDisk

pytestmark = pytest.mark.anyio


def _keys(buffer: WriteAheadBuffer) -> list[str]:
    return [record.key for record in buffer.records()]


async def test_append_ack_and_pending_keep_order(tmp_path: Path) -> None:
    buffer = WriteAheadBuffer(tmp_path / "buffer.jsonl")
    assert buffer.pending == 0 and not buffer.path.exists()
    records = [await buffer.append(f"k{i}", [f"m v={i}i {i}"]) for i in range(5)]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert _keys(buffer) == ["k0", "k1", "k2", "k3", "k4"]
    assert await buffer.ack([records[1].seq, records[3].seq]) == 2
    assert _keys(buffer) == ["k0", "k2", "k4"]
    assert await buffer.ack([records[1].seq]) == 0  # acking twice does nothing
    assert buffer.is_pending(records[0].seq) and not buffer.is_pending(records[1].seq)
    reopened = WriteAheadBuffer(buffer.path)
    assert reopened.records() == buffer.records()
    assert reopened.records()[0] == BufferedRecord(1, "k0", ("m v=0i 0",))


async def test_append_is_fsynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "buffer.jsonl"
    events: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        # the bytes are in the file by the time fsync runs
        events.append(f"fsync:{path.read_text().count(chr(10)) if path.exists() else 0}")

    monkeypatch.setattr(os, "fsync", recording_fsync)
    buffer = WriteAheadBuffer(path)
    await buffer.append("a", ["m v=1i 1"])
    events.append("returned a")
    await buffer.append("b", ["m v=2i 2"])
    events.append("returned b")
    # fsync of the file (1 line), then of the new file's folder, then of the second append
    assert events == ["fsync:1", "fsync:1", "returned a", "fsync:2", "returned b"]


async def test_everything_acked_deletes_the_file(tmp_path: Path) -> None:
    buffer = WriteAheadBuffer(tmp_path / "sub" / "buffer.jsonl")
    first = await buffer.append("a", ["m v=1i 1"])
    second = await buffer.append("b", ["m v=2i 2"])
    await buffer.ack([first.seq])
    assert buffer.path.exists()
    await buffer.ack([second.seq])
    assert not buffer.path.exists()
    assert WriteAheadBuffer(buffer.path).pending == 0
    third = await buffer.append("c", ["m v=3i 3"])
    assert third.seq == 3  # sequence numbers never go back within a buffer's life
    assert _keys(WriteAheadBuffer(buffer.path)) == ["c"]


async def test_compaction_keeps_only_pending_records(tmp_path: Path) -> None:
    buffer = WriteAheadBuffer(tmp_path / "buffer.jsonl")
    records = [await buffer.append(f"k{i}", [f"m v={i}i {i}"]) for i in range(6)]
    await buffer.ack([r.seq for r in records[:4]])
    lines_before = buffer.path.read_text().count("\n")
    await buffer.compact()
    entries = [json.loads(line) for line in buffer.path.read_text().splitlines()]
    assert lines_before == 10 and [e["key"] for e in entries] == ["k4", "k5"]
    assert not any("ack" in e for e in entries)
    assert not (tmp_path / "buffer.jsonl.tmp").exists()
    reopened = WriteAheadBuffer(buffer.path)
    assert _keys(reopened) == ["k4", "k5"]
    assert (await reopened.append("k6", ["m v=6i 6"])).seq == 7


async def test_many_acked_records_are_compacted_automatically(tmp_path: Path) -> None:
    buffer = WriteAheadBuffer(tmp_path / "buffer.jsonl")
    keep = await buffer.append("keep", ["m v=0i 0"])
    for i in range(300):
        record = await buffer.append(f"k{i}", [f"m v={i}i {i}"])
        await buffer.ack([record.seq])
    assert buffer.path.read_text().count("\n") < 100
    assert _keys(WriteAheadBuffer(buffer.path)) == ["keep"] and keep.seq == 1


async def test_a_torn_last_line_is_ignored_reported_and_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "buffer.jsonl"
    buffer = WriteAheadBuffer(path)
    await buffer.append("a", ["m v=1i 1"])
    await buffer.append("b", ["m v=2i 2"])
    whole = json.dumps({"seq": 3, "key": "c", "lines": ["m v=3i 3"]})
    with path.open("a") as file:
        file.write(whole[: len(whole) // 2])  # what a kill -9 in the middle of a write leaves
    reopened = WriteAheadBuffer(path)
    with caplog.at_level("WARNING", logger="goml_async.agent.wal"):
        assert _keys(reopened) == ["a", "b"]
    assert reopened.torn == whole[: len(whole) // 2]
    assert "torn last line" in caplog.text
    assert path.read_text().endswith("\n")  # the fragment is cut, so the next append is clean
    await reopened.append("d", ["m v=4i 4"])
    again = WriteAheadBuffer(path)
    assert _keys(again) == ["a", "b", "d"] and again.torn is None


async def test_a_complete_line_without_its_newline_counts_as_torn(tmp_path: Path) -> None:
    path = tmp_path / "buffer.jsonl"
    path.write_text(
        json.dumps({"seq": 1, "key": "a", "lines": ["m v=1i 1"]})
        + "\n"
        + json.dumps({"seq": 2, "key": "b", "lines": ["m v=2i 2"]})
    )
    buffer = WriteAheadBuffer(path)
    assert _keys(buffer) == ["a"] and buffer.torn is not None


async def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "buffer.jsonl"
    path.write_text('{"seq": 1, "key": "a", "lines": []}\nnot json\n{"ack": 1}\n')
    with pytest.raises(SinkError, match=r"line 2 is not valid JSON"):
        WriteAheadBuffer(path).records()
    path.write_text('{"something": "else"}\n')
    with pytest.raises(SinkError, match=r"line 1 is neither a record nor an ack"):
        WriteAheadBuffer(path).records()


async def test_replay_after_reopening_is_ordered_and_stops_at_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "buffer.jsonl"
    buffer = WriteAheadBuffer(path)
    for i in range(4):
        await buffer.append(f"k{i}", [f"m v={i}i {i}"])
    seen: list[str] = []

    async def write_until_k2(record: BufferedRecord) -> bool:
        seen.append(record.key)
        return record.key != "k2"

    reopened = WriteAheadBuffer(path)
    assert await reopened.replay(write_until_k2) == 2
    assert seen == ["k0", "k1", "k2"]
    assert _keys(WriteAheadBuffer(path)) == ["k2", "k3"]

    async def write_all(record: BufferedRecord) -> bool:
        seen.append(record.key)
        return True

    assert await WriteAheadBuffer(path).replay(write_all) == 2
    assert seen[3:] == ["k2", "k3"] and not path.exists()


async def test_replay_leaves_the_record_pending_when_write_raises(tmp_path: Path) -> None:
    buffer = WriteAheadBuffer(tmp_path / "buffer.jsonl")
    await buffer.append("a", ["m v=1i 1"])

    async def broken(record: BufferedRecord) -> bool:
        raise SinkError("refused", status=401)

    with pytest.raises(SinkError):
        await buffer.replay(broken)
    assert _keys(WriteAheadBuffer(buffer.path)) == ["a"]


async def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    buffer = WriteAheadBuffer(tmp_path / "buffer.jsonl")
    big = "x" * 20_000  # bigger than a pipe buffer, so an unserialised write would interleave

    async def append(i: int) -> None:
        await buffer.append(f"task{i}", [f'm s="{big}{i}" {i}'] * 3)

    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(append, i)
    lines = buffer.path.read_text().splitlines()
    assert len(lines) == 20
    entries = [json.loads(line) for line in lines]
    assert sorted(e["seq"] for e in entries) == list(range(1, 21))
    assert {e["key"] for e in entries} == {f"task{i}" for i in range(20)}
    assert len(WriteAheadBuffer(buffer.path).records()) == 20


async def test_an_append_cancelled_while_writing_still_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        import time

        time.sleep(0.2)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    buffer = WriteAheadBuffer(tmp_path / "buffer.jsonl")
    with anyio.move_on_after(0.05) as scope:
        await buffer.append("a", ["m v=1i 1"])  # the write is shielded from the cancellation
    assert scope.cancel_called  # the deadline passed while the append was writing
    assert _keys(buffer) == ["a"] == _keys(WriteAheadBuffer(buffer.path))


async def test_a_full_disk_leaves_the_file_as_it_was_and_loses_nothing(
    small_disk: SmallDisk,
) -> None:
    path = small_disk.path / "work" / "buffer.jsonl"
    buffer = WriteAheadBuffer(path)
    long = "k" * 2500  # acks repeat the key: two of them take more than a page
    first = await buffer.append(f"{long}1", ["m v=1i 1"])
    second = await buffer.append(f"{long}2", ["m v=2i 2"])
    await buffer.append("third", ["m v=3i 3"])
    small_disk.fill(leave=8192)  # room for part of the next record, not all of it
    big = [f'm s="{"x" * 1000}",v={i}i {i}' for i in range(64)]  # about 64 KB
    before = path.read_bytes()
    with pytest.raises(SinkError, match=r"No space left on device \(nothing was added to it\)"):
        await buffer.append("too big", big)
    assert path.read_bytes() == before  # no fragment left to glue the next append onto
    small_disk.fill()  # now not even the acks fit
    with pytest.raises(SinkError, match="No space left"):
        await buffer.ack([first.seq, second.seq])
    assert path.read_bytes() == before
    assert _keys(buffer) == [f"{long}1", f"{long}2", "third"]  # still pending
    small_disk.free()
    await buffer.append("after", big)
    await buffer.ack([first.seq])
    reopened = WriteAheadBuffer(path)  # a restart: every record there, each exactly once
    records = reopened.records()
    assert [r.key for r in records] == [f"{long}2", "third", "after"] and reopened.torn is None
    assert [r.seq for r in records] == [2, 3, 4]  # the failed append used no sequence number
    assert records[2].lines == tuple(big)


async def test_a_failed_write_is_cut_off_before_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If even cutting a failed write off fails, the next append cuts it off first."""
    path = tmp_path / "buffer.jsonl"
    buffer = WriteAheadBuffer(path)
    await buffer.append("a", ["m v=1i 1"])
    before = path.read_bytes()
    real_write, real_ftruncate = os.write, os.ftruncate

    def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    def cannot_cut(fd: int, size: int) -> None:
        if os.fstat(fd).st_size > size:
            raise OSError(5, "Input/output error")
        real_ftruncate(fd, size)

    monkeypatch.setattr(os, "write", half_then_enospc)
    monkeypatch.setattr(os, "ftruncate", cannot_cut)
    with pytest.raises(SinkError, match="No space left"):
        await buffer.append("b", ["m v=2i 2"])
    assert len(path.read_bytes()) > len(before)  # the fragment is still there
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "ftruncate", real_ftruncate)
    await buffer.append("c", ["m v=3i 3"])
    assert _keys(WriteAheadBuffer(path)) == ["a", "c"]


async def test_a_file_changed_by_another_writer_is_refused_not_overwritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "buffer.jsonl"
    mine, other = WriteAheadBuffer(path), WriteAheadBuffer(path)
    await mine.append("a", ["m v=1i 1"])
    await other.append("b", ["m v=2i 2"])  # a second writer (the agent's lock prevents it)
    before = path.read_bytes()
    with pytest.raises(SinkError, match="something else changed it"):
        await mine.append("c", ["m v=3i 3"])
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "line",
    [
        '{"ack": true}',  # JSON true is a Python bool, and a bool is an int
        '{"ack": 1.0}',
        '{"ack": "1"}',
        '{"ack": 0}',
        '{"ack": 1, "key": 5}',
        '{"ack": 1, "seq": 2, "key": "b", "lines": []}',
        '{"seq": true, "key": "b", "lines": []}',
        '{"seq": 2, "key": "b", "lines": [], "extra": 1}',
        '{"seq": 2, "key": "b", "lines": ["x"], "at": 5}',
        '{"seq": -2, "key": "b", "lines": []}',
    ],
)
async def test_a_line_of_the_wrong_types_is_corruption_not_an_ack(
    tmp_path: Path, line: str
) -> None:
    path = tmp_path / "buffer.jsonl"
    path.write_text(json.dumps({"seq": 1, "key": "a", "lines": ["m v=1i 1"]}) + "\n" + line + "\n")
    with pytest.raises(SinkError, match=r"line 2 is neither a record nor an ack"):
        WriteAheadBuffer(path).records()


async def test_a_single_string_is_not_a_list_of_lines(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="sequence of line-protocol strings"):
        await WriteAheadBuffer(tmp_path / "b.jsonl").append("a", "m v=1i 1")


# -- property: pending == appended - acked, in order, whatever happens ---------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("reopen"), st.just(0)),
        st.tuples(st.just("compact"), st.just(0)),
        st.tuples(st.just("tear"), st.integers(1, 40)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_pending_is_appended_minus_acked_in_order(ops: list[tuple[str, int]]) -> None:
    async def run(folder: str) -> None:
        path = Path(folder) / "buffer.jsonl"
        buffer = WriteAheadBuffer(path)
        model: list[tuple[int, str, tuple[str, ...]]] = []
        counter = 0
        for op, arg in ops:
            if op == "append":
                counter += 1
                lines = tuple(f"m v={counter}i {counter}" for _ in range(arg))
                record = await buffer.append(f"k{counter}", lines)
                model.append((record.seq, record.key, lines))
            elif op == "ack" and model:
                seq = model[arg % len(model)][0]
                assert await buffer.ack([seq]) == 1
                model = [entry for entry in model if entry[0] != seq]
            elif op == "reopen":
                buffer = WriteAheadBuffer(path)
            elif op == "compact":
                await buffer.compact()
            elif op == "tear" and path.exists():
                with path.open("a") as file:  # a crash mid-append: never acknowledged
                    file.write('{"seq": 999, "key": "torn", "lines": ["m v=1'[:arg])
                buffer = WriteAheadBuffer(path)
            expected = [BufferedRecord(seq, key, lines) for seq, key, lines in model]
            assert buffer.records() == expected
            assert buffer.pending == len(model)
        assert WriteAheadBuffer(path).records() == [
            BufferedRecord(seq, key, lines) for seq, key, lines in model
        ]

    with tempfile.TemporaryDirectory() as folder:
        anyio.run(run, folder)
