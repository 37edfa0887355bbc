"""ScoredState: atomic, durable, reloadable, and loud about a corrupt file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from goml_async.agent.state import ScoredState
from goml_async.errors import SinkError

pytestmark = pytest.mark.anyio

RUN = "gemma3-27b-v2-capability-auto"


async def test_a_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    state = ScoredState(tmp_path / "scored.json")
    assert len(state) == 0 and (RUN, "G27 @0000100") not in state
    assert not state.path.exists()


async def test_add_is_durable_and_reloads(tmp_path: Path) -> None:
    state = ScoredState(tmp_path / "work" / "scored.json")
    assert await state.add(RUN, "G27 @0000100") is True
    assert await state.add(RUN, "G27 @0000100") is False
    assert await state.add(RUN, "G27, odd = label") is True
    assert (RUN, "G27 @0000100") in state
    reloaded = ScoredState(state.path)
    assert reloaded.pairs == {(RUN, "G27 @0000100"), (RUN, "G27, odd = label")}
    assert list(reloaded) == sorted(reloaded.pairs)
    data = json.loads(state.path.read_text())
    assert data["version"] == 2 and [RUN, "G27 @0000100"] in data["scored"]


async def test_time_bases_are_durable_and_kept_apart_from_the_scored_set(tmp_path: Path) -> None:
    state = ScoredState(tmp_path / "scored.json")
    assert state.time_base(RUN, "a") is None
    await state.set_time_base(RUN, "a", 1_750_000_100)
    await state.set_time_base(RUN, "b", 1_750_000_200)
    await state.add(RUN, "a")
    reloaded = ScoredState(state.path)
    assert reloaded.time_base(RUN, "a") == 1_750_000_100
    assert reloaded.time_base(RUN, "b") == 1_750_000_200
    assert reloaded.pairs == {(RUN, "a")}  # a time base alone does not mean scored
    data = json.loads(state.path.read_text())
    assert data["time_bases"] == [[RUN, "a", 1_750_000_100], [RUN, "b", 1_750_000_200]]
    with pytest.raises(TypeError, match="whole Unix seconds"):
        await state.set_time_base(RUN, "c", 1.5)  # type: ignore[arg-type]


async def test_a_version_1_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "scored.json"
    path.write_text(json.dumps({"version": 1, "scored": [[RUN, "a"]]}))
    state = ScoredState(path)
    assert state.pairs == {(RUN, "a")} and state.time_base(RUN, "a") is None
    await state.set_time_base(RUN, "a", 5)
    assert json.loads(path.read_text()) == {
        "version": 2,
        "scored": [[RUN, "a"]],
        "time_bases": [[RUN, "a", 5]],
    }


async def test_load_rereads_the_file(tmp_path: Path) -> None:
    first, second = ScoredState(tmp_path / "s.json"), ScoredState(tmp_path / "s.json")
    assert len(second) == 0
    await first.add(RUN, "a")
    assert len(second) == 0  # a snapshot until reloaded
    assert (RUN, "a") in second.load()


async def test_add_many_writes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    real_replace = os.replace

    def counting_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        writes.append(1)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", counting_replace)
    state = ScoredState(tmp_path / "s.json")
    assert await state.add_many([(RUN, "a"), (RUN, "b"), (RUN, "a")]) == 2
    assert await state.add_many([(RUN, "a")]) == 0
    assert writes == [1]


async def test_writes_are_atomic_temp_fsync_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        assert json.loads(Path(src).read_text())["scored"] == [[RUN, "a"]]
        events.append(f"replace {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    await ScoredState(path).add(RUN, "a")
    assert events == ["fsync", "replace s.json.tmp -> s.json", "fsync"]  # file, rename, folder
    assert sorted(os.listdir(tmp_path)) == ["s.json"]


async def test_a_failed_write_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ScoredState(tmp_path / "s.json")
    await state.add(RUN, "a")

    def broken(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(SinkError, match="No space left"):
        await state.add(RUN, "b")
    assert state.pairs == {(RUN, "a")} == ScoredState(state.path).pairs
    with pytest.raises(SinkError, match="No space left"):
        await state.set_time_base(RUN, "a", 7)
    assert state.time_base(RUN, "a") is None is ScoredState(state.path).time_base(RUN, "a")
    assert sorted(os.listdir(tmp_path)) == ["s.json"]  # the temporary file is gone too


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"version": 1, "scored": [["a", "b"]', "not valid JSON"),
        ("", "not valid JSON"),
        ('[["a", "b"]]', '"version": 2'),
        ('{"version": 3, "scored": []}', '"version": 2'),
        ('{"version": 1, "scored": {"a": "b"}}', "must be a list"),
        ('{"version": 1, "scored": [["a"]]}', "not a \\[run_id, label\\] pair"),
        ('{"version": 1, "scored": [["a", 1]]}', "not a \\[run_id, label\\] pair"),
        ('{"version": 2, "scored": [], "time_bases": {}}', '"time_bases" must be a list'),
        ('{"version": 2, "scored": [], "time_bases": [["a", "b", true]]}', "not a \\[run_id"),
        ('{"version": 2, "scored": [], "time_bases": [["a", "b", 1.5]]}', "time base: "),
        ('{"version": 2, "scored": [], "time_bases": [["a", 5, 5]]}', "time base: "),
    ],
)
async def test_a_corrupt_file_is_a_clear_error(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "scored.json"
    path.write_text(content)
    state = ScoredState(path)
    with pytest.raises(SinkError, match=f"scored-state file .*scored.json is corrupt: .*{problem}"):
        state.load()
    with pytest.raises(SinkError, match="corrupt"):
        _ = ("a", "b") in state
    with pytest.raises(SinkError, match="corrupt"):
        await state.add("a", "b")  # never overwrites what it could not read
    assert path.read_text() == content


async def test_concurrent_adds_all_land(tmp_path: Path) -> None:
    state = ScoredState(tmp_path / "s.json")

    async def add(i: int) -> None:
        await state.add(RUN, f"G27 @{i:07d}")

    async with anyio.create_task_group() as group:
        for i in range(25):
            group.start_soon(add, i)
    expected = {(RUN, f"G27 @{i:07d}") for i in range(25)}
    assert state.pairs == expected == ScoredState(state.path).pairs
