"""The Keras-style summary table."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import build
from cnnlab.models.summary import summarize


def test_intro_cnn_table_reads_like_keras():
    text = str(summarize(build("intro-cnn"), (28, 28, 1), name="intro-cnn"))
    lines = text.splitlines()
    assert 'Model: "intro-cnn"' in lines[0] and "channels-last" in lines[0]
    assert all(h in text for h in ("Layer (type)", "Output Shape", "Param #", "Mult-Adds"))
    conv = next(line for line in lines if "(Conv2d)" in line)
    assert "(None, 26, 26, 32)" in conv and " 320 " in conv and "194,688" in conv
    assert "(None, 13, 13, 32)" in next(line for line in lines if "(MaxPool2d)" in line)
    assert "(None, 5408)" in next(line for line in lines if "(Flatten)" in line)
    dense = next(line for line in lines if "(Linear)" in line)
    assert "(None, 10)" in dense and "54,090" in dense
    assert "Total params: 54,410" in lines
    assert "Trainable params: 54,410" in lines
    assert "Non-trainable params: 0" in lines
    assert any(line.startswith("Total mult-adds: 248,768") for line in lines)


def test_rows_and_totals():
    s = summarize(build("intro-cnn"), (28, 28, 1))
    assert [r.type for r in s.rows] == ["Conv2d", "ReLU", "MaxPool2d", "Dropout", "Flatten", "Dropout", "Linear"]
    assert [r.name for r in s.rows] == [str(i) for i in range(7)]
    assert s.rows[0].output_shape == (None, 26, 26, 32)
    assert s.rows[4].output_shape == (None, 5408)
    assert [r.params for r in s.rows] == [320, 0, 0, 0, 0, 0, 54_090]
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (54_410, 54_410, 0)
    assert s.total_mult_adds == 26 * 26 * 32 * 9 + 5408 * 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.total_params = 0


def test_depth_shows_nested_modules_on_the_meta_device():
    with torch.device("meta"):
        model = build("squeezenet1_1")
    top = summarize(model, (224, 224, 3))
    assert [r.name for r in top.rows] == ["features", "classifier"]
    assert top.rows[1].output_shape == (None, 1, 1, 1000)
    two = summarize(model, (224, 224, 3), depth=2)
    assert len(two.rows) == 2 + 13 + 4
    assert two.rows[4].name == "features.3" and two.rows[4].type == "Fire" and two.rows[4].depth == 2
    three = summarize(model, (224, 224, 3), depth=3)
    assert "features.3.squeeze" in [r.name for r in three.rows]
    assert top.total_params == two.total_params == 1_235_496
    # Mult-adds of a container are the sum of its layers', at any depth.
    assert top.total_mult_adds == sum(r.mult_adds for r in top.rows) == sum(r.mult_adds for r in two.rows if r.depth == 1)
    assert "  features.3 (Fire)" in str(two)


def test_frozen_parameters_are_non_trainable_and_mode_and_hooks_are_restored():
    model = build("mnist-cnn").train()
    for p in model[0].parameters():
        p.requires_grad_(False)
    s = summarize(model, (28, 28, 1))
    assert (s.trainable_params, s.non_trainable_params) == (220_234 - 320, 320)
    assert "Non-trainable params: 320" in str(s)
    assert model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_bare_layer_is_its_own_row():
    s = summarize(nn.Conv2d(1, 4, 3), (8, 8, 1))
    assert len(s.rows) == 1 and s.rows[0].output_shape == (None, 6, 6, 4) and s.rows[0].params == 40


def test_wrong_input_shape_names_the_layer():
    with pytest.raises(CnnlabError, match=r"layer '0' \(Conv2d\) cannot take input \(1, 3, 32, 32\).*built for"):
        summarize(build("intro-cnn"), (32, 32, 3))


@pytest.mark.parametrize("kwargs, pattern", [
    ({"input_shape": (28, 28)}, "input_shape"),
    ({"depth": 0}, "depth 0"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(CnnlabError, match=pattern):
        summarize(build("intro-cnn"), **{"input_shape": (28, 28, 1), **kwargs})
    with pytest.raises(CnnlabError, match="not a torch.nn.Module"):
        summarize("intro-cnn", (28, 28, 1))
