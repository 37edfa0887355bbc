"""examples/quickstart.ipynb: committed without outputs, and every cell runs in a real kernel."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from model_fixtures import require

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def _read() -> Any:
    nbformat = require("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_the_notebook_is_committed_clean_and_compiles() -> None:
    notebook = _read()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    for cell in code:
        # Top-level await is valid in a notebook cell (IPython's autoawait), not in a module.
        compile(cell.source, f"cell {cell.id}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert any(cell.source.startswith("import goml_async\n\nmodel = await ") for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"


def _kernel_for_this_python(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``python3`` kernelspec that runs this interpreter, found first on JUPYTER_PATH."""
    spec = folder / "share" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "goml_async tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(folder / "share"))
    # Connection files, IPython's profile and Jupyter's config stay in the test's folder.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(folder / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(folder / "config"))
    monkeypatch.setenv("IPYTHONDIR", str(folder / "ipython"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")


def _stdout(cell: Any) -> str:
    return "".join(
        output.text
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_notebook_runs(
    bundled_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = require("nbclient")
    require("ipykernel")
    _kernel_for_this_python(tmp_path, monkeypatch)
    notebook = _read()

    client = nbclient.NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code for output in cell.outputs]
    assert [output for output in outputs if output.output_type == "error"] == []
    assert all(cell.execution_count is not None for cell in code)
    by_source = {cell.source.split("\n")[0]: cell for cell in code}

    streamed = next(cell for cell in code if "async for token in stream" in cell.source)
    text, _, reason = _stdout(streamed).partition("finish reason:")
    assert text.strip() and "Paris" in text
    assert reason.strip() in ("stop", "length")
    metrics = _stdout(next(cell for cell in code if ".collect()" in cell.source))
    assert " prompt tokens, " in metrics and "tokens/s" in metrics
    blocking = _stdout(by_source["import asyncio"])
    assert "this cell runs in a running event loop: True" in blocking
    assert len(blocking.strip().splitlines()) >= 3
    assert "lek_score = " in _stdout(by_source["from goml_async.scoring import score_heuristic"])
    parsed = _stdout(by_source["import pydantic"])
    assert parsed.startswith("City(name='") and "country='" in parsed
