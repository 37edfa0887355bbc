"""Model families, checkpoint naming, and discovery over LocalTransport and over SSH."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from model_fixtures import require

from goml_async.agent.discovery import (
    MODEL_FAMILIES,
    ModelFamily,
    adapter_meta,
    checkpoint_from_file,
    discover_checkpoints,
    iter_checkpoints,
)
from goml_async.agent.transport import LocalTransport
from goml_async.agent.types import Checkpoint, CommandResult, RemoteTransport
from goml_async.errors import ConfigError, TransportError

from .conftest import CheckpointTree, SSHServer, write_mlx_adapter

pytestmark = pytest.mark.anyio

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

#: What discovery must find in ``checkpoint_tree``, in discover_checkpoints' order:
#: (dirname, filename, iteration, model tag, label, run id).
EXPECTED = [
    (
        "adapters-15k/gemma-3-12b",
        "0000050_adapters.safetensors",
        50,
        "gemma-3-12b",
        "G12 @0000050",
        "15k-gemma-3-12b-capability-auto",
    ),
    (
        "adapters-27b-v2",
        "0000100_adapters.safetensors",
        100,
        "gemma-3-27b",
        "G27-v2 @0000100",
        "27b-v2-capability-auto",
    ),
    (
        "adapters-27b-v2",
        "0000200_adapters.safetensors",
        200,
        "gemma-3-27b",
        "G27-v2 @0000200",
        "27b-v2-capability-auto",
    ),
    (
        "adapters-vi",
        "0000300_adapters.safetensors",
        300,
        "gemma-3-1b",
        "Vi1 @0000300",
        "vi-capability-auto",
    ),
]


class CountingTransport:
    """A transport wrapper that records every command and stat, to see how far discovery got."""

    def __init__(self, inner: RemoteTransport) -> None:
        self.inner = inner
        self.commands: list[str] = []
        self.stats: list[str] = []

    def __repr__(self) -> str:
        return f"Counting({self.inner!r})"

    async def run(self, command: str) -> CommandResult:
        self.commands.append(command)
        return await self.inner.run(command)

    async def copy_from(self, remote: str, local: str) -> None:
        await self.inner.copy_from(remote, local)

    async def copy_to(self, local: str, remote: str) -> None:
        await self.inner.copy_to(local, remote)

    async def mtime(self, remote: str) -> float:
        self.stats.append(remote)
        return await self.inner.mtime(remote)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def summary(found: list[Checkpoint]) -> list[tuple[str, str, int, str, str, str]]:
    return [(c.dirname, c.filename, c.iteration, c.model_tag, c.label, c.run_id) for c in found]


def check_fields(found: list[Checkpoint], tree: CheckpointTree) -> None:
    assert summary(found) == EXPECTED
    for checkpoint in found:
        relative = f"{checkpoint.dirname}/{checkpoint.filename}"
        assert checkpoint.remote_dir == str(tree.root / checkpoint.dirname)
        assert checkpoint.remote_path == str(tree.path(relative))
        assert checkpoint.mtime == tree.checkpoints[relative]


# -- adapter_meta ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MODEL_FAMILIES, ids=lambda family: family.prefix)
def test_every_family_prefix_is_reachable(family: ModelFamily) -> None:
    # Each prefix, alone or with a variant after it, lands on its own row (nothing earlier
    # in the table shadows it).
    stem = family.prefix.replace("/", "-")
    assert adapter_meta(f"adapters-{family.prefix}") == (family.tag, family.short, stem)
    variant = adapter_meta(f"adapters-{family.prefix}run7")
    assert variant == (family.tag, f"{family.short}-run7", f"{stem}run7")


@pytest.mark.parametrize(
    ("dirname", "expected"),
    [
        ("adapters-deepseek-r1-7b", ("deepseek-r1-7b", "R1", "deepseek-r1-7b")),
        ("adapters-deepseek-r1-7b-lek", ("deepseek-r1-7b", "R1-lek", "deepseek-r1-7b-lek")),
        ("adapters-27b-v2", ("gemma-3-27b", "G27-v2", "27b-v2")),
        ("adapters-27b", ("gemma-3-27b", "G27", "27b")),
        ("adapters-27bx", ("gemma-3-27b", "G27-x", "27bx")),
        ("27b-v2", ("gemma-3-27b", "G27-v2", "27b-v2")),
        ("adapters-15k/gemma-3-27b", ("gemma-3-27b", "G27", "15k-gemma-3-27b")),
        ("adapters-15k/gemma-3-12b", ("gemma-3-12b", "G12", "15k-gemma-3-12b")),
        ("adapters-15k/gemma-3-1b", ("gemma-3-1b", "G1", "15k-gemma-3-1b")),
        ("adapters-12b-curriculum", ("gemma-3-12b", "G12-curriculum", "12b-curriculum")),
        ("adapters-1b-v3", ("gemma-3-1b", "G1-v3", "1b-v3")),
        ("adapters-1b", ("gemma-3-1b", "G1", "1b")),
        ("adapters-4b--x", ("gemma-3-4b", "G4-x", "4b--x")),
        ("adapters-vi-12b", ("gemma-3-12b", "Vi12", "vi-12b")),
        ("adapters-vi-12b-r2", ("gemma-3-12b", "Vi12-r2", "vi-12b-r2")),
        ("adapters-vi", ("gemma-3-1b", "Vi1", "vi")),
        ("adapters-vi-r2", ("gemma-3-1b", "Vi1-r2", "vi-r2")),
        ("adapters-gpt-oss-20b", ("gpt-oss-20b", "GPT-20b", "gpt-oss-20b")),
        ("adapters-lem-gpt-oss", ("gpt-oss-20b", "LGPT", "lem-gpt-oss")),
        ("adapters-bench-1b", ("gemma-3-1b", "B1", "bench-1b")),
        ("adapters-book-v1", ("gemma-3-27b", "Book-v1", "book-v1")),
        ("adapters-cross", ("gemma-3-12b", "Cross", "cross")),
    ],
)
def test_adapter_meta(dirname: str, expected: tuple[str, str, str]) -> None:
    assert adapter_meta(dirname) == expected


@pytest.mark.parametrize(
    ("dirname", "expected"),
    [
        (
            "adapters-mistral-7b-instruct",
            ("mistral-7b-instruct", "mistral-7b", "mistral-7b-instruct"),
        ),
        ("adapters-x", ("x", "x", "x")),
        ("adapters-foo/gemma-3-4b", ("foo/gemma-3-4b", "foo/gemma-", "foo/gemma-3-4b")),
        ("my-run", ("my-run", "my-run", "my-run")),
        ("adapters-15k", ("15k", "15k", "15k")),
    ],
)
def test_adapter_meta_without_a_family(dirname: str, expected: tuple[str, str, str]) -> None:
    assert adapter_meta(dirname) == expected


def test_family_order_puts_longer_prefixes_first() -> None:
    prefixes = [family.prefix for family in MODEL_FAMILIES]
    assert prefixes.index("27b-") < prefixes.index("27b")
    assert prefixes.index("1b-") < prefixes.index("1b")
    assert prefixes.index("15k/gemma-3-12b") < prefixes.index("15k/gemma-3-1b")
    assert prefixes.index("vi-12b") < prefixes.index("vi")
    assert len(MODEL_FAMILIES) == 17


# -- checkpoint_from_file -------------------------------------------------------------------------


def test_checkpoint_from_file() -> None:
    checkpoint = checkpoint_from_file(
        "/data/lem/", "/data/lem/adapters-27b-v2/", "0000100_adapters.safetensors", 12.5
    )
    assert checkpoint == Checkpoint(
        remote_dir="/data/lem/adapters-27b-v2",
        filename="0000100_adapters.safetensors",
        dirname="adapters-27b-v2",
        iteration=100,
        model_tag="gemma-3-27b",
        label="G27-v2 @0000100",
        run_id="27b-v2-capability-auto",
        mtime=12.5,
    )
    assert checkpoint.content_run_id == "27b-v2-content-auto"


@pytest.mark.parametrize(
    ("filename", "iteration", "digits"),
    [
        ("0000100_adapters.safetensors", 100, "0000100"),
        ("7_adapters.safetensors", 7, "7"),
        ("step12-of-40_adapters.safetensors", 12, "12"),
        ("ckpt_0001500_3_adapters.safetensors", 1500, "0001500"),
    ],
)
def test_iteration_is_the_first_digit_run(filename: str, iteration: int, digits: str) -> None:
    checkpoint = checkpoint_from_file("lem", "lem/adapters-15k/gemma-3-1b", filename)
    assert checkpoint.iteration == iteration
    assert checkpoint.label == f"G1 @{digits}"
    assert checkpoint.dirname == "adapters-15k/gemma-3-1b"
    assert checkpoint.run_id == "15k-gemma-3-1b-capability-auto"


def test_checkpoint_without_an_iteration_is_refused() -> None:
    with pytest.raises(ConfigError, match="no iteration") as caught:
        checkpoint_from_file("/d", "/d/adapters-vi", "final_adapters.safetensors")
    assert caught.value.field == "filename"


# -- discovery over LocalTransport ----------------------------------------------------------------


async def test_discover_over_local_transport(checkpoint_tree: CheckpointTree) -> None:
    async with LocalTransport(checkpoint_tree.root) as local:
        found = await discover_checkpoints(local, str(checkpoint_tree.root))
        assert [c async for c in iter_checkpoints(local, str(checkpoint_tree.root) + "/")] == found
    check_fields(found, checkpoint_tree)
    # adapters-15k is replaced by its gemma-3-* folder; checkpoints-old is no adapters-* folder;
    # mlx-lm's final adapters.safetensors is no checkpoint.
    assert {c.dirname for c in found} == {
        "adapters-15k/gemma-3-12b",
        "adapters-27b-v2",
        "adapters-vi",
    }


@pytest.mark.parametrize(
    ("filter", "dirnames"),
    [
        ("27b", ["adapters-27b-v2", "adapters-27b-v2"]),
        ("27b-v", ["adapters-27b-v2", "adapters-27b-v2"]),
        ("15k", ["adapters-15k/gemma-3-12b"]),
        ("vi", ["adapters-vi"]),
        ("v", ["adapters-vi"]),
        ("x", []),
        ("nothing", []),
        ("*", []),  # quoted: a filter is a literal prefix, never a glob
        ("27b v2; touch pwned", []),
    ],
)
async def test_filter(checkpoint_tree: CheckpointTree, filter: str, dirnames: list[str]) -> None:
    async with LocalTransport(checkpoint_tree.root) as local:
        found = await discover_checkpoints(local, str(checkpoint_tree.root), filter=filter)
    assert [c.dirname for c in found] == dirnames
    assert not (checkpoint_tree.root / "pwned").exists()


async def test_iter_yields_each_checkpoint_as_soon_as_it_is_found(
    checkpoint_tree: CheckpointTree,
) -> None:
    counting = CountingTransport(LocalTransport(checkpoint_tree.root))
    async with aclosing(iter_checkpoints(counting, str(checkpoint_tree.root))) as checkpoints:
        first = await anext(checkpoints)
        # ls adapters-*, ls adapters-15k/gemma-3-*, ls adapters-15k/gemma-3-12b/*: nothing more.
        assert len(counting.commands) == 3 and len(counting.stats) == 1
        assert first.dirname == "adapters-15k/gemma-3-12b"
    everything = CountingTransport(LocalTransport(checkpoint_tree.root))
    await discover_checkpoints(everything, str(checkpoint_tree.root))
    assert (len(everything.commands), len(everything.stats)) == (9, 4)


async def test_iterations_sort_as_numbers(tmp_path: Path) -> None:
    base = tmp_path / "lem with spaces"
    for name in (
        "900_adapters.safetensors",
        "1000_adapters.safetensors",
        "50_adapters.safetensors",
    ):
        write_mlx_adapter(base / "adapters-1b" / name)
    write_mlx_adapter(base / "adapters-1b" / "final_adapters.safetensors")  # no iteration
    async with LocalTransport() as local:
        found = await discover_checkpoints(local, str(base))
    assert [c.iteration for c in found] == [50, 900, 1000]
    assert all(c.remote_dir == str(base / "adapters-1b") for c in found)


async def test_empty_and_missing_bases(tmp_path: Path) -> None:
    async with LocalTransport() as local:
        assert await discover_checkpoints(local, str(tmp_path)) == []
        with pytest.raises(TransportError, match="not a directory"):
            await discover_checkpoints(local, str(tmp_path / "absent"))


# -- discovery over SSH ---------------------------------------------------------------------------


@asyncio_only
async def test_discover_over_ssh(ssh_server: SSHServer, checkpoint_tree: CheckpointTree) -> None:
    counting = CountingTransport(ssh_server.transport())
    async with counting:
        async with aclosing(iter_checkpoints(counting, str(checkpoint_tree.root))) as checkpoints:
            first = await anext(checkpoints)
            assert len(counting.commands) == 3 and len(counting.stats) == 1
            assert first.label == "G12 @0000050"
        found = await discover_checkpoints(counting, str(checkpoint_tree.root))
        filtered = await discover_checkpoints(counting, str(checkpoint_tree.root), filter="vi")
        with pytest.raises(TransportError, match="not a directory"):
            await discover_checkpoints(counting, str(checkpoint_tree.root / "absent"))
    check_fields(found, checkpoint_tree)
    assert [c.label for c in filtered] == ["Vi1 @0000300"]
    async with LocalTransport() as local:
        assert found == await discover_checkpoints(local, str(checkpoint_tree.root))


# -- the tree's adapters are real -----------------------------------------------------------------


def test_tree_adapters_are_mlx_lm_adapters(checkpoint_tree: CheckpointTree) -> None:
    safetensors = require("safetensors.numpy")
    for relative in checkpoint_tree.checkpoints:
        tensors = safetensors.load_file(str(checkpoint_tree.path(relative)))
        assert len(tensors) == 8
        a = tensors["model.layers.1.self_attn.v_proj.lora_a"]
        b = tensors["model.layers.1.self_attn.v_proj.lora_b"]
        assert (a.shape, b.shape, str(a.dtype)) == ((64, 4), (4, 32), "float32")
        config = json.loads(
            (checkpoint_tree.path(relative).parent / "adapter_config.json").read_text()
        )
        assert config["fine_tune_type"] == "lora" and config["num_layers"] == 2
        assert config["lora_parameters"]["keys"] == ["self_attn.q_proj", "self_attn.v_proj"]
    mtimes = [os.stat(checkpoint_tree.path(r)).st_mtime for r in checkpoint_tree.checkpoints]
    assert len(set(mtimes)) == len(mtimes)


@pytest.mark.slow
def test_tree_adapters_load_on_the_tiny_mlx_model(
    checkpoint_tree: CheckpointTree, tiny_mlx: Path, tmp_path: Path
) -> None:
    mlx_lm = require("mlx_lm")
    mx = require("mlx.core")
    np = require("numpy")
    from mlx.utils import tree_flatten

    # mlx-lm loads "adapters.safetensors" from a folder, as the evaluator lays it out.
    folder = tmp_path / "adapter"
    folder.mkdir()
    source = checkpoint_tree.path("adapters-27b-v2/0000200_adapters.safetensors")
    shutil.copy(source, folder / "adapters.safetensors")
    shutil.copy(source.parent / "adapter_config.json", folder / "adapter_config.json")
    base, _ = mlx_lm.load(str(tiny_mlx))
    adapted, _ = mlx_lm.load(str(tiny_mlx), adapter_path=str(folder))
    params = dict(tree_flatten(adapted.parameters()))
    saved = require("safetensors.numpy").load_file(str(source))
    assert all(np.array_equal(np.array(params[name]), value) for name, value in saved.items())
    tokens = mx.array([[1, 2, 3, 4]])
    assert float(mx.abs(base(tokens) - adapted(tokens)).max()) > 1e-3
