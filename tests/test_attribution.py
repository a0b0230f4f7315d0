"""Attribution maps against Captum, a hand-computed Grad-CAM++ case, and the real SqueezeNet.

The small CNNs run in float64 so that the comparisons at 1e-5 relative test the method,
not rounding. Captum is a test-only dependency (the `test` extra).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight import attribution as A


@pytest.fixture(scope="module")
def captum_attr():
    """Captum, the reference (the `test` extra); only the comparisons with it skip without it."""
    return pytest.importorskip("captum.attr")

RTOL = 1e-5

# The small CNNs have random weights: some of their classes have no positive evidence at a
# layer, so an all-zero Grad-CAM map is a correct answer there. The warning has its own test.
pytestmark = pytest.mark.filterwarnings("ignore::cnnlab.insight.attribution.AllZeroMapWarning")


def method_options(method: str) -> dict:
    """Small settings that keep each method's test fast."""
    return {"smoothgrad": {"samples": 4}, "ig": {"steps": 8}, "occlusion": {"window": 4, "stride": 4}}.get(method, {})


def small_cnn(classes: int = 7) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),  # "0": (N, 4, 12, 12)
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.MaxPool2d(2),  # "2": (N, 6, 10, 10) -> 5x5
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(),  # "5": (N, 5, 5, 5)
        nn.Flatten(), nn.Linear(5 * 5 * 5, classes),
    ).double().eval()


@pytest.fixture
def model():
    return small_cnn()


@pytest.fixture
def images():
    return torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


TARGETS = [0, 3, 6, 2, 5]


def close(ours: np.ndarray, ref, rtol: float = RTOL) -> None:
    ref = ref.detach().double().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    scale = np.abs(ref).max()
    assert scale > 0, "reference map is all zeros: the comparison would prove nothing"
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=rtol * scale)


# --------------------------------------------------------------------------- against Captum


@pytest.mark.parametrize("layer", ["0", "2", "5"])
def test_gradcam_equals_captum_layergradcam_upsampled(model, images, layer, captum_attr):
    ref = captum_attr.LayerGradCam(model, model[int(layer)]).attribute(images, target=TARGETS, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(ref, (12, 12), "bilinear")[:, 0]
    close(A.gradcam(model, images, TARGETS, layer=layer), ref)


def test_gradcam_auto_is_the_relu_after_the_last_conv_with_a_map_larger_than_1x1(model, images):
    np.testing.assert_array_equal(A.gradcam(model, images, TARGETS), A.gradcam(model, images, TARGETS, layer="6"))
    assert A.cam_layers(model, images) == ["6"] and A.cam_layers(model, images, "sweep") == ["1", "3", "6"]
    # A last conv with a 1x1 output is skipped for the one before it.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 10), nn.Flatten(), nn.Linear(8, 3)).double()
    np.testing.assert_array_equal(A.gradcam(net, images, 1), A.gradcam(net, images, 1, layer="1"))
    assert A.cam_layers(net, images) == ["1"]


def test_gradcam_on_an_activation_or_a_module_object_equals_captum_there(model, images, captum_attr):
    """``layer=`` takes the activation after a conv, and the module object itself, as Captum does."""
    ref = captum_attr.LayerGradCam(model, model[6]).attribute(images, target=TARGETS, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(ref, (12, 12), "bilinear")[:, 0]
    close(A.gradcam(model, images, TARGETS, layer=model[6]), ref)
    np.testing.assert_array_equal(A.gradcam(model, images, TARGETS, layer="6"),
                                  A.gradcam(model, images, TARGETS, layer=model[6]))


class _Fire(nn.Module):
    """SqueezeNet's Fire module in miniature: squeeze, then two expands concatenated."""

    def __init__(self, cin: int):
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(cin, 2, 1), nn.ReLU()
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(2, 3, 1), nn.ReLU()
        self.expand3x3, self.expand3x3_activation = nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1)


class _Residual(nn.Module):
    """A residual block whose one ReLU module is called twice, as torchvision's BasicBlock."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


@pytest.mark.parametrize(("block", "unit", "sweep"), [
    (_Fire, "features.1", ["features.0.1", "features.1.squeeze_activation", "features.1.expand1x1_activation",
                           "features.1"]),
    (_Residual, "features.1", ["features.0.1", "features.1.relu", "features.1"]),
])
def test_auto_picks_a_fire_module_or_a_residual_block_output(images, block, unit, sweep, captum_attr):
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("features", nn.Sequential(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()), block(6)))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(6, 3))
    net = net.double().eval()
    assert A.cam_layers(net, images) == [unit] and A.cam_layers(net, images, "sweep") == sweep
    # The block's output: after the concatenation (Fire) or the residual add and its ReLU.
    targets = [0, 1, 2, 1, 0]
    maps, _, used, _ = A.gradcam_maps(net, images, targets)
    ref = captum_attr.LayerGradCam(net, net.features[1]).attribute(images, target=targets, relu_attributions=True)
    assert used == [unit]
    close(maps[unit], captum_attr.LayerAttribution.interpolate(ref, (12, 12), "bilinear")[:, 0])


def test_saliency_equals_captum_saliency(model, images, captum_attr):
    with pytest.warns(UserWarning, match="required_grads"):  # Captum's note that it set requires_grad itself
        ref = captum_attr.Saliency(model).attribute(images, target=TARGETS, abs=True)
    close(A.saliency(model, images, TARGETS), ref.amax(1))


def test_integrated_gradients_equals_captum(model, images, captum_attr):
    baseline = torch.full_like(images, 0.25)
    ref = captum_attr.IntegratedGradients(model).attribute(images, baselines=baseline, target=TARGETS, n_steps=24,
                                                           method="gausslegendre")
    ours = A.integrated_gradients(model, images, TARGETS, baseline=baseline.numpy(), steps=24, batch_size=17)
    close(ours, ref.sum(1))


@pytest.mark.parametrize(("window", "stride"), [(3, 2), ((4, 5), (3, 4)), (12, 1)])
def test_occlusion_equals_captum_occlusion(model, images, window, stride, captum_attr):
    w = window if isinstance(window, tuple) else (window, window)
    s = stride if isinstance(stride, tuple) else (stride, stride)
    ref = captum_attr.Occlusion(model).attribute(images, sliding_window_shapes=(3, *w), strides=(3, *s),
                                                 baselines=0.5, target=TARGETS)
    close(A.occlusion(model, images, TARGETS, window=window, stride=stride, baseline=0.5, batch_size=29), ref[:, 0])


# --------------------------------------------------------------------------- Grad-CAM++ by hand


def test_gradcam_pp_matches_the_closed_form_of_chattopadhyay_2018():
    """A conv layer A (2, 4, 4) -> ReLU -> dense: the score S is piecewise linear in A, so
    g = dS/dA is known exactly and the paper's alphas (eq. 19, with Y = exp(S)) are
    alpha = g^2 / (2 g^2 + sum_ab A_ab g^3), weights w_k = sum_ij alpha relu(dY/dA_ij)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).double()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = 2
    with torch.no_grad():
        a = net[1](net[0](x))[0].numpy()  # (2, 4, 4): the ReLU's output, the unit 'auto' picks
        s = float(net(x)[0, target])
    g = net[3].weight[target].detach().numpy().reshape(2, 4, 4)  # dS/dA: the dense weights
    weights = np.zeros(2)
    for k in range(2):
        for i in range(4):
            for j in range(4):
                if g[k, i, j] == 0:
                    continue
                d2, d3 = np.exp(s) * g[k, i, j] ** 2, np.exp(s) * g[k, i, j] ** 3  # d2Y/dA2, d3Y/dA3
                alpha = d2 / (2 * d2 + a[k].sum() * d3)
                weights[k] += alpha * max(np.exp(s) * g[k, i, j], 0.0)
    cam = np.maximum((weights[:, None, None] * a).sum(0), 0)
    assert A.cam_layers(net, x) == ["1"]
    ours = A.gradcam_pp(net, x, target)[0]  # 4x4 layer on a 4x4 input: no resizing
    assert cam.max() > 0
    np.testing.assert_allclose(ours * np.exp(s), cam, rtol=1e-5, atol=1e-7 * cam.max())


