"""Evaluate one checkpoint: fetch its adapter, load it, run the probes, build the points.

How the adapter is used depends on ``AgentConfig.backend``:

- ``"mlx"``: the MLX LoRA (``{N}_adapters.safetensors`` + ``adapter_config.json``) is copied
  into ``work_dir/<stem>-<iteration>/`` as mlx-lm expects it (``adapters.safetensors`` next to
  ``adapter_config.json``) and loaded on top of ``base_model`` with ``adapter_path``.
- ``"llama"``: llama.cpp takes GGUF LoRAs only. A GGUF LoRA next to the checkpoint, with the
  same name ending in ``.gguf`` (``0000100_adapters.gguf``), is copied and used as it is.
  Otherwise the MLX LoRA and its ``adapter_config.json`` are copied and converted into
  ``work_dir/<stem>-<iteration>/<name>.gguf`` with
  :func:`~goml_async.convert.lora_to_gguf.convert_mlx_lora_to_gguf`, against the base GGUF
  (``base_model``, or the bundled model for ``"default"``). Either file is passed to
  llama-server as ``--lora``.
- ``"http"``: the probes go to the model behind ``api_url`` (``model`` or the checkpoint's
  tag as the model name). The adapter is **not** loaded: the probes measure whatever that
  server serves, and nothing is copied.

Then the 23 capability probes run (``capability_max_tokens``); with ``judge_url`` set, each
answer is judged and, when ``content_probes`` is on, the 6 content probes run and are judged too
(content probes are only scored by a judge, so without one they are skipped). Work files are
deleted and every model is closed afterwards, also on failure or cancellation.

Example:
    ```python
    config = AgentConfig.load("agent.toml")
    async with config.make_transport() as transport:
        for checkpoint in await discover_checkpoints(transport, config.adapter_base):
            evaluation = await evaluate_checkpoint(config, transport, checkpoint)
            print(checkpoint.label, evaluation.result.passed, len(evaluation.points))
    ```
"""

from __future__ import annotations

import logging
import shlex
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import anyio

from ..errors import ConfigError
from ..model import TextModel
from ..registry import bundled_model_path, load_default_model, load_model
from ..scoring.judge import Judge
from ..scoring.runner import (
    CAPABILITY_CONFIG,
    CONTENT_CONFIG,
    ProbeCallback,
    run_capability_probes,
    run_content_probes,
)
from ..scoring.types import ContentProbeResult, ProbeResult
from .points import capability_points, content_points, judge_points
from .types import Checkpoint, Point, RemoteTransport

if TYPE_CHECKING:
    from .config import AgentConfig

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "Evaluation",
    "MLX_ADAPTER_FILE",
    "evaluate_checkpoint",
    "gguf_adapter_path",
    "resolve_target",
    "work_folder",
]

logger = logging.getLogger(__name__)

