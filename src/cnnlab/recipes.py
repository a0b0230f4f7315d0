"""Named training presets: the tutorials' runs and cnnlab's fastest recipes.

``cnnlab train --recipe NAME`` starts from one of these; each is a RunConfig, saved with
the run like any other. The time-to-accuracy figures in BENCHMARKS.md come from the
``*-fast`` recipes (benchmarks/bench_time_to_accuracy.py).
"""

from __future__ import annotations

from cnnlab.errors import CnnlabError
from cnnlab.experiment import RunConfig
from cnnlab.train import TrainConfig

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
}


def get_recipe(name: str) -> RunConfig:
    if name not in RECIPES:
        raise CnnlabError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