# --------------------------------------------------------------------------- batching and targets


@pytest.mark.parametrize("method", sorted(A.METHODS))
def test_batched_equals_one_at_a_time(model, images, method):
    options = method_options(method)
    batched = A.attribute(model, images, TARGETS, method=method, batch_size=3, **options)
    single = np.stack([A.attribute(model, images[i], TARGETS[i], method=method, **options)[0]
                       for i in range(len(images))])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6 * np.abs(single).max())


@pytest.mark.parametrize("method", sorted(A.METHODS))
def test_each_image_gets_its_own_target(model, images, method):
    options = method_options(method)
    same = images[:1].expand(3, -1, -1, -1)
    maps = A.attribute(model, same, [0, 3, 6], method=method, **options)
    for i, target in enumerate([0, 3, 6]):
        np.testing.assert_allclose(maps[i], A.attribute(model, same[:1], target, method=method, **options)[0],
                                   rtol=1e-5, atol=1e-7)
    assert not np.allclose(maps[0], maps[1]) and not np.allclose(maps[1], maps[2])


def test_predicted_and_actual_targets(model, images):
    predicted = A.scores(model, images).argmax(1).tolist()
    np.testing.assert_array_equal(A.saliency(model, images), A.saliency(model, images, predicted))
    labels = np.array(TARGETS)
    np.testing.assert_array_equal(A.gradcam(model, images, "actual", labels=labels), A.gradcam(model, images, TARGETS))


def test_integrated_gradients_is_complete(model, images):
    """The maps sum to score(x) - score(baseline), up to the quadrature error, which falls
    with the step count (ReLU and max-pool kinks keep it from vanishing fast)."""
    with torch.no_grad():
        rows = torch.arange(len(images))
        diff = (model(images)[rows, TARGETS] - model(torch.zeros_like(images))[rows, TARGETS]).numpy()
    errors = []
    for steps in (16, 256):
        sums = A.integrated_gradients(model, images, TARGETS, baseline=0.0, steps=steps, batch_size=512).sum((1, 2))
        errors.append(np.abs(sums - diff).max() / np.abs(diff).max())
    assert errors[1] < 2e-3 and errors[1] < errors[0] / 5


