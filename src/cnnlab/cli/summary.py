"""``cnnlab summary`` (the Keras-style table of a model) and ``cnnlab models`` (the zoo)."""

from __future__ import annotations

import argparse

import torch

from cnnlab.cli import options
from cnnlab.models import MODELS, build, count_params, default_input_shape, describe
from cnnlab.models.spec import __doc__ as SPEC_DOC
from cnnlab.models.summary import summarize


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'28x28x1' (or '28,28,1') -> (28, 28, 1), height x width x channels."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxWxC; write e.g. 28x28x1 or 224x224x3")
    return shape


def register(sub) -> None:
    grammar = SPEC_DOC.split("Grammar", 1)[1].split("Input channels", 1)[0].replace("``", "'").replace("::", ":")
    p = sub.add_parser(
        "summary",
        help="print a model's layers, output shapes, parameters and mult-adds (Keras style)",
        description="Print the Keras-style summary of a named model (see `cnnlab models`) or of a spec "
                    "string such as 'conv32k3-relu,maxpool2,dropout.25,flatten,dense10'. Output shapes are "
                    "channels-last like Keras.\n\nSpec grammar" + grammar,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL_OR_SPEC", help="model name or spec string")
    p.add_argument("--input", type=parse_input_shape, default=None, metavar="HxWxC",
                   help="input size, e.g. 28x28x1 (default: the model's own; 28x28x1 for specs)")
    p.add_argument("--classes", type=int, default=None, metavar="N", help="number of classes (default: the model's)")
    p.add_argument("--depth", type=int, default=1, metavar="D",
                   help="show nested modules down to this depth (default 1: the model's own layers)")
    options.add_verbosity(p, quiet="the totals only (parameters and mult-adds)",
                          verbose="every nested module (as --depth 99)")
    options.add_examples(p, "cnnlab summary mnist-cnn",
                         "cnnlab summary 'conv32k3-relu,maxpool2,flatten,dense10' --input 28x28x1",
                         "cnnlab summary mynets:make_net --input 32x32x3   (your own function, from mynets.py here)")
    p.set_defaults(func=run_summary)

    m = sub.add_parser("models", help="list the named models with parameter counts",
                       description="List the model zoo: name, parameters, default input and a description.")
    options.add_verbosity(m, quiet="the names only", verbose="the same table")
    options.add_examples(m, "cnnlab models", "cnnlab summary mnist-cnn")
    m.set_defaults(func=run_models)


def _params(name: str) -> int:
    # Constructed on the meta device: parameter shapes without memory or random init.
    with torch.device("meta"):
        return count_params(MODELS[name]())


def run_summary(args) -> int:
    shape = args.input or default_input_shape(args.model)
    # Big named nets (VGG-16: seconds of random init and a 15 G mult-add forward) are
    # summarised on the meta device; small ones for real, because the meta device's first
    # forward imports torch's compiler (~1.5 s) while theirs takes microseconds.
    big = args.model in MODELS and _params(args.model) > 20_000_000
    with torch.device("meta" if big else "cpu"):
        model = build(args.model, input_shape=shape, num_classes=args.classes)
    depth = 99 if args.verbosity == options.VERBOSE else args.depth
    summary = summarize(model, shape, depth=depth, name=args.model)
    if args.verbosity == options.QUIET:
        print(f"{summary.total_params:,} parameters ({summary.trainable_params:,} trainable), "
              f"{summary.total_mult_adds:,} mult-adds")
        return 0
    print(summary)
    return 0


def run_models(args) -> int:
    if args.verbosity == options.QUIET:
        print("\n".join(MODELS))
        return 0
    rows = []
    for name in MODELS:
        params = _params(name)
        rows.append((name, f"{params:,}", "x".join(map(str, default_input_shape(name))), describe(name)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'model':<{widths[0]}}  {'params':>{widths[1]}}  {'input':<{widths[2]}}  description")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0
