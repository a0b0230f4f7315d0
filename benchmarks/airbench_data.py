"""Write CIFAR-10 the way airbench94_muon reads it, from the same files cnnlab reads.

The peer (../shared/bench/peers/airbench94_muon.py, issue 18 part 3) loads
``cifar10/train.pt`` and ``cifar10/test.pt`` from its working directory: a dict of a uint8
``images`` tensor (N, 32, 32, 3), int64 ``labels`` and the ``classes`` names. Without them it
would download CIFAR-10 through torchvision; with these both systems train on identical
images. For a GPU machine: run this, then the peer from the folder holding ``cifar10/``.

    python benchmarks/airbench_data.py OUT_DIR [--root DATA_ROOT]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("CNNLAB_SHARED", HERE.parent.parent / "shared"))


def write_airbench_data(out: Path, root: str | None = None, dataset=None) -> list[Path]:
    """``out/cifar10/{train,test}.pt`` from cnnlab's CIFAR-10 (or ``dataset``, a loaded one)."""
    from cnnlab.data import load

    ds = dataset if dataset is not None else load("cifar10", root=root, progress=False)
    folder = Path(out) / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, split in (("train", ds.train), ("test", ds.test)):
        path = folder / f"{name}.pt"
        torch.save({"images": torch.from_numpy(split.images.copy()),
                    "labels": torch.from_numpy(split.labels.astype("int64")),
                    "classes": list(ds.classes)}, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--root", default=str(SHARED / "datasets"))
    args = ap.parse_args(argv)
    for path in write_airbench_data(args.out, args.root):
        print(path)


if __name__ == "__main__":
    main()