def test_smoothgrad_is_the_mean_saliency_of_seeded_noisy_copies(model, images):
    samples, noise = 5, 0.2
    draws = torch.randn((samples, 3, 12, 12), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sigma = noise * (images.amax((1, 2, 3)) - images.amin((1, 2, 3)))
    grads = []
    for k in range(samples):
        noisy = (images + sigma[:, None, None, None] * draws[k]).clone().requires_grad_(True)
        score = model(noisy)[torch.arange(len(images)), TARGETS].sum()
        grads.append(torch.autograd.grad(score, noisy)[0].abs())
    ref = torch.stack(grads).mean(0).amax(1)
    close(A.smoothgrad(model, images, TARGETS, samples=samples, noise=noise, seed=7, batch_size=4), ref)
    np.testing.assert_allclose(A.smoothgrad(model, images, TARGETS, samples=2, noise=0.0),
                               A.saliency(model, images, TARGETS), rtol=1e-6)


def test_layer_sweep_gives_every_conv_layer_in_one_call(model, images):
    sweep = A.layer_sweep(model, images, TARGETS)
    assert list(sweep) == ["1", "3", "6"]  # the ReLU after each conv
    for name, maps in sweep.items():
        np.testing.assert_allclose(maps, A.gradcam(model, images, TARGETS, layer=name), rtol=1e-6)


def test_block_layers_and_frozen_models(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Flatten(), nn.Linear(400, 3)).double()
    for p in net.parameters():
        p.requires_grad_(False)
    maps = A.gradcam(net, images, 1, layer="0")  # a block holding a conv; no parameter asks for grad
    assert maps.shape == (5, 12, 12) and maps.max() > 0


def test_works_under_inference_mode_and_for_float32_inputs(model, images):
    expected = A.gradcam(model, images, TARGETS)
    with torch.inference_mode():
        frozen = images.clone()
        got = A.gradcam(model, frozen.float(), TARGETS)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_threads_do_not_see_each_others_passes(model, images):
    expected = {i: A.gradcam(model, images[i:i + 1].expand(40, -1, -1, -1), TARGETS[i]) for i in range(4)}
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = A.gradcam(model, images[i:i + 1].expand(40, -1, -1, -1), TARGETS[i], batch_size=8)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i])


# --------------------------------------------------------------------------- the model is left as it was


def _snapshot(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()],
            [m.training for m in model.modules()],
            [(dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in model.modules()])


def _assert_same(model: nn.Module, before) -> None:
    state, grads, modes, hooks = _snapshot(model)
    for key, value in before[0].items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert grads == before[1] and modes == before[2] and hooks == before[3]


def _mixed_model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.Flatten(), nn.Linear(400, 3)).double()
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a training model: its own flag must come back too
    net[0].weight.requires_grad_(False)
    net[5].register_forward_hook(lambda *a: None)
    return net


@pytest.mark.parametrize("method", sorted(A.METHODS))
def test_explaining_leaves_the_model_unchanged(images, method):
    net = _mixed_model()
    before = _snapshot(net)
    options = method_options(method)
    first = A.attribute(net, images, [0, 1, 2, 1, 0], method=method, **options)
    _assert_same(net, before)
    # Eval mode while explaining (dropout off, BatchNorm's running statistics untouched): deterministic.
    np.testing.assert_array_equal(first, A.attribute(net, images, [0, 1, 2, 1, 0], method=method, **options))


@pytest.mark.parametrize("method", sorted(A.METHODS))
def test_model_unchanged_when_explaining_fails_halfway(images, method):
    net = _mixed_model()
    before = _snapshot(net)
    with pytest.raises(CnnlabError, match="target 9 is out of range"):  # found only after a forward pass
        A.attribute(net, images, [0, 1, 9, 1, 0], method=method, batch_size=2, **method_options(method))
    _assert_same(net, before)

    class Breaks(nn.Module):  # raises inside the forward pass, after the hooks have fired
        def forward(self, x):
            raise RuntimeError("boom")

    net.append(Breaks())
    before = _snapshot(net)
    with pytest.raises(CnnlabError, match="boom"):
        A.attribute(net, images, 0, method=method, **method_options(method))
    _assert_same(net, before)


# --------------------------------------------------------------------------- bad input


def test_bad_layers_list_the_conv_layers(model, images):
    with pytest.raises(CnnlabError, match=r"no layer 'features\.9'.*conv layers: 0, 2, 5"):
        A.gradcam(model, images, 0, layer="features.9")
    with pytest.raises(CnnlabError, match=r"layer '8' \(Linear\) gives \(5, 7\), not \(N, C, H, W\) feature maps"):
        A.gradcam(model, images, 0, layer="8")
    with pytest.raises(CnnlabError, match=r"the Conv2d passed as layer is not a submodule of Sequential"):
        A.gradcam(model, images, 0, layer=nn.Conv2d(3, 4, 3))
    with pytest.raises(CnnlabError, match=r"layer 3 is not a layer name or module"):
        A.gradcam(model, images, 0, layer=3)
    dense = nn.Sequential(nn.Flatten(), nn.Linear(432, 3)).double()
    with pytest.raises(CnnlabError, match="has no Conv2d layer.*saliency"):
        A.gradcam_pp(dense, images, 0)
    assert A.saliency(dense, images, 0).shape == (5, 12, 12)  # input-gradient methods need no conv


