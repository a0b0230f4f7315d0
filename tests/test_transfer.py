"""Transfer learning: ImageNet bodies with new heads, frozen phases, discriminative rates,
the photo augmentation, and `cnnlab train --pretrained` end to end on real photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.transforms import Augment, apply_augment
from cnnlab.errors import CnnlabError
from cnnlab.models import build
from cnnlab.models.transfer import HEADS, head_of, pretrained_model
from cnnlab.train.finetune import Phases
from cnnlab.train.loop import fit


def test_pretrained_model_keeps_the_body_and_makes_a_fresh_head(squeeze_weights):
    state = torch.load(squeeze_weights, weights_only=True)
    torch.manual_seed(0)
    model = pretrained_model("squeezenet1_1", num_classes=7, input_shape=(64, 64, 3), weights=squeeze_weights)
    got = model.state_dict()
    for key, value in state.items():
        if key.startswith("classifier.1."):
            assert got[key].shape[0] == 7  # the new head, for 7 classes
        else:
            torch.testing.assert_close(got[key], value.float())
    assert head_of(model) is model.classifier[1]
    # The run directory rebuilds exactly this architecture from its name.
    assert {k: v.shape for k, v in build("squeezenet1_1", input_shape=(64, 64, 3), num_classes=7)
            .state_dict().items()} == {k: v.shape for k, v in got.items()}


def test_weights_of_another_network_are_refused(squeeze_weights):
    with pytest.raises(CnnlabError, match="do not fit resnet18: missing"):
        pretrained_model("resnet18", num_classes=3, input_shape=(64, 64, 3), weights=squeeze_weights)
    with pytest.raises(CnnlabError, match="--pretrained is available for"):
        pretrained_model("mnist-cnn", num_classes=3, weights=squeeze_weights)


@pytest.mark.parametrize("name", list(HEADS))
def test_every_transferable_network_has_its_head(name):
    with torch.device("meta"):
        model = build(name, num_classes=5)
    assert head_of(model).out_features if hasattr(head_of(model), "out_features") else True
    assert dict(model.named_modules())[HEADS[name]] is head_of(model)


def _small_net():
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def test_frozen_means_frozen_then_the_body_trains():
    torch.manual_seed(0)
    model = _small_net()
    x, y = torch.randn(24, 3, 12, 12), torch.randint(0, 3, (24,))
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("8.")}
    head = model[8].weight.detach().clone()
    fit(model, x, y, epochs=1, batch_size=8, freeze_epochs=1, head=model[8], verbose=0, lr=1e-2)
    after = model.state_dict()
    for k, v in body.items():  # parameters and BN running statistics (and batch counts)
        assert torch.equal(after[k], v), k
    assert not torch.equal(model[8].weight, head)
    assert all(p.requires_grad for p in model.parameters())  # fit hands the model back unfrozen
    fit(model, x, y, epochs=2, batch_size=8, freeze_epochs=1, head=model[8], verbose=0, lr=1e-2)
    after = model.state_dict()
    assert not torch.equal(after["0.weight"], body["0.weight"])
    assert not torch.equal(after["1.running_mean"], body["1.running_mean"])


def test_a_zoo_networks_head_is_found_when_freezing():
    with pytest.raises(CnnlabError, match="no known head in a Sequential"):
        fit(_small_net(), torch.randn(8, 3, 12, 12), torch.zeros(8, dtype=torch.long), freeze_epochs=1, verbose=0)


def test_discriminative_rates_and_two_one_cycles():
    model = build("resnet18", input_shape=(32, 32, 3), num_classes=3)
    phases = Phases(model, model.fc, freeze_epochs=1, body_lr_mult=0.1)
    groups = phases.param_groups("adamw", 2e-3)
    assert [g["lr"] for g in groups] == pytest.approx([2e-4, 2e-3])
    body, head = phases.lr_lambdas("onecycle", epochs=3, steps_per_epoch=10, warmup=0.3)
    assert all(body(t) == 0 for t in range(10))  # frozen epoch: the body does not move
    assert max(head(t) for t in range(10)) == pytest.approx(1.0)  # the head's own one-cycle
    # Unfrozen: one cycle at half the rate (fastai's fine_tune), the same shape for both groups.
    assert [body(t) for t in range(10, 30)] == [head(t) for t in range(10, 30)]
    assert max(head(t) for t in range(10, 30)) == pytest.approx(0.5)
    with pytest.raises(CnnlabError, match="body_lr_mult must be in"):
        Phases(model, model.fc, freeze_epochs=1, body_lr_mult=2)


def test_random_resized_crop_by_hand():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    aug = Augment(resized_crop=0.25)
    # u_area 0 -> a quarter of the area; u_ratio 0.5 -> aspect 1; u_x = u_y = 0.5 -> centred.
    draws = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    out = apply_augment(x, aug, draws)
    torch.testing.assert_close(out[1], x[1])  # the whole image, unchanged
    want = F.interpolate(x[:1, :, 4:12, 4:12], scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[0, :, 1:-1, 1:-1], want[0, :, 1:-1, 1:-1])  # the centre, upscaled 2x
    assert Augment.parse("resized-crop=0.35,flip-h") == Augment(resized_crop=0.35, flip_h=True)


def _write_photos(root, images, labels, classes, size: int, fmt: str) -> None:
    from PIL import Image

    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).resize((size, size), Image.BICUBIC).save(folder / f"{i:05d}.{fmt}")


@pytest.fixture(scope="module")
def cifar_photos(cifar10_dir, tmp_path_factory):
    """A folder of real photos: CIFAR-10 images upscaled to 96x96, train/ as PNG, test/ as JPEG."""
    from cnnlab.data import load

    ds = load("cifar10", root=cifar10_dir.parent, download=False, progress=False)
    root = tmp_path_factory.mktemp("photos")
    pick = lambda labels, n: np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)])  # noqa: E731
    tr, te = pick(ds.train.labels, 20), pick(ds.test.labels, 10)
    _write_photos(root / "train", ds.train.images[tr], ds.train.labels[tr], ds.classes, 96, "png")
    _write_photos(root / "test", ds.test.images[te], ds.test.labels[te], ds.classes, 96, "jpg")
    return root


@pytest.mark.slow
def test_finetuned_squeezenet_beats_scratch_and_the_run_works_everywhere(cifar_photos, squeeze_weights, tmp_path,
                                                                          capsys):
    from cnnlab.cli import main
    from cnnlab.runs.directory import load_run

    common = ["train", "--data", f"folder:{cifar_photos}", "--model", "squeezenet1_1", "--image-size", "64",
              "--epochs", "2", "--batch-size", "32", "--offline", "--quiet", "--no-report"]
    tuned, scratch = tmp_path / "tuned", tmp_path / "scratch"
    assert main([*common, "--pretrained", "--weights", str(squeeze_weights), "--out", str(tuned)]) == 0
    # The same network, data, steps and recipe, from random weights.
    assert main([*common, "--optimizer", "adamw", "--lr", "2e-3", "--schedule", "onecycle",
                 "--augment", "resized-crop=0.35,flip-h", "--out", str(scratch)]) == 0
    run = load_run(tuned)
    assert run.metrics["test_accuracy"] > load_run(scratch).metrics["test_accuracy"] + 0.1
    assert run.classes == sorted(p.name for p in (cifar_photos / "train").iterdir())
    assert run.config["mean"] == pytest.approx([0.485, 0.456, 0.406]) and run.config["pretrained"]
    capsys.readouterr()
    assert main(["evaluate", str(tuned)]) == 0
    assert f"{run.metrics['test_accuracy']:.4f}" in capsys.readouterr().out
    photo = next((cifar_photos / "test" / "ship").iterdir())
    assert main(["predict", str(tuned), str(photo)]) == 0
    assert "1. " in capsys.readouterr().out
    assert main(["report", str(tuned)]) == 0
    assert json.loads((tuned / "config.json").read_text())["image_size"] == 64


def test_pretrained_takes_the_fine_tune_recipe_under_typed_options():
    from cnnlab.cli import build_parser
    from cnnlab.cli.train import resolve
    from cnnlab.train.finetune import FINETUNE_DEFAULTS

    args = build_parser("train").parse_args(["train", "--pretrained", "--model", "resnet18", "--lr", "0.01"])
    cfg = resolve(args)[0]
    assert cfg.pretrained and cfg.train.lr == 0.01  # typed wins
    assert cfg.train.freeze_epochs == FINETUNE_DEFAULTS["freeze_epochs"] == 1
    assert cfg.train.optimizer == "adamw" and cfg.train.augment == Augment(resized_crop=0.35, flip_h=True)
