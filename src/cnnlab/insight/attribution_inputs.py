"""What every attribution method does first: a batch of images as the model takes it, the
targets each image is explained for, and the maps handed back as float32 NumPy arrays.

Shared by ``attribution``, ``cam_layers`` and ``occlusion`` (one module each, so none grows
past what a reader takes in).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.layers import explaining, forward_logits


def _as_batch(model: nn.Module, images) -> torch.Tensor:
    """(N, C, H, W) or (C, H, W) tensor/array -> a detached (N, C, H, W) tensor in the model's dtype."""
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise CnnlabError(f"images are {images.dtype}; pass float (N, C, H, W) preprocessed as the model "
                              "expects (a run's Run.preprocess does it for uint8 images)")
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4) or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise CnnlabError(f"images must be a float tensor or array (N, C, H, W), got {got}")
    x = images.unsqueeze(0) if images.ndim == 3 else images
    if x.shape[0] == 0:
        raise CnnlabError("images is an empty batch; pass at least one image")
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    # Channels-last activations: oneDNN's convolutions run faster in that layout on the CPU
    # (SqueezeNet's Grad-CAM of one photo 1.6x); every copy made later keeps it.
    return x.detach().contiguous(memory_format=torch.channels_last)


def _target_spec(targets, n: int, labels) -> torch.Tensor | str:
    """'predicted', or an int64 tensor (n,) of classes (range checked once scores are known)."""
    if isinstance(targets, str):
        if targets == "predicted":
            return targets
        if targets != "actual":
            raise CnnlabError(f"target {targets!r} is not 'predicted', 'actual', a class index or one per image")
        if labels is None:
            raise CnnlabError("target 'actual' needs labels=; pass the true classes, or use 'predicted'")
        targets = labels
    t = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets))
    if t.is_floating_point() or t.dtype == torch.bool or t.ndim > 1:
        raise CnnlabError(f"targets {targets!r} are not class indices; give an int or one int per image")
    t = t.long().expand(n) if t.ndim == 0 else t.long()
    if len(t) != n:
        raise CnnlabError(f"{len(t)} targets for {n} images; give one target per image (or one int for all)")
    return t


def _targets(spec, logits: torch.Tensor) -> torch.Tensor:
    """The (n,) classes to explain for a batch whose scores are ``logits`` (n, K)."""
    if isinstance(spec, str):
        return logits.detach().argmax(1)
    k = logits.shape[1]
    bad = spec[(spec < 0) | (spec >= k)]
    if len(bad):
        raise CnnlabError(f"target {int(bad[0])} is out of range: the model has {k} classes (0..{k - 1})")
    return spec.to(logits.device).clone()  # a clone made here is a normal tensor even if the caller used inference_mode


def _selected_each(logits: torch.Tensor, spec) -> torch.Tensor:
    """Each row's score for its target class (n,)."""
    return logits.gather(1, _targets(spec, logits)[:, None])[:, 0]


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CnnlabError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _predicted(model: nn.Module, x: torch.Tensor, spec, batch_size: int) -> torch.Tensor:
    """Resolve 'predicted' with a gradient-free pass (for methods that perturb the images);
    given classes are range-checked later, against the scores of their first batch."""
    if not isinstance(spec, str):
        return spec.to(x.device)
    return scores(model, x, batch_size=batch_size).argmax(1)


def _add_rows(total: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """total[index[r]] += values[r] for every row r, as one matrix product (index_add_ is
    several times slower on the CPU, and slower still in float64)."""
    onehot = (index[None, :] == torch.arange(len(total), device=index.device)[:, None]).to(values.dtype)
    total.view(len(total), -1).addmm_(onehot, values.reshape(len(values), -1))


def _maps(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def scores(model: nn.Module, images, *, batch_size: int = 128) -> torch.Tensor:
    """The model's scores (N, K) for the images, in eval mode without gradients."""
    x = _as_batch(model, images)
    with explaining(model), torch.no_grad():
        return torch.cat([forward_logits(model, xs) for xs in x.split(_check_batch_size(batch_size))])