@pytest.mark.parametrize(("targets", "message"), [
    (7, "target 7 is out of range: the model has 7 classes"),
    (-1, "target -1 is out of range"),
    ([1, 2], "2 targets for 5 images"),
    (1.5, "not class indices"),
    ("actual", "needs labels="),
    ("best", "not 'predicted', 'actual'"),
])
def test_bad_targets(model, images, targets, message):
    with pytest.raises(CnnlabError, match=message):
        A.gradcam(model, images, targets)


def test_bad_images_and_options(model, images):
    with pytest.raises(CnnlabError, match=r"cannot take images of shape \(3, 20, 20\)"):
        A.saliency(model, torch.zeros(1, 3, 20, 20))
    with pytest.raises(CnnlabError, match=r"cannot take images of shape \(1, 12, 12\)"):
        A.gradcam(model, torch.zeros(2, 1, 12, 12))
    with pytest.raises(CnnlabError, match="images are uint8"):
        A.gradcam(model, np.zeros((1, 3, 12, 12), np.uint8))
    with pytest.raises(CnnlabError, match="empty batch"):
        A.gradcam(model, images[:0])
    with pytest.raises(CnnlabError, match="window 13"):
        A.occlusion(model, images, 0, window=13)
    with pytest.raises(CnnlabError, match="does not broadcast"):
        A.integrated_gradients(model, images, 0, baseline=np.zeros(5))
    with pytest.raises(CnnlabError, match="steps must be"):
        A.integrated_gradients(model, images, 0, steps=1)
    with pytest.raises(CnnlabError, match="unknown method 'lime'"):
        A.attribute(model, images, 0, method="lime")
    with pytest.raises(CnnlabError, match=r"occlusion stride \(4, 4\) is larger than the window \(3, 3\)"):
        A.occlusion(model, images, 0, window=3, stride=4)  # the pixels between windows would be NaN
    with pytest.raises(CnnlabError, match="which must be 'auto' or 'sweep'"):
        A.cam_layers(model, images, "all")


# --------------------------------------------------------------------------- signs, zero maps, precision


def test_signed_saliency_equals_captums_signed_gradient_and_is_signed(model, images, captum_attr):
    with pytest.warns(UserWarning, match="required_grads"):
        ref = captum_attr.Saliency(model).attribute(images, target=TARGETS, abs=False)
    ours = A.saliency(model, images, TARGETS, signed=True)
    close(ours, ref.sum(1))
    assert ours.min() < 0 < ours.max()
    assert [m for m in A.METHODS if A.is_signed(m)] == ["ig", "occlusion"]
    assert A.is_signed("saliency", signed=True) and not A.is_signed("saliency")
    with pytest.raises(CnnlabError, match="unknown method 'lime'"):
        A.is_signed("lime")
    # integrated gradients and occlusion are signed maps on this model too
    for method in ("ig", "occlusion"):
        maps = A.attribute(model, images, TARGETS, method=method, **method_options(method))
        assert maps.min() < 0 < maps.max()


def test_riemann_trapezoid_is_captums_times_n_over_n_minus_1(model, images, captum_attr):
    """Captum's trapezoid weights sum to 1 - 1/n; cnnlab's sum to 1 (the trapezoid rule)."""
    n = 12
    ref = captum_attr.IntegratedGradients(model).attribute(images, target=TARGETS, n_steps=n,
                                                           method="riemann_trapezoid").sum(1)
    ours = A.integrated_gradients(model, images, TARGETS, steps=n, method="riemann_trapezoid")
    close(ours * (n - 1) / n, ref)
    assert not np.allclose(ours, ref.numpy(), rtol=1e-3)


