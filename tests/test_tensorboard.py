"""TensorBoard logs read back with TensorBoard's own reader (EventAccumulator): the scalars
equal history.csv; histograms, the filter image and the projector files are all there."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import CnnlabError

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SPEC = "conv4k3-relu,maxpool2,conv6k3-relu,flatten"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(out.parent / "cache"))
        assert main(["train", "--data", "digits", "--model", SPEC, "--epochs", "3", "--batch-size", "64",
                     "--out", str(out), "--verbose", "0", "--offline", "--no-report", "--tensorboard"]) == 0
    events = EventAccumulator(str(out / "tensorboard" / "train"),
                              size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    events.Reload()
    return out, events


def test_scalars_equal_history_csv(run):
    from cnnlab.runs.directory import read_history

    out, events = run
    history = read_history(out / "history.csv")
    assert len(history) == 3
    val = EventAccumulator(str(out / "tensorboard" / "validation"), size_guidance={"scalars": 0})
    val.Reload()
    # Keras' layout: the same tags in train/ and validation/, so TensorBoard overlays the two curves.
    assert set(val.Tags()["scalars"]) == {"epoch_loss", "epoch_accuracy"} <= set(events.Tags()["scalars"])
    for key, reader, tag in [("loss", events, "epoch_loss"), ("accuracy", events, "epoch_accuracy"),
                             ("val_loss", val, "epoch_loss"), ("val_accuracy", val, "epoch_accuracy"),
                             ("lr", events, "epoch_learning_rate")]:
        logged = reader.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3]
        # Event files store float32; history.csv keeps the float64 it was given.
        assert [e.value for e in logged] == [float(np.float32(row[key])) for row in history], key


def test_histograms_of_weights_and_gradients(run):
    from cnnlab.runs.directory import load_run

    out, events = run
    model = load_run(out).build_model(weights="last")
    for name, p in model.named_parameters():
        for kind in ("weights", "gradients"):
            logged = events.Histograms(f"{kind}/{name}")
            assert [e.step for e in logged] == [1, 2, 3]
            assert all(e.histogram_value.num == p.numel() for e in logged)
        last = events.Histograms(f"weights/{name}")[-1].histogram_value
        assert (last.min, last.max) == pytest.approx((p.min().item(), p.max().item()))
    grad = events.Histograms(f"gradients/{next(iter(dict(model.named_parameters())))}")[-1].histogram_value
    assert grad.sum_squares > 0  # real gradients, not zeros


def test_first_filters_image(run):
    import io

    from cnnlab.insight.internals import normalize_filters
    from cnnlab.runs.directory import load_run

    out, events = run
    images = events.Images("filters/first_conv")
    assert [e.step for e in images] == [1, 2, 3]
    # 4 filters of 3x3 on a 2x2 grid with 1-pixel borders: 9x9 pixels, each shown 10x10.
    assert (images[-1].width, images[-1].height) == (90, 90)
    shown = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)))[::10, ::10, 0]  # (9, 9)
    weights = normalize_filters(load_run(out).build_model(weights="last")[0].weight.detach().numpy())
    np.testing.assert_allclose(shown[1:4, 1:4] / 255, weights[0, 0], atol=1 / 255)  # filter 0, top left
    np.testing.assert_allclose(shown[5:8, 1:4] / 255, weights[2, 0], atol=1 / 255)  # filter 2, second row


def test_projector_files(run):
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    from cnnlab.runs.directory import load_run

    out, _ = run
    logdir = out / "tensorboard" / "train"  # Keras keeps the projector beside the training run
    config = text_format.Parse((logdir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (emb,) = config.embeddings
    tensors = np.loadtxt(logdir / emb.tensor_path, delimiter="\t", ndmin=2)
    meta = (logdir / emb.metadata_path).read_text().splitlines()
    r = load_run(out)
    data = r.load_data()
    x = r.preprocess(data.test.images)  # validation is the test set here
    model = r.build_model(weights="last")
    with torch.no_grad():
        expected = model[:-1](x).numpy()  # what the final Linear layer receives
        predicted = model(x).argmax(1).numpy()
    np.testing.assert_allclose(tensors, expected, rtol=1e-5, atol=1e-5)
    assert meta[0] == "label\tpredicted" and len(meta) == len(x) + 1
    assert meta[1:4] == [f"{data.classes[a]}\t{data.classes[b]}" for a, b in zip(data.test.labels[:3], predicted[:3],
                                                                                   strict=True)]
    with Image.open(logdir / emb.sprite.image_path) as sprite:
        size = sprite.size
    cols = int(np.ceil(np.sqrt(len(x))))
    assert list(emb.sprite.single_image_dim) == [8, 8] and size == (cols * 8, cols * 8)


def test_projector_for_many_non_square_images(tmp_path):
    from torch import nn

    from cnnlab.export.tensorboard import TensorBoardLog

    x = torch.rand(1200, 3, 40, 320)  # wide images, more than fit on one sheet at full size
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 3))
    log = TensorBoardLog(tmp_path, max_points=5000)
    config = log.write_embedding(model, x, np.arange(1200) % 3).read_text()
    log.close()
    cell = 8192 // 35  # ceil(sqrt(1200)) = 35 cells a row
    assert f"single_image_dim: {cell}\n    single_image_dim: {cell}" in config
    with Image.open(tmp_path / "train" / "projector" / "sprite.png") as png:
        sheet = np.asarray(png)
    assert sheet.shape == (35 * cell, 35 * cell, 3)
    # Image 1199 (row 34, column 9) keeps its 8:1 shape: a 234x29 band centred in its cell.
    r, c = divmod(1199, 35)
    box = sheet[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
    band = round(40 * cell / 320)
    top = (cell - band) // 2
    assert (box[:top] == 0).all() and (box[top + band:] == 0).all() and box[top:top + band].mean() > 60
    assert len((tmp_path / "train" / "projector" / "metadata.tsv").read_text().splitlines()) == 1201


def test_the_training_loop_knows_only_callbacks(tmp_path):
    from cnnlab.errors import CnnlabError
    from cnnlab.train.loop import fit

    with pytest.raises(CnnlabError, match=r"knows only callbacks: pass callbacks=\[cnnlab.TensorBoardLog\(DIR\)\]"):
        fit(None, np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, int), tensorboard=tmp_path)


def test_fit_tensorboard_argument(tmp_path):
    from cnnlab import fit  # the public fit: the training loop, with tensorboard= attaching the callback
    from cnnlab.models import build
    from cnnlab.train.config import TrainConfig
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 10, 16, 1), dtype=np.uint8)  # non-square 10x16 images
    y = rng.integers(0, 3, 40)
    history = fit(build(SPEC, input_shape=(10, 16, 1), num_classes=3), x, y, validation=(x[:10], y[:10]),
                  config=TrainConfig(epochs=2, batch_size=16, verbose=0), tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb" / "validation"))
    events.Reload()
    assert [e.value for e in events.Scalars("epoch_loss")] == [float(np.float32(e["val_loss"])) for e in history.epochs]
    projector = (tmp_path / "tb" / "train" / "projector_config.pbtxt").read_text()
    assert "single_image_dim: 16\n    single_image_dim: 16" in projector


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    from cnnlab.export.tensorboard import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(CnnlabError, match=r"needs tensorboard, which is not installed; pip install 'cnnlab\[tensorboard\]'"):
        TensorBoardLog(tmp_path)
