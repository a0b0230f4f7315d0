"""Training data that does not sit on the device as one tensor: a torch Dataset or DataLoader.

``fit`` keeps arrays on the device and indexes batches out of them (``loop._Batches``);
everything else goes through a ``LoaderFeed``:

- a ``torch.utils.data.DataLoader`` is used exactly as given (its batch size, sampler,
  workers, collate function); cnnlab only moves each batch to the device;
- a ``torch.utils.data.Dataset`` gets a DataLoader made here: a seeded shuffle
  (the same order as in-memory data of the same seed), or under torchrun a
  ``DistributedSampler`` for training (each rank reads, and its workers decode, only its
  own share of the files; shards padded to equal length so every rank takes the same
  number of steps) and a ``Shard`` for evaluation (disjoint, no padding, so the summed
  metrics count every example once); the global batch split across processes, pinned
  memory on CUDA, and the dataset's own ``loader_options`` (e.g. ``num_workers``).

Batches are ``(inputs, labels)``, labels as class indices or one-hot rows. uint8 inputs
(N, C, H, W), as streamed folders deliver them, or (N, H, W, C), as a Dataset of
``load_dataset``'s arrays yields them, become float in [0, 1] on the device, then ``(x - mean) / std`` with the dataset's
``mean``/``std`` attributes when it has them, so decoding stays in the workers and the
arithmetic runs batched on the device.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from cnnlab.errors import CnnlabError
from cnnlab.train import distributed as dist
from cnnlab.train.batches import channels_first, class_labels


def is_loader_data(data) -> bool:
    return isinstance(data, (Dataset, DataLoader))


def make_loader(data, *, batch_size: int, seed: int, shuffle: bool, device: torch.device):
    """(DataLoader, its sampler's generator or None): ``data`` as given, or a loader for a Dataset."""
    if isinstance(data, DataLoader):
        return data, None
    world, rank = dist.world_size(), dist.rank()
    gen = None
    if world > 1 and shuffle:
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    elif world > 1:
        sampler = Shard(len(data), rank, world)
    elif shuffle:
        gen = torch.Generator().manual_seed(seed)
        sampler = Shuffled(len(data), gen)
    else:
        sampler = SequentialSampler(data)
    options = {"pin_memory": device.type == "cuda", **getattr(data, "loader_options", {})}
    return DataLoader(data, batch_size=max(batch_size // world, 1), sampler=sampler, **options), gen


class Shuffled(Sampler):
    """One ``randperm`` per epoch from ``gen``: the order ``batches.Batches`` gives in-memory
    data of the same seed (RandomSampler draws a second, empty permutation each epoch, so
    its second epoch differs)."""

    def __init__(self, n: int, gen: torch.Generator) -> None:
        self.n, self.gen = n, gen

    def __iter__(self):
        yield from torch.randperm(self.n, generator=self.gen).tolist()

    def __len__(self) -> int:
        return self.n


class Shard(Sampler):
    """Examples ``rank, rank + world, ...``: this rank's disjoint share, in order, unpadded.

    ``DistributedSampler`` pads the shards to equal length with repeated examples, which
    training needs (every rank must step together) but an evaluation must not: a repeated
    example would be counted twice in the all-reduced loss and accuracy."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self):
        yield from range(self.rank, self.n, self.world)

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


class LoaderFeed:
    """Per-epoch batches from a DataLoader, moved to ``device`` and made float."""

    def __init__(self, data, *, batch_size: int, seed: int, device: torch.device, shuffle: bool = True,
                 memory_format: torch.memory_format = torch.channels_last) -> None:
        self.loader, self.gen = make_loader(data, batch_size=batch_size, seed=seed, shuffle=shuffle, device=device)
        self.device, self.memory_format = device, memory_format
        self._buf: torch.Tensor | None = None
        dataset = self.loader.dataset
        self.mean, self.std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
        self.epoch_index = 0
        try:
            self.steps = len(self.loader)
        except TypeError:  # an IterableDataset without a length
            self.steps = None
        if self.steps == 0:
            raise CnnlabError("no training examples (the dataset or DataLoader is empty)")

    def batches(self, steps: int | None = None):
        """Yield (x, y) on the device for one epoch (at most ``steps`` batches)."""
        sampler = getattr(self.loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.epoch_index)  # a new shuffle each epoch, the same on every rank
        self.epoch_index += 1
        for i, batch in enumerate(self.loader):
            if steps is not None and i >= steps:
                break
            yield self.to_device(batch)

    def to_device(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise CnnlabError(f"a training batch must be (inputs, labels), got {type(batch).__name__}; "
                              "make the Dataset return (image, label) pairs")
        x, y = batch
        x = torch.as_tensor(x)
        if x.dtype == torch.uint8:  # a Dataset of (H, W, C) arrays, as load_dataset returns them, works too
            x = channels_first(x)
        x = x.to(self.device, non_blocking=True)
        y = class_labels(torch.as_tensor(y)).to(self.device, non_blocking=True)
        if x.dtype == torch.uint8 and x.ndim == 4:
            return self._to_float(x), y
        if not x.is_floating_point():
            x = x.float()
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x, y

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float in [0, 1], normalised, in one buffer reused batch after batch.

        A fresh float batch per step, allocated between the shared-memory batches the
        workers send, fragmented the heap: the main process grew by about one float batch
        per step (1.1 GB after 60 batches of 64 128x128 photos); with the buffer it stays flat.
        The batch is consumed (the step, or an evaluation) before the next one is made.
        """
        if self._buf is None or self._buf.shape != x.shape:
            self._buf = torch.empty(x.shape, dtype=torch.float32, device=self.device).contiguous(
                memory_format=self.memory_format)
        buf = self._buf
        buf.copy_(x).div_(255.0)  # (N, C, H, W) in [0, 1]
        if self.mean is not None:
            buf.sub_(_channels(self.mean, buf)).div_(_channels(self.std, buf))
        return buf

    def state_dict(self) -> dict:
        return {"epoch_index": self.epoch_index, **({"gen": self.gen.get_state()} if self.gen is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_index = int(state.get("epoch_index", 0))
        if self.gen is not None and "gen" in state:
            self.gen.set_state(state["gen"])


def _channels(values, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def steps_of(feed: LoaderFeed, steps_per_epoch: int | None) -> int:
    """Batches an epoch trains on (for the schedule and the progress bar)."""
    if steps_per_epoch is not None:
        return steps_per_epoch if feed.steps is None else min(steps_per_epoch, feed.steps)
    if feed.steps is None:
        raise CnnlabError("the training data has no length (an IterableDataset); give steps_per_epoch")
    return feed.steps


def eval_sums(model, feed: LoaderFeed, flip: bool, autocast_ctx, shift: bool = False, loss=None) -> torch.Tensor:
    """(loss sum, correct, count) of ``model`` over one pass of ``feed``, on this process's share."""
    from cnnlab.train.losses import summed
    from cnnlab.train.validation import tta_logits

    sums = torch.zeros(3, dtype=torch.float64, device=feed.device)
    with torch.inference_mode(), autocast_ctx:
        for xb, yb in feed.batches():
            logits = tta_logits(model, xb, flip=flip, shift=shift)
            sums[0] += summed(loss, logits.float(), yb).double()
            sums[1] += (logits.argmax(1) == yb).sum()
            sums[2] += len(yb)
    return sums