def _all_zero_net() -> nn.Sequential:
    """conv (>= 0 after its ReLU) -> dense: class 0 weighs every feature -1, class 1 +1."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 12 * 12, 2)).double()
    with torch.no_grad():
        net[3].weight[0] = -1.0
        net[3].weight[1] = 1.0
    return net.eval()


@pytest.mark.filterwarnings("error::cnnlab.insight.attribution.AllZeroMapWarning")
def test_a_map_that_is_still_all_zero_warns_in_one_line(images):
    net = _all_zero_net()
    with pytest.warns(A.AllZeroMapWarning) as caught:
        maps = A.gradcam(net, images, [0, 0, 1, 1, 1])  # class 0 has no positive evidence anywhere
    assert A.all_zero(maps).tolist() == [True, True, False, False, False]
    (warning,) = caught
    assert str(warning.message) == ("Grad-CAM: 2 of 5 maps at layer 1 are all zero (no positive evidence for the "
                                    "class there); try an earlier layer or another method")
    A.gradcam(net, images, 1)  # no warning (an error here) when every map has something
    with pytest.warns(A.AllZeroMapWarning, match="Grad-CAM\\+\\+: 5 of 5 maps"):
        A.gradcam_pp(net, images, 0)
    maps, *_ = A.gradcam_maps(net, images, 0)  # the plain-data call leaves the judgement to its caller
    assert A.all_zero(maps["1"]).all()


def test_gradcam_pp_in_float32_agrees_with_float64(images):
    """On rectified activations the alphas' denominator is >= 2: float32 stays within 1e-5
    of float64 (before the guard, a conv's signed output brought it to 2e-4 and 1.6e-3 apart)."""
    model = small_cnn()
    x = torch.randn(64, 3, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    targets = [i % 7 for i in range(64)]
    ref = A.gradcam_pp(model, x, targets)
    got = A.gradcam_pp(small_cnn().float(), x.float(), targets)
    assert ref.max() > 0
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * ref.max())


def test_gradcam_pp_denominator_is_guarded_on_a_signed_layer():
    """A conv's raw output can make 2 + sum(A) g reach 0: alpha is capped at 1 there."""
    act = torch.tensor([[[[-3.0, 1.0]]]], dtype=torch.float64)  # sum(A) = -2
    grad = torch.tensor([[[[1.0, 0.5]]]], dtype=torch.float64)  # 2 + sum(A) g = 0 and 1
    from cnnlab.insight.attribution import _cam

    cam = _cam(act, grad, (1, 2), plus=True)
    # weight = sum over g > 0 of alpha * g, alpha = 1 / max(2 + sum(A) g, 1) = 1 and 1: 1.5
    np.testing.assert_allclose(cam.numpy(), [[[0.0, 1.5]]])  # relu(1.5 * A); unguarded, 1 / 0


# --------------------------------------------------------------------------- faithfulness measures


def test_rank_correlation_is_spearmans_and_nan_for_a_constant_map():
    stats = pytest.importorskip("scipy.stats")
    from cnnlab.insight.faithfulness import rank_correlation

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 6, 7)).round(1)  # rounding makes ties
    b = a + rng.normal(size=a.shape)
    b[2] = 0.0
    got = rank_correlation(a, b)
    for i in (0, 1, 3):
        assert got[i] == pytest.approx(stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic, abs=1e-12)
    assert np.isnan(got[2])
    with pytest.raises(CnnlabError, match="must match"):
        rank_correlation(a, b[:2])


def test_deletion_and_insertion_curves(model, images):
    from cnnlab.insight.faithfulness import auc, perturbation_curves

    probs = A.scores(model, images).softmax(1).numpy()[np.arange(5), TARGETS]
    maps = A.saliency(model, images, TARGETS)
    deletion = perturbation_curves(model, images, maps, TARGETS, steps=4, baseline=0.25)
    insertion = perturbation_curves(model, images, maps, TARGETS, mode="insertion", steps=4, baseline=0.25)
    flat = A.scores(model, torch.full_like(images, 0.25)).softmax(1).numpy()[np.arange(5), TARGETS]
    assert deletion.shape == insertion.shape == (5, 5)
    np.testing.assert_allclose(deletion[:, 0], probs, rtol=1e-5)  # nothing deleted yet
    np.testing.assert_allclose(deletion[:, -1], flat, rtol=1e-5)  # everything deleted: the baseline image
    np.testing.assert_allclose(insertion[:, 0], flat, rtol=1e-5)
    np.testing.assert_allclose(insertion[:, -1], probs, rtol=1e-5)
    # half deleted: exactly the top half of the map's pixels set to the baseline
    top = maps.reshape(5, -1).argsort(1)[:, ::-1][:, :72]
    half = images.clone()
    for i in range(5):
        half[i].view(3, -1)[:, torch.from_numpy(top[i].copy())] = 0.25
    want = A.scores(model, half).softmax(1).numpy()[np.arange(5), TARGETS]
    np.testing.assert_allclose(deletion[:, 2], want, rtol=1e-5)
    np.testing.assert_allclose(auc(np.array([[1.0, 0.5, 0.0]])), [0.5])
    with pytest.raises(CnnlabError, match="do not match the images"):
        perturbation_curves(model, images, maps[:, :5], TARGETS)


# --------------------------------------------------------------------------- photos and the real SqueezeNet


@pytest.fixture(scope="module")
def squeezenet(squeeze_weights):
    from cnnlab.models.pretrained import load_pretrained

    return load_pretrained("squeezenet1_1", weights=squeeze_weights, progress=False)


