"""expand: seed prompts -> expand-{worker}.jsonl rows and Influx points, resumably."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from goml_async.agent.expand import (
    DRY_RUN_LISTED,
    SeedPrompt,
    expand_prompts,
    output_path,
    read_completed_ids,
    read_prompts,
    seed_ids_in_influx,
)
from goml_async.agent.influx import InfluxSink
from goml_async.errors import ConfigError, GenerationError
from goml_async.testing import ScriptedModel
from goml_async.types import Message

from .influxd import InfluxServer, free_port, influxd  # noqa: F401  (fixture)


def _prompts(count: int) -> list[SeedPrompt]:
    return [SeedPrompt(f"s{i}", f"prompt {i}", "ethics" if i % 2 else "", i) for i in range(count)]


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_read_prompts_accepts_id_or_seed_id(tmp_path: Path) -> None:
    source = tmp_path / "seeds.jsonl"
    source.write_text(
        '{"id": "a", "prompt": "one", "domain": "ethics"}\n\n{"seed_id": 7, "prompt": "two"}\n'
    )
    assert read_prompts(source) == [
        SeedPrompt("a", "one", "ethics", 0),
        SeedPrompt("7", "two", "", 1),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected an object"),
        ('{"id": "a"}', '"prompt" must be a non-empty string'),
        ('{"prompt": "p"}', '"id" must be a non-empty string'),
        ('{"id": "a", "prompt": "p", "domain": 3}', '"domain" must be a string'),
        ('{"id": "x", "prompt": "p"}', "duplicate id 'x'"),
    ],
)
def test_read_prompts_names_the_bad_line(tmp_path: Path, line: str, problem: str) -> None:
    source = tmp_path / "seeds.jsonl"
    source.write_text('{"id": "x", "prompt": "first"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=rf"seeds.jsonl:2: .*{problem}"):
        read_prompts(source)
    with pytest.raises(ConfigError, match="cannot read"):
        read_prompts(tmp_path / "missing.jsonl")


@pytest.mark.anyio
async def test_rows_settings_resume_and_limit(tmp_path: Path) -> None:
    model = ScriptedModel(["Hello", " there"])
    first = await expand_prompts(
        model, _prompts(5), worker="w1", output_dir=tmp_path / "out", limit=2
    )
    output = output_path(tmp_path / "out", "w1")
    assert (first.generated, first.target, first.skipped, first.errors) == (2, 2, 0, [])
    assert first.output == output and output.name == "expand-w1.jsonl"
    row = _rows(output)[1]
    assert row["id"] == "s1" and row["domain"] == "ethics" and row["prompt"] == "prompt 1"
    assert (row["response"], row["model"], row["chars"]) == ("Hello there", "scripted", 11)
    assert isinstance(row["elapsed_seconds"], float)
    messages, config = model.calls[0]
    assert messages == [Message("user", "prompt 0")]
    assert (config.temperature, config.max_tokens) == (0.7, 2048)

    second = await expand_prompts(
        model, _prompts(5), worker="w1", output_dir=tmp_path / "out", model_name="named"
    )
    assert (second.generated, second.skipped, second.target) == (3, 2, 3)
    assert [r["id"] for r in _rows(output)] == ["s0", "s1", "s2", "s3", "s4"]
    assert _rows(output)[-1]["model"] == "named"
    assert read_completed_ids(output) == {f"s{i}" for i in range(5)}


@pytest.mark.anyio
async def test_errors_are_recorded_and_counted_not_swallowed(tmp_path: Path) -> None:
    def reply(messages: object) -> list[str]:
        assert isinstance(messages, list)
        if messages[0].content == "prompt 1":
            raise GenerationError("the model fell over", partial_text="", tokens_generated=0)
        return ["ok"]

    summary = await expand_prompts(
        ScriptedModel(reply), _prompts(3), worker="w", output_dir=tmp_path
    )
    assert summary.generated == 2
    assert summary.errors == [("s1", "GenerationError: the model fell over (after 0 tokens)")]
    assert [r["id"] for r in _rows(output_path(tmp_path, "w"))] == ["s0", "s2"]
    # the failed one is not marked done: a rerun tries it again
    again = await expand_prompts(
        ScriptedModel(["fine"]), _prompts(3), worker="w", output_dir=tmp_path
    )
    assert (again.generated, again.skipped) == (1, 2)


@pytest.mark.anyio
async def test_dry_run_lists_at_most_ten_and_writes_nothing(tmp_path: Path) -> None:
    summary = await expand_prompts(
        None, _prompts(15), worker="w", output_dir=tmp_path / "out", dry_run=True,
        completed_ids={"s0"},
    )  # fmt: skip
    assert [p.id for p in summary.listed] == [f"s{i}" for i in range(1, 1 + DRY_RUN_LISTED)]
    assert (summary.target, summary.skipped, summary.generated) == (14, 1, 0)
    assert not (tmp_path / "out").exists()


@pytest.mark.anyio
async def test_a_torn_last_row_is_dropped_before_appending(tmp_path: Path) -> None:
    output = output_path(tmp_path, "w")
    output.write_text('{"id": "s0", "response": "x"}\n{"id": "s1", "respo')
    summary = await expand_prompts(
        ScriptedModel(["y"]), _prompts(2), worker="w", output_dir=tmp_path
    )
    assert summary.generated == 1
    assert [r["id"] for r in _rows(output)] == ["s0", "s1"]


@pytest.mark.anyio
async def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="worker"):
        await expand_prompts(None, [], worker="a/b", output_dir=tmp_path)
    with pytest.raises(ConfigError, match="limit"):
        await expand_prompts(None, [], worker="w", output_dir=tmp_path, limit=-1)
    with pytest.raises(ConfigError, match="model"):
        await expand_prompts(None, _prompts(1), worker="w", output_dir=tmp_path)


@pytest.mark.anyio
@pytest.mark.slow
async def test_points_go_to_influx_and_influx_ids_are_skipped(
    tmp_path: Path,
    influxd: InfluxServer,  # noqa: F811
) -> None:
    database = influxd.create_database(f"x{uuid.uuid4().hex[:10]}")
    sink = InfluxSink(
        influxd.url, api="v1", database=database, buffer_path=tmp_path / "buffer.jsonl"
    )
    async with sink:
        assert await seed_ids_in_influx(sink) == set()
        summary = await expand_prompts(
            ScriptedModel(["abc"]), _prompts(3), worker="w9", output_dir=tmp_path / "a", sink=sink
        )
        assert (summary.generated, summary.buffered, summary.errors) == (3, 0, [])
        assert await seed_ids_in_influx(sink) == {"s0", "s1", "s2"}
        # another output folder: only Influx knows these are done
        again = await expand_prompts(
            ScriptedModel(["abc"]), _prompts(4), worker="w9", output_dir=tmp_path / "b", sink=sink
        )
    assert (again.skipped, again.generated) == (3, 1)
    gen = influxd.rows(database, "expansion_gen")
    assert sorted(row["seed_id"] for row in gen) == ["s0", "s1", "s2", "s3"]
    assert {
        (row["i"], row["w"], row["chars"], row["model"]) for row in gen if row["seed_id"] == "s1"
    } == {("1", "w9", 3, "scripted")}
    progress = influxd.rows(database, "expansion_progress")
    assert [(r["completed"], r["target"], r["pct"]) for r in progress] == [
        (1, 3, 33.3),
        (2, 3, 66.7),
        (3, 3, 100.0),
        (1, 1, 100.0),
    ]


@pytest.mark.anyio
async def test_influx_down_is_a_warning_and_points_are_buffered(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with InfluxSink(dead, api="v1", buffer_path=tmp_path / "buffer.jsonl") as sink:
        summary = await expand_prompts(
            ScriptedModel(["abc"]), _prompts(2), worker="w", output_dir=tmp_path, sink=sink
        )
        assert sink.pending == 2
    assert (summary.generated, summary.buffered, summary.errors) == (2, 2, [])
    assert len(summary.warnings) == 1 and "using the output file only" in summary.warnings[0]
