"""Batched tensor transforms: scaling, normalisation, augmentation against hand cases."""

import numpy as np
import pytest
import torch

from cnnlab.data.transforms import Augment, _translate, apply_augment, augment, augment_draws, to_tensor
from cnnlab.errors import CnnlabError


def test_to_tensor_scales_normalises_and_is_channels_last():
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    x = to_tensor(images)
    assert x.shape == (2, 3, 3, 4) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    z = to_tensor(images, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 2.0])
    assert torch.allclose(z[:, 2], (x[:, 2] - 0.3) / 2.0)


def test_to_tensor_rejects_bad_input():
    with pytest.raises(CnnlabError, match=r"expected uint8 images of shape \(N, H, W, C\), got uint8 \(3, 28, 28\)"):
        to_tensor(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(CnnlabError, match="mean/std have 1/1 values but the images have 3 channels"):
        to_tensor(np.zeros((1, 2, 2, 3), np.uint8), mean=[0.5], std=[0.5])


def test_translate_matches_a_hand_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = _translate(x, torch.tensor([1]), torch.tensor([-1]), fill="zeros")
    expected = torch.zeros(4, 4)
    expected[1:, :3] = x[0, 0, :3, 1:]
    assert torch.equal(out[0, 0], expected)
    nearest = _translate(x, torch.tensor([0]), torch.tensor([2]), fill="nearest")
    assert torch.equal(nearest[0, 0, :, :2], x[0, 0, :, :1].expand(4, 2))
    assert torch.equal(nearest[0, 0, :, 2:], x[0, 0, :, :2])


def test_flips_and_crop_keep_shape_and_content():
    x = torch.rand(64, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    flipped = augment(x, Augment(flip_h=True), g)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    cropped = augment(x, Augment(crop=2), g)
    assert cropped.shape == x.shape
    rotated = augment(x, Augment(rotation=15), g)
    assert rotated.shape == x.shape and torch.isfinite(rotated).all()


def test_rotation_by_zero_is_identity():
    x = torch.rand(2, 1, 9, 9)
    from cnnlab.data.transforms import _rotate

    assert torch.allclose(_rotate(x, torch.zeros(2)), x, atol=1e-5)


def test_parse():
    assert Augment.parse("shift=0.1,flip-h,rotation=10,crop=4") == Augment(shift=0.1, flip_h=True, rotation=10, crop=4)
    assert not Augment.parse(None).active
    with pytest.raises(CnnlabError, match="bad augmentation 'zoom=2'"):
        Augment.parse("zoom=2")
    with pytest.raises(CnnlabError, match="shift must be a fraction"):
        Augment(shift=2)


def test_augment_is_its_draws_applied_and_checks_their_shape():
    """A CUDA graph replays apply_augment on fresh draws: it must equal augment's own draw."""
    x = torch.rand(5, 1, 8, 8)
    aug = Augment(flip_h=True, shift=0.2, crop=2, rotation=10)
    expected = augment(x, aug, torch.Generator().manual_seed(3))
    draws = augment_draws(aug, 5, torch.Generator().manual_seed(3))
    assert draws.shape == (6, 5)  # flip 1 + rotation 1 + shift 2 + crop 2 rows, one column per image
    assert torch.equal(apply_augment(x, aug, draws), expected)
    assert not torch.equal(expected, augment(x, aug, torch.Generator().manual_seed(4)))
    with pytest.raises(CnnlabError, match=r"draws of shape \(6, 4\) do not fit"):
        apply_augment(x, aug, draws[:, :4])
    with pytest.raises(CnnlabError, match="must be >= 0, got -1"):
        augment_draws(aug, -1)