def test_gradcam_of_the_cat_photo_lies_on_the_cat(squeezenet, shared_dir):
    from cnnlab.insight.photo import explain_photo

    photo = shared_dir / "images" / "cat.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} is absent")
    result = explain_photo(photo, model=squeezenet)
    assert result.target_name == "Egyptian_cat" == result.top[0][1] and result.layer == "classifier.2"
    cam = result.map
    assert cam.shape == (720, 1280)  # the photo's own size
    left, top, right, bottom = result.crop
    assert (left, top, right, bottom) == (326, 45, 956, 675)  # 256-resize + centre 224 crop, in photo pixels
    outside = np.ones_like(cam, dtype=bool)
    outside[top:bottom, left:right] = False
    assert cam[outside].max() == 0
    # Where the cat is, in fractions of the photo (checked by eye): the head x 36-68 %,
    # y 5-70 %, the body x 25-70 %, y 50-100 %; the rest of the crop is floor, carpet and
    # the other cat's tail. The cat fills 78 % of the crop, so a map blind to it would put
    # about 78 % of its mass there at an even density.
    h, w = cam.shape
    peak_y, peak_x = np.unravel_index(cam.argmax(), cam.shape)
    assert 0.36 < peak_x / w < 0.68 and 0.05 < peak_y / h < 0.70  # the peak on the head
    cat = np.zeros_like(cam, dtype=bool)
    for x0, x1, y0, y1 in ((0.36, 0.68, 0.05, 0.70), (0.25, 0.70, 0.50, 1.0)):
        cat[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = True
    assert cam[cat].sum() / cam.sum() > 0.8
    assert cam[cat & ~outside].mean() > 1.3 * cam[~cat & ~outside].mean()


def test_explain_photo_methods_targets_and_bad_input(squeezenet, tmp_path):
    from PIL import Image

    from cnnlab.insight.photo import explain_photo

    rng = np.random.default_rng(0)
    path = tmp_path / "tall.png"
    Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)).save(path)
    result = explain_photo(path, model=squeezenet, method="saliency", target="tabby")
    assert result.map.shape == (300, 200) and result.target == 281 and result.layer is None
    # 200x300 -> 256x384, centre 224 crop at (16, 80); back in photo pixels x 200/256, y 300/384.
    assert result.crop == (12, 62, 188, 238)
    assert result.map[:, :12].max() == 0 and result.map[62:238, 12:188].min() > 0
    pp = explain_photo(path, model=squeezenet, method="gradcam++", target=3, layer="features.12")
    assert pp.target == 3 and pp.layer == "features.12"
    with pytest.raises(CnnlabError, match="not 'predicted', a class index or an ImageNet class name"):
        explain_photo(path, model=squeezenet, target="unicorn")
    with pytest.raises(CnnlabError, match="no pretrained network 'alexnet'"):
        explain_photo(path, model="alexnet")
    with pytest.raises(CnnlabError, match="not found"):
        explain_photo(tmp_path / "missing.jpg", model=squeezenet)
    (tmp_path / "junk.jpg").write_bytes(b"not a photo")
    with pytest.raises(CnnlabError, match="not a readable image"):
        explain_photo(tmp_path / "junk.jpg", model=squeezenet)


def test_huge_photos_are_decoded_at_a_reduced_size(tmp_path):
    from PIL import Image

    from cnnlab.insight.photo import _crop_box, load_photo
    from cnnlab.models.pretrained import preprocess

    big = Image.linear_gradient("L").resize((4096, 3072)).convert("RGB")
    big.save(tmp_path / "big.jpg", quality=80)
    big.save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        img, size = load_photo(tmp_path / name)
        assert size == (4096, 3072)
        assert 512 <= min(img.size) < 1024  # JPEG: DCT-scaled to 1/4 while decoding; PNG: reduced after
        assert img.size[0] / img.size[1] == pytest.approx(4 / 3, rel=0.01)
        assert preprocess(img).shape == (3, 224, 224)
        left, top, right, bottom = _crop_box(*size, img.size)
        assert right - left == pytest.approx(bottom - top, abs=2) and right - left == pytest.approx(3072 * 224 / 256, abs=8)


# --------------------------------------------------------------------------- overlays


def test_overlay_blends_a_colour_blind_safe_colormap():
    from matplotlib import colormaps

    from cnnlab.report.overlay import overlay

    image = np.full((4, 5), 200, np.uint8)
    heat = np.linspace(0, 2, 20).reshape(4, 5)
    assert np.array_equal(overlay(image, heat, alpha=0.0), np.full((4, 5, 3), 200, np.uint8))
    full = overlay(image, heat, alpha=1.0, cmap="viridis")
    assert full.dtype == np.uint8 and full.shape == (4, 5, 3)
    np.testing.assert_allclose(full[-1, -1], np.array(colormaps["viridis"](1.0)[:3]) * 255, atol=1)
    np.testing.assert_allclose(full[0, 0], np.array(colormaps["viridis"](0.0)[:3]) * 255, atol=1)
    half = overlay(np.zeros((4, 5, 3), np.float32), heat, alpha=0.5)
    np.testing.assert_allclose(half[-1, -1], np.array(colormaps["cividis"](1.0)[:3]) * 255 / 2, atol=1)
    dim = overlay(image, heat / 2, alpha=1.0, cmap="viridis", vmax=2.0)  # half the scale: half-way up the colormap
    np.testing.assert_allclose(dim[-1, -1], np.array(colormaps["viridis"](0.5)[:3]) * 255, atol=2)
    with pytest.raises(CnnlabError, match="not colour-blind safe"):
        overlay(image, heat, cmap="jet")
    with pytest.raises(CnnlabError, match="does not match"):
        overlay(image, heat.T)
    with pytest.raises(CnnlabError, match="opacity"):
        overlay(image, heat, alpha=1.5)


