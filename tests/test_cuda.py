"""The CUDA path of the training engine: bf16 autocast, channels_last, fused optimisers,
no host waits inside a step, checkpoints that move between GPU and CPU.

Every test here needs a CUDA GPU and is skipped without one (CI has none); they run on a
GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from cnnlab.data.transforms import Augment
from cnnlab.train.config import TrainConfig
from cnnlab.train.history import EpochEnd
from cnnlab.train.loop import fit
from cnnlab.train.optim import make_optimizer
from cnnlab.train.validation import evaluate_loss_accuracy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")


def net(classes: int = 10) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(16),
                         nn.Flatten(), nn.Linear(16 * 8 * 8, classes))


def data(n: int = 256, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_training_on_cuda_overfits_a_batch(precision):
    x, y = data(128)
    torch.manual_seed(0)
    model = net()
    history = fit(model, x, y, config=TrainConfig(epochs=60, batch_size=128, lr=0.01, verbose=0, device="cuda",
                                                  precision=precision))
    assert history.epochs[0]["accuracy"] < 0.5
    assert history.epochs[-1]["accuracy"] == 1.0
    p = next(model.parameters())
    assert p.is_cuda and p.dtype == torch.float32  # bf16 autocast keeps fp32 master weights
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_evaluation_agrees_with_fp32_on_the_cpu():
    torch.manual_seed(0)
    model = net().eval()
    x, y = data(512, seed=3)
    loss_cpu, acc_cpu = evaluate_loss_accuracy(model, x, y, batch_size=100)
    model.cuda()
    loss_gpu, acc_gpu = evaluate_loss_accuracy(model, x.cuda(), y.cuda(), batch_size=100)  # bf16 autocast
    assert loss_gpu == pytest.approx(loss_cpu, rel=2e-2)
    assert abs(acc_gpu - acc_cpu) <= 0.02
    loss_fp32, _ = evaluate_loss_accuracy(model, x.cuda(), y.cuda(), batch_size=100, precision="fp32")
    assert loss_fp32 == pytest.approx(loss_cpu, rel=2e-3)  # TF32 convolutions at most


def test_cuda_parameters_get_the_fused_optimiser():
    p = nn.Parameter(torch.zeros(3, device="cuda"))
    assert make_optimizer("adam", [p]).defaults["fused"] is True
    assert make_optimizer("sgd", [p], momentum=0.9, nesterov=True).defaults["fused"] is True
    assert make_optimizer("adam", [nn.Parameter(torch.zeros(3))]).defaults["foreach"] is True


@pytest.mark.parametrize("graphs", [True, False])
def test_a_step_never_waits_for_the_gpu(graphs):
    """The host may only wait when it reads the running loss (every 50 steps) and at the
    end of the epoch; a per-step .item() or host-to-GPU copy would show as ~200 waits."""
    x, y = data(200 * 16, device="cuda")
    model = net().cuda()  # moving the weights is a wait per tensor; not part of a step
    cfg = TrainConfig(epochs=1, batch_size=16, verbose=0, device="cuda", augment=Augment(crop=2, flip_h=True),
                      cuda_graphs=graphs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(model, x, y, config=cfg)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    waits = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(waits) <= 12, [str(w.message) for w in waits[:3]]


def _train_twice(cfg_a: TrainConfig, cfg_b: TrainConfig, model_fn=lambda: net(), n: int = 1000):
    """The same seed, data and model trained under two configs: (history, weights) of each."""
    x, y = data(n, device="cuda")
    out = []
    for cfg in (cfg_a, cfg_b):
        torch.manual_seed(0)
        model = model_fn()
        h = fit(model, x, y, config=cfg)
        out.append(([(e["loss"], e["accuracy"]) for e in h.epochs], model.state_dict()))
    return out


def test_cuda_graph_replay_trains_exactly_as_the_eager_step():
    """Batch norm, Adam, a changing learning rate, augmentation and a last partial batch
    (1000 = 7 x 128 + 104, run eagerly) give the same run with and without the graph."""
    torch.backends.cudnn.deterministic = True
    try:
        base = dict(epochs=2, batch_size=128, lr=0.01, schedule="onecycle", verbose=0, device="cuda",
                    precision="fp32", augment=Augment(crop=2, flip_h=True), seed=4)
        (h_graph, w_graph), (h_eager, w_eager) = _train_twice(
            TrainConfig(**base, cuda_graphs=True), TrainConfig(**base, cuda_graphs=False))
    finally:
        torch.backends.cudnn.deterministic = False
    assert h_graph == pytest.approx(h_eager, rel=1e-4)
    for k, v in w_eager.items():
        torch.testing.assert_close(w_graph[k], v, rtol=1e-4, atol=1e-5, msg=k)


class ReadsTheHost(nn.Module):
    """A model a CUDA graph cannot record: its forward reads a value back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.body = net()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if x.mean().item() > 10:  # never true; the read itself is what cannot be captured
            x = x * 0
        return self.body(x)


