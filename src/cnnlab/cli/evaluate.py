"""`cnnlab evaluate`, `cnnlab predict`, `cnnlab activations`: test metrics, predictions for
image files, and the feature maps of one layer for one image."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cnnlab.cli import options
from cnnlab.errors import CnnlabError
from cnnlab.files import save_figure


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test metrics, per-class table and most-confused pairs of a trained run",
        description="Evaluate a run's best weights on its dataset's test split, print the metrics and the "
        "most-confused pairs, and save them to RUN_DIR/metrics.json.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--batch-size", type=int, default=1024, help="images per forward pass (default 1024)")
    p.add_argument("--pairs", type=int, default=10, metavar="N", help="most-confused pairs to print (default 10)")
    options.deprecated(p, "--top", "--pairs (--top is classes per image in every command)", dest="pairs", type=int)
    p.add_argument("--no-save", action="store_true", help="do not write metrics.json")
    options.add_verbosity(p, quiet="no progress bar", verbose="a progress bar even when not on a terminal")
    options.deprecated(p, "--progress", "--verbose", dest="verbosity", const=options.VERBOSE)
    options.add_device(p)
    options.add_examples(p, "cnnlab evaluate runs/mnist-mnist-cnn",
                         "cnnlab evaluate runs/mnist-mnist-cnn --pairs 5 --no-save")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser(
        "predict",
        help="classify image files with a trained run",
        description="Classify image files (any format Pillow reads). Each is converted to the model's "
        "channels (grey or RGB) and resized to its input size, then normalised as in training.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a run directory, or a .safetensors file written by `cnnlab export`")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=3, help="classes to print per image (default 3)")
    p.add_argument("--out", type=Path, help="also write each image beside its probability chart (PNG)")
    p.add_argument("--invert", action="store_true",
                   help="invert grey levels first (dark digits on white paper -> MNIST's white on black)")
    p.add_argument("--model", metavar="NAME|SPEC|PKG.MODULE:FUNCTION",
                   help="with a .safetensors file: the network to put its weights into, e.g. your own builder "
                        "my_pkg.nets:make_net (a file only ever names cnnlab's own networks, never code)")
    options.add_verbosity(p, quiet="only the probabilities: no hints or 'wrote' lines",
                          verbose="also say which network ran on which device")
    options.add_device(p)
    options.add_examples(p, "cnnlab predict runs/mnist-mnist-cnn digit.png --top 3",
                         "cnnlab predict model.safetensors a.png b.png --invert --out charts.png")
    p.set_defaults(func=run_predict)

    p = sub.add_parser(
        "activations",
        help="feature maps of one layer of a trained run for one image",
        description="Run one image through a trained run's model and show the output of one layer. "
        "Without --layer, list every layer with its output shape for this image.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a run directory, or a .safetensors file written by `cnnlab export`")
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("--layer", help="layer name (e.g. 3 or features.3) or index; omit to list the layers")
    p.add_argument("--out", type=Path, help="write the tiled feature maps here (PNG)")
    p.add_argument("--invert", action="store_true", help="invert grey levels first")
    p.add_argument("--model", metavar="NAME|SPEC|PKG.MODULE:FUNCTION",
                   help="with a .safetensors file: the network to put its weights into, e.g. your own builder "
                        "my_pkg.nets:make_net (a file only ever names cnnlab's own networks, never code)")
    options.add_verbosity(p, quiet="only the result: no 'wrote' line or hint on picking a layer",
                          verbose="also say which network ran on which device")
    options.add_device(p)
    options.add_examples(p, "cnnlab activations runs/mnist-mnist-cnn digit.png",
                         "cnnlab activations runs/mnist-mnist-cnn digit.png --layer 0 --out maps.png")
    p.set_defaults(func=run_activations)


# --------------------------------------------------------------------------- evaluate


def run_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.insight.predictions import evaluate_run, merged_metrics
    from cnnlab.runs.directory import load_run, save_metrics

    run = load_run(args.run_dir)
    ev = evaluate_run(run, batch_size=args.batch_size, progress=options.progress(args), device=args.device)
    m = ev.metrics
    print(f"{run.path}: {m['n']:,} test images of {run.config.get('data')}, {m['num_classes']} classes")
    line = f"accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  wrong {m['n_wrong']:,}"
    if m.get("top5_accuracy") is not None:
        line += f"  top-5 accuracy {m['top5_accuracy']:.4f}"
    print(line)
    print("macro precision {precision:.4f}  recall {recall:.4f}  F1 {f1:.4f}".format(**m["macro"]))
    print()
    print(format_per_class(m["per_class"]))
    print()
    print(format_most_confused(m["most_confused"], args.pairs))
    if not args.no_save:
        save_metrics(run.path, merged_metrics(run.readable_metrics, m))
        print(f"\nsaved {run.path / 'metrics.json'}")
    return 0


def format_per_class(rows: list[dict], max_rows: int = 20) -> str:
    """The per-class table; past ``max_rows`` classes only the worst by F1."""
    title = "per class"
    if len(rows) > max_rows:
        rows = sorted(rows, key=lambda r: r["f1"])[:max_rows]
        title = f"per class: the {max_rows} with the lowest F1"
    width = max(5, *(len(str(r["class"])) for r in rows))
    lines = [f"{title}:", f"  {'class':<{width}}  precision  recall      F1  support"]
    lines += [f"  {r['class']:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7d}"
              for r in rows]
    return "\n".join(lines)


def format_most_confused(pairs: list, top: int) -> str:
    if not pairs:
        return "most confused: none, every test image is classified correctly"
    lines = [f"most confused (actual -> predicted: count), top {min(top, len(pairs))} of {len(pairs)} pairs:"]
    lines += [f"  {a} -> {p}: {c}" for a, p, c in pairs[:top]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- predict / activations


def _read_images(run, paths: list[Path], invert: bool):
    """uint8 (N, H, W, C) images matching the run's input, with one note per image."""
    from cnnlab.insight.predictions import read_image

    for path in paths:
        if not path.is_file():
            raise CnnlabError(f"image {path} does not exist; pass the path of an image file")
    read = [read_image(path, run.input_shape, invert=invert) for path in paths]
    return np.stack([img for img, _ in read]), [note for _, note in read]


