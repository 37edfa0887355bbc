"""One whole agent pass on real components end to end: OpenSSH's sshd serves the checkpoint
tree, the adapter is copied over SFTP and loaded on the tiny MLX model, the probes run on it,
a judge server scores the answers, and the points land in a real influxd (read back with
InfluxQL)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from goml_async.agent import Agent, AgentConfig
from goml_async.testing import FakeOpenAIServer, Script

from .conftest import CheckpointTree, SSHServer
from .influxd import InfluxServer, influxd  # noqa: F401  (fixture)
from .test_loop import JUDGE_REPLY, PER_CHECKPOINT, _counts

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    # asyncssh runs on asyncio only (the transport says so clearly under trio; tested there).
    return "asyncio"


async def test_a_pass_over_openssh_on_mlx_with_the_real_adapter(
    openssh_server: SSHServer,
    checkpoint_tree: CheckpointTree,
    tiny_mlx: Path,
    influxd: InfluxServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    database = influxd.create_database(f"ssh{uuid.uuid4().hex[:8]}")
    before = openssh_server.connections
    with FakeOpenAIServer(Script(tokens=[JUDGE_REPLY])) as judge:
        config = AgentConfig(
            host=openssh_server.host,
            port=openssh_server.port,
            user=openssh_server.user,
            ssh_key=openssh_server.key_path,
            known_hosts=openssh_server.known_hosts,
            adapter_base=str(checkpoint_tree.root),
            filter="27b",
            backend="mlx",
            base_model=str(tiny_mlx),
            judge_url=judge.base_url,
            capability_max_tokens=4,
            content_max_tokens=4,
            influx_url=influxd.url,
            influx_api="v1",
            influx_db=database,
            work_dir=str(tmp_path / "work"),
            one_shot=True,
            inter_checkpoint_delay=0,
        )
        async with Agent(config) as agent:
            summary = await agent.run()
        judged = [r for r in judge.requests if r.path.endswith("/chat/completions")]
    assert (summary.evaluated, summary.written, summary.failed) == (1, 1, [])
    # The first 27b checkpoint, scored once, every measurement complete.
    counts = _counts(influxd, database)
    assert {m: dict(c) for m, c in counts.items()} == {
        m: {"G27-v2 @0000100": n} for m, n in PER_CHECKPOINT.items()
    }
    # One SSH login for discovery and the copy; the judge saw every capability and content probe.
    assert openssh_server.connections - before == 1
    assert len(judged) == PER_CHECKPOINT["capability_judge"] + 6
    # The adapter's copy was removed after the evaluation.
    assert not any((tmp_path / "work").rglob("*.safetensors"))
