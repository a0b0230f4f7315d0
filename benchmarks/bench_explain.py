"""Grad-CAM speed: cnnlab beside Captum's LayerGradCam, in the same run.

1. All 10,000 MNIST test images on ``mnist-cnn`` (each image explained for its own label):
   ``cnnlab.gradcam`` in batches of ``--batch`` against a loop over Captum's
   ``LayerGradCam`` + ``LayerAttribution.interpolate`` one batch of the same size at a
   time, on the same layer (the one ``layer="auto"`` picks). The model is randomly
   initialised unless ``--run RUN_DIR`` names a trained mnist-cnn run (speed does not
   depend on the weights). The two results are checked to agree.
2. One 224x224 photo on SqueezeNet 1.1 (``--weights``, default ../shared's file, random
   weights when absent): ``gradcam`` of the preprocessed image beside Captum, and
   ``explain_photo`` end to end (decode, preprocess, Grad-CAM, map at the photo's size).

Each variant is timed alternately, round after round; the median is reported.

3. ``--faithfulness`` (with ``--run``): how faithful each method's maps are on the trained
   run, on the first ``--images`` test images: the all-zero Grad-CAM rate on 1,000 test
   images at ``layer="auto"`` (the rectified unit) and at the raw last conv; deletion and
   insertion AUC (``cnnlab.insight.faithfulness``, 20 steps, baseline 0) per method beside a
   random pixel order; and the mean per-image Spearman correlation with the maps of the model
   whose top layer was re-drawn (three seeds). Speed is skipped unless ``--speed`` is given too.

Usage: python benchmarks/bench_explain.py [--rounds 5] [--batch 128] [--threads N] [--run RUN_DIR]
       python benchmarks/bench_explain.py --run RUN_DIR --faithfulness [--images 200] [--speed]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam

from cnnlab.insight import attribution
from cnnlab.models import build

SHARED = Path(os.environ.get("CNNLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def mnist_inputs(run_dir: str | None):
    """(model, images (N, 1, 28, 28), labels, what the model is)."""
    if run_dir:
        from cnnlab.runs.directory import load_run

        run = load_run(run_dir)
        data = run.load_data().test
        return run.build_model(), run.preprocess(data.images), torch.from_numpy(data.labels), f"trained ({run_dir})"
    torch.manual_seed(0)
    model = build("mnist-cnn").eval()
    try:
        from cnnlab.data import load

        data = load("mnist", progress=False).test
        x, y = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(data.labels)
        return model, x.contiguous(), y, "randomly initialised, real MNIST test images"
    except Exception:  # no MNIST here: random images time the same
        return model, torch.rand(10_000, 1, 28, 28), torch.randint(0, 10, (10_000,)), "randomly initialised, random images"


def captum_loop(model, layer, x, y, batch):
    cam = LayerGradCam(model, layer)
    out = []
    for xs, ys in zip(x.split(batch), y.split(batch), strict=True):
        a = cam.attribute(xs, target=ys, relu_attributions=True)
        out.append(LayerAttribution.interpolate(a, tuple(x.shape[2:]), "bilinear")[:, 0].detach())
    return torch.cat(out).numpy()


def timed(variants: dict, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall-clock and CPU seconds of each variant. On a shared, loaded machine the CPU
    time (all threads of this process) is the steadier figure of the work done."""
    wall, cpu = {name: [] for name in variants}, {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return ({name: statistics.median(ts) for name, ts in wall.items()},
            {name: statistics.median(ts) for name, ts in cpu.items()})


def squeezenet(weights: Path):
    from cnnlab.models.pretrained import load_pretrained

    if weights.is_file():
        return load_pretrained("squeezenet1_1", weights=weights, progress=False), "ImageNet weights"
    torch.manual_seed(0)
    return build("squeezenet1_1").eval(), "random weights"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=128, help="images per pass, for both (default 128, gradcam's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--run", default=None, help="a trained mnist-cnn run directory (default: random weights)")
    p.add_argument("--weights", type=Path, default=SHARED / "models" / "squeezenet1_1-imagenet.pth")
    p.add_argument("--photo", type=Path, default=SHARED / "images" / "cat.jpg")
    p.add_argument("--faithfulness", action="store_true", help="measure deletion/insertion AUC per method (needs --run)")
    p.add_argument("--images", type=int, default=200, help="test images for the faithfulness measures (default 200)")
    p.add_argument("--speed", action="store_true", help="with --faithfulness: also time Grad-CAM beside Captum")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"median of {args.rounds} rounds")
    if args.faithfulness:
        if not args.run:
            p.error("--faithfulness needs --run RUN_DIR (a trained run)")
        faithfulness(args.run, args.images)
        if not args.speed:
            return

    model, x, y, what = mnist_inputs(args.run)
    _, _, layers, _ = attribution.gradcam_maps(model, x[:1], y[:1])
    layer = dict(model.named_modules())[layers[0]]
    ours, theirs = attribution.gradcam(model, x, y, batch_size=args.batch), captum_loop(model, layer, x, y, args.batch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())
    t, c = timed({"cnnlab": lambda: attribution.gradcam(model, x, y, batch_size=args.batch),
                  "captum": lambda: captum_loop(model, layer, x, y, args.batch)}, args.rounds)
    print(f"\nGrad-CAM of {len(x):,} MNIST test images, mnist-cnn {what}, layer {layers[0]}, batch {args.batch}:")
    print(f"  cnnlab.gradcam          {t['cnnlab']:7.3f} s wall  {c['cnnlab']:7.3f} s CPU")
    print(f"  Captum LayerGradCam     {t['captum']:7.3f} s wall  {c['captum']:7.3f} s CPU")
    print(f"  Captum / cnnlab         {t['captum'] / t['cnnlab']:7.2f}x wall {c['captum'] / c['cnnlab']:7.2f}x CPU")

    from cnnlab.insight.photo import explain_photo, load_photo
    from cnnlab.models.pretrained import preprocess

    net, weights = squeezenet(args.weights)
    photo = preprocess(load_photo(args.photo)[0])[None] if args.photo.is_file() else torch.randn(1, 3, 224, 224)
    _, _, layers, _ = attribution.gradcam_maps(net, photo)
    layer = dict(net.named_modules())[layers[0]]
    target = attribution.scores(net, photo).argmax(1)
    variants = {"cnnlab": lambda: attribution.gradcam(net, photo, target),
                "captum": lambda: captum_loop(net, layer, photo, target, 1)}
    if args.photo.is_file():
        variants["photo"] = lambda: explain_photo(args.photo, model=net)
    t, c = timed(variants, max(args.rounds, 10))
    print(f"\nGrad-CAM of one 224x224 photo, SqueezeNet 1.1 ({weights}), layer {layers[0]}:")
    print(f"  cnnlab.gradcam          {t['cnnlab'] * 1000:7.1f} ms wall  {c['cnnlab'] * 1000:7.1f} ms CPU")
    print(f"  Captum LayerGradCam     {t['captum'] * 1000:7.1f} ms wall  {c['captum'] * 1000:7.1f} ms CPU")
    print(f"  Captum / cnnlab         {t['captum'] / t['cnnlab']:7.2f}x wall {c['captum'] / c['cnnlab']:7.2f}x CPU")
    if "photo" in t:
        print(f"  explain_photo({args.photo.name}, {photo_size(args.photo)}) end to end {t['photo'] * 1000:.1f} ms wall "
              f"{c['photo'] * 1000:.1f} ms CPU (decode, preprocess, Grad-CAM, map at the photo's size)")


