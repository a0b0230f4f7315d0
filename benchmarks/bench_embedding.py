"""Embedding-map speed: cnnlab's PCA and t-SNE beside scikit-learn's, in the same run.

The features are the penultimate-layer features (the input of the last Linear layer, 64
numbers per image) of ``mnist-cnn`` for the 10,000 MNIST test images: randomly initialised
unless ``--run RUN_DIR`` names a trained mnist-cnn run (the speed does not depend on the
weights), on random images when MNIST is absent.

1. PCA to 2-D: ``cnnlab.insight.embedding.pca_2d`` (exact: eigenvectors of the 64x64
   covariance) beside ``sklearn.decomposition.PCA(n_components=2)`` (its 'auto' solver),
   timed alternately, median of ``--rounds``; the two are checked to agree up to sign.
   Target: under 1 s.
2. t-SNE to 2-D: ``cnnlab.insight.embedding.project(method="tsne")`` (scikit-learn's TSNE,
   PCA initialisation, seeded; wider features would first be reduced to 50 dims) beside
   scikit-learn's TSNE called directly with the same settings: one run each, reported.
   The feature extraction (one batched forward pass) is timed too.

Usage: python benchmarks/bench_embedding.py [--rounds 5] [--n 10000] [--threads N] [--run RUN_DIR] [--no-tsne]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from cnnlab.insight.embedding import pca_2d, penultimate_features, project


def inputs(run_dir: str | None, n: int):
    """(model, images (n, 1, 28, 28) float tensor, what they are)."""
    if run_dir:
        from cnnlab.runs.directory import load_run

        run = load_run(run_dir)
        test = run.load_data().test
        return run.build_model(), run.preprocess(test.images[:n]), f"trained run {run_dir}"
    from cnnlab.models import build

    torch.manual_seed(0)
    model = build("mnist-cnn").eval()
    try:
        from cnnlab.data import load

        test = load("mnist", progress=False).test
        x = torch.from_numpy(test.images[:n]).permute(0, 3, 1, 2).float() / 255
        return model, x, "random-init mnist-cnn, MNIST test images"
    except Exception:  # noqa: BLE001 - no MNIST here: random images time the same
        return model, torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(0)), \
            "random-init mnist-cnn, random images"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--run", default=None)
    p.add_argument("--no-tsne", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")
    model, x, what = inputs(args.run, args.n)
    seconds, (features, _) = timed(lambda: penultimate_features(model, x, batch_size=1024))
    print(f"features: {features.shape} from {what} in {seconds:.2f} s")

    ours, theirs = [], []
    for _ in range(args.rounds):  # alternate, so a busy moment hits both
        t, a = timed(lambda: pca_2d(features))
        ours.append(t)
        t, b = timed(lambda: PCA(n_components=2).fit_transform(features))
        theirs.append(t)
    signs = np.sign((a * b).sum(0))
    np.testing.assert_allclose(a * signs, b, rtol=1e-2, atol=1e-3 * np.abs(b).max())
    o, s = statistics.median(ours), statistics.median(theirs)
    print(f"PCA of {len(features)} x {features.shape[1]}: cnnlab {o * 1000:.1f} ms, scikit-learn {s * 1000:.1f} ms "
          f"(ratio sklearn/cnnlab {s / o:.2f}x); target < 1 s: {'met' if o < 1 else 'MISSED'}")

    if not args.no_tsne:
        t_ours, _ = timed(lambda: project(features, method="tsne", seed=0))
        tsne = TSNE(n_components=2, perplexity=30.0, init="pca", learning_rate="auto", random_state=0)
        t_theirs, _ = timed(lambda: tsne.fit_transform(features))
        print(f"t-SNE of {len(features)} x {features.shape[1]}: cnnlab {t_ours:.1f} s, scikit-learn directly "
              f"{t_theirs:.1f} s (ratio {t_theirs / t_ours:.2f}x)")


if __name__ == "__main__":
    main()
