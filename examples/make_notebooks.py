"""Write the tutorial notebooks, outputs stripped: ``python examples/make_notebooks.py [OUT_DIR]``
(default: this folder).

The notebooks are generated so that their code lives in reviewable Python and every one
starts the same way: ``CNNLAB_NOTEBOOK_SMALL=1`` (set by tests/test_notebooks.py) shrinks
the data and the epochs so that all six run in a few minutes on 2 CPU cores. Datasets are
found as everywhere in cnnlab (``CNNLAB_DATA``, the user cache, a download).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os

import matplotlib.pyplot as plt
import numpy as np

import cnnlab
from cnnlab.data.transforms import to_tensor  # uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1]

SMALL = os.environ.get("CNNLAB_NOTEBOOK_SMALL") == "1"  # a quick run (CI); unset for the tutorial's sizes
TRAIN_SIZE = 2_000 if SMALL else 20_000
EPOCHS = 1 if SMALL else 6
VERBOSE = 0 if SMALL else 1"""

MNIST_MODEL = """\
ds = cnnlab.load_dataset("mnist", train_size=TRAIN_SIZE, progress=False)
x_train = to_tensor(ds.train.images)  # (N, 1, 28, 28)
x_test = to_tensor(ds.test.images)
model = cnnlab.build_model("mnist-cnn")
history = cnnlab.fit(model, x_train, ds.train.labels, validation=(x_test, ds.test.labels),
                     config=cnnlab.TrainConfig(epochs=EPOCHS, batch_size=128, verbose=VERBOSE))
print(f"test accuracy after {len(history)} epochs: {history.epochs[-1]['val_accuracy']:.4f}")"""


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