METHOD_OPTIONS = {"smoothgrad": {"samples": 25}, "ig": {"steps": 32}, "occlusion": {"window": 4, "stride": 2}}


def faithfulness(run_dir: str, n: int) -> None:
    """Print the all-zero rates, the deletion/insertion table and the randomisation check."""
    import warnings

    from cnnlab.insight import faithfulness as F
    from cnnlab.insight.internals import conv_layers

    model, x, y, what = mnist_inputs(run_dir)
    x, y = x[:1000], y[:1000]
    acc = float((attribution.scores(model, x).argmax(1) == y).float().mean())
    auto = attribution.cam_layers(model, x[:1])[0]
    raw = conv_layers(model)[-1]
    maps, *_ = attribution.gradcam_maps(model, x, y, layers=[auto])
    raw_maps, *_ = attribution.gradcam_maps(model, x, y, layers=[raw])
    print(f"\nFaithfulness on {what}, {type(model).__name__}, accuracy {acc:.1%} on the first 1,000 test images")
    print(f"  all-zero Grad-CAM maps of 1,000: auto (layer {auto}) {int(attribution.all_zero(maps[auto]).sum())}, "
          f"raw last conv (layer {raw}) {int(attribution.all_zero(raw_maps[raw]).sum())}")
    x, y = x[:n], y[:n]
    twins = [F.randomized_top(model, seed=seed) for seed in range(3)]
    print(f"\n  {n} test images, 20 steps, baseline 0; deletion: lower is better, insertion: higher is better;")
    print("  rank corr.: mean per-image Spearman with the maps after re-drawing the top layer (3 seeds), lower is better")
    print(f"  {'method':22s} {'deletion':>9s} {'insertion':>9s} {'rank corr.':>10s} {'seconds':>8s}")
    rows = [(m, {}) for m in attribution.METHODS] + [("saliency", {"signed": True}), ("gradcam", {"layer": raw})]
    chance = None
    for method, extra in rows:
        options = {**METHOD_OPTIONS.get(method, {}), **extra}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", attribution.AllZeroMapWarning)
            m = attribution.attribute(model, x, y, method=method, **options)
            seconds = time.perf_counter() - start
            corr = np.mean([np.nanmean(F.rank_correlation(m, attribution.attribute(t, x, y, method=method, **options)))
                            for t in twins])
        deletion = F.auc(F.perturbation_curves(model, x, m, y, steps=20)).mean()
        insertion = F.auc(F.perturbation_curves(model, x, m, y, mode="insertion", steps=20)).mean()
        if chance is None:
            chance = (F.auc(F.perturbation_curves(model, x, m, y, steps=20, order="random")).mean(),
                      F.auc(F.perturbation_curves(model, x, m, y, mode="insertion", steps=20, order="random")).mean())
        signed = attribution.is_signed(method, **extra)
        name = method + (f" (raw conv {raw})" if "layer" in extra else " (signed)" if signed else "")
        print(f"  {name:22s} {deletion:9.3f} {insertion:9.3f} {corr:10.3f} {seconds:8.2f}")
    print(f"  {'random order':22s} {chance[0]:9.3f} {chance[1]:9.3f}")


def photo_size(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as img:
        return f"{img.size[0]}x{img.size[1]}"


if __name__ == "__main__":
    main()