#: The file names mlx-lm's ``load(adapter_path=folder)`` reads.
MLX_ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything one checkpoint's evaluation produced.

    Attributes:
        checkpoint: the checkpoint evaluated.
        result: the capability probes (with the judge's scores when a judge was configured).
        content: the content probes, or None when they did not run.
        capability: ``capability_score`` (overall + categories) and ``probe_score`` points.
        judge: ``capability_judge`` points (empty without a judge).
        content_scores: ``content_score`` points (empty without content probes).
        seconds: how long the evaluation took.
    """

    checkpoint: Checkpoint
    result: ProbeResult
    content: ContentProbeResult | None
    capability: tuple[Point, ...]
    judge: tuple[Point, ...] = ()
    content_scores: tuple[Point, ...] = ()
    seconds: float = 0.0

    @property
    def points(self) -> list[Point]:
        """Every point, capability first."""
        return [*self.capability, *self.judge, *self.content_scores]

    def batches(self) -> list[tuple[str, list[Point]]]:
        """``(kind, points)`` in publishing order, non-empty ones only.

        ``capability`` comes last: its ``capability_score`` points are what marks a checkpoint
        as scored in Influx, so they must not land before the rest is safely published.
        """
        ordered = [
            ("content", list(self.content_scores)),
            ("judge", list(self.judge)),
            ("capability", list(self.capability)),
        ]
        return [(kind, points) for kind, points in ordered if points]


def work_folder(work_dir: Path, checkpoint: Checkpoint) -> Path:
    """Where a checkpoint's files are fetched: ``work_dir/<stem>-<iteration, 7 digits>``.

    >>> from goml_async.agent.types import Checkpoint
    >>> cp = Checkpoint("/b/adapters-1b-v2", "0000100_adapters.safetensors", "adapters-1b-v2",
    ...                 100, "gemma-3-1b", "G1-v2 @0000100", "1b-v2-capability-auto")
    >>> work_folder(Path("/w"), cp).as_posix()
    '/w/1b-v2-0000100'
    """
    stem = checkpoint.run_id.removesuffix("-capability-auto").replace("/", "-")
    return work_dir / f"{stem}-{checkpoint.iteration:07d}"


def gguf_adapter_path(checkpoint: Checkpoint) -> str:
    """The GGUF LoRA the llama backend looks for: the adapter's path with ``.gguf`` at the end.

    >>> from goml_async.agent.types import Checkpoint
    >>> cp = Checkpoint("/b/adapters-1b", "0000100_adapters.safetensors", "adapters-1b", 100,
    ...                 "gemma-3-1b", "G1 @0000100", "1b-capability-auto")
    >>> gguf_adapter_path(cp)
    '/b/adapters-1b/0000100_adapters.gguf'
    """
    return checkpoint.remote_path.removesuffix(".safetensors") + ".gguf"


async def evaluate_checkpoint(
    config: AgentConfig,
    transport: RemoteTransport,
    checkpoint: Checkpoint,
    *,
    on_probe: ProbeCallback | None = None,
) -> Evaluation:
    """Fetch, load and probe one checkpoint; return its results and points.

    Args:
        config: the agent's settings (backend, base model or endpoint, judge, token limits,
            ``work_dir``).
        transport: where the checkpoint lives.
        checkpoint: the checkpoint to evaluate.
        on_probe: called after each capability probe with ``(outcome, passed, done)``.

    Returns:
        The :class:`Evaluation`; a probe that failed to generate is recorded in it, not raised.

    Raises:
        TransportError: the adapter could not be fetched.
        ModelLoadError: the base model or the adapter could not be loaded, or (backend
            ``"llama"``) the MLX adapter could not be converted to GGUF.
        ConfigError: backend ``"llama"``: the MLX adapter has tensors llama.cpp cannot take.
    """
    started = time.perf_counter()
    folder = work_folder(Path(config.work_dir), checkpoint)
    logger.info(
        "evaluating %s (%s) on %s", checkpoint.label, checkpoint.remote_path, config.backend
    )
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_remove, folder)
        adapter = await _fetch_adapter(config, transport, checkpoint, folder)
        model = await stack.enter_async_context(_model_for(config, checkpoint, adapter))
        judge = None
        if config.judge_url:
            judge_model = await load_model(
                config.judge_url, backend="http", model=config.judge_model
            )
            stack.push_async_callback(_close, judge_model)
            judge = Judge(judge_model)
        result = await run_capability_probes(
            model,
            judge=judge,
            config=replace(CAPABILITY_CONFIG, max_tokens=config.capability_max_tokens),
            system=config.system,
            on_probe=on_probe,
        )
        content = None
        if config.content_probes and judge is not None:
            content = await run_content_probes(
                model,
                judge=judge,
                config=replace(CONTENT_CONFIG, max_tokens=config.content_max_tokens),
                system=config.system,
            )
    return Evaluation(
        checkpoint=checkpoint,
        result=result,
        content=content,
        capability=tuple(capability_points(checkpoint, result)),
        judge=tuple(judge_points(checkpoint, result)),
        content_scores=tuple(content_points(checkpoint, content)) if content is not None else (),
        seconds=time.perf_counter() - started,
    )


async def resolve_target(
    config: AgentConfig, transport: RemoteTransport, target: str
) -> Checkpoint:
    """The checkpoint a path names (what ``Agent.evaluate`` does with a string).

    In order: a discovered checkpoint whose adapter file is ``target``; the latest checkpoint
    of a discovered directory (its full path or its dirname); the one discovered checkpoint
    with that file name. Otherwise the checkpoint is built from the path itself (relative to
    ``adapter_base``; a directory means its ``adapters.safetensors``).

    Raises:
        ConfigError: ``target`` is empty, or the file name has no iteration number.
        TransportError: the file does not exist on the transport's side.
    """
    from .discovery import checkpoint_from_file, discover_checkpoints

    if not target:
        raise ConfigError("target", "must be a checkpoint or a non-empty path")
    base = config.adapter_base
    found = await discover_checkpoints(transport, base)  # no filter: any path may be named
    for checkpoint in found:
        if target == checkpoint.remote_path:
            return checkpoint
    in_dir = [cp for cp in found if target.rstrip("/") in (cp.remote_dir, cp.dirname)]
    if in_dir:
        return max(in_dir, key=lambda cp: cp.iteration)
    by_name = [cp for cp in found if cp.filename == PurePosixPath(target).name]
    if len(by_name) == 1:
        return by_name[0]
    path = PurePosixPath(target)
    if not path.is_absolute():
        path = PurePosixPath(base) / path
    if path.suffix != ".safetensors":
        path = path / MLX_ADAPTER_FILE
    mtime = await transport.mtime(str(path))
    return checkpoint_from_file(base, str(path.parent), path.name, mtime)


async def _fetch_adapter(
    config: AgentConfig, transport: RemoteTransport, checkpoint: Checkpoint, folder: Path
) -> str | None:
    """Copy what the backend needs into ``folder``; the local adapter path, or None (http)."""
    if config.backend == "http":
        return None
    if config.backend == "llama":
        remote = gguf_adapter_path(checkpoint)
        local = folder / Path(remote).name
        found = await transport.run(f"test -f {shlex.quote(remote)}")
        if found.ok:
            await transport.copy_from(remote, str(local))
            return str(local)
        return await _convert_to_gguf(config, transport, checkpoint, folder, local)
    remote_config = f"{checkpoint.remote_dir.rstrip('/')}/{ADAPTER_CONFIG_FILE}"
    await transport.copy_from(checkpoint.remote_path, str(folder / MLX_ADAPTER_FILE))
    await transport.copy_from(remote_config, str(folder / ADAPTER_CONFIG_FILE))
    return str(folder)


async def _convert_to_gguf(
    config: AgentConfig,
    transport: RemoteTransport,
    checkpoint: Checkpoint,
    folder: Path,
    dest: Path,
) -> str:
    """Fetch the MLX LoRA and its config, convert them to a GGUF LoRA at ``dest``."""
    from ..convert.lora_to_gguf import convert_mlx_lora_to_gguf

    remote_config = f"{checkpoint.remote_dir.rstrip('/')}/{ADAPTER_CONFIG_FILE}"
    adapter, adapter_config = folder / MLX_ADAPTER_FILE, folder / ADAPTER_CONFIG_FILE
    await transport.copy_from(checkpoint.remote_path, str(adapter))
    await transport.copy_from(remote_config, str(adapter_config))
    if not config.base_model or config.base_model == "default":
        base = await anyio.to_thread.run_sync(bundled_model_path)
    else:
        base = Path(config.base_model)
    logger.info("%s: converting the MLX LoRA to GGUF against %s", checkpoint.label, base)
    converted = await anyio.to_thread.run_sync(
        lambda: convert_mlx_lora_to_gguf(adapter, adapter_config, dest, base_gguf=base)
    )
    return str(converted)


@asynccontextmanager
async def _model_for(
    config: AgentConfig, checkpoint: Checkpoint, adapter: str | None
) -> AsyncIterator[TextModel]:
    """The model under test, closed on exit (shielded, so a cancellation still closes it)."""
    if config.backend == "http":
        assert config.api_url is not None  # AgentConfig requires it for this backend
        model = await load_model(
            config.api_url, backend="http", model=config.model or checkpoint.model_tag
        )
    elif config.base_model in (None, "", "default"):
        model = await load_default_model(backend=config.backend, adapter_path=adapter)
    else:
        model = await load_model(config.base_model, backend=config.backend, adapter_path=adapter)
    try:
        yield model
    finally:
        await _close(model)


async def _close(model: TextModel) -> None:
    with anyio.CancelScope(shield=True):
        await model.aclose()


async def _remove(folder: Path) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