NOTEBOOKS = {
    "01_first_cnn_mnist.ipynb": [
        md("""# 1. A first CNN on MNIST

The first tutorial: what a convolution filter does to a digit (random filters find nothing,
edge detectors find strokes), then a small CNN trained on MNIST, its training curves, its
confusion matrix, and the class probabilities of single test images."""),
        code(SETUP),
        md("## The data\n`load_dataset` returns uint8 arrays `(N, H, W, C)` and the class names."),
        code("""ds = cnnlab.load_dataset("mnist", train_size=TRAIN_SIZE, progress=False)
print(ds.train.images.shape, ds.test.images.shape, ds.classes)
digit = ds.train.images[0, :, :, 0] / 255.0
plt.imshow(digit, cmap="gray"); plt.title(f"label {ds.train.labels[0]}"); plt.axis("off");"""),
        md("## Random filters and edge detectors\nNine random 3×3 kernels beside the classic edge detectors, "
           "all applied with `correlate2d` (NumPy only)."),
        code("""from cnnlab.scratch.images import gallery

randoms = {f"random {i}": cnnlab.correlate2d(digit, k, mode="same")
           for i, k in enumerate(cnnlab.random_kernels(9, seed=0))}
edges = {name: cnnlab.correlate2d(digit, cnnlab.get_kernel(name), mode="same")
         for name in ("sobel-x", "sobel-y", "laplacian-8", "edge-horizontal", "edge-vertical")}
gallery(digit, randoms, ncols=5, panel_inches=1.6)"""),
        code("""gallery(digit, edges, ncols=3, panel_inches=1.8)"""),
        md("## A CNN, trained\nThe tutorial's network: two 3×3 convolutions with max-pooling, a dense layer."),
        code("""model = cnnlab.build_model("mnist-cnn")
print(cnnlab.summarize(model, (28, 28, 1)))"""),
        code("""x_train = to_tensor(ds.train.images)  # (N, 1, 28, 28) in [0, 1]
x_test = to_tensor(ds.test.images)
history = cnnlab.fit(model, x_train, ds.train.labels, validation=(x_test, ds.test.labels),
                     config=cnnlab.TrainConfig(epochs=EPOCHS, batch_size=128, verbose=VERBOSE))
from cnnlab.report.plots import plot_history

plot_history(history.epochs)"""),
        md("## Where it goes wrong\nRows are the true digit, columns the prediction."),
        code("""from cnnlab.insight.predictions import confusion_matrix, predict
from cnnlab.report.plots import plot_confusion_matrix

probs = predict(model, x_test)
cm = confusion_matrix(ds.test.labels, probs.argmax(1), 10)
print(f"test accuracy {np.trace(cm) / cm.sum():.4f}")
plot_confusion_matrix(cm, ds.classes)"""),
        md("## The probabilities of single test images"),
        code("""from cnnlab.report.plots import plot_image_probabilities

plot_image_probabilities(ds.test.images[:3], probs[:3], ds.classes, titles=[f"test {i}" for i in range(3)])"""),
    ],
    "02_convolution_from_scratch.ipynb": [
        md("""# 2. Convolution from scratch

Correlation by hand, the output-size formula, a colour filter on the Grace Hopper portrait,
a pretrained network naming a cat, and a CIFAR-10 network trained with augmentation."""),
        code(SETUP),
        md("## Correlation on a 4×4 image\nThe kernel slides over the image; each output is a dot product."),
        code("""image = np.arange(16, dtype=float).reshape(4, 4)
kernel = np.array([[1.0, 0.0], [0.0, -1.0]])
out = cnnlab.correlate2d(image, kernel, mode="valid")
print(out)
assert out[0, 0] == image[0, 0] - image[1, 1]  # the first window, by hand"""),
        md("## The output size\n`(n + 2·padding − dilation·(k − 1) − 1) // stride + 1`, checked against a "
           "real correlation."),
        code("""for n, k, p, s in [(28, 3, 0, 1), (28, 3, 1, 1), (32, 5, 2, 2), (224, 7, 3, 2)]:
    size = cnnlab.output_size(n, k, padding=p, stride=s)
    real = cnnlab.correlate2d(np.zeros((n, n)), np.ones((k, k)), mode="valid", padding=p, stride=s).shape[0]
    print(f"n={n:3d} k={k} padding={p} stride={s}: {size} (correlate2d gives {real})")"""),
        md("## The brown colour filter on Grace Hopper\nA 3-channel kernel mixes the colour channels "
           "like the tutorial's sepia-brown filter."),
        code("""from cnnlab.scratch.images import apply_kernel, gallery, grace_hopper

portrait = grace_hopper()  # (600, 512, 3) floats in [0, 1]
gallery(portrait, {"brown": apply_kernel(portrait, cnnlab.get_kernel("brown")),
                   "sobel-x": apply_kernel(portrait, cnnlab.get_kernel("sobel-x"))}, panel_inches=2.5)"""),
        md("""## A pretrained network names a cat
SqueezeNet 1.1 (VGG-16 works the same way, `model="vgg16"`, at 100× the cost). The weights
come from `../shared/models` when present, else torchvision's file is downloaded once."""),
        code("""from pathlib import Path

shared = Path(os.environ.get("CNNLAB_SHARED", "../../shared"))
weights = shared / "models" / "squeezenet1_1-imagenet.pth"
cat = shared / "images" / "cat.jpg"
photo = cat if cat.is_file() else "grace_hopper"
try:
    top = cnnlab.classify(photo, model="squeezenet1_1", weights=weights if weights.is_file() else None,
                          progress=False)[0]
    for _, name, p in top:
        print(f"{name:<20} {p:.1%}")
except cnnlab.CnnlabError as exc:  # offline without the weights
    print("skipped:", exc)"""),
        md("## A CIFAR-10 network with augmentation\nRandom shifts and mirror images make more of few images."),
        code("""cifar = cnnlab.load_dataset("cifar10", train_size=TRAIN_SIZE, progress=False)
x = to_tensor(cifar.train.images)
xt = to_tensor(cifar.test.images[:2_000])
net = cnnlab.build_model("cifar-cnn")
augment = cnnlab.Augment(shift=0.1, flip_h=True)
h = cnnlab.fit(net, x, cifar.train.labels, validation=(xt, cifar.test.labels[:2_000]),
               config=cnnlab.TrainConfig(epochs=EPOCHS, batch_size=64, augment=augment, verbose=VERBOSE))
print(f"validation accuracy {h.epochs[-1]['val_accuracy']:.3f} (chance is 0.1)")"""),
    ],
    "03_cifar10_classes_and_features.ipynb": [
        md("""# 3. CIFAR-10: class names and learned features

Ten classes of 32×32 colour photos. Train a CNN, read its per-class scores, and look at the
filters it learned and the feature maps of one image."""),
        code(SETUP),
        code("""cifar = cnnlab.load_dataset("cifar10", train_size=TRAIN_SIZE, progress=False)
print(cifar.classes)
from cnnlab.report.plots import plot_predictions

plot_predictions(cifar.train.images[:10], cifar.train.labels[:10], cifar.train.labels[:10], cifar.classes,
                 ncols=5, title="training images and their classes")"""),
        code("""x = to_tensor(cifar.train.images)
xt = to_tensor(cifar.test.images[:2_000])
yt = cifar.test.labels[:2_000]
model = cnnlab.build_model("cifar-cnn")
history = cnnlab.fit(model, x, cifar.train.labels, validation=(xt, yt),
                     config=cnnlab.TrainConfig(epochs=EPOCHS, batch_size=64, verbose=VERBOSE))"""),
        md("## Per class\nPrecision, recall and F1 for every class name."),
        code("""from cnnlab.insight.predictions import confusion_matrix, per_class_metrics, predict

probs = predict(model, xt)
cm = confusion_matrix(yt, probs.argmax(1), 10)
m = per_class_metrics(cm)
for name, p, r, f in zip(cifar.classes, m["precision"], m["recall"], m["f1"], strict=True):
    print(f"{name:<12} precision {p:.2f}  recall {r:.2f}  F1 {f:.2f}")"""),
        md("## Learned features\nThe first layer's filters are colour patches; the feature maps show what "
           "each one responds to."),
        code("""from cnnlab.report.plots import plot_feature_maps, plot_filters

plot_filters(cnnlab.filters(model), title="first-layer filters")"""),
        code("""plt.imshow(cifar.test.images[0]); plt.title(cifar.classes[yt[0]]); plt.axis("off")
maps = cnnlab.activations(model, xt[:1], 0)[0]  # layer 0: the first convolution, (C, H, W)
plot_feature_maps(maps, title="first convolution, one test image")"""),
    ],
    "04_classic_filters_and_mnist.ipynb": [
        md("""# 4. Classic filters, then a CNN that learns its own

Blur, sharpen and edge kernels on a photo, pooling, and an MNIST CNN with its confusion
matrix and the pairs of digits it mixes up most."""),
        code(SETUP),
        code("""from cnnlab.scratch.images import apply_kernel, gallery, grace_hopper

grey = grace_hopper(colour="grey")
names = ("box-blur", "gaussian-blur", "sharpen", "sobel-x", "sobel-y", "laplacian-8")
gallery(grey, {n: apply_kernel(grey, cnnlab.get_kernel(n)) for n in names}, ncols=4, panel_inches=2.2)"""),
        md("## Pooling\nMax-pooling keeps the strongest response in each 2×2 window and halves the size."),
        code("""pooled = cnnlab.max_pool2d(grey, 4)
print(grey.shape, "->", pooled.shape)
gallery(grey, {"max-pool 4": pooled, "avg-pool 4": cnnlab.avg_pool2d(grey, 4)}, panel_inches=2.5)"""),
        md("## An MNIST CNN"),
        code(MNIST_MODEL),
        code("""from cnnlab.insight.predictions import confusion_matrix, most_confused, predict
from cnnlab.report.plots import plot_confusion_matrix

preds = predict(model, x_test).argmax(1)
cm = confusion_matrix(ds.test.labels, preds, 10)
print("most confused (actual, predicted, count):", most_confused(cm, classes=ds.classes)[:5])
plot_confusion_matrix(cm, ds.classes, normalize=True)"""),
    ],
    "05_hidden_layers.ipynb": [
        md("""# 5. Inside the hidden layers

Train an MNIST CNN, then follow one digit through it: the output of every layer, as images."""),
        code(SETUP),
        code(MNIST_MODEL),
        code("""from cnnlab.insight.internals import layer_names

names = layer_names(model)
image = x_test[:1]  # one test digit, (1, 1, 28, 28)
plt.imshow(image[0, 0], cmap="gray"); plt.title(f"a {ds.test.labels[0]}"); plt.axis("off")
print(names)"""),
        md("Each convolution makes one map per filter; ReLU keeps the positive part; pooling shrinks it."),
        code("""from cnnlab.report.plots import plot_feature_maps

modules = dict(model.named_modules())
for name in names[:6]:
    maps = cnnlab.activations(model, image, name)[0]
    if maps.ndim == 3:  # (C, H, W): a feature map per channel
        display(plot_feature_maps(maps, title=f"layer {name} ({type(modules[name]).__name__}) {maps.shape}"))"""),
        code("""from cnnlab.report.plots import plot_filters

plot_filters(cnnlab.filters(model, 0), title="the 32 filters of the first convolution")"""),
    ],
    "06_attribution_embedding_transfer.ipynb": [
        md("""# 6. Beyond the tutorials: why, where, and reuse

Which pixels made the network decide (Grad-CAM, saliency), where the test images sit in the
network's own feature space (the embedding map), and transfer learning: features learned on
the digits 0–4 reused for 5–9 with few labelled examples."""),
        code(SETUP),
        code(MNIST_MODEL),
        md("## Attribution\nGrad-CAM weighs the last convolution's maps by their gradient; saliency is the input gradient."),
        code("""from cnnlab.report.overlay import overlay

images = x_test[:4]
cams = cnnlab.gradcam(model, images)           # (4, 28, 28)
sal = cnnlab.saliency(model, images)           # (4, 28, 28)
fig, axes = plt.subplots(2, 4, figsize=(8, 4))
for i in range(4):
    axes[0, i].imshow(overlay(images[i, 0].numpy(), cams[i])); axes[0, i].set_title("Grad-CAM")
    axes[1, i].imshow(sal[i], cmap="cividis"); axes[1, i].set_title("saliency")
for ax in axes.flat:
    ax.axis("off")"""),
        md("## The embedding map\nThe inputs of the last layer, projected to 2-D with PCA; crosses are mistakes."),
        code("""n = 1_000 if SMALL else 5_000
emb = cnnlab.embed(model, x_test[:n], ds.test.labels[:n], method="pca")
plt.figure(figsize=(6, 5))
plt.scatter(*emb.coords[~emb.wrong].T, c=emb.labels[~emb.wrong], cmap="tab10", s=5)
plt.scatter(*emb.coords[emb.wrong].T, c="black", marker="x", s=20, label="wrong")
plt.legend(); plt.title(f"{n} test digits, penultimate features (PCA)");"""),
        md("""## Transfer learning
Train on the digits 0–4, then learn 5–9 from a handful of labelled examples: from scratch, on
top of the frozen 0–4 convolutions (only the dense layers learn), or fine-tuning the whole 0–4
network. Each is scored in eval mode (`net.eval()`: `fit` leaves a model training, and dropout
would still be on).

What to expect, measured over three seeds (BENCHMARKS.md, "Issue 27"). In this notebook's quick
setting (`CNNLAB_NOTEBOOK_SMALL=1`: the 0–4 network saw 1,000 digits once), with **20** examples,
four a digit, the 0–4 features help: 0.59–0.63 frozen and 0.61–0.64 fine-tuned, against
0.54–0.55 from scratch. With **200** examples the network from scratch catches up (0.86–0.89, as
fine-tuned) and beats the frozen features (0.83–0.87). At the tutorial's sizes (10,000 digits,
6 epochs) the frozen 0–4 features are more specialised and help no more at 20 examples
(0.53–0.56 against 0.54–0.55), fine-tuning helps in two seeds of three (0.54–0.60). Transfer
pays when labels are scarcest, and fine-tuning is the safer bet; a small CNN learns digits from a
few hundred."""),
        code("""import copy

import torch

low = ds.train.labels < 5
source = cnnlab.build_model("mnist-cnn", num_classes=5)
cnnlab.fit(source, x_train[low], ds.train.labels[low],
           config=cnnlab.TrainConfig(epochs=EPOCHS, batch_size=128, verbose=0))

test_high = ds.test.labels >= 5
test_x, test_y = x_test[test_high], ds.test.labels[test_high] - 5

def accuracy_after(net, n):
    few = np.flatnonzero(ds.train.labels >= 5)[:n]  # the first n labelled examples of 5-9
    cnnlab.fit(net, x_train[few], ds.train.labels[few] - 5,
               config=cnnlab.TrainConfig(epochs=10, batch_size=32, verbose=0, seed=1))
    net.eval()  # dropout off: fit leaves the model in training mode
    with torch.no_grad():
        return (net(test_x).argmax(1).numpy() == test_y).mean()

def frozen_features():
    net = copy.deepcopy(source)
    for layer in list(net)[:6]:  # the two conv + pool blocks
        for p in layer.parameters():
            p.requires_grad_(False)
    return net

print(f"{'examples':>8}  {'from scratch':>12}  {'frozen 0-4':>10}  {'fine-tuned 0-4':>14}")
for n in (20, 200):
    scratch = accuracy_after(cnnlab.build_model("mnist-cnn", num_classes=5), n)
    frozen = accuracy_after(frozen_features(), n)
    tuned = accuracy_after(copy.deepcopy(source), n)
    print(f"{n:>8}  {scratch:>12.3f}  {frozen:>10.3f}  {tuned:>14.3f}")"""),
    ],
}


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else HERE
    for name, cells in NOTEBOOKS.items():
        for i, cell in enumerate(cells):
            cell.id = f"cell-{i}"  # stable ids (nbformat draws random ones): the files only change with the code
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.validate(nb)
        (out / name).write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
