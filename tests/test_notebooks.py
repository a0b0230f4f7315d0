"""Execute every notebook in examples/ top to bottom on small subsets; any error fails.

``CNNLAB_NOTEBOOK_SMALL=1`` makes each notebook train on 2,000 images for one epoch, so all
six take a few minutes on 2 CPU cores. The notebooks are stored without outputs, and a
test checks that they stay so and that they are what examples/make_notebooks.py writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_notebooks_are_stripped_and_generated(tmp_path):
    pytest.importorskip("nbformat")
    assert len(NOTEBOOKS) == 6
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} has outputs"
    # The generator writes exactly the committed files (run it after editing a notebook's code).
    done = subprocess.run([sys.executable, str(EXAMPLES / "make_notebooks.py"), str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        assert (tmp_path / path.name).read_text() == path.read_text(), f"{path.name} differs from make_notebooks.py"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, mnist_dir, cifar10_dir, datasets_root, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("CNNLAB_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("CNNLAB_DATA", str(datasets_root))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel is a fresh Python: it finds this checkout's cnnlab the way the tests do.
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
