"""``cnnlab classify``: top-k ImageNet classes for photos with a pretrained network."""

from __future__ import annotations

from pathlib import Path

from cnnlab.cli import options
from cnnlab.files import save_figure
from cnnlab.models.pretrained import URLS, classify, inference_precision, plot_predictions
from cnnlab.precision import PRECISIONS


def register(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="name what is in photos with a pretrained ImageNet network",
        description="Print the top-k ImageNet classes of each photo (PNG/JPEG/BMP; 'grace_hopper' is "
                    "matplotlib's sample portrait). Without --weights, torchvision's official weights are "
                    "downloaded once into ~/.cache/cnnlab/models.",
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files")
    p.add_argument("--model", choices=list(URLS), default=None,
                   help="network (default: the one a .safetensors --weights file names, else squeezenet1_1)")
    p.add_argument("--weights", type=Path, default=None, metavar="PATH",
                   help="state-dict file keyed like torchvision, or a .safetensors file from `cnnlab export` "
                        "(default: download the official weights)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="classes to show per photo (default 5)")
    p.add_argument("--caffe", action="store_true",
                   help="Caffe/Keras preprocessing (BGR, 0-255, mean subtracted) for weights converted from Keras")
    p.add_argument("--out", type=Path, default=None, metavar="CHART.png", help="also save a bar chart here")
    p.add_argument("--winograd", action="store_true",
                   help="compute the wide 3x3 convolutions with Winograd F(4x4, 3x3): faster on a CPU (VGG-16 ~1.3x)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): bf16 where the CPU has native bf16 (avx512_bf16/AMX) or on CUDA, except "
                        "squeezenet1_1, kept in fp32 (bf16 flips its near-tied top-1s); fp32 or bf16 to choose")
    options.add_verbosity(p, quiet="no download progress bar", verbose="also say which network and weights ran where")
    options.deprecated(p, "--no-progress", "--quiet", dest="verbosity", const=options.QUIET)
    options.add_offline(p)
    options.add_device(p)
    options.add_fast(p)
    options.add_examples(p, "cnnlab classify grace_hopper",
                         "cnnlab classify cat.jpg dog.jpg --model vgg16 --top 3 --out chart.png")
    p.set_defaults(func=run)


def run(args) -> int:
    # classify() reads every photo before it loads (or downloads) the network, so a bad
    # photo fails fast.
    import sys

    from cnnlab.precision import bf16_note
    from cnnlab.train.device import resolve_device

    model, device = args.model or _architecture(args.weights), resolve_device(args.device)
    warning = bf16_note(args.precision, device)
    if warning:
        print(f"cnnlab classify: warning: {warning}", file=sys.stderr)
    results = classify(args.photos, model=model, weights=args.weights, top=args.top,
                       style="caffe" if args.caffe else "torchvision", progress=args.verbosity > options.QUIET,
                       winograd=args.winograd, download=not args.offline, device=device, precision=args.precision,
                       fast=args.fast)
    if args.verbosity == options.VERBOSE:
        print(f"{model} with {args.weights or 'the official weights'} on {device}, "
              f"precision {inference_precision(model, args.precision, device)}")
    titles = [Path(p).name for p in args.photos]
    figure = plot_predictions(results, images=args.photos, titles=titles) if args.out else None
    for photo, preds in zip(args.photos, results, strict=True):
        print(photo)
        for rank, (index, name, prob) in enumerate(preds, start=1):
            print(f"  {rank}. {name:<28} {prob:7.2%}  (class {index})")
    if figure is not None:
        save_figure(figure, args.out, dpi=100)
        print(f"chart saved to {args.out}")
    return 0


def _architecture(weights: Path | None) -> str:
    """The network a .safetensors file from `cnnlab export` names; squeezenet1_1 otherwise."""
    if weights is not None and weights.suffix == ".safetensors" and weights.is_file():
        from cnnlab.export.weights import read_safetensors

        name = read_safetensors(weights)[1].get("architecture")
        if name in URLS:
            return name
    return "squeezenet1_1"
