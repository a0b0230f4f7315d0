"""The curated public API: every advertised name resolves, and importing stays light."""

import subprocess
import sys

import pytest

import cnnlab


def test_every_public_name_resolves():
    for name in cnnlab.__all__:
        assert getattr(cnnlab, name) is not None, name


def test_import_does_not_pull_in_torch():
    code = "import cnnlab, cnnlab.scratch.conv, cnnlab.data, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_readme_example_trains(datasets_root, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(datasets_root))
    ds = cnnlab.load_dataset("mnist", train_size=2048, progress=False)
    model = cnnlab.build_model("intro-cnn")
    assert "Total params: 54,410" in str(cnnlab.summarize(model, (28, 28, 1)))
    history = cnnlab.fit(model, ds.train.images, ds.train.labels,
                         config=cnnlab.TrainConfig(epochs=3, batch_size=128, verbose=0),
                         validation=(ds.test.images[:500], ds.test.labels[:500]))
    assert len(history) == 3 and history.epochs[-1]["val_accuracy"] > 0.75


def test_a_command_imports_only_its_own_module():
    code = ("import sys; from cnnlab.cli import main; main(['kernels']); "
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "sobel-x" in proc.stdout
    assert proc.stderr.strip() == "False"


@pytest.mark.parametrize("old, new", [("cnnlab.conv", "cnnlab.scratch.conv"), ("cnnlab.plots", "cnnlab.report.plots"),
                                      ("cnnlab.inspect", "cnnlab.insight.internals")])
def test_old_flat_import_paths_still_work_and_name_the_new_one(old, new):
    import importlib
    import sys
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
