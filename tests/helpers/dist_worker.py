"""Run by tests/test_distributed.py under torchrun: one rank's view of a short fit().

Usage: torchrun --standalone --nproc-per-node=2 tests/helpers/dist_worker.py OUT_DIR MODE
MODE "train": record the examples this rank trained on, a parameter checksum after every
step, and the all-reduced metrics next to a single-process evaluation; write them to
OUT_DIR/rank<R>.json. MODE "die": rank 1 exits before the first collective.
"""

import json
import os
import sys

import torch
from torch import nn

from cnnlab.train import distributed as dist
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import fit
from cnnlab.train.validation import evaluate_loss_accuracy


class Record(nn.Module):
    """Remembers which examples passed through in training mode (pixel [0, 0, 0] = index)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        if self.training:
            self.seen += x[:, 0, 0, 0].round().long().tolist()
        return x


def main() -> None:
    out, mode = sys.argv[1], sys.argv[2]
    dist.setup("cpu", timeout_s=float(os.environ.get("CNNLAB_DIST_TIMEOUT", 20)))
    rank = dist.rank()
    if mode == "die" and rank == 1:
        os._exit(3)
    n = 96
    torch.manual_seed(1)  # every rank must hold the same data, as when loaded from disk
    x = torch.rand(n, 1, 8, 8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)  # the example's index, readable in forward
    y = torch.arange(n) % 4
    torch.manual_seed(0)
    record = Record()
    model = nn.Sequential(record, nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 4))
    checksums = []
    cfg = TrainConfig(epochs=6, batch_size=32, steps_per_epoch=1, lr=0.01, verbose=0, seed=5, device="cpu",
                      precision="fp32")  # compared below with an fp32 evaluation

    def after_step(end) -> None:
        checksums.append(float(sum(p.detach().double().sum() for p in end.model.parameters())))

    history = fit(model, x, y, config=cfg, validation=(x[:50], y[:50]), callbacks=[after_step])
    reduced = evaluate_loss_accuracy(model, x[:50], y[:50], batch_size=8, precision="fp32")
    model.eval()
    with torch.no_grad():
        logits = model[1:](x[:50])
    local = (nn.functional.cross_entropy(logits, y[:50]).item(), (logits.argmax(1) == y[:50]).float().mean().item())
    result = {"seen": record.seen, "checksums": checksums, "reduced": reduced, "local": local,
              "history": history.epochs, "world": dist.world_size()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.teardown()


if __name__ == "__main__":
    main()
