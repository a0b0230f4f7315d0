"""fit(): overfitting, determinism, exact resume, NaN handling, callbacks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnlab.data.transforms import Augment
from cnnlab.errors import CnnlabError
from cnnlab.train.config import TrainConfig
from cnnlab.train.history import TrainingError
from cnnlab.train.loop import fit


def tiny_net(classes: int = 10) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
                         nn.Linear(8 * 7 * 7, classes))


def data(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_overfits_one_batch():
    x, y = data(64)
    torch.manual_seed(0)
    history = fit(tiny_net(), x, y, config=TrainConfig(epochs=40, batch_size=64, lr=0.01, verbose=0))
    assert history.epochs[0]["accuracy"] < 0.5
    assert history.epochs[-1]["accuracy"] == 1.0
    assert history.epochs[-1]["loss"] < 0.2 * history.epochs[0]["loss"]


@pytest.mark.parametrize("optimizer,extra", [("sgd", {"momentum": 0.9, "nesterov": True, "decay": 1e-6, "lr": 0.05}),
                                             ("adadelta", {}), ("adamw", {"weight_decay": 0.01, "lr": 0.01})])
def test_every_optimizer_lowers_the_loss(optimizer, extra):
    x, y = data(64)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=30, batch_size=32, optimizer=optimizer, verbose=0, **extra)
    history = fit(tiny_net(), x, y, config=cfg)
    assert history.epochs[-1]["loss"] < 0.8 * history.epochs[0]["loss"]


def test_same_seed_same_history_and_weights():
    x, y = data()
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_net()
        cfg = TrainConfig(epochs=3, batch_size=32, seed=7, verbose=0, augment=Augment(shift=0.1, flip_h=True))
        h = fit(model, x, y, config=cfg)
        results.append(([(e["loss"], e["accuracy"]) for e in h.epochs], model.state_dict()))
    assert results[0][0] == results[1][0]
    for k, v in results[0][1].items():
        assert torch.equal(v, results[1][1][k]), k


def test_resume_equals_uninterrupted_run(full_and_resumed):
    x, y = data()
    cfg = TrainConfig(epochs=4, batch_size=48, steps_per_epoch=3, seed=3, schedule="cosine", verbose=0)
    full, resumed, history = full_and_resumed(tiny_net, x, y, cfg, validation=data(64, seed=1))
    assert len(history) == 4
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_nan_loss_stops_with_a_clear_error():
    x, y = data(64)
    x[5] = math.nan
    with pytest.raises(TrainingError, match="loss became nan in epoch 1"):
        fit(tiny_net(), x, y, config=TrainConfig(epochs=2, batch_size=64, verbose=0))


def test_history_has_keras_keys_and_validation():
    x, y = data(128)
    h = fit(tiny_net(), x, y, config=TrainConfig(epochs=2, batch_size=64, verbose=0), validation=data(32, seed=2))
    assert set(h.history) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert len(h.history["val_accuracy"]) == 2


def test_validation_metrics_equal_a_manual_evaluation():
    x, y = data(128)
    xv, yv = data(50, seed=4)
    model = tiny_net()
    h = fit(model, x, y, config=TrainConfig(epochs=1, batch_size=64, verbose=0, eval_batch_size=16, device="cpu",
                                        precision="fp32"),
            validation=(xv, yv))
    model.eval()
    with torch.no_grad():
        logits = model(xv)
    assert h.epochs[0]["val_loss"] == pytest.approx(nn.functional.cross_entropy(logits, yv).item(), rel=1e-5)
    assert h.epochs[0]["val_accuracy"] == pytest.approx((logits.argmax(1) == yv).float().mean().item())


def test_early_stopping_and_restore_best():
    x, y = data(64)
    xv, yv = data(64, seed=9)  # random labels: validation loss soon rises
    cfg = TrainConfig(epochs=50, batch_size=64, lr=0.02, early_stopping=2, restore_best=True, verbose=0,
                      device="cpu")
    model = tiny_net()
    h = fit(model, x, y, config=cfg, validation=(xv, yv))
    assert len(h) < 50
    losses = [e["val_loss"] for e in h.epochs]
    best_epoch = losses.index(min(losses))
    assert len(h) == best_epoch + 1 + 2  # stopped after `patience` epochs without improvement
    best = min(losses)
    model.eval()
    with torch.no_grad():
        assert nn.functional.cross_entropy(model(xv), yv).item() == pytest.approx(best, rel=1e-4)


def test_steps_per_epoch_and_batch_validation():
    x, y = data(100)
    seen = []
    fit(tiny_net(), x, y, config=TrainConfig(epochs=2, batch_size=10, steps_per_epoch=3, verbose=0),
        callbacks=[lambda end: seen.append(end.state()["batches"]["cursor"])])
    assert seen == [30, 60]
    with pytest.raises(CnnlabError, match="batch_size must be at least 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(CnnlabError, match="3 inputs but 2 labels"):
        fit(tiny_net(), torch.zeros(3, 1, 16, 16), torch.zeros(2), config=TrainConfig(verbose=0))


def test_flip_evaluation_averages_an_image_and_its_mirror():
    from cnnlab.train.validation import evaluate_loss_accuracy

    torch.manual_seed(0)
    model = tiny_net().eval()
    x, y = data(40, seed=5)
    loss, acc = evaluate_loss_accuracy(model, x, y, batch_size=16, flip=True)
    with torch.no_grad():
        logits = (model(x) + model(x.flip(3))) / 2
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_evaluation_rejects_bad_batch_size_and_mismatched_labels():
    from cnnlab.train.validation import evaluate_loss_accuracy

    x, y = data(8)
    with pytest.raises(CnnlabError, match="batch_size must be at least 1, got 0"):
        evaluate_loss_accuracy(tiny_net(), x, y, batch_size=0)
    with pytest.raises(CnnlabError, match="8 inputs but 7 labels"):
        evaluate_loss_accuracy(tiny_net(), x, y[:7])


def test_precision_option_is_checked_and_bf16_trains_on_the_cpu():
    with pytest.raises(CnnlabError, match="precision must be one of auto, fp32, bf16"):
        TrainConfig(precision="fp16")
    x, y = data(64)
    torch.manual_seed(0)
    history = fit(tiny_net(), x, y, config=TrainConfig(epochs=40, batch_size=64, lr=0.01, verbose=0, precision="bf16"))
    assert history.epochs[-1]["accuracy"] >= 0.95  # bf16 autocast on the CPU, fp32 master weights


def test_a_graph_step_refuses_cpu_data_and_bad_batches():
    from cnnlab.fast.graph import GraphStep
    from cnnlab.train.step import EagerStep

    x, y = data(8)
    model = tiny_net()
    step = EagerStep(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, aug=Augment(),
                     aug_gen=torch.Generator())
    with pytest.raises(CnnlabError, match="a batch of 1 to 8 examples, got 9"):
        GraphStep(step, 9)
    with pytest.raises(CnnlabError, match="need the data on a CUDA device, got cpu"):
        GraphStep(step, 4)


@pytest.mark.parametrize("typed", ["fp32", "bf16"])
def test_the_test_metrics_are_evaluated_in_the_precision_asked_for(tmp_path, monkeypatch, typed):
    # One evaluation path: the run's test metrics go through what validation uses, so
    # `--precision fp32` evaluates in fp32 even where auto would pick bf16 (it did not before).
    from conftest import _shapes_images

    import cnnlab.train.validation as validation
    from cnnlab.runs.experiment import RunConfig, train_run

    monkeypatch.setenv("CNNLAB_CPU_BF16", "1")
    seen = []
    real = validation.autocast

    def spy(device, precision="auto", **kw):
        seen.append(precision)
        return real(device, precision, **kw)

    monkeypatch.setattr(validation, "autocast", spy)
    data = _shapes_images(tmp_path / "shapes")
    cfg = RunConfig(data=f"folder:{data}", model="conv4k3-relu,flatten,dense3",
                    train=TrainConfig(epochs=1, batch_size=8, verbose=0, device="cpu", precision=typed))
    train_run(cfg, tmp_path / "run", download=False)
    assert len(seen) >= 2 and set(seen) == {typed}  # validation after the epoch, then the test metrics
