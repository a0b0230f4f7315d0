"""fit() for any model and dataset, in Keras' shape: arrays, Datasets, DataLoaders used as
given, callbacks that stop training, History plots, and a user's own nn.Module as a run."""

from __future__ import annotations

import textwrap

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from cnnlab.report.plots import plot_history
from cnnlab.train.callbacks import Callback, StopTraining
from cnnlab.train.loop import fit


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def _data(n=40):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_keras_shape_with_arrays_and_validation_data_plots():
    x, y = _data()
    history = fit(_net(), (x, y), epochs=2, batch_size=16, validation_data=(x[:10], y[:10]), verbose=0)
    assert len(history) == 2 and set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert isinstance(plot_history(history), Figure)
    assert isinstance(plot_history(history.history), Figure)  # Keras' dict of lists too


def test_a_dataset_trains_exactly_as_the_same_arrays():
    x, y = _data()
    a, b = _net(), _net()
    fit(a, x, y, epochs=2, batch_size=16, verbose=0, lr=0.01)
    fit(b, TensorDataset(x, y), epochs=2, batch_size=16, verbose=0, lr=0.01)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)  # the same seeded shuffles, the same batches


class _Recording(Sampler):
    def __init__(self, order):
        self.order, self.seen = order, []

    def __iter__(self):
        for i in self.order:
            self.seen.append(i)
            yield i

    def __len__(self):
        return len(self.order)


def test_a_dataloader_is_used_as_given():
    x, y = _data(12)
    sampler = _Recording([11, 3, 5, 0, 7, 1, 2])
    loader = DataLoader(TensorDataset(x, y), batch_size=3, sampler=sampler)
    seen_batches = []

    class Count(Callback):
        def on_batch_end(self, batch, logs=None):
            seen_batches.append((batch, logs["loss"]))

    history = fit(_net(), loader, epochs=1, batch_size=128, callbacks=[Count()], verbose=0)
    assert sampler.seen == [11, 3, 5, 0, 7, 1, 2]  # its sampler, its order, its batch size (3, 3, 1)
    assert [b for b, _ in seen_batches] == [0, 1, 2] and len(history) == 1


def test_callbacks_stop_training_as_in_keras():
    x, y = _data()
    events = []

    class StopAfterTwoBatches(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            events.append(("begin", epoch))

        def on_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    history = fit(_net(), x, y, epochs=5, batch_size=8, callbacks=[StopAfterTwoBatches()], verbose=0)
    assert len(history) == 1 and events == [("begin", 0)]

    class RaiseAtEpoch3:  # any object with the hooks, no base class needed
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise StopTraining

    assert len(fit(_net(), x, y, epochs=5, batch_size=8, callbacks=[RaiseAtEpoch3()], verbose=0)) == 3


def test_unknown_settings_and_missing_labels_are_one_line_errors():
    from cnnlab.errors import CnnlabError

    x, y = _data()
    with pytest.raises(CnnlabError, match="unknown setting 'epochz'"):
        fit(_net(), x, y, epochz=3)
    with pytest.raises(CnnlabError, match="needs labels"):
        fit(_net(), x, epochs=1)


NET = '''
from torch import nn


def make_net(input_shape=(28, 28, 1), num_classes=10):
    h, w, c = input_shape
    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(8 * (h // 2) * (w // 2), num_classes))
'''


@pytest.mark.slow
def test_own_module_gets_a_run_that_resumes_exactly_and_reports(tmp_path, monkeypatch, datasets_root, capsys):
    from cnnlab.cli import main
    from cnnlab.runs.directory import load_checkpoint, load_run

    monkeypatch.setenv("CNNLAB_DATA", str(datasets_root))
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["train", "--data", "mnist", "--train-size", "256", "--batch-size", "64", "--offline", "--quiet",
              "--no-report", "--model", "my_nets:make_net", "--seed", "2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*common, "--epochs", "2", "--out", str(straight)]) == 0
    assert main([*common, "--epochs", "1", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2", "--offline", "--quiet", "--no-report"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    run = load_run(split)
    assert run.config["model"] == "my_nets:make_net" and len(run.history) == 2
    capsys.readouterr()
    assert main(["evaluate", str(split)]) == 0 and "accuracy" in capsys.readouterr().out
    assert main(["report", str(split)]) == 0 and (split / "report.html").is_file()


def test_fit_leaves_process_wide_malloc_settings_alone():
    import subprocess
    import sys

    code = ("import torch; from torch import nn; from cnnlab.fast import memory; from cnnlab.train.loop import fit; "
            "fit(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(8, 1, 2, 2), torch.zeros(8).long(), "
            "epochs=1, verbose=0, device='cpu'); print(memory._state)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"  # keep_freed_memory() never ran: the CLI applies it, fit does not


@pytest.mark.slow
def test_a_model_object_no_import_rebuilds_is_kept_as_a_torch_export_program(tmp_path, colour_folder, monkeypatch, capsys):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cnnlab.cli import main
    from cnnlab.errors import CnnlabError
    from cnnlab.insight.predictions import evaluate_images
    from cnnlab.runs.directory import load_checkpoint, load_run
    from cnnlab.runs.experiment import RunConfig, resume_run, train_run
    from cnnlab.runs.program import check_archive
    from cnnlab.train.config import with_overrides

    class Net(nn.Module):  # defined here: nothing can import it, so the run keeps a program
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.3))
            self.head = nn.Linear(24, 3)

        def forward(self, x):
            return self.head(self.body(x))

    cfg = with_overrides(RunConfig(data=f"folder:{colour_folder}"), epochs=1, batch_size=8, lr=0.01,
                         verbose=0, seed=3, device="cpu")
    torch.manual_seed(0)
    net = Net()
    out, _ = train_run(cfg, tmp_path / "run", model=net)
    assert (out / "model.pt2").is_file() and load_run(out).config["program"] == "model.pt2"
    run = load_run(out)
    data = run.load_data()
    want = evaluate_images(net.eval(), data.test.images, data.test.labels, preprocess=run.preprocess,
                           classes=run.classes)
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "evaluate", str(out), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((out / "metrics.json").read_text())
    assert got["accuracy"] == want.metrics["accuracy"] and got["confusion_matrix"] == want.metrics["confusion_matrix"]
    assert got["loss"] == pytest.approx(want.metrics["loss"], rel=1e-5)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0 and (out / "report.html").is_file()
    assert main(["predict", str(out), str(tmp_path / "shapes" / "k1" / "0.png")]) == 0
    assert "1. k" in capsys.readouterr().out
    # resuming: the program cannot train; the CLI says so in one line, Python takes a new object of the network
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--no-report", "--offline"]) == 2
    assert "torch.export program" in capsys.readouterr().err
    with pytest.raises(CnnlabError, match="cannot train"):
        run.build_model().train()
    resume_run(out, epochs=2, model=Net())
    torch.manual_seed(0)
    straight, _ = train_run(with_overrides(cfg, epochs=2), tmp_path / "straight", model=Net())
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(out / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # an archive holding something torch.export.load would unpickle is refused before it is loaded
    check_archive(out / "model.pt2")
    import zipfile

    with zipfile.ZipFile(out / "model.pt2", "a") as z:
        root = z.namelist()[0].split("/")[0]
        z.writestr(f"{root}/data/constants/opaque_obj_0", b"cos\nsystem\n")
    with pytest.raises(CnnlabError, match="opaque_obj_0.*might unpickle"):
        load_run(out).build_model()
