"""Loading an MLX folder sends nothing to the Hugging Face hub and leaves os.environ alone."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

mlx_lm = pytest.importorskip("mlx_lm")

from goml_async.backends.mlx import load_mlx_model  # noqa: E402

pytestmark = pytest.mark.anyio


async def test_loading_a_folder_is_offline_without_touching_the_environment(
    tiny_mlx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    loads: list[dict[str, Any]] = []
    real_load = mlx_lm.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    connects: list[object] = []

    def refuse(sock: socket.socket, address: object) -> None:
        connects.append(address)
        raise OSError("this test has no network")

    monkeypatch.setattr(mlx_lm, "load", recording_load)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = await load_mlx_model(tiny_mlx)
    async with model:
        # the tokenizer loaded from the folder alone works
        result = await model.generate("Hi", max_tokens=2).collect()
        assert result.finish_reason in ("length", "stop")
    assert dict(os.environ) == before  # nothing set, nothing removed
    assert "HF_HUB_OFFLINE" not in os.environ
    assert connects == []  # no request was even attempted
    # The offline choice is an argument of the tokenizer load, not a process-wide variable.
    assert [call["tokenizer_config"] for call in loads] == [{"local_files_only": True}]
