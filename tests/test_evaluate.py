"""cnnlab.insight.predictions: metrics against hand-computed cases, top losses, predict, image files."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.predictions import (
    Evaluation,
    TopLoss,
    accuracy,
    compute_metrics,
    confusion_matrix,
    cross_entropy,
    evaluate_images,
    evaluate_run,
    load_images,
    most_confused,
    per_class_metrics,
    predict,
    read_image,
    resolve_device,
    top_losses,
    wrong_indices,
)

# Hand-computed case: 9 examples, 3 classes.
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
PREDS = np.array([0, 1, 1, 1, 2, 2, 2, 0, 2])
# rows = actual, columns = predicted
CM = np.array([[1, 2, 0],
               [0, 1, 1],
               [1, 0, 3]])


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(LABELS, PREDS, 3)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64


def test_per_class_metrics_hand_computed():
    pc = per_class_metrics(CM)
    # precision = diagonal / column sum (2, 3, 4); recall = diagonal / row sum (3, 2, 4)
    np.testing.assert_allclose(pc["precision"], [1 / 2, 1 / 3, 3 / 4])
    np.testing.assert_allclose(pc["recall"], [1 / 3, 1 / 2, 3 / 4])
    # F1 = 2PR/(P+R): (2 * 1/6) / (5/6) = 0.4 for classes 0 and 1
    np.testing.assert_allclose(pc["f1"], [0.4, 0.4, 0.75])
    np.testing.assert_array_equal(pc["support"], [3, 2, 4])


def test_per_class_metrics_match_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 500)
    preds = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 7, 500))
    preds[preds == 6] = 5  # class 6 is never predicted: precision is undefined, reported as 0
    pc = per_class_metrics(confusion_matrix(labels, preds, 7))
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(labels, preds, labels=range(7), zero_division=0)
    np.testing.assert_allclose(pc["precision"], p)
    np.testing.assert_allclose(pc["recall"], r)
    np.testing.assert_allclose(pc["f1"], f)
    np.testing.assert_array_equal(pc["support"], s)
    np.testing.assert_array_equal(confusion_matrix(labels, preds, 7), sklearn_metrics.confusion_matrix(labels, preds))


def test_most_confused_orders_by_count_with_names():
    assert most_confused(CM) == [(0, 1, 2), (1, 2, 1), (2, 0, 1)]
    assert most_confused(CM, classes=["a", "b", "c"], min_count=2) == [("a", "b", 2)]


def test_wrong_indices():
    np.testing.assert_array_equal(wrong_indices(LABELS, PREDS), [1, 2, 4, 7])


PROBS = np.array([[0.7, 0.2, 0.1],
                  [0.1, 0.1, 0.8],
                  [0.3, 0.6, 0.1]], dtype=np.float32)
Y = np.array([0, 0, 1])


def test_top_losses_report_both_probabilities():
    top = top_losses(PROBS, Y, k=2)
    assert [t.index for t in top] == [1, 2]
    first = top[0]
    assert isinstance(first, TopLoss)
    assert (first.predicted, first.actual) == (2, 0)
    assert first.predicted_prob == pytest.approx(0.8)
    assert first.actual_prob == pytest.approx(0.1)
    assert first.loss == pytest.approx(-math.log(0.1), rel=1e-6)
    # a right prediction can still be a top loss: both sides are the same class
    assert (top[1].predicted, top[1].actual, top[1].actual_prob) == (1, 1, pytest.approx(0.6))
    assert len(top_losses(PROBS, Y, k=None)) == 3
    assert top_losses(PROBS, Y, k=0) == []


def test_cross_entropy_and_accuracy():
    np.testing.assert_allclose(cross_entropy(PROBS, Y), -np.log([0.7, 0.1, 0.6]), rtol=1e-6)
    assert accuracy(PROBS, Y) == pytest.approx(2 / 3)
    zero = np.array([[1.0, 0.0]], dtype=np.float32)
    assert np.isfinite(cross_entropy(zero, np.array([1]))).all()


def test_bad_labels_are_refused():
    with pytest.raises(CnnlabError, match=r"labels must lie in \[0, 3\)"):
        accuracy(PROBS, np.array([0, 1, 3]))
    with pytest.raises(CnnlabError, match="probs must be"):
        top_losses(PROBS, np.array([0, 1]))
    with pytest.raises(CnnlabError, match="class names"):
        compute_metrics(PROBS, Y, ["a", "b"])


def test_compute_metrics_is_json_ready():
    m = compute_metrics(PROBS, Y, ["a", "b", "c"], n_top_losses=2)
    again = json.loads(json.dumps(m, allow_nan=False))
    assert again["n"] == 3 and again["n_wrong"] == 1
    assert again["accuracy"] == pytest.approx(2 / 3)
    assert again["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert again["most_confused"] == [["a", "c", 1]]
    assert again["top_losses"][0]["predicted_class"] == "c"
    assert again["top_losses"][0]["actual_class"] == "a"
    assert again["per_class"][0] == {"class": "a", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                     "support": 2}
    assert again["top5_accuracy"] is None


def test_compute_metrics_many_classes():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 100))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, 100, 2000)
    m = compute_metrics(probs, labels, [f"c{i}" for i in range(100)])
    assert len(m["per_class"]) == 100 and len(m["confusion_matrix"]) == 100
    top5 = (np.argsort(-probs, 1)[:, :5] == labels[:, None]).any(1).mean()
    assert m["top5_accuracy"] == pytest.approx(top5)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))


def test_predict_matches_softmax_and_restores_mode():
    model = _tiny_model().train()
    x = torch.randn(10, 1, 8, 8)
    probs = predict(model, x, batch_size=3, precision="fp32")
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(x), 1).numpy()
    assert probs.shape == (10, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(CnnlabError, match="batch_size"):
        predict(model, x, batch_size=0)


def test_evaluate_images_batches_and_evaluate_run():
    model = _tiny_model().eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (25, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 4, 25)

    def preprocess(batch):
        return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255

    classes = list("abcd")
    ev = evaluate_images(model, images, labels, preprocess=preprocess, classes=classes, batch_size=7)
    whole = predict(model, preprocess(images))
    np.testing.assert_allclose(ev.probs, whole, rtol=1e-5, atol=1e-6)
    assert isinstance(ev, Evaluation) and ev.metrics["n"] == 25
    np.testing.assert_array_equal(ev.confusion_matrix, confusion_matrix(labels, whole.argmax(1), 4))

    split = SimpleNamespace(images=images, labels=labels)
    run = SimpleNamespace(build_model=lambda weights="best": model, load_data=lambda: SimpleNamespace(test=split),
                          preprocess=preprocess, classes=classes)
    ev2 = evaluate_run(run, batch_size=10)
    np.testing.assert_allclose(ev2.probs, ev.probs, rtol=1e-5, atol=1e-6)


def test_read_image_converts_and_resizes(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(path)
    arr, note = read_image(path, (8, 8, 1))
    assert arr.shape == (8, 8, 1) and arr.dtype == np.uint8
    assert "grey" in note and "resized 40x30 -> 8x8" in note
    inverted, _ = read_image(path, (8, 8, 1), invert=True)
    assert int(inverted[0, 0, 0]) == 255 - int(arr[0, 0, 0])
    rgb = load_images([path, path], (5, 6, 3))
    assert rgb.shape == (2, 5, 6, 3)
    same, note = read_image(path, (30, 40, 3))
    assert note == ""


def test_read_image_refuses_what_it_cannot_use(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(CnnlabError, match="not a readable image"):
        read_image(bad, (8, 8, 1))
    with pytest.raises(CnnlabError, match="4 input channels"):
        read_image(bad, (8, 8, 4))


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(CnnlabError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(CnnlabError, match="'cuda:1' asked for, but no CUDA GPU is available; use --device cpu"):
        resolve_device("cuda:1")


def test_per_class_metrics_of_an_empty_matrix_and_a_bad_one():
    zero = per_class_metrics(np.zeros((3, 3), dtype=np.int64))
    assert not zero["f1"].any() and list(zero["support"]) == [0, 0, 0]
    with pytest.raises(CnnlabError, match="confusion matrix is \\(K, K\\)"):
        per_class_metrics(np.zeros((2, 3)))
