"""Issue 18's CPU table: each target's figure from the bench_*.py mains, beside its peer,
its target and its bf16 compute floor on this CPU (see run.py, which calls ``targets_table``)."""

from __future__ import annotations

import time

# (row, recipe) for the time-to-accuracy targets: (accuracy, worst accuracy allowed, seconds, seeds).
ACCURACY_TARGETS = [
    ("MNIST time to 99.0%", "mnist-fast", 0.990, 0.989, 2.5, [0, 1, 2]),
    ("MNIST time to 99.5%", "mnist-995", 0.995, 0.0, 20.0, [0, 1, 2]),
    ("CIFAR-10 time to 90%", "cifar-fast", 0.90, 0.0, 240.0, [0]),
    ("CIFAR-10 time to 94%", "cifar-94", 0.94, 0.0, 1800.0, [0]),
]
EPOCH_RATIO, VGG_RATIO = 3.0, 2.5


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def targets_table(load, *, quick: bool = False, cifar94: bool = False, keras_python: str | None = None,
                  cifar: bool = True) -> int:
    """Run every target's benchmark (tiny versions with ``quick``), then print one table."""
    from cnnlab.train.config import RECIPES

    keras = ["--keras-python", keras_python] if keras_python else []
    print("=== rates and FLOPs (bench_floor) ===", flush=True)
    floor = load("floor").main(["--quick", "--reps", "1"] if quick else [])
    rows = []  # (measure, cnnlab, peer, target, verdict, floor)

    print("\n=== mnist-cnn epoch (bench_mnist_train) ===", flush=True)
    t0 = time.perf_counter()
    mnist = load("mnist_train").main((["--reps", "1"] if quick else []) + keras)
    ours = mnist["cnnlab"]["seconds"]
    epoch_flops = floor["recipes"]["tutorial-mnist-cnn"]["train"] / floor["recipes"]["tutorial-mnist-cnn"]["epochs"]
    peer = mnist.get("keras/tf")
    if peer:
        ratio = peer["seconds"] / ours
        rows.append(("mnist-cnn epoch, batch 256, vs Keras", f"{_s(ours)} ({mnist['cnnlab']['accuracy']:.2%})",
                     f"Keras {_s(peer['seconds'])} ({peer['accuracy']:.2%})", f">= {EPOCH_RATIO:g}x",
                     f"{ratio:.2f}x {'met' if ratio >= EPOCH_RATIO else 'NOT met'}",
                     lambda best, keras=peer["seconds"]:
                         f"{_s(epoch_flops / best)} ({keras * best / epoch_flops:.1f}x Keras)"))
    else:
        rows.append(("mnist-cnn epoch, batch 256, vs Keras", _s(ours), "Keras not installed", f">= {EPOCH_RATIO:g}x",
                     "no peer", lambda best: _s(epoch_flops / best)))
    print(f"({time.perf_counter() - t0:.0f} s)", flush=True)

    tta = load("time_to_accuracy")
    for measure, recipe, acc, worst_ok, limit, seeds in ACCURACY_TARGETS:
        if recipe.startswith("cifar") and not cifar:
            rows.append((measure, "not run (--no-cifar)", "-", f"<= {_s(limit)}", "-", "-"))
            continue
        if recipe == "cifar-94" and not cifar94:
            rows.append((measure, "not run (--cifar94)", "-", f"<= {_s(limit)}", "-", "-"))
            continue
        if recipe not in RECIPES:
            rows.append((measure, f"no recipe {recipe!r} yet", "-", f"<= {_s(limit)}", "NOT met", "-"))
            continue
        print(f"\n=== {measure} (bench_time_to_accuracy --recipe {recipe}) ===", flush=True)
        argv = ["--recipe", recipe, "--seeds", *map(str, seeds[:1] if quick else seeds)]
        argv += ["--steps", "2"] if quick else []
        got = tta.main(argv)[recipe]
        ok = got["median_s"] <= limit and got["median_acc"] >= acc and got["worst_acc"] >= worst_ok
        flops = floor["recipes"].get(recipe) or load("floor").recipe_flops(recipe)
        rows.append((measure, f"{_s(got['median_s'])} ({got['median_acc']:.2%}, worst {got['worst_acc']:.2%})", "-",
                     f"<= {_s(limit)} at {acc:.1%}", "met" if ok else "NOT met",
                     lambda best, flops=flops: f"{_s(flops['total'] / best)} ({flops['total'] / 1e12:.2f} TFLOP)"))

    print("\n=== VGG-16 inference, batch 8 (bench_pretrained) ===", flush=True)
    pre = load("pretrained").main(["--models", "vgg16", "--batches", "8"] + (["--rounds", "1"] if quick else []) + keras)
    variants = {layout: rate for (name, batch, layout), rate in pre.items() if name == "vgg16" and batch == 8}
    layout, rate = max(variants.items(), key=lambda kv: kv[1])
    vgg = floor["inference"]["vgg16 batch 8"]  # conv FLOPs at the best rate, the classifier at its own

    def vgg_floor(best: float) -> float:
        return 8 / load("floor").inference_floor(vgg, best, vgg["gemm rate"])
    keras_rate = pre.get(("keras vgg16", 8, "nhwc"))
    if keras_rate:
        ratio = rate / keras_rate
        rows.append(("VGG-16 inference, batch 8, vs Keras", f"{rate:.1f} img/s ({layout})", f"Keras {keras_rate:.1f} img/s",
                     f">= {VGG_RATIO:g}x", f"{ratio:.2f}x {'met' if ratio >= VGG_RATIO else 'NOT met'}",
                     lambda best: f"{vgg_floor(best):.1f} img/s ({vgg_floor(best) / keras_rate:.2f}x Keras)"))
    else:
        rows.append(("VGG-16 inference, batch 8, vs Keras", f"{rate:.1f} img/s ({layout})", "Keras not installed",
                     f">= {VGG_RATIO:g}x", "no peer", lambda best: f"{vgg_floor(best):.1f} img/s"))

    # The rates again, now that the runs are done: a floor uses the best rate this CPU showed, and
    # one measurement at the start can land on a slow minute (conv bf16 once read 448 GFLOP/s
    # at the start of a run and 940-960 in three runs just after).
    again = load("floor").measure_rates(1 if quick else 5, quick)
    measured = {k: max(v, again[k]) for k, v in floor["rates"].items()}
    precision = floor.get("precision", "bf16")
    best = max(measured[f"conv {precision}"], measured[f"mm {precision}"])
    rows = [(*row[:-1], row[-1](best) if callable(row[-1]) else row[-1]) for row in rows]
    rates = ", ".join(f"{k} {floor['rates'][k] / 1e9:.0f} then {again[k] / 1e9:.0f}" for k in floor["rates"])
    print(f"\n=== issue 18: CPU targets{' (QUICK: tiny runs, not measurements)' if quick else ''} ===")
    print(f"measured rates at the start, then the end, GFLOP/s: {rates}; floors use the best {precision} rate, "
          f"{best / 1e9:.0f} GFLOP/s")
    head = ("measure", "cnnlab", "peer", "target", "verdict", f"{precision} floor here")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
