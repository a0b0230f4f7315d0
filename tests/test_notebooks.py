"""Execute every notebook in examples/ top to bottom on small subsets; any error fails.

``CNNLAB_NOTEBOOK_SMALL=1`` makes each notebook train on 2,000 images for one epoch, so all
six take a few minutes on 2 CPU cores. The notebooks are stored without outputs, and a
test checks that they stay so and that they are what examples/make_notebooks.py writes.
"""

from __future__ import annotations

import json
import os
import re
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
def test_notebook_runs(path, mnist_dir, cifar10_dir, datasets_root):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # The kernel gets its own environment: this process's, with no matplotlib settings (CI picks the Agg
    # backend for the other tests), so it draws as Jupyter does (matplotlib-inline) and a figure that
    # would not show for a learner fails here (cnnlab's figures showed as "<Figure size ...>" text in a
    # fresh kernel). It finds this checkout's cnnlab the way the tests do.
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPL")}
    env.update(CNNLAB_NOTEBOOK_SMALL="1", CNNLAB_DATA=str(datasets_root),
               PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute(env=env)  # raises CellExecutionError, naming the cell, on any error
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PLOTS.search(cell.source):
            kinds = {kind for out in cell.outputs for kind in out.get("data", {})}
            assert "image/png" in kinds, f"{path.name} cell {i} draws but shows no image: {sorted(kinds)}"
    if path.name.startswith("06_"):
        _check_transfer_claim(nb)


# A cell that draws: a cnnlab plot function, the scratch gallery, or pyplot.
PLOTS = re.compile(r"\b(plot_\w+|gallery|plt\.(imshow|subplots|figure|scatter|plot))\(")


def _check_transfer_claim(nb) -> None:
    """Notebook 06's text, held to its own numbers: with 20 examples the 0-4 features (frozen or
    fine-tuned) beat training from scratch; with 200, scratch beats the frozen features."""
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    rows = {int(m[1]): tuple(map(float, m.groups()[1:]))
            for m in re.finditer(r"^\s*(\d+)\s+([01]\.\d+)\s+([01]\.\d+)\s+([01]\.\d+)\s*$", text, re.M)}
    assert set(rows) == {20, 200}, text[-2000:]
    scratch, frozen, tuned = rows[20]
    assert frozen > scratch and tuned > scratch, rows
    scratch, frozen, tuned = rows[200]
    assert scratch > frozen, rows
