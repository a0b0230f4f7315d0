"""The training data on the device, in batches: inputs checked and moved once, and seeded
shuffling by index (no DataLoader, no per-sample Python).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cnnlab.data.transforms import to_tensor
from cnnlab.errors import CnnlabError


def as_inputs(x, y, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept uint8 NHWC arrays (scaled to [0, 1]) or float NCHW tensors, and int or one-hot labels."""
    if isinstance(x, np.ndarray):
        x = to_tensor(x) if x.dtype == np.uint8 else torch.from_numpy(x)
    elif isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
        x = channels_first(x).float().div_(255.0)
    y = class_labels(torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y))
    if x.ndim != 4:
        raise CnnlabError(f"expected inputs of shape (N, C, H, W), got {tuple(x.shape)}")
    if len(x) != len(y):
        raise CnnlabError(f"{len(x)} inputs but {len(y)} labels; they must match")
    if len(x) == 0:
        raise CnnlabError("no training examples (the dataset or subset is empty)")
    return x.to(device, torch.float32), y.to(device)


def class_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices (N,) from indices or one-hot rows (N, K), as Keras' sparse and categorical forms."""
    if y.ndim == 2 and y.shape[1] > 1:
        hot = y.float()
        if not bool(((hot == 0) | (hot == 1)).all()) or not bool((hot.sum(1) == 1).all()):
            raise CnnlabError(f"labels of shape {tuple(y.shape)} must be one-hot (a single 1 per row) or class "
                              "indices of shape (N,); for soft targets pass loss= a function of (logits, targets)")
        return hot.argmax(1)
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1) class indices, as Keras' sparse labels often come
        y = y[:, 0]
    if y.ndim != 1:
        raise CnnlabError(f"labels must be class indices (N,) or one-hot (N, K); got shape {tuple(y.shape)}")
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise CnnlabError("labels must be whole class indices (0, 1, 2, ...); got fractional values")
    return y.long()


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W, C) with C = 1, 3 or 4, or (N, H, W), as (N, C, H, W); (N, C, H, W) as it is."""
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.permute(0, 3, 1, 2)
    return x


class Batches:
    """Seeded shuffling over N examples, yielding index tensors of one global batch.

    With ``steps_per_epoch`` set, epochs draw that many batches and continue where the
    last one stopped (reshuffling each time the data runs out), as Keras' generators do.
    Under torchrun each rank keeps its own slice ``batch[rank::world]`` of every batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu", *,
                 shuffle: bool = True) -> None:
        self.n, self.batch_size, self.device, self.shuffle = n, batch_size, torch.device(device), shuffle
        self.gen = torch.Generator().manual_seed(seed)  # on the CPU: the same order on any device
        self._set_perm(self._order())
        self.cursor = 0

    def _set_perm(self, perm: torch.Tensor) -> None:
        # One copy per shuffle to the training device, so no step waits on a host-to-GPU copy.
        self.perm = perm
        self.perm_on_device = perm.to(self.device)

    def epoch(self, steps: int | None):
        if steps is None:  # one full pass, starting from a fresh shuffle
            if self.cursor:
                self._reshuffle()
            steps = math.ceil(self.n / self.batch_size)
        for _ in range(steps):
            if self.cursor >= self.n:
                self._reshuffle()
            batch = self.perm_on_device[self.cursor : self.cursor + self.batch_size]
            self.cursor += len(batch)
            yield batch
        if self.cursor >= self.n:
            self.cursor = self.n  # the next epoch reshuffles first

    def _order(self) -> torch.Tensor:
        """A fresh permutation, or the examples in order (``shuffle=False``, as Keras' ``fit(shuffle=False)``)."""
        return torch.randperm(self.n, generator=self.gen) if self.shuffle else torch.arange(self.n)

    def _reshuffle(self) -> None:
        self._set_perm(self._order())
        self.cursor = 0

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self._set_perm(s["perm"].cpu())
        self.cursor = int(s["cursor"])
