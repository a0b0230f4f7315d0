"""``cnnlab data list|info|fetch|show``: what datasets exist, where, and what is in them."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab import data
from cnnlab.cli import options
from cnnlab.errors import CnnlabError
from cnnlab.files import save_figure

EPILOG = """examples:
  cnnlab data list
  cnnlab data info mnist
  CNNLAB_DATA=../shared/datasets cnnlab data info cifar10
  cnnlab data fetch fashion-mnist
  cnnlab data show cifar10 --n 25 --out grid.png
  cnnlab data info folder:photos --image-size 64"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="list, inspect, download and preview datasets",
        description="Datasets as uint8 arrays: mnist, fashion-mnist, cifar10, or folder:PATH "
        "(PATH/<class>/<image>). Files are looked for in --root, $CNNLAB_DATA, the user cache "
        "(~/.cache/cnnlab) and /usr/share/datasets, then downloaded into the cache.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda args: _usage(p))
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    q = sub.add_parser("list", help="known datasets and where each is present",
                       description="Known datasets, their shapes, and every place each is present.")
    q.add_argument("--root", help="a folder searched before $CNNLAB_DATA")
    options.add_verbosity(q, quiet="the table only, not the folders searched", verbose="the same table and folders")
    options.add_examples(q, "cnnlab data list", "cnnlab data list --root ../shared/datasets")
    q.set_defaults(func=run_list)

    q = sub.add_parser("info", help="sizes, shapes and class counts of each split",
                       description="Load a dataset (downloading it if needed) and print its splits.")
    _add_load_args(q)
    q.add_argument("--train-size", type=int, help="keep only the first N training images")
    q.add_argument("--val-size", type=options.bounded(options.number, options.NON_NEGATIVE), default=0,
                   help="validation images carved from training: a count, or a fraction like 0.1")
    q.add_argument("--seed", type=options.bounded(int, options.SEED),
                   default=0, help="seed for the validation / folder split (default 0)")
    options.add_examples(q, "cnnlab data info mnist", "cnnlab data info folder:photos --image-size 64 --val-size 0.1")
    q.set_defaults(func=run_info)

    q = sub.add_parser("fetch", help="download a dataset into the user cache",
                       description="Download a dataset from its official site into the user cache, "
                       "checksum-verified. Does nothing if it is already present somewhere.")
    q.add_argument("name", choices=list(data.DATASETS), metavar="NAME", help=", ".join(data.DATASETS))
    q.add_argument("--root", help="a folder searched before $CNNLAB_DATA")
    q.add_argument("--force", action="store_true", help="download into the cache even if present elsewhere")
    options.add_verbosity(q, quiet="no progress bar", verbose="a progress bar even when not on a terminal")
    options.add_examples(q, "cnnlab data fetch fashion-mnist", "cnnlab data fetch cifar10 --force --quiet")
    q.set_defaults(func=run_fetch)

    q = sub.add_parser("show", help="save a grid of sample images titled with their classes",
                       description="Save a grid of the first N images of a split (5x5 for 25), "
                       "each titled with its class name.")
    _add_load_args(q)
    q.add_argument("--n", type=int, default=25, help="how many images (default 25)")
    q.add_argument("--split", choices=("train", "test"), default="train", help="which split (default train)")
    q.add_argument("--random", action="store_true", help="a seeded random sample instead of the first N")
    q.add_argument("--seed", type=options.bounded(int, options.SEED),
                   default=0, help="seed for --random and folder splits (default 0)")
    q.add_argument("--out", default="grid.png", help="image file to write (default grid.png)")
    options.add_examples(q, "cnnlab data show cifar10 --n 25 --out grid.png", "cnnlab data show mnist --random --split test")
    q.set_defaults(func=run_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2



def _image_size(text: str) -> int | tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _add_load_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("name", metavar="NAME", help=f"{', '.join(data.DATASETS)} or folder:PATH")
    q.add_argument("--root", help="a folder searched before $CNNLAB_DATA")
    options.add_offline(q)
    options.add_verbosity(q, quiet="no progress bars", verbose="progress bars even when not on a terminal")
    q.add_argument("--image-size", type=_image_size, help="folder datasets: resize all images to N or HxW")
    q.add_argument("--mode", choices=("L", "RGB"), help="folder datasets: greyscale (L) or RGB")


def _load(args, **extra) -> data.Dataset:
    return data.load(
        args.name, root=args.root, download=not args.offline, seed=args.seed,
        progress=options.progress(args), image_size=args.image_size, mode=args.mode, **extra,
    )


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def run_list(args) -> int:
    present = data.locations(root=args.root)
    rows = [("NAME", "IMAGE", "CLASSES", "TRAIN/TEST", "PRESENT")]
    for name, spec in data.DATASETS.items():
        where = ", ".join(str(p) for p in present[name]) or f"not found (cnnlab data fetch {name})"
        counts = f"{spec.counts[0]:,}/{spec.counts[1]:,}"
        rows.append((name, _shape(spec.shape), str(len(spec.classes)), counts, where))
    rows.append(("folder:PATH", "any", "folders", "seeded split", "your images, PATH/<class>/<image>"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    if args.verbosity == options.QUIET:
        return 0
    print("\nsearched in order:")
    for label, folder in data.search_roots(args.root):
        print(f"  {label:<13} {folder}")
    return 0


def run_info(args) -> int:
    ds = _load(args, train_size=args.train_size, val_size=args.val_size)
    mean, std = data.channel_stats(ds.train.images)
    print(f"{ds.name}: {len(ds.train) + len(ds.test) + (len(ds.val) if ds.val else 0):,} images")
    print(f"source       {ds.source}")
    print(f"image        {_shape(ds.input_shape)} uint8, {ds.num_classes} classes")
    splits = ds.splits()
    for part, split in splits.items():
        print(f"{part:<12} {len(split):>7,} images  {tuple(split.images.shape)}")
    print(f"train mean   {' '.join(f'{m:.4f}' for m in mean)}  std {' '.join(f'{s:.4f}' for s in std)}"
          "  (per channel, [0, 1] units)")
    counts = {part: split.class_counts(ds.num_classes) for part, split in splits.items()}
    width = max(12, *(len(c) for c in ds.classes))
    print("\n" + "class".ljust(width) + "".join(f"{part:>9}" for part in splits))
    for i, cls in enumerate(ds.classes):
        print(cls.ljust(width) + "".join(f"{int(counts[part][i]):>9,}" for part in splits))
    return 0


def run_fetch(args) -> int:
    before = data.locate(args.name, root=args.root)
    if before is not None and not args.force:
        print(f"{args.name}: already present at {before}")
        return 0
    path = data.fetch(args.name, root=args.root, force=args.force, progress=options.progress(args))
    print(f"{args.name}: downloaded and verified into {path}")
    return 0


def run_show(args) -> int:
    import numpy as np

    from cnnlab.data.preview import plot_dataset_grid

    if args.n < 1:
        raise CnnlabError(f"--n must be at least 1, got {args.n}")
    out = Path(args.out)
    ds = _load(args)
    split = ds.train if args.split == "train" else ds.test
    images, labels = split.images, split.labels
    if args.random:
        pick = np.sort(np.random.default_rng(args.seed).choice(len(split), min(args.n, len(split)), replace=False))
        images, labels = images[pick], labels[pick]
    fig = plot_dataset_grid(images, labels, ds.classes, n=args.n, title=f"{ds.name} ({args.split})")
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise CnnlabError(f"--out {out}: matplotlib cannot write .{fmt} files; use .png, .pdf or .svg")
    save_figure(fig, out, dpi=100)
    options.say(args, f"wrote {out} ({min(args.n, len(split))} {args.split} images of {ds.name})")
    return 0
