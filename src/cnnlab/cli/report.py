"""`cnnlab report` and `cnnlab filters`: a run's self-contained HTML report, and a page of
every filter of one conv layer."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cnnlab.cli import options


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's self-contained HTML report",
        description="Evaluate a run on its test split (saving metrics.json) and write one HTML file with "
        "the config, model summary, training curves, metrics, confusion matrix, top losses, wrong "
        "predictions, filters and activations. Images are embedded: the file opens offline. If the "
        "dataset is absent now, the saved metrics.json is rendered instead.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, help="where to write the HTML (default RUN_DIR/report.html)")
    p.add_argument("--batch-size", type=int, default=1024, help="images per forward pass (default 1024)")
    options.add_verbosity(p, quiet="no progress bar", verbose="a progress bar even when not on a terminal")
    options.deprecated(p, "--progress", "--verbose", dest="verbosity", const=options.VERBOSE)
    options.add_device(p)
    options.add_examples(p, "cnnlab report runs/mnist-mnist-cnn", "cnnlab report runs/mnist-mnist-cnn --out report.html")
    p.set_defaults(func=run_report)

    p = sub.add_parser(
        "filters",
        help="write an HTML page of every filter of one conv layer",
        description="Write an HTML page showing every learned filter of one Conv2d layer of a run's model "
        "(an overview grid, then each filter enlarged).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--layer", help="conv layer name or index (default: the first conv layer)")
    p.add_argument("--out", type=Path, help="where to write the page (default RUN_DIR/filters-LAYER.html)")
    options.deprecated(p, "--html", "--out", dest="out", type=Path)
    options.add_verbosity(p, quiet="no 'wrote' line", verbose="also say how many filters of which layer")
    options.add_examples(p, "cnnlab filters runs/mnist-mnist-cnn",
                         "cnnlab filters runs/mnist-mnist-cnn --layer 3 --out f.html")
    p.set_defaults(func=run_filters)


def run_report(args: argparse.Namespace) -> int:
    from cnnlab.insight.results import ResultsOptions
    from cnnlab.reporting import report_run

    start = time.perf_counter()
    path = report_run(args.run_dir, out=args.out, collect=ResultsOptions(batch_size=args.batch_size, device=args.device),
                      progress=options.progress(args))
    size = path.stat().st_size / 1e6
    options.say(args, f"wrote {path} ({size:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0


def run_filters(args: argparse.Namespace) -> int:
    from cnnlab.reporting import filters_page

    path = filters_page(args.run_dir, layer=args.layer, out=args.out)
    options.say(args, f"wrote {path}" + (f" ({path.stat().st_size / 1e3:.0f} KB)" if args.verbosity == options.VERBOSE
                                         else ""))
    return 0
