"""``cnnlab embed``: the embedding map of a run's test set.

    cnnlab embed RUN_DIR [--method pca|tsne|umap] [--limit N] --out map.png

The penultimate-layer features (the input of the last Linear layer) projected to 2-D, one
colour per class, wrong predictions crossed out. The map is cached in the run directory
(``embedding-<method>.npz``) until the run's weights change.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cnnlab.cli import options
from cnnlab.files import save_figure


def register(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="map a run's test set by its penultimate-layer features (PCA, t-SNE or UMAP)",
        description="Project the input of the model's last Linear layer for every test image to 2-D and draw "
                    "it coloured by class with wrong predictions marked. Cached in RUN_DIR/embedding-METHOD.npz "
                    "until the weights change. UMAP needs the 'explain' extra.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--method", choices=("pca", "tsne", "umap"), default="pca", help="projection (default pca)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="map a seeded random N of the test images (t-SNE of 10,000 takes minutes)")
    p.add_argument("--seed", type=options.bounded(int, options.SEED),
                   default=0, help="seed of the subset and of t-SNE/UMAP (default 0)")
    p.add_argument("--refresh", action="store_true", help="recompute even when the cached map is current")
    p.add_argument("--out", type=Path, required=True, metavar="MAP.png", help="where to draw the map")
    options.add_device(p)
    options.add_verbosity(p, quiet="no progress bar and no 'wrote' line",
                          verbose="a progress bar even when not on a terminal")
    options.add_examples(p, "cnnlab embed runs/mnist-mnist-cnn --out map.png",
                         "cnnlab embed runs/mnist-mnist-cnn --method tsne --limit 2000 --out tsne.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.insight.embedding import run_embedding
    from cnnlab.report.plots_insight import plot_embedding
    from cnnlab.runs.directory import load_run
    from cnnlab.train.device import resolve_device

    start = time.perf_counter()
    run_ = load_run(args.run_dir)
    model = run_.build_model(weights="best").to(resolve_device(args.device))
    emb = run_embedding(run_.path, method=args.method, limit=args.limit, seed=args.seed, refresh=args.refresh,
                        model=model, progress=options.progress(args))
    save_figure(plot_embedding(emb, classes=run_.classes), args.out, dpi=100)
    wrong = int(emb.wrong.sum())
    options.say(args, f"wrote {args.out}: {len(emb.coords)} test images by {args.method}, {wrong} wrong "
          f"({wrong / max(len(emb.coords), 1):.1%}); cached in {run_.path / f'embedding-{args.method}.npz'} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0