# Mean grey level of the training images where config.json has no mean (normalize=none).
_KNOWN_MEANS = {"mnist": 0.13, "fashion-mnist": 0.29}


def _polarity_hint(run, images, invert: bool) -> str | None:
    """A hint when grey images are mostly light but the training images were mostly dark (MNIST)."""
    mean = (run.config.get("mean") or [_KNOWN_MEANS.get(run.config.get("data"))])[0]
    if invert or images.shape[-1] != 1 or mean is None or mean > 0.4:
        return None
    light = sum(img.mean() / 255 > 0.5 for img in images)
    if not light:
        return None
    return (f"hint: the training images are mostly dark (mean {mean:.2f}) but {light} of these are mostly "
            "light; for dark ink on light paper add --invert")


def run_predict(args: argparse.Namespace) -> int:
    from cnnlab.export.weights import open_model
    from cnnlab.insight.predictions import predict
    from cnnlab.train.device import resolve_device

    if args.top < 1:
        raise CnnlabError(f"--top must be at least 1, got {args.top}")
    run = open_model(args.run_dir, model=args.model)  # a run directory or exported .safetensors weights
    model = run.build_model(weights="best").to(resolve_device(args.device))  # predict() runs where the model is
    _where(args, model)
    images, notes = _read_images(run, args.images, args.invert)
    probs = predict(model, run.preprocess(images))
    classes = run.classes
    fig = None
    if args.out:
        from cnnlab.report.plots import plot_image_probabilities

        fig = plot_image_probabilities(images, probs, classes, top=max(args.top, min(10, len(classes))),
                                       titles=[p.name for p in args.images])
    for path, note, row in zip(args.images, notes, probs, strict=True):
        print(f"{path}" + (f" ({note})" if note else "") + ":")
        for rank, c in enumerate(row.argsort()[::-1][: args.top], start=1):
            print(f"  {rank}. {classes[c]:<20} {row[c]:.4f}")
    hint = _polarity_hint(run, images, args.invert)
    if hint:
        options.say(args, hint)
    if fig is not None:
        save_figure(fig, args.out, dpi=100)
        options.say(args, f"wrote {args.out}")
    return 0


def run_activations(args: argparse.Namespace) -> int:
    from cnnlab.export.weights import open_model
    from cnnlab.insight.internals import activations, activations_of, get_layer, layer_names
    from cnnlab.train.device import resolve_device

    run = open_model(args.run_dir, model=args.model)  # a run directory or exported .safetensors weights
    model = run.build_model(weights="best").to(resolve_device(args.device))  # the maps come back on the CPU
    _where(args, model)
    images, notes = _read_images(run, [args.image], args.invert)
    x = run.preprocess(images)
    if args.layer is None:
        names = layer_names(model)
        modules = dict(model.named_modules())
        shapes = activations_of(model, x, names)
        print(f"layers of {type(model).__name__} for {args.image}" + (f" ({notes[0]})" if notes[0] else "") + ":")
        for i, name in enumerate(names):
            print(f"  {i:3d}  {name:<20} {type(modules[name]).__name__:<14} {tuple(shapes[name].shape[1:])}")
        options.say(args, "pick one with --layer NAME (add --out maps.png to draw its feature maps)")
        return 0
    name, module = get_layer(model, args.layer)
    maps = activations(model, x, name)[0]
    fig = None
    if args.out:
        from cnnlab.report.plots import plot_feature_maps

        fig = plot_feature_maps(maps, title=f"{name} ({type(module).__name__}) {tuple(maps.shape)}: {args.image.name}")
    print(f"{name} ({type(module).__name__}): output {tuple(maps.shape)}, "
          f"min {maps.min():.3f}, mean {maps.mean():.3f}, max {maps.max():.3f}")
    if fig is not None:
        save_figure(fig, args.out, dpi=100)
        options.say(args, f"wrote {args.out}")
    return 0


def _where(args: argparse.Namespace, model) -> None:
    """--verbose: which network, with how many parameters, on which device."""
    if args.verbosity == options.VERBOSE:
        device = next(model.parameters()).device
        params = sum(p.numel() for p in model.parameters())
        print(f"{args.run_dir}: {type(model).__name__} ({params:,} parameters) on {device}")
