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
    """Accept uint8 NHWC arrays (scaled to [0, 1]) or float NCHW tensors, and int labels."""
    if isinstance(x, np.ndarray):
        x = to_tensor(x) if x.dtype == np.uint8 else torch.from_numpy(x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    if x.ndim != 4:
        raise CnnlabError(f"expected inputs of shape (N, C, H, W), got {tuple(x.shape)}")
    if len(x) != len(y):
        raise CnnlabError(f"{len(x)} inputs but {len(y)} labels; they must match")
    if len(x) == 0:
        raise CnnlabError("no training examples (the dataset or subset is empty)")
    return x.to(device, torch.float32), y.to(device)


class Batches:
    """Seeded shuffling over N examples, yielding index tensors of one global batch.

    With ``steps_per_epoch`` set, epochs draw that many batches and continue where the
    last one stopped (reshuffling each time the data runs out), as Keras' generators do.
    Under torchrun each rank keeps its own slice ``batch[rank::world]`` of every batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu") -> None:
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)  # on the CPU: the same order on any device
        self._set_perm(torch.randperm(n, generator=self.gen))
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

    def _reshuffle(self) -> None:
        self._set_perm(torch.randperm(self.n, generator=self.gen))
        self.cursor = 0

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self._set_perm(s["perm"].cpu())
        self.cursor = int(s["cursor"])
