"""Feature visualisation: determinism, that it works (activations rise far above noise's, a
pretrained class reaches p > 0.9), its building blocks against references, and that the model
is never changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight import featurevis as fv
from cnnlab.insight import featurevis_image as fvi
from cnnlab.insight.featurevis import top_examples, visualize_channels, visualize_class
from cnnlab.insight.internals import activations


def _grey_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 5))


def _rgb_net() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_same_seed_same_image_bit_for_bit_and_the_global_rng_is_left_alone():
    model = _grey_net()
    state = torch.random.get_rng_state()
    a = visualize_channels(model, layer="3", channels=[0, 5], steps=8, size=16, seed=3)
    b = visualize_channels(model, layer="3", channels=[0, 5], steps=8, size=16, seed=3)
    c = visualize_channels(model, layer="3", channels=[0, 5], steps=8, size=16, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.dtype == np.float32 and a.shape == (2, 16, 16, 1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0 <= a.min() and a.max() <= 1


def test_a_channel_visualisation_drives_its_channel_far_above_noise():
    model = _grey_net()
    channels = [0, 3, 7]
    images = visualize_channels(model, layer="3", channels=channels, steps=50, size=16, seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    achieved = activations(model, x, "3")[np.arange(3), channels].mean(axis=(1, 2))  # (3,)
    noise = torch.rand((256, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    noise_acts = activations(model, noise, "3")[:, channels].mean(axis=(2, 3))  # (256, 3)
    mean, std, best = noise_acts.mean(0), noise_acts.std(0), noise_acts.max(0)
    assert ((achieved - mean) / std > 8).all(), (achieved, mean, std)
    assert (achieved - mean > 2.5 * (best - mean)).all()  # far past the best of 256 noise images


def _colour_net() -> nn.Sequential:
    """Class c's score: the mean of colour channel c minus the other two (of the normalised
    input), so the best image for class 0 is pure red, for class 2 pure blue."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    linear = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_((2 * torch.eye(3) - torch.ones(3, 3)).view(3, 3, 1, 1))
        linear.weight.copy_(torch.eye(3))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def test_class_visualisation_of_an_rgb_net_on_a_non_square_input_heads_for_the_known_optimum():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    for robust, margin in ((False, 2.5), (True, 1.5)):  # the random transforms slow it down
        images = visualize_class(_colour_net(), target=[0, 2], steps=35, size=(12, 20), seed=0, mean=mean,
                                 std=std, lr=0.3, robust=robust)
        assert images.shape == (2, 12, 20, 3)
        colours = images.mean(axis=(1, 2))  # (2, RGB): red for class 0, blue for class 2
        assert colours[0, 0] > margin * colours[0, 1:].max(), colours
        assert colours[1, 2] > margin * colours[1, :2].max(), colours


def test_model_is_unchanged_also_when_the_call_fails():
    model = _rgb_net()
    model.train()
    model[1].eval()  # mixed modes must come back as they were
    model[0].bias.requires_grad_(False)
    calls = []
    model[3].register_forward_hook(lambda *a: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    hooks = [dict(m._forward_hooks) for m in model.modules()]
    visualize_channels(model, layer="3", channels=2, steps=3, size=12)
    with pytest.raises(CnnlabError):
        visualize_channels(model, layer="3", channels=8, steps=3, size=12)  # fails after the model was frozen
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert [dict(m._forward_hooks) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())
    assert calls  # the user's own hook stayed and ran


def test_bad_input_gives_one_line_errors():
    model = _grey_net()
    with pytest.raises(CnnlabError, match=r"no layer 'conv9'.*one of: 0 \(Conv2d\)") as err:
        visualize_channels(model, layer="conv9", channels=0, steps=1, size=16)
    assert "\n" not in str(err.value)
    with pytest.raises(CnnlabError, match=r"channel 8 is out of range.*0\.\.7"):
        visualize_channels(model, layer="3", channels=[0, 8], steps=1, size=16)
    with pytest.raises(CnnlabError, match=r"class 5 is out of range.*0\.\.4"):
        visualize_class(model, target=5, steps=1, size=16)
    with pytest.raises(CnnlabError, match="channel must be an int"):
        visualize_channels(model, layer="3", channels=[], steps=1, size=16)
    with pytest.raises(CnnlabError, match=r"cannot take a \(1, 20, 20\)"):
        visualize_class(model, target=0, steps=1, size=20)  # the Linear layer wants 16x16
    with pytest.raises(CnnlabError, match="size must be"):
        visualize_class(model, target=0, steps=1, size=(16,))
    with pytest.raises(CnnlabError, match="mean and std need 1 or 1 values"):
        visualize_class(model, target=0, steps=1, size=16, mean=(0.1, 0.2))
    with pytest.raises(CnnlabError, match="no Conv2d layer"):
        visualize_class(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), target=0, steps=1, size=4)