def test_signed_maps_are_drawn_on_a_diverging_colormap_centred_on_zero():
    from matplotlib import colormaps

    from cnnlab.report.overlay import normalize_map, overlay, plot_attributions, plot_layer_sweep

    image = np.full((1, 3), 100, np.uint8)
    heat = np.array([[-2.0, 0.0, 1.0]])
    drawn = overlay(image, heat, alpha=1.0, signed=True).astype(float)
    table = colormaps["RdBu_r"]
    # -2 -> the bottom colour, opaque; 0 -> the image as it is; 1 -> 3/4 up the colormap, half opaque
    np.testing.assert_allclose(drawn[0, 0], np.array(table(0.0)[:3]) * 255, atol=3)  # a 256-entry table
    np.testing.assert_array_equal(drawn[0, 1], [100, 100, 100])
    np.testing.assert_allclose(drawn[0, 2], (np.array(table(0.75)[:3]) * 255 + 100) / 2, atol=3)
    # unsigned: the positive part, so evidence against the class is not painted as evidence for it
    np.testing.assert_allclose(normalize_map(heat), [[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(normalize_map(heat, signed=True), [[-1.0, 0.0, 0.5]])
    unsigned = overlay(image, heat, alpha=1.0, cmap="viridis")
    np.testing.assert_array_equal(unsigned[0, 0], unsigned[0, 1])
    with pytest.raises(CnnlabError, match="diverging colormap for a signed map 'cividis' is not colour-blind safe"):
        overlay(image, heat, signed=True, cmap="cividis")
    # every overlay panel has its colour bar, the signed one symmetric about 0
    images = [np.zeros((4, 4), np.uint8)] * 2
    signed_maps = [np.linspace(-1, 2, 16).reshape(4, 4)] * 2
    fig = plot_attributions(images, [signed_maps, [np.abs(m) for m in signed_maps]], column_titles=["ig", "saliency"],
                            signed=[True, False], shared_scale=False)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 4
    assert bars[0].get_ylim() == pytest.approx((-2, 2)) and bars[1].get_ylim() == pytest.approx((0, 2))
    sweep = plot_layer_sweep(images[0], {"a": signed_maps[0], "b": signed_maps[0]}, signed=True)
    assert sum(ax.get_label() == "<colorbar>" for ax in sweep.axes) == 2
    with pytest.raises(CnnlabError, match="one bool or one per column"):
        plot_attributions(images, [signed_maps], column_titles=["ig"], signed=[True, False])


# --------------------------------------------------------------------------- the report's decision maps


def test_explain_decisions_maps_the_actual_and_the_predicted_class(model, images):
    from cnnlab.insight.decisions import explain_decisions
    from cnnlab.insight.predictions import TopLoss

    uint8 = (np.arange(5 * 12 * 12 * 3) % 256).astype(np.uint8).reshape(5, 12, 12, 3)

    def preprocess(batch):  # uint8 (N, H, W, C) -> what the model takes
        return images[: len(batch)]

    losses = [TopLoss(index=10 + i, loss=1.0, predicted=(i + 1) % 7, predicted_prob=0.5, actual=i, actual_prob=0.1)
              for i in range(4)]
    d = explain_decisions(model, preprocess, uint8, losses, n=3)
    assert d.layer == "6" and list(d.indices) == [10, 11, 12] and d.images.shape == (3, 12, 12, 3)
    np.testing.assert_array_equal(d.actual_maps, A.gradcam(model, images[:3], [0, 1, 2]))
    np.testing.assert_array_equal(d.predicted_maps, A.gradcam(model, images[:3], [1, 2, 3]))
    assert d.sweep_index == 10 and list(d.sweep) == ["1", "3", "6"]
    np.testing.assert_allclose(d.sweep["3"], A.gradcam(model, images[:1], 1, layer="3")[0], rtol=1e-6)
    assert explain_decisions(model, preprocess, uint8, [], n=3) is None
    dense = nn.Sequential(nn.Flatten(), nn.Linear(432, 7)).double()
    assert explain_decisions(dense, preprocess, uint8, losses) is None


@pytest.mark.slow
@pytest.mark.parametrize(("name", "layer"), [("resnet18", "layer4.1"), ("mobilenet_v3_small", "features.12.2")])
def test_explain_photo_with_the_other_pretrained_architectures(tmp_path, name, layer):
    from PIL import Image

    from cnnlab.insight.photo import explain_photo
    from cnnlab.models import build

    torch.manual_seed(0)
    net = build(name).eval()  # random weights: the architecture, not the accuracy, is under test
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path)
    result = explain_photo(path, model=net, target=7)
    assert result.layer == layer and result.target == 7 and result.map.shape == (240, 320)
    assert result.map.max() > 0 and len(result.top) == 5


# --------------------------------------------------------------------------- faithfulness on real trained networks


@pytest.fixture(scope="module")
def trained_mnist(tmp_path_factory, datasets_root):
    """A real run: mnist-cnn trained by train_run for 2 epochs on 3,000 MNIST images at lr
    0.002 (about 95% on the test set; ~20 s on two idle cores), and the first 1,000 test
    images, preprocessed, with their labels."""
    from cnnlab.runs.directory import load_run
    from cnnlab.runs.experiment import RunConfig, train_run
    from cnnlab.train.config import TrainConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(datasets_root))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        cfg = RunConfig(data="mnist", model="mnist-cnn", train_size=3000, val_size=0,
                        train=TrainConfig(epochs=2, batch_size=32, lr=0.002, verbose=0, seed=0))
        path, _ = train_run(cfg, tmp_path_factory.mktemp("runs") / "faithful", download=False)
        run = load_run(path)
        test = run.load_data().test
    model = run.build_model(weights="last").eval()
    x, y = run.preprocess(test.images[:1000]), torch.from_numpy(test.labels[:1000].astype(np.int64))
    assert (A.scores(model, x).argmax(1) == y).float().mean() > 0.9
    return model, x, y


@pytest.mark.slow
def test_gradcam_of_a_trained_mnist_cnn_is_almost_never_all_zero(trained_mnist):
    """The rectified unit (the ReLU after the last conv) against the conv's raw output, where
    the classes' evidence is often negative everywhere: on this run 0 vs 409 of 1,000."""
    model, x, y = trained_mnist
    maps, _, used, _ = A.gradcam_maps(model, x, y)
    assert used == ["4"]
    assert A.all_zero(maps["4"]).mean() <= 0.01
    raw, *_ = A.gradcam_maps(model, x, y, layers=["3"])
    assert A.all_zero(raw["3"]).mean() > 0.1  # the old choice: what this test would have caught


@pytest.mark.slow
def test_trained_mnist_maps_change_when_the_top_layer_is_randomised(trained_mnist):
    """Adebayo et al.'s model-randomisation check: the mean per-image Spearman correlation
    between the maps before and after re-drawing the top layer's weights (three draws) is
    below 0.5 for Grad-CAM and for signed saliency. Absolute saliency does not pass it on
    MNIST (about 0.7 here: the digit's outline dominates |gradient| whatever the top layer),
    which is why signed maps are drawn signed."""
    from cnnlab.insight.faithfulness import randomized_top, rank_correlation

    model, x, y = trained_mnist
    x, y = x[:200], y[:200]
    correlations = {"gradcam": [], "saliency (signed)": []}
    for seed in range(3):
        twin = randomized_top(model, seed=seed)
        for name, fn in (("gradcam", lambda m: A.gradcam_maps(m, x, y)[0]["4"]),
                         ("saliency (signed)", lambda m: A.saliency(m, x, y, signed=True))):
            correlations[name].append(np.nanmean(rank_correlation(fn(model), fn(twin))))
    for name, values in correlations.items():
        assert np.mean(values) < 0.5, (name, values)
    assert np.mean(correlations["saliency (signed)"]) < 0.25


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(A.METHODS))
def test_deleting_a_maps_top_pixels_first_beats_a_random_order(trained_mnist, method):
    """Deletion (Petsiuk et al. 2018): pixels set to 0 (black), most evidence first, 10% at a
    time; the area under the class probability is lower than for a random order, on
    average and for most images."""
    from cnnlab.insight.faithfulness import auc, perturbation_curves

    model, x, y = trained_mnist
    x, y = x[:100], y[:100]
    options = {"smoothgrad": {"samples": 8}, "ig": {"steps": 16}, "occlusion": {"window": 4, "stride": 4}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", A.AllZeroMapWarning)
        maps = A.attribute(model, x, y, method=method, **options.get(method, {}))
    ours = auc(perturbation_curves(model, x, maps, y, steps=10))
    chance = auc(perturbation_curves(model, x, maps, y, steps=10, order="random"))
    assert ours.mean() < 0.75 * chance.mean() and (ours < chance).mean() > 0.8


@pytest.mark.slow
def test_squeezenet_maps_change_when_its_classifier_is_randomised(squeezenet, shared_dir):
    """The same check on SqueezeNet and the cat photo: the top layer is the 1x1 classifier
    conv; Grad-CAM (at its ReLU, classifier.2) and signed saliency decorrelate."""
    from cnnlab.insight.faithfulness import randomized_top, rank_correlation
    from cnnlab.insight.photo import load_photo
    from cnnlab.models.pretrained import preprocess

    photo = shared_dir / "images" / "cat.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} is absent")
    x = preprocess(load_photo(photo)[0])[None]
    target = [int(A.scores(squeezenet, x).argmax(1)[0])]
    assert A.cam_layers(squeezenet, x) == ["classifier.2"]
    correlations = {"gradcam": [], "saliency (signed)": []}
    for seed in range(3):
        twin = randomized_top(squeezenet, seed=seed)
        for name, fn in (("gradcam", lambda m: A.gradcam_maps(m, x, target)[0]["classifier.2"]),
                         ("saliency (signed)", lambda m: A.saliency(m, x, target, signed=True))):
            correlations[name].append(rank_correlation(fn(squeezenet), fn(twin))[0])
    for name, values in correlations.items():
        assert np.nanmean(values) < 0.5, (name, values)
