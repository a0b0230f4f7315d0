"""Loss and accuracy of a model on held-out data, in large batches, summed over all
torchrun processes: what fit() reports as val_loss and val_accuracy after each epoch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import fast as fast_paths
from cnnlab.errors import CnnlabError
from cnnlab.precision import autocast
from cnnlab.train import distributed as dist
from cnnlab.train.losses import summed


def tta_logits(model: nn.Module, x: torch.Tensor, *, flip: bool = False, shift: bool = False) -> torch.Tensor:
    """``model``'s float logits for ``x``, averaged over test-time augmented views.

    ``flip``: each image and its mirror image, averaged (TrainConfig.eval_flip). ``shift``:
    half the weight goes to the image moved one pixel up-left and one pixel down-right
    (edges reflect-padded), each mirrored too under ``flip``: airbench94's six views.
    """
    def views(v: torch.Tensor) -> torch.Tensor:
        out = model(v).float()
        return (out + model(v.flip(3)).float()) / 2 if flip else out

    logits = views(x)
    if shift:
        h, w = x.shape[2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        moved = (views(padded[:, :, :h, :w]) + views(padded[:, :, 2:, 2:])) / 2
        logits = (logits + moved) / 2
    return logits


def evaluate_loss_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024, flip: bool = False,
    precision: str = "auto", shift: bool = False, fast: str = "auto", loss=None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y), in large batches, summed over all ranks.

    ``flip`` and ``shift`` average each image's logits over test-time augmented views
    (``tta_logits``; TrainConfig.eval_flip and eval_shift). ``fast``: "auto" evaluates through the
    training view where it applies (``cnnlab.fast``; the same outputs), "off" runs the model as given.
    ``loss``: fit's own loss function (``cnnlab.train.losses``) in place of the cross-entropy.
    """
    if batch_size < 1:
        raise CnnlabError(f"batch_size must be at least 1, got {batch_size}")
    if len(x) != len(y):
        raise CnnlabError(f"{len(x)} inputs but {len(y)} labels; they must match")
    sums = _eval_sums(model, x, y, batch_size, flip, shift, precision, fast, loss)
    loss_sum, correct, count = dist.all_reduce_sum(sums).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


def _eval_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, flip: bool, shift: bool,
               precision: str, fast: str, loss=None) -> torch.Tensor:
    rank, world = dist.rank(), dist.world_size()
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    was_training = model.training
    model.eval()
    run = fast_paths.training_model(model, x.device, fast)  # same outputs, ReLU on the pooled map
    with torch.inference_mode(), autocast(x.device, precision):
        for start in range(rank * batch_size, len(x), batch_size * world):  # rank's disjoint shard
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = tta_logits(run, xb, flip=flip, shift=shift)
            sums[0] += summed(loss, logits.float(), yb).double()
            sums[1] += (logits.argmax(1) == yb).sum()
            sums[2] += len(yb)
    model.train(was_training)
    return sums