def test_top_examples_equal_a_brute_force_loop():
    model = _grey_net()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand((70, 1, 16, 16), generator=gen) * torch.rand((70, 1, 1, 1), generator=gen)
    channels = [0, 3, 7]
    got = top_examples(model, images, layer="3", channels=channels, k=5, batch_size=16)
    assert got.shape == (3, 5) and got.dtype == np.int64
    with torch.no_grad():
        for row, c in enumerate(channels):
            scores = [model[:4](images[i:i + 1])[0, c].mean().item() for i in range(len(images))]
            assert list(got[row]) == list(np.argsort(scores)[::-1][:5])
    with pytest.raises(CnnlabError, match="k must be an int in 1..70"):
        top_examples(model, images, layer="3", channels=0, k=71)
    with pytest.raises(CnnlabError, match="float tensor"):
        top_examples(model, images.numpy(), layer="3", channels=0)


def test_colour_matrix_is_a_square_root_of_imagenets_colour_covariance():
    m = fvi.colour_matrix().double().numpy()
    s = fvi.IMAGENET_COLOUR_SQRT
    chol = np.linalg.cholesky(s @ s.T)
    scale = np.linalg.norm(chol, axis=0).max()
    np.testing.assert_allclose((m * scale) @ (m * scale).T, s @ s.T, atol=1e-6)
    assert np.allclose(np.triu(m, 1), 0)  # lower triangular: a Cholesky factor


def test_spectrum_scale_is_lucids_one_over_frequency():
    h, w = 6, 9
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1]  # the non-negative half rfft2 keeps
    freqs = np.sqrt(fx**2 + fy**2)
    expected = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) * np.sqrt(h * w)
    np.testing.assert_allclose(fvi.spectrum_scale(h, w).numpy(), np.abs(expected), rtol=1e-6)


def test_random_affine_is_the_identity_without_transforms_and_a_roll_for_a_shift():
    x = torch.rand((2, 3, 10, 14), generator=torch.Generator().manual_seed(0))
    setup = fvi.Setup(size=(10, 14), channels_in=3, steps=1, lr=0.1, mean=torch.zeros(1), std=torch.ones(1),
                      robust=True, fourier=True, jitter=0, scale=(1.0, 1.0), rotate=0.0)
    out = fvi.random_affine(x, setup, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    shifted = fvi.random_affine(x, fvi.Setup(**{**setup.__dict__, "jitter": 1}), torch.Generator().manual_seed(5))
    # each image moved by whole pixels: its interior equals a roll of the original
    for b in range(2):
        match = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if torch.allclose(shifted[b, :, 1:-1, 1:-1], torch.roll(x[b], (-dy, -dx), (1, 2))[:, 1:-1, 1:-1],
                                   atol=1e-5)]
        assert len(match) == 1


def test_pretrained_squeezenet_class_visualisation_is_confidently_that_class(shared_dir):
    from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, load_pretrained

    path = shared_dir / "models" / "squeezenet1_1-imagenet.pth"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    model = load_pretrained("squeezenet1_1", weights=path, progress=False)
    target = 130  # flamingo
    image = visualize_class(model, target=target, steps=48, size=128, seed=0, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = (torch.from_numpy(image).permute(0, 3, 1, 2) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
        noise = model((torch.rand((1, 3, 128, 128), generator=torch.Generator().manual_seed(0))
                       - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    assert p[target] > 0.9, float(p[target])
    assert noise.softmax(1)[0, target] < 0.01


def test_redirected_relu_passes_gradient_only_where_an_image_would_get_none():
    x = torch.tensor([[-1.0, -2.0, -0.5], [1.0, -1.0, 2.0]], requires_grad=True)  # image 0: all dead
    out = fv._RedirectedReLU.apply(x)
    assert torch.equal(out, x.detach().clamp(min=0))
    grad = torch.tensor([[-1.0, 2.0, -3.0], [4.0, 5.0, -6.0]])
    out.backward(grad)
    # image 0: plain ReLU gives nothing, so pass on what would raise x (grad < 0 under descent);
    # image 1: plain ReLU's gradient
    assert torch.equal(x.grad, torch.tensor([[-1.0, 0.0, -3.0], [4.0, 0.0, -6.0]]))


def test_a_channel_behind_a_relu_that_noise_leaves_dead_still_grows():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[-1.0, -1, -1], [-1, 8, -1], [-1, -1, -1]]).view(1, 1, 3, 3))  # a dot detector
        conv.bias.fill_(-4.0)  # silent for the grey starting noise: only a bright dot on black reaches 0
    model = nn.Sequential(conv, nn.ReLU())
    image = visualize_channels(model, layer="1", channels=0, steps=40, size=12, seed=0, lr=0.3)
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    assert activations(model, x, "1").mean() > 0.05  # exactly 0 with a plain ReLU gradient
