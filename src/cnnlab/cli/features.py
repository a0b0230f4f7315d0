"""``cnnlab features``: what the channels (or classes) of a network respond to.

    cnnlab features RUN_DIR [--layer NAME] [--channels 0-15] [--class N] --out grid.png
    cnnlab features --model squeezenet1_1 [--weights PATH] --layer features.12 --channels 0-7 --out grid.png

Each channel's feature visualisation (activation maximisation from noise, cnnlab.insight.featurevis)
is drawn with, for a run, the test images that activate it most beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cnnlab.cli import options
from cnnlab.errors import CnnlabError
from cnnlab.files import save_figure, write_with

PRETRAINED = ("squeezenet1_1", "vgg16", "resnet18", "mobilenet_v3_small")


def register(sub) -> None:
    p = sub.add_parser(
        "features",
        help="feature visualisation: the image each channel or class of a network responds to most",
        description="Optimise an image from seeded noise until a channel of a layer (or an output class) "
                    "responds as strongly as it can (Fourier parameterisation, decorrelated colours, random "
                    "jitter/scale/rotation; Olah et al., Distill 2017). For a run, each channel's top test "
                    "images are drawn beside it.",
    )
    p.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run directory (or use --model)")
    p.add_argument("--model", choices=PRETRAINED, help="a pretrained ImageNet network instead of a run")
    p.add_argument("--weights", type=Path, metavar="PATH", help="its state-dict file (default: download once)")
    p.add_argument("--layer", help="layer name or index (default: the last conv layer)")
    p.add_argument("--channels", default="0-7", help="channels to show: 0-15, 3,7,9 or 0-3,8 (default 0-7)")
    p.add_argument("--class", dest="classes", metavar="N",
                   help="visualise output classes instead (indices, e.g. 130 or 1,130,285; --layer is ignored)")
    p.add_argument("--steps", type=int, default=256, help="optimisation steps (default 256)")
    p.add_argument("--size", type=int, help="image side for a pretrained net (default 128; a run uses its own)")
    p.add_argument("--seed", type=options.bounded(int, options.SEED),
                   default=0, help="seed of the starting noise and transforms (default 0)")
    p.add_argument("--examples", dest="top", type=int, default=6, metavar="N",
                   help="top test images per channel for a run (default 6; 0: none)")
    # --top means classes per image in every command (cli/options.py); this was its first name.
    options.deprecated(p, "--top", "--examples", dest="top", type=int)
    p.add_argument("--out", type=Path, required=True, metavar="GRID.png", help="where to draw the grid")
    p.add_argument("--save-array", type=Path, metavar="IMAGES.npy", help="also save the images (K, H, W, C) float32")
    options.add_offline(p)
    options.add_device(p)
    options.add_verbosity(p, quiet="no progress bar and no 'wrote' lines",
                          verbose="a progress bar even when not on a terminal")
    options.add_examples(p, "cnnlab features runs/cifar10-cifar-cnn --channels 0-15 --out grid.png",
                         "cnnlab features --model squeezenet1_1 --layer features.12 --channels 0-7 --out sq.png")
    p.set_defaults(func=run)


def parse_units(text: str, what: str = "--channels") -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8]; a one-line error for anything else."""
    units: list[int] = []
    try:
        for part in str(text).split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first or first < 0:
                raise ValueError
            units.extend(range(first, last + 1))
    except ValueError:
        raise CnnlabError(f"{what} {text!r} is not a list of indices like 0-15, 3,7,9 or 0-3,8") from None
    return units


def run(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.model is None):
        raise CnnlabError("give a run directory or --model NAME (one of them)")
    if args.weights and not args.model:
        raise CnnlabError("--weights goes with --model NAME; a run directory carries its own weights")
    start = time.perf_counter()
    images, labels, examples, what = _pretrained(args) if args.model else _trained(args)
    from cnnlab.report.plots_insight import plot_feature_visualizations

    fig = plot_feature_visualizations(images, labels=labels, examples=examples, title=what)
    save_figure(fig, args.out, dpi=100)
    options.say(args, f"wrote {args.out}: {what}, {args.steps} steps, {time.perf_counter() - start:.1f} s")
    if args.save_array:
        write_with(args.save_array, lambda f: np.save(f, images.astype(np.float32)))
        options.say(args, f"wrote {args.save_array} {images.shape}")
    return 0


def _trained(args):
    from cnnlab.insight.featurevis import run_channel_visuals, visualize_class
    from cnnlab.insight.stream_images import load_test_images
    from cnnlab.runs.directory import load_run
    from cnnlab.train.device import resolve_device

    run = load_run(args.run_dir)
    model = run.build_model(weights="best").to(resolve_device(args.device))  # images come back on the CPU
    if args.classes is not None:
        classes = parse_units(args.classes, "--class")
        h, w, c = run.input_shape
        images = visualize_class(model, target=classes, steps=args.steps, size=(h, w), seed=args.seed,
                                 mean=run.config.get("mean"), std=run.config.get("std"), in_channels=c,
                                 progress=options.progress(args))
        names = run.classes
        return images, [names[k] if k < len(names) else str(k) for k in classes], None, "classes"
    images = None
    if args.top > 0:
        try:
            images = load_test_images(run)[0]  # streamed: scored batch by batch, only the top ones kept
        except (CnnlabError, OSError) as exc:
            options.say(args, f"note: no top examples, the run's dataset is not available ({exc})")
    vis = run_channel_visuals(run, model, layer=args.layer, channels=parse_units(args.channels), steps=args.steps,
                              seed=args.seed, images=images, k=max(args.top, 1), progress=options.progress(args))
    return vis.images, [f"channel {c}" for c in vis.channels], vis.examples, f"layer {vis.layer}"


def _pretrained(args):
    from cnnlab.insight.featurevis import last_conv_layer, visualize_channels, visualize_class
    from cnnlab.insight.internals import get_layer
    from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, imagenet_classes, load_pretrained
    from cnnlab.train.device import resolve_device

    net = load_pretrained(args.model, weights=args.weights, progress=options.progress(args), download=not args.offline)
    net = net.to(resolve_device(args.device))
    common = dict(steps=args.steps, size=args.size or 128, seed=args.seed, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  progress=options.progress(args))
    if args.classes is not None:
        classes = parse_units(args.classes, "--class")
        names = imagenet_classes()
        labels = [f"{names[k]} ({k})" if k < len(names) else str(k) for k in classes]
        return visualize_class(net, target=classes, **common), labels, None, f"{args.model} classes"
    layer = last_conv_layer(net) if args.layer is None else get_layer(net, args.layer)[0]
    channels = parse_units(args.channels)
    images = visualize_channels(net, layer=layer, channels=channels, **common)
    return images, [f"channel {c}" for c in channels], None, f"{args.model} layer {layer}"
