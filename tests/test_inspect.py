"""cnnlab.insight.internals: activations equal a manual forward; hooks never outlive the call; filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.internals import (
    activations,
    activations_of,
    conv_layers,
    filter_images,
    filters,
    get_layer,
    layer_names,
    normalize_filters,
)


def flat_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(6 * 3 * 3, 5),
    )


class Nested(nn.Module):
    """features/classifier like torchvision's VGG, plus a block nested one level deeper."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 4 * 4, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_layer_names_and_conv_layers():
    assert layer_names(flat_model()) == [str(i) for i in range(8)]
    assert conv_layers(flat_model()) == ["0", "3"]
    assert conv_layers(Nested()) == ["features.0", "features.3.0"]
    assert get_layer(Nested(), "classifier.2")[0] == "classifier.2"


def test_activations_flat_equal_manual_forward():
    model = flat_model().eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = model[:4](x).numpy()
    np.testing.assert_allclose(activations(model, x, "3"), expected, rtol=1e-6)
    np.testing.assert_allclose(activations(model, x, 3), expected, rtol=1e-6)  # index
    with torch.no_grad():
        logits = model(x).numpy()
    np.testing.assert_allclose(activations(model, x, -1), logits, rtol=1e-6)  # the last layer
    assert no_hooks_left(model)


def test_activations_nested_equal_manual_forward():
    model = Nested().eval()
    model.features[3][1].running_mean.uniform_()  # make BatchNorm's eval mode matter
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        after_pool = model.features[:3](x)
        expected_bn = model.features[3][:2](after_pool).numpy()
        expected_features = model.features(x).numpy()
    model.train()  # activations use eval mode and restore the flag
    got = activations_of(model, x, ["features.3.1", "features"])
    assert model.training
    np.testing.assert_allclose(got["features.3.1"], expected_bn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["features"], expected_features, rtol=1e-5, atol=1e-6)
    assert no_hooks_left(model)


def test_single_image_becomes_a_batch():
    model = flat_model()
    out = activations(model, torch.randn(3, 12, 12), "0")
    assert out.shape == (1, 4, 10, 10) and out.dtype == np.float32


def test_unknown_layer_lists_the_layers():
    model = Nested()
    with pytest.raises(CnnlabError, match=r"no layer 'features\.9'.*features\.0 \(Conv2d\).*classifier\.2 \(Linear\)"):
        activations(model, torch.randn(1, 1, 8, 8), "features.9")
    with pytest.raises(CnnlabError, match="no layer 99"):
        get_layer(model, 99)
    assert no_hooks_left(model)


def test_hooks_are_removed_when_forward_fails():
    model = flat_model()
    with pytest.raises(RuntimeError):
        activations(model, torch.randn(1, 1, 12, 12), "4")  # wrong channel count
    assert no_hooks_left(model)


def test_unused_layer_is_reported():
    model = Nested()
    model.spare = nn.ReLU()  # registered but never called in forward
    with pytest.raises(CnnlabError, match="never ran"):
        activations(model, torch.randn(1, 1, 8, 8), "spare")
    assert no_hooks_left(model)


def test_filters_and_display_patches():
    model = flat_model()
    w = filters(model)
    np.testing.assert_array_equal(w, model[0].weight.detach().numpy())
    assert filters(model, "3").shape == (6, 4, 3, 3)
    rgb = filter_images(w)
    assert rgb.shape == (4, 3, 3, 3)  # (out, kh, kw, RGB)
    assert rgb.min() == 0.0 and rgb.max() == 1.0
    np.testing.assert_allclose(rgb[0, :, :, 1], (w[0, 1] - w.min()) / (w.max() - w.min()), rtol=1e-6)
    grey = filter_images(filters(model, "3"))
    assert grey.shape == (24, 3, 3)
    per = normalize_filters(w, per_filter=True)
    assert np.allclose(per.reshape(4, -1).min(1), 0) and np.allclose(per.reshape(4, -1).max(1), 1)
    assert np.all(normalize_filters(np.ones((2, 1, 3, 3))) == 0.5)
    with pytest.raises(CnnlabError, match="not a Conv2d; pick one of: 0, 3"):
        filters(model, "1")
    with pytest.raises(CnnlabError, match="no Conv2d"):
        filters(nn.Sequential(nn.Linear(2, 2)))
