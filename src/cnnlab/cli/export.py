"""`cnnlab export`: write a trained run's network, or a pretrained one, as ONNX, .pt2,
TorchScript or safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnlab.cli import options
from cnnlab.errors import CnnlabError


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained network as ONNX, torch.export (.pt2), TorchScript or safetensors",
        description="Export RUN_DIR's best weights (or, with --model, a pretrained ImageNet network) for other "
                    "tools: onnx (any batch size; onnxruntime, TensorRT, the browser), pt2 (torch.export, loads "
                    "with torch alone), torchscript (LibTorch, C++), safetensors (the weights alone, with the "
                    "architecture and class names; `cnnlab predict`/`classify --weights` read it back). "
                    "Graph formats take float (N, C, H, W) images normalised as in training.",
    )
    p.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="a run directory made by `cnnlab train`")
    from cnnlab.export import FORMATS
    from cnnlab.models.pretrained import URLS

    p.add_argument("--model", choices=list(URLS), help="export this pretrained network instead of a run")
    p.add_argument("--weights", type=Path, metavar="PATH",
                   help="with --model: a state-dict file (default: torchvision's official weights, downloaded once)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", type=Path, metavar="PATH",
                   help="output file (default RUN_DIR/model.FORMAT, or MODEL.FORMAT in this folder)")
    options.add_verbosity(p, quiet="no 'wrote' line", verbose="also say what the file holds and how to load it")
    options.add_examples(p, "cnnlab export runs/mnist-mnist-cnn --format onnx",
                         "cnnlab export --model squeezenet1_1 --format safetensors --out squeeze.safetensors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.export import export_pretrained, export_run

    if (args.run_dir is None) == (args.model is None):
        raise CnnlabError("give either RUN_DIR or --model NAME (a pretrained network), not "
                          + ("both" if args.run_dir else "neither"))
    if args.weights is not None and args.model is None:
        raise CnnlabError("--weights goes with --model; a run's own weights are in RUN_DIR")
    if args.model:
        path = export_pretrained(args.model, format=args.format, out=args.out, weights=args.weights)
    else:
        path = export_run(args.run_dir, format=args.format, out=args.out)
    options.say(args, f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.format})")
    if args.verbosity == options.VERBOSE:
        print(f"  {LOADING.get(args.format, '')}")
    return 0


# --verbose: how each format is read back.
LOADING = {
    "onnx": "onnxruntime.InferenceSession(PATH); inputs float (N, C, H, W) normalised as in training",
    "pt2": "torch.export.load(PATH).module(); inputs float (N, C, H, W) normalised as in training",
    "torchscript": "torch.jit.load(PATH) (or torch::jit::load in C++); inputs float (N, C, H, W)",
    "safetensors": "cnnlab predict PATH IMAGE, or cnnlab.export.weights.open_model(PATH)",
}
