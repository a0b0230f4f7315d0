"""What the source distribution and the extras promise (issue 27): the sdist's own tests can run from
it (checked by .ci/sdist, which CI calls), and `pip install 'cnnlab[all]'` brings JupyterLab for
README's `jupyter lab examples/`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_all_extra_installs_jupyterlab():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("jupyterlab") for req in extras["notebooks"])
    assert "notebooks" in extras["all"][0]
    assert "jupyter lab examples/" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_sdist_carries_what_its_tests_need(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the sdist is built from the files git knows)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([str(ROOT / ".ci" / "sdist"), "tests/test_layering.py",
                           "tests/test_notebooks.py::test_notebooks_are_stripped_and_generated"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "sdist lacks" not in done.stderr and "built cnnlab-" in done.stdout
