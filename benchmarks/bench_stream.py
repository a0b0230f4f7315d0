"""Streaming a folder of JPEG photos: images/s decoded and fed, cnnlab vs a plain PyTorch DataLoader.

    python benchmarks/bench_stream.py [--images 1000] [--size 128] [--workers 2] [--batch 64]

Writes CIFAR-10 training images (from $CNNLAB_DATA or ../shared), upscaled to SIZE x SIZE,
as JPEGs under /tmp/cnnlab-bench-stream/<N>/ (10 classes), then per folder:

- cnnlab: ``cnnlab.data.stream.stream_folder`` (header pass included) fed through
  ``cnnlab.train.feed.LoaderFeed`` (uint8 batches, float and normalised on the device);
- peer: the PyTorch tutorial's way, a Dataset opening each file with PIL, ``convert("RGB")``,
  resize, to a float tensor, normalised per image, in a ``DataLoader`` with the same workers.

Each side runs in its own process (one pass over the folder, best of 2) and reports
images/s and its peak resident memory (main process plus workers), at 1x and 10x images,
so a flat peak shows that memory does not grow with the folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("/tmp/cnnlab-bench-stream")


def write_folder(n: int, size: int) -> Path:
    from PIL import Image

    from cnnlab.data import load

    out = ROOT / f"{n}-{size}"
    if (out / ".done").is_file():  # a dot file: folder datasets skip it
        return out
    ds = load("cifar10", progress=False)
    for i in range(n):
        img, label = ds.train.images[i % len(ds.train)], ds.train.labels[i % len(ds.train)]
        folder = out / ds.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).resize((size, size), Image.BICUBIC).save(folder / f"{i:06d}.jpg", quality=90)
    (out / ".done").write_text("")
    return out


def run_cnnlab(path: Path, size: int, workers: int, batch: int) -> int:
    import torch

    from cnnlab.data.stream import stream_folder
    from cnnlab.train.feed import LoaderFeed

    data = stream_folder(f"folder:{path}", image_size=size, test_size=0.0, workers=workers,
                         mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    feed = LoaderFeed(data.train, batch_size=batch, seed=0, device=torch.device("cpu"))
    return sum(len(y) for _, y in feed.batches())


def run_peer(path: Path, size: int, workers: int, batch: int) -> int:
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    files = sorted(p for p in path.rglob("*.jpg"))
    classes = sorted({p.parent.name for p in files})
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    class PILFolder(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                im = im.convert("RGB").resize((size, size), Image.BILINEAR)
                x = torch.from_numpy(np.array(im, np.float32) / 255).permute(2, 0, 1)
            return (x - mean) / std, classes.index(files[i].parent.name)

    loader = DataLoader(PILFolder(), batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    return sum(len(y) for _, y in loader)


def child(side: str, path: str, size: int, workers: int, batch: int) -> None:
    fn = run_cnnlab if side == "cnnlab" else run_peer
    best = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        n = fn(Path(path), size, workers, batch)
        best = max(best, n / (time.perf_counter() - t0))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"images_per_s": best, "peak_rss_mib": rss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="images at 1x (10x is ten times as many)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--child", nargs=2, metavar=("SIDE", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.size, args.workers, args.batch)
        return
    print(f"{'images':>7} {'side':>7} {'images/s':>9} {'peak RSS MiB':>13}")
    for n in (args.images, 10 * args.images):
        path = write_folder(n, args.size)
        rates = {}
        for side in ("cnnlab", "peer"):
            out = subprocess.run([sys.executable, __file__, "--child", side, str(path), "--size", str(args.size),
                                  "--workers", str(args.workers), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rates[side] = r["images_per_s"]
            print(f"{n:>7} {side:>7} {r['images_per_s']:>9.0f} {r['peak_rss_mib']:>13.0f}")
        print(f"{n:>7} cnnlab/peer images/s: {rates['cnnlab'] / rates['peer']:.2f}x")


if __name__ == "__main__":
    main()
