"""``cnnlab explain``: which pixels made a trained run, or a pretrained ImageNet net, decide.

    cnnlab explain RUN_DIR IMAGE... [--method M] [--layer auto|NAME|sweep] [--target T]
    cnnlab explain --model squeezenet1_1 [--weights PATH] PHOTO... [...]

IMAGE is an image file (converted to the run's channels and size, as `cnnlab predict`
does) or ``test:INDEX``, an image of the run's test set, whose label ``--target actual``
can use. Photos for a pretrained net are explained at their own size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cnnlab.cli import options
from cnnlab.errors import CnnlabError
from cnnlab.files import save_figure, write_with
from cnnlab.models.pretrained import URLS

METHOD_CHOICES = ("gradcam", "gradcam++", "saliency", "smoothgrad", "ig", "occlusion")


def register(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="why a network decided: Grad-CAM, saliency, integrated gradients, occlusion maps",
        description="Attribution maps for images, drawn over them. Give a run directory and images (files or "
                    "test:INDEX), or --model NAME and photos.",
    )
    p.add_argument("inputs", nargs="+", metavar="RUN_DIR IMAGE",
                   help="a run directory then images (files or test:INDEX); with --model only photos")
    p.add_argument("--model", choices=list(URLS), help="explain a pretrained ImageNet network instead of a run")
    p.add_argument("--weights", type=Path, metavar="PATH", help="its state-dict file (default: download once)")
    p.add_argument("--method", choices=METHOD_CHOICES, default="gradcam", help="attribution method (default gradcam)")
    p.add_argument("--layer", default="auto",
                   help="Grad-CAM layer: auto (the rectified output of the last conv with a map larger than 1x1: "
                        "the ReLU after it, or the Fire/residual block it ends), a layer name (a conv, an "
                        "activation or a block), or sweep (every conv layer's rectified output)")
    p.add_argument("--target", default="predicted",
                   help="class to explain: predicted, actual (test:INDEX images), a class name or index")
    p.add_argument("--out", type=Path, metavar="FIG.png", help="draw the maps over the images here")
    p.add_argument("--save-array", type=Path, metavar="MAPS.npy",
                   help="save the maps (N, H, W) float32; a sweep saves (layers, N, H, W)")
    p.add_argument("--alpha", type=options.bounded(float, low=0, high=1),
                   default=0.5, help="opacity of the map over the image (default 0.5)")
    p.add_argument("--positive", action="store_true",
                   help="draw signed maps (ig, occlusion) as their positive part (evidence for the class) instead "
                        "of signed on a diverging colormap centred on 0")
    p.add_argument("--invert", action="store_true", help="invert grey levels of image files first")
    options.add_offline(p)
    options.add_device(p)
    options.add_verbosity(p, quiet="no progress bar and no 'wrote' lines",
                          verbose="a progress bar even when not on a terminal")
    options.add_examples(p, "cnnlab explain runs/mnist-mnist-cnn test:0 test:1 --out why.png",
                         "cnnlab explain --model squeezenet1_1 cat.jpg --method ig --out cat-ig.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.layer != "auto" and args.method not in ("gradcam", "gradcam++"):
        raise CnnlabError(f"--layer is for gradcam and gradcam++, not {args.method}; leave it out")
    if args.model:
        return _run_photos(args)
    if args.weights:
        raise CnnlabError("--weights goes with --model NAME; a run directory carries its own weights")
    if len(args.inputs) < 2:
        raise CnnlabError("give a run directory and at least one image (a file or test:INDEX)")
    return _run_trained(args)


# --------------------------------------------------------------------------- a trained run


def _run_images(run, specs: list[str], invert: bool):
    """uint8 (N, H, W, C) images, their labels (-1 for files) and names, from files or test:INDEX."""
    from cnnlab.insight.predictions import read_image
    from cnnlab.insight.stream_images import load_test_images

    images, labels, test = [], [], None
    for spec in specs:
        if spec.startswith("test:"):
            if test is None:
                test = load_test_images(run)  # a streamed run's split decodes only the images indexed
            digits = spec[5:]
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 12 and int(digits) < len(test[1])):
                raise CnnlabError(f"{spec[:40]!r} is not test:INDEX with INDEX in 0..{len(test[1]) - 1}")
            images.append(test[0][int(digits)])
            labels.append(int(test[1][int(digits)]))
            continue
        if not Path(spec).is_file():
            raise CnnlabError(f"image {spec} does not exist; pass an image file or test:INDEX")
        images.append(read_image(spec, run.input_shape, invert=invert)[0])
        labels.append(-1)
    return np.stack(images), np.array(labels), specs


def _class_index(target: str, classes: list[str]) -> int | str:
    if target in ("predicted", "actual"):
        return target
    if target in classes:
        return classes.index(target)
    if target.lstrip("-").isascii() and target.lstrip("-").isdigit():
        if len(target) > 12 or not 0 <= int(target) < len(classes):
            raise CnnlabError(f"--target {target[:40]} is out of range: the model has {len(classes)} classes "
                              f"(indices 0..{len(classes) - 1}); give an index in that range, a class name, "
                              "predicted or actual")
        return int(target)
    raise CnnlabError(f"--target {target!r} is not predicted, actual, a class index or one of: "
                      f"{', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''}")


EXPLAIN_CHUNK = 64  # images per step of the progress bar


def _run_trained(args) -> int:
    from cnnlab.insight import attribution
    from cnnlab.runs.directory import load_run
    from cnnlab.train.device import resolve_device

    run = load_run(args.inputs[0])
    model = run.build_model(weights="best").to(resolve_device(args.device))  # the maps come back on the CPU
    images, labels, names = _run_images(run, args.inputs[1:], args.invert)
    target = _class_index(args.target, run.classes)
    if target == "actual" and (labels < 0).any():
        raise CnnlabError("--target actual needs labelled images: give test:INDEX, or a class name or index")
    x = run.preprocess(images)
    layers = [args.layer]  # "auto", "sweep" or a name
    probs = attribution.scores(model, x).softmax(1).numpy()
    # In chunks, so a long run (hundreds of test images, integrated gradients' 50 steps each) shows
    # its progress; each chunk is still batched inside the method.
    parts, chosen = [], None
    for start in options.bar(args, range(0, len(x), EXPLAIN_CHUNK), desc=args.method, unit="chunk"):
        xs, ls = x[start:start + EXPLAIN_CHUNK], labels[start:start + EXPLAIN_CHUNK]
        if args.method in ("gradcam", "gradcam++"):
            part, _, chosen, _ = attribution.gradcam_maps(model, xs, target, layers=layers, labels=ls,
                                                          plus=args.method == "gradcam++")
            layers = chosen  # "auto"/"sweep" resolved once: every chunk explains the same layers
        else:
            part = {args.method: attribution.METHODS[args.method](model, xs, target, labels=ls)}
        parts.append(part)
    maps = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    targets = {"predicted": probs.argmax(1), "actual": labels}.get(target, np.full(len(x), target))
    classes = run.classes
    for i, name in enumerate(names):
        pred, t = int(probs[i].argmax()), int(targets[i])
        actual = f", actual {classes[labels[i]]}" if labels[i] >= 0 else ""
        print(f"{name}: predicted {classes[pred]} ({probs[i, pred]:.1%}){actual}; explaining {classes[t]} "
              f"({probs[i, t]:.1%})")
    _finish(args, maps, chosen, [_display(img) for img in images], names)
    return 0


def _display(image: np.ndarray) -> np.ndarray:
    return image[:, :, 0] if image.shape[2] == 1 else image


# --------------------------------------------------------------------------- pretrained photos


def _run_photos(args) -> int:
    from cnnlab.insight.photo import display_pair, explain_photo
    from cnnlab.models.pretrained import load_pretrained

    if args.target == "actual":
        raise CnnlabError("photos have no labels: use --target predicted, a class name (e.g. tabby) or an index")
    from cnnlab.train.device import resolve_device

    net = load_pretrained(args.model, weights=args.weights, progress=options.progress(args), download=not args.offline)
    net = net.to(resolve_device(args.device))
    target = int(args.target) if args.target.isdigit() else args.target
    results = [explain_photo(photo, model=net, method=args.method, target=target, layer=args.layer)
               for photo in options.bar(args, args.inputs, desc=args.method, unit="photo")]
    for photo, r in zip(args.inputs, results, strict=True):
        tops = ", ".join(f"{name} {p:.1%}" for _, name, p in r.top[:3])
        print(f"{photo}: {tops}; explaining {r.target_name} (class {r.target})")
    maps = {}
    for r in results:
        for name, m in (r.sweep or {r.layer or args.method: r.map}).items():
            maps.setdefault(name, []).append(m)
    chosen = list(maps) if results[0].layer else None
    pairs = [[display_pair(photo, maps[name][i]) for name in maps] for i, photo in enumerate(args.inputs)]
    shown = {name: [pairs[i][j][1] for i in range(len(pairs))] for j, name in enumerate(maps)}
    _finish(args, maps, chosen, [p[0][0] for p in pairs], args.inputs, shown=shown)
    return 0


# --------------------------------------------------------------------------- output


def _finish(args, maps: dict, chosen, images, names, *, shown: dict | None = None) -> None:
    """Print the layer(s) and what the colours mean, write the figure and the array."""
    from cnnlab.insight.attribution import all_zero, is_signed

    if chosen:
        print(f"layer{'s' if len(chosen) > 1 else ''}: {', '.join(chosen)}")
    for name, m in maps.items():
        zero = int(sum(all_zero(np.asarray(v)[None]).sum() for v in m))
        if zero:
            where = f" at layer {name}" if chosen else ""
            print(f"note: {zero} of {len(m)} maps{where} are all zero (no positive evidence for the class there); "
                  "try an earlier layer or another method")
    signed = is_signed(args.method) and not args.positive
    if is_signed(args.method):
        print(f"{args.method} maps are signed; drawn " + ("as their positive part (evidence for the class only)"
              if args.positive else "on a diverging colormap centred on 0 (red: for the class, blue: against it)"))
    shown = shown or maps
    if args.out:
        from cnnlab.report.overlay import plot_attributions, plot_layer_sweep

        titles = [Path(n).name if not n.startswith("test:") else n for n in names]
        kind = " (signed)" if signed else " (positive part)" if is_signed(args.method) else ""
        if len(shown) > 1 and len(images) == 1:
            fig = plot_layer_sweep(images[0], {k: v[0] for k, v in shown.items()}, title=titles[0], alpha=args.alpha)
        else:
            fig = plot_attributions(images, list(shown.values()), column_titles=[f"{k}{kind}" for k in shown],
                                    row_titles=titles, alpha=args.alpha, signed=signed,
                                    shared_scale=False)  # layers differ in scale by orders
        save_figure(fig, args.out, dpi=100)
        options.say(args, f"wrote {args.out}")
    if args.save_array:
        arrays = [np.stack(v) for v in maps.values()] if len({m.shape for v in maps.values() for m in v}) == 1 else None
        if arrays is None:
            raise CnnlabError("the photos differ in size, so their maps do not stack into one array; "
                              "save them one photo at a time")
        array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        write_with(args.save_array, lambda f: np.save(f, array.astype(np.float32)))
        options.say(args, f"wrote {args.save_array} {array.shape}")