def test_a_step_that_cannot_be_recorded_trains_op_by_op_from_where_it_stood(caplog):
    base = dict(epochs=2, batch_size=100, lr=0.01, verbose=0, device="cuda", precision="fp32", seed=1)
    torch.backends.cudnn.deterministic = True
    try:
        with caplog.at_level(logging.WARNING, logger="cnnlab"):
            (h_try, w_try), (h_eager, w_eager) = _train_twice(
                TrainConfig(**base, cuda_graphs=True), TrainConfig(**base, cuda_graphs=False), model_fn=ReadsTheHost)
    finally:
        torch.backends.cudnn.deterministic = False
    said = [r for r in caplog.records if r.name == "cnnlab.train.session"]
    assert len(said) == 1 and "could not record the training step as a CUDA graph" in said[0].getMessage()
    # the warm-up steps of the failed attempt are undone: the same run as never trying
    assert h_try == pytest.approx(h_eager, rel=1e-4)
    for k, v in w_eager.items():
        torch.testing.assert_close(w_try[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_resume_on_cuda_continues_the_same_run(full_and_resumed):
    torch.backends.cudnn.deterministic = True
    try:
        x, y = data(device="cuda")
        cfg = TrainConfig(epochs=4, batch_size=48, steps_per_epoch=3, seed=3, schedule="cosine", verbose=0,
                          device="cuda", precision="fp32", augment=Augment(crop=2))
        full, resumed, history = full_and_resumed(net, x, y, cfg)
    finally:
        torch.backends.cudnn.deterministic = False
    assert len(history) == 4
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_a_cuda_run_resumes_and_evaluates_on_the_cpu():
    """A checkpoint written on a GPU (fused Adam state on CUDA) continues on a CPU-only machine."""
    x, y = data()
    saved = {}

    def keep(end: EpochEnd) -> None:
        saved.update(end.state())

    torch.manual_seed(0)
    fit(net(), x.cuda(), y.cuda(), config=TrainConfig(epochs=1, batch_size=64, verbose=0, device="cuda"),
        callbacks=[keep])
    import io

    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    state = torch.load(buf, map_location="cpu", weights_only=True)
    model = net()
    history = fit(model, x, y, config=TrainConfig(epochs=2, batch_size=64, verbose=0, device="cpu"), resume=state)
    assert len(history) == 2 and history.epochs[1]["loss"] < history.epochs[0]["loss"] * 1.5
    assert next(model.parameters()).device.type == "cpu"


def test_cli_trains_on_cuda_end_to_end(tmp_path, datasets_root, monkeypatch):
    from cnnlab.cli import main
    from cnnlab.runs.directory import load_run

    monkeypatch.setenv("CNNLAB_DATA", str(datasets_root))
    out = tmp_path / "run"
    code = main(["train", "--data", "mnist", "--train-size", "4096", "--model", "mnist-cnn", "--epochs", "2",
                 "--batch-size", "256", "--device", "cuda", "--offline", "--quiet", "--out", str(out)])
    assert code == 0
    run = load_run(out)
    assert run.config["train"]["device"] == "cuda"
    assert run.metrics["test_accuracy"] > 0.85
    assert (out / "report.html").is_file()
