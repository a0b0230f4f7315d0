"""The CIFAR-10 94% recipe's parts: Muon, the whitening layer, six-view evaluation, the linear schedule."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import build
from cnnlab.models.speedrun import Whiten, cifar_94
from cnnlab.train.config import RECIPES, with_overrides
from cnnlab.train.loop import fit
from cnnlab.train.muon import BIAS_RATIO, HEAD_RATIO, Muon, muon_groups, orthogonalize
from cnnlab.train.optim import lr_factor, make_optimizer
from cnnlab.train.validation import evaluate_loss_accuracy, tta_logits


def test_orthogonalize_is_near_the_svd_polar_factor():
    g = torch.randn(64, 576, generator=torch.Generator().manual_seed(0)) * torch.logspace(0, 2, 576)
    o = orthogonalize(g)
    u, _, vt = torch.linalg.svd(g, full_matrices=False)
    s = torch.linalg.svdvals(o)
    # three quintic steps in bf16: singular values pushed into about [0.5, 1.5], not exactly 1
    assert 0.3 < s.min() and s.max() < 1.6, s
    polar = u @ vt
    cosine = (o * polar).sum() / (o.norm() * polar.norm())
    assert cosine > 0.9
    # a tall matrix gives the transpose of its wide transpose's result
    torch.testing.assert_close(orthogonalize(g.T), o.T)


def _hand_muon_step(w, g, lr, mu):
    """One first step by hand: momentum buffer = g, Nesterov update g + mu * g, weight renormalised."""
    w = w * (len(w) ** 0.5 / w.norm())
    return w - lr * orthogonalize(((1 + mu) * g).reshape(len(g), -1)).view(w.shape)


def test_muon_step_matches_the_hand_computed_update_and_torch_sgd():
    torch.manual_seed(0)
    conv, head = torch.nn.Parameter(torch.randn(8, 3, 3, 3)), torch.nn.Parameter(torch.randn(10, 8))
    bias = torch.nn.Parameter(torch.randn(8))
    twin_head, twin_bias = (torch.nn.Parameter(p.detach().clone()) for p in (head, bias))
    w0 = conv.detach().clone()
    opt = make_optimizer("muon", [conv, head, bias], lr=0.2, momentum=0.6, nesterov=True, weight_decay=1e-4,
                         batch_size=50)
    groups = {len(g["params"][0].shape): g for g in opt.param_groups}
    ref = torch.optim.SGD([{"params": [twin_head], "lr": groups[2]["lr"], "weight_decay": groups[2]["weight_decay"]},
                           {"params": [twin_bias], "lr": groups[1]["lr"], "weight_decay": groups[1]["weight_decay"]}],
                          momentum=0.85, nesterov=True)
    for step in range(3):
        grads = [torch.randn_like(p) for p in (conv, head, bias)]
        for p, g in zip((conv, head, bias), grads, strict=True):
            p.grad = g
        twin_head.grad, twin_bias.grad = grads[1].clone(), grads[2].clone()
        opt.step()
        ref.step()
        if step == 0:
            torch.testing.assert_close(conv.detach(), _hand_muon_step(w0, grads[0], 0.2, 0.6))
    torch.testing.assert_close(head.detach(), twin_head.detach())
    torch.testing.assert_close(bias.detach(), twin_bias.detach())


def test_muon_groups_by_shape_with_airbench_ratios_scaled_by_the_batch():
    conv, head, bias = (torch.nn.Parameter(torch.zeros(s)) for s in ((4, 3, 3, 3), (10, 4), (4,)))
    frozen = torch.nn.Parameter(torch.zeros(4, 3, 2, 2), requires_grad=False)
    groups = muon_groups([conv, head, bias, frozen], lr=0.24, batch_size=2000, weight_decay=2e-6)
    assert [g["params"] for g in groups] == [[conv], [head], [bias]]
    assert [g["orthogonal"] for g in groups] == [True, False, False]
    # airbench's summed-loss rates 0.67 and 0.053 at batch 2000, for cnnlab's mean loss
    assert groups[1]["lr"] == pytest.approx(0.24 * HEAD_RATIO * 2000) == pytest.approx(0.67 * 2000)
    assert groups[2]["lr"] == pytest.approx(0.053 * 2000)
    # the decay per step, rate x coefficient, is airbench's 2e-6 x batch size in each group
    for g in groups[1:]:
        assert g["lr"] * g["weight_decay"] == pytest.approx(2e-6 * 2000)
    assert BIAS_RATIO < HEAD_RATIO


def test_bad_inputs_get_one_line_errors():
    with pytest.raises(CnnlabError, match=r"orthogonalize takes a matrix \(2-D\), got shape \(2, 3, 4\)"):
        orthogonalize(torch.zeros(2, 3, 4))
    with pytest.raises(CnnlabError, match="batch_size must be at least 1, got 0"):
        muon_groups([], lr=0.1, batch_size=0)
    with pytest.raises(CnnlabError, match="learning rate must be a positive number, got -1"):
        muon_groups([], lr=-1, batch_size=2)
    with pytest.raises(CnnlabError, match=r"Whiten.adapt needs images \(N, 3, H >= 2, W >= 2\), got \(5, 1, 8, 8\)"):
        Whiten(3).adapt(torch.zeros(5, 1, 8, 8))


def test_muon_refuses_parameter_groups():
    with pytest.raises(CnnlabError, match="muon groups parameters by shape"):
        make_optimizer("muon", [{"params": [torch.nn.Parameter(torch.zeros(2, 2))], "lr": 0.1}], lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        Muon([torch.nn.Parameter(torch.zeros(2, 2))], momentum=1.5)


def test_linear_schedule_runs_straight_down_to_zero():
    f = lr_factor("linear", total_steps=200, steps_per_epoch=25)
    assert [f(t) for t in (0, 50, 100, 199, 200, 250)] == pytest.approx([1.0, 0.75, 0.5, 0.005, 0.0, 0.0])


def test_whiten_adapt_makes_patches_uncorrelated_with_unit_variance():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(200, 3, 8, 8, generator=gen)
    mix = torch.tensor([[1.0, 0.8, 0.2], [0.0, 0.6, 0.5], [0.0, 0.0, 0.3]])
    images = torch.nn.functional.avg_pool2d(torch.einsum("ij,njhw->nihw", mix, base), 3, 1, 1) * 4 + 1
    layer = Whiten(3, eps=1e-8)
    layer.adapt(images)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, layer.weight)  # no bias: the raw projections
    half = out[:, :12].permute(1, 0, 2, 3).reshape(12, -1)
    covariance = half @ half.T / half.shape[1]  # second moments, as adapt estimates them
    torch.testing.assert_close(covariance, torch.eye(12), atol=2e-3, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])
    assert not layer.weight.requires_grad and layer.bias.requires_grad


def test_tta_logits_average_six_views_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    x = torch.randn(2, 3, 6, 6)

    def moved(img, dy, dx):  # the image moved by (dy, dx) pixels, edges reflected
        padded = torch.nn.functional.pad(img, (1, 1, 1, 1), mode="reflect")
        return padded[:, :, 1 - dy : 7 - dy, 1 - dx : 7 - dx]

    def mirrored(img):
        return (model(img) + model(img.flip(3))) / 2

    want = 0.5 * mirrored(x) + 0.25 * mirrored(moved(x, 1, 1)) + 0.25 * mirrored(moved(x, -1, -1))
    with torch.no_grad():
        torch.testing.assert_close(tta_logits(model, x, flip=True, shift=True), want)
        torch.testing.assert_close(tta_logits(model, x), model(x))
        y = torch.tensor([0, 3])
        loss, _ = evaluate_loss_accuracy(model, x, y, flip=True, shift=True, precision="fp32")
        assert loss == pytest.approx(torch.nn.functional.cross_entropy(want, y).item(), rel=1e-5)


def _tiny_cifar(n=64, seed=0):
    gen = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = gen.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    x[np.arange(n), :, :, y] = 255  # a colour cue per class
    return x, y


def test_fit_adapts_the_whitening_layer_before_the_first_step_and_not_on_resume():
    x, y = _tiny_cifar(48)
    torch.manual_seed(0)
    model = build("cifar-94", num_classes=3)
    expect = Whiten(3)
    expect.adapt(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    states = []
    fit(model, x, y, epochs=1, batch_size=16, optimizer="muon", verbose=0, precision="fp32",
        callbacks=[lambda end: states.append(end.state())])
    # its filters never train, so after a whole epoch they are still the adapted ones
    torch.testing.assert_close(model[0].weight.detach(), expect.weight.detach())
    resumed = build("cifar-94", num_classes=3)
    fit(resumed, x[::-1].copy(), y[::-1].copy(), epochs=1, batch_size=16, optimizer="muon", verbose=0,
        precision="fp32", resume=states[-1])  # other images: a re-adapted layer would differ
    torch.testing.assert_close(resumed[0].weight.detach(), expect.weight.detach())


def test_fit_leaves_a_users_own_adapt_method_alone():
    class Layer(nn.Conv2d):
        def adapt(self, *args):  # some other library's method of the same name
            raise AssertionError("called")

    x, y = _tiny_cifar(8)
    model = nn.Sequential(Layer(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 3))
    fit(model, x, y, epochs=1, batch_size=8, verbose=0)


def test_the_94_recipe_overfits_a_batch():
    x, y = _tiny_cifar(64)
    torch.manual_seed(0)
    model = cifar_94(num_classes=3, widths=(16, 32, 32))  # the recipe's net, narrow: seconds, not minutes
    recipe = RECIPES["cifar-94"].train
    cfg = with_overrides(recipe, epochs=10, batch_size=32, verbose=0, eval_shift=False, eval_flip=False,
                         augment="none")
    history = fit(model, x, y, config=cfg, validation=(x, y))
    assert history.epochs[-1]["val_accuracy"] == 1.0
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
