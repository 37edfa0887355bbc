"""The checkpoint-scoring agent: find adapter checkpoints, probe them, publish to InfluxDB.

The agent is an anyio task group: discovery (over SSH or a local folder) streams
:class:`Checkpoint`\\ s to the evaluator, which runs the capability, judge and content probes on
a local backend (MLX with ``adapter_path``, llama.cpp with ``--lora``) or a remote endpoint, and
hands :class:`Point`\\ s to the publisher. Every write goes through a write-ahead buffer first, and
every point's series and timestamp are fixed by the checkpoint, so a restart after a kill -9
loses nothing and writes nothing twice.

Example:
    ```python
    from goml_async.agent import Agent, AgentConfig

    config = AgentConfig.load("agent.toml", one_shot=True)
    async with Agent(config) as agent:
        await agent.run()
    ```

asyncssh and influxdb-client are imported only when an SSH transport or the v2 write API is used.
"""

from __future__ import annotations

from .config import AgentConfig
from .discovery import (
    MODEL_FAMILIES,
    ModelFamily,
    adapter_meta,
    checkpoint_from_file,
    discover_checkpoints,
    iter_checkpoints,
)
from .evaluate import Evaluation, evaluate_checkpoint
from .events import AgentEvent, AgentSummary, PointSink
from .expand import ExpandRow, ExpandSummary, SeedPrompt, expand_prompts, read_prompts
from .influx import InfluxSink
from .local import LocalTransport
from .loop import Agent
from .points import capability_points, content_points, judge_points, probe_point
from .state import ScoredState
from .transport import SSHTransport
from .types import Checkpoint, CommandResult, Point, RemoteTransport
from .wal import WriteAheadBuffer

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentEvent",
    "AgentSummary",
    "Checkpoint",
    "CommandResult",
    "Evaluation",
    "ExpandRow",
    "ExpandSummary",
    "InfluxSink",
    "LocalTransport",
    "MODEL_FAMILIES",
    "ModelFamily",
    "Point",
    "PointSink",
    "RemoteTransport",
    "SSHTransport",
    "ScoredState",
    "SeedPrompt",
    "WriteAheadBuffer",
    "adapter_meta",
    "capability_points",
    "checkpoint_from_file",
    "content_points",
    "discover_checkpoints",
    "evaluate_checkpoint",
    "expand_prompts",
    "iter_checkpoints",
    "judge_points",
    "probe_point",
    "read_prompts",
]
