"""Named training presets: the tutorials' runs and cnnlab's fastest recipes.

``cnnlab train --recipe NAME`` starts from one of these; each is a RunConfig, saved with
the run like any other. The time-to-accuracy figures in BENCHMARKS.md come from the
``*-fast`` recipes (benchmarks/bench_time_to_accuracy.py).
"""

from __future__ import annotations

from cnnlab.data.transforms import Augment
from cnnlab.errors import CnnlabError
from cnnlab.train.experiment import RunConfig
from cnnlab.train.loop import TrainConfig

RECIPES: dict[str, RunConfig] = {
    # The Keras tutorials, as they train (accuracy targets from their notebooks).
    "tutorial-mnist-cnn": RunConfig(
        data="mnist", model="mnist-cnn", train=TrainConfig(epochs=10, batch_size=256, optimizer="adam")),
    "tutorial-intro-cnn": RunConfig(
        data="mnist", model="intro-cnn", train_size=20_000, train=TrainConfig(epochs=6, batch_size=128)),
    # 99.0% on MNIST in one epoch: the published fast-MNIST recipe's widths and optimiser
    # (Adam, lr 0.01, betas (0.7, 0.9): a short memory suits a one-epoch run) with batch
    # norm after pooling and a one-cycle schedule peaking at 20% of the run.
    "mnist-fast": RunConfig(
        data="mnist", model="mnist-fast",
        train=TrainConfig(epochs=1, batch_size=256, optimizer="adam", lr=0.01, betas=(0.7, 0.9),
                          schedule="onecycle", warmup=0.2)),
    # 99.5% on MNIST: mnist-fast plus a 128-unit hidden layer, the same optimiser for 10
    # epochs, random ±2-pixel translations (a digit's position carries no class) and a
    # little label smoothing. Without the hidden layer 6-12 epochs stopped at 99.48-99.49%.
    "mnist-995": RunConfig(
        data="mnist", model="mnist-fast-plus",
        train=TrainConfig(epochs=10, batch_size=256, optimizer="adam", lr=0.01, betas=(0.7, 0.9),
                          schedule="onecycle", warmup=0.2, label_smoothing=0.1, augment=Augment(crop=2))),
    # 90% on CIFAR-10 in under 15 minutes of 2 CPU cores: an airbench-style net at half
    # width, SGD with Nesterov momentum and a one-cycle schedule (peak lr 0.2 at batch 256:
    # DAWNBench ResNet-9's 0.4 at batch 512, scaled linearly), label smoothing 0.2 and
    # flip + crop augmentation as airbench; evaluation averages each image with its mirror.
    "cifar-fast": RunConfig(
        data="cifar10", model="cifar-fast", normalize="featurewise",
        train=TrainConfig(epochs=8, batch_size=256, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                          weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.2,
                          augment=Augment(flip_h=True, crop=2), eval_flip=True)),
}


def get_recipe(name: str) -> RunConfig:
    if name not in RECIPES:
        raise CnnlabError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
