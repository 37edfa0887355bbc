"""evaluate_checkpoint: a real checkpoint from the tree, on the mlx, llama and http backends."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from model_fixtures import require

from goml_async import registry
from goml_async.agent import evaluate as evaluate_module
from goml_async.agent.config import AgentConfig
from goml_async.agent.discovery import discover_checkpoints
from goml_async.agent.evaluate import (
    ADAPTER_CONFIG_FILE,
    MLX_ADAPTER_FILE,
    Evaluation,
    evaluate_checkpoint,
    work_folder,
)
from goml_async.agent.points import CONTENT_DIMENSIONS
from goml_async.agent.transport import LocalTransport
from goml_async.agent.types import Checkpoint
from goml_async.errors import ModelLoadError, TransportError
from goml_async.model import TextModel
from goml_async.scoring.probes import CAPABILITY_PROBES, CONTENT_PROBES
from goml_async.scoring.types import ProbeOutcome
from goml_async.testing import FakeOpenAIServer, Script

from .conftest import LORA_RANK, CheckpointTree, _save_safetensors

pytestmark = pytest.mark.anyio

#: A judge reply valid for both rubrics it is asked (capability 0-10, content 1-5).
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
CATEGORIES = len({probe.category for probe in CAPABILITY_PROBES})


@pytest.fixture
def judge_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(Script(tokens=[JUDGE_REPLY], model="judge")) as server:
        yield server


@pytest.fixture
def loaded_models(monkeypatch: pytest.MonkeyPatch) -> list[TextModel]:
    """Every model evaluate_checkpoint loads, to check that it closed them."""
    loaded: list[TextModel] = []

    def recording(load: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> TextModel:
            model: TextModel = await load(*args, **kwargs)
            loaded.append(model)
            return model

        return wrapper

    monkeypatch.setattr(evaluate_module, "load_model", recording(registry.load_model))
    monkeypatch.setattr(
        evaluate_module, "load_default_model", recording(registry.load_default_model)
    )
    return loaded


def _config(tree: CheckpointTree, tmp_path: Path, **values: Any) -> AgentConfig:
    values.setdefault("capability_max_tokens", 4)
    values.setdefault("content_max_tokens", 4)
    return AgentConfig(adapter_base=str(tree.root), work_dir=tmp_path / "work", **values)


async def _checkpoint(tree: CheckpointTree, filename: str, dirname: str) -> Checkpoint:
    found = await discover_checkpoints(LocalTransport(tree.root), str(tree.root))
    return next(cp for cp in found if cp.filename == filename and cp.dirname == dirname)


def _assert_complete(evaluation: Evaluation, *, judged: bool) -> None:
    result = evaluation.result
    assert result.total == len(CAPABILITY_PROBES)
    assert result.error_count == 0, [o.error for o in result.outcomes if o.error]
    assert len(evaluation.capability) == 1 + CATEGORIES + len(CAPABILITY_PROBES)
    if judged:
        assert len(evaluation.judge) == len(CAPABILITY_PROBES)
        assert len(evaluation.content_scores) == len(CONTENT_PROBES) * len(CONTENT_DIMENSIONS)
    else:
        assert evaluation.judge == () and evaluation.content_scores == ()
        assert evaluation.content is None
    mtime_ns = int(evaluation.checkpoint.mtime) * 10**9
    assert min(p.time_ns or 0 for p in evaluation.points) == mtime_ns
    assert [kind for kind, _ in evaluation.batches()][-1] == "capability"


@pytest.mark.slow
async def test_mlx_backend_loads_the_real_adapter_and_cleans_up(
    checkpoint_tree: CheckpointTree,
    tiny_mlx: Path,
    judge_server: FakeOpenAIServer,
    loaded_models: list[TextModel],
    tmp_path: Path,
) -> None:
    config = _config(
        checkpoint_tree,
        tmp_path,
        backend="mlx",
        base_model=str(tiny_mlx),
        judge_url=judge_server.base_url,
        judge_model="judge",
    )
    checkpoint = await _checkpoint(
        checkpoint_tree, "0000100_adapters.safetensors", "adapters-27b-v2"
    )
    folder = work_folder(config.work_dir, checkpoint)
    seen: list[list[str]] = []

    def on_probe(outcome: ProbeOutcome, passed: int, done: int) -> None:
        if done == 1:  # while the model is loaded: the adapter as mlx-lm expects it
            seen.append(sorted(path.name for path in folder.iterdir()))

    async with LocalTransport(checkpoint_tree.root) as transport:
        evaluation = await evaluate_checkpoint(config, transport, checkpoint, on_probe=on_probe)
    assert seen == [[ADAPTER_CONFIG_FILE, MLX_ADAPTER_FILE]]
    _assert_complete(evaluation, judged=True)
    assert not folder.exists()
    assert len(loaded_models) == 2 and all(m.closed for m in loaded_models)  # type: ignore[attr-defined]
    assert [m.model_type for m in loaded_models] == ["mlx", "http"]
    # the judge saw each capability answer and each content answer
    judged = [r for r in judge_server.requests if r.method == "POST"]
    assert len(judged) == len(CAPABILITY_PROBES) + len(CONTENT_PROBES)


@pytest.mark.slow
async def test_llama_backend_passes_the_gguf_lora(
    checkpoint_tree: CheckpointTree,
    tiny_gguf: Path,
    tiny_lora: Path,
    loaded_models: list[TextModel],
    tmp_path: Path,
) -> None:
    shutil.copy(tiny_lora, checkpoint_tree.path("adapters-27b-v2/0000100_adapters.gguf"))
    config = _config(checkpoint_tree, tmp_path, backend="llama", base_model=str(tiny_gguf))
    checkpoint = await _checkpoint(
        checkpoint_tree, "0000100_adapters.safetensors", "adapters-27b-v2"
    )
    async with LocalTransport(checkpoint_tree.root) as transport:
        evaluation = await evaluate_checkpoint(config, transport, checkpoint)
    _assert_complete(evaluation, judged=False)
    (model,) = loaded_models
    command = model.server.command  # type: ignore[attr-defined]
    lora = command[command.index("--lora") + 1]
    assert Path(lora).name == "0000100_adapters.gguf"
    assert model.closed  # type: ignore[attr-defined]
    assert not work_folder(config.work_dir, checkpoint).exists()


@pytest.mark.slow
async def test_llama_backend_converts_the_mlx_lora_without_a_gguf_one(
    checkpoint_tree: CheckpointTree, tiny_gguf: Path, loaded_models: list[TextModel], tmp_path: Path
) -> None:
    config = _config(checkpoint_tree, tmp_path, backend="llama", base_model=str(tiny_gguf))
    checkpoint = await _checkpoint(
        checkpoint_tree, "0000200_adapters.safetensors", "adapters-27b-v2"
    )
    folder = work_folder(config.work_dir, checkpoint)
    seen: list[list[str]] = []

    def on_probe(outcome: ProbeOutcome, passed: int, done: int) -> None:
        if done == 1:  # while the model is loaded
            seen.append(sorted(path.name for path in folder.iterdir()))

    async with LocalTransport(checkpoint_tree.root) as transport:
        evaluation = await evaluate_checkpoint(config, transport, checkpoint, on_probe=on_probe)
    assert seen == [["0000200_adapters.gguf", ADAPTER_CONFIG_FILE, MLX_ADAPTER_FILE]]
    _assert_complete(evaluation, judged=False)
    (model,) = loaded_models
    command = model.server.command  # type: ignore[attr-defined]
    lora = Path(command[command.index("--lora") + 1])
    assert lora == folder / "0000200_adapters.gguf"
    assert model.closed  # type: ignore[attr-defined]
    assert not folder.exists()
    assert not checkpoint_tree.path("adapters-27b-v2/0000200_adapters.gguf").exists()


async def test_llama_backend_reports_an_adapter_that_does_not_fit_the_base(
    checkpoint_tree: CheckpointTree, tiny_gguf: Path, loaded_models: list[TextModel], tmp_path: Path
) -> None:
    np = require("numpy")
    wrong = {
        "model.layers.0.self_attn.q_proj.lora_a": np.zeros((64, LORA_RANK), "f4"),
        "model.layers.0.self_attn.q_proj.lora_b": np.zeros((LORA_RANK, 96), "f4"),
    }
    _save_safetensors(wrong, checkpoint_tree.path("adapters-27b-v2/0000200_adapters.safetensors"))
    config = _config(checkpoint_tree, tmp_path, backend="llama", base_model=str(tiny_gguf))
    checkpoint = await _checkpoint(
        checkpoint_tree, "0000200_adapters.safetensors", "adapters-27b-v2"
    )
    async with LocalTransport(checkpoint_tree.root) as transport:
        with pytest.raises(ModelLoadError, match=r"96 outputs.*trained on another model"):
            await evaluate_checkpoint(config, transport, checkpoint)
    assert loaded_models == []
    assert not work_folder(config.work_dir, checkpoint).exists()


async def test_http_backend_scores_the_endpoint_without_fetching(
    checkpoint_tree: CheckpointTree,
    judge_server: FakeOpenAIServer,
    loaded_models: list[TextModel],
    tmp_path: Path,
) -> None:
    with FakeOpenAIServer(Script(tokens=["The answer is 10063."])) as served:
        config = _config(
            checkpoint_tree,
            tmp_path,
            backend="http",
            api_url=served.base_url,
            judge_url=judge_server.base_url,
            content_probes=False,
        )
        checkpoint = await _checkpoint(
            checkpoint_tree, "0000050_adapters.safetensors", "adapters-15k/gemma-3-12b"
        )
        async with LocalTransport(checkpoint_tree.root) as transport:
            evaluation = await evaluate_checkpoint(config, transport, checkpoint)
        posts = [r for r in served.requests if r.method == "POST"]
    assert len(posts) == len(CAPABILITY_PROBES)
    assert {r.json["model"] for r in posts} == {"gemma-3-12b"}  # the checkpoint's tag
    assert {r.json["max_tokens"] for r in posts} == {4}
    result = evaluation.result
    assert [o.passed for o in result.outcomes if o.probe_id == "math_01"] == [True]
    assert len(evaluation.judge) == len(CAPABILITY_PROBES)
    assert evaluation.content is None and evaluation.content_scores == ()
    assert not config.work_dir.exists() or not any(config.work_dir.iterdir())
    assert len(loaded_models) == 2 and all(m.closed for m in loaded_models)  # type: ignore[attr-defined]


async def test_a_missing_adapter_config_is_a_transport_error_and_cleans_up(
    checkpoint_tree: CheckpointTree, tiny_mlx: Path, loaded_models: list[TextModel], tmp_path: Path
) -> None:
    checkpoint_tree.path("adapters-vi/adapter_config.json").unlink()
    config = _config(checkpoint_tree, tmp_path, backend="mlx", base_model=str(tiny_mlx))
    checkpoint = await _checkpoint(checkpoint_tree, "0000300_adapters.safetensors", "adapters-vi")
    async with LocalTransport(checkpoint_tree.root) as transport:
        with pytest.raises(TransportError):
            await evaluate_checkpoint(config, transport, checkpoint)
    assert loaded_models == []
    assert not work_folder(config.work_dir, checkpoint).exists()
