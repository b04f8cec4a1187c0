"""Every cookbook notebook runs top to bottom (executed with a real kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from _data import HAS_TASK_DATA, NO_TASK_DATA
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "cookbook").glob("*.ipynb"))
NEEDS_TASK_DATA = {"task_experts"}  # calibrates and scores on ../shared/data/tasks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch) -> None:
    if path.stem in NEEDS_TASK_DATA and not HAS_TASK_DATA:
        pytest.skip(NO_TASK_DATA)
    monkeypatch.setenv("MEMOS_HOME", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
