"""The insight commands on a streamed run (a folder too large for memory): explain, features,
embed and the lab give what the in-memory path gives for the same images, and decode only
what they need (a few images by index, or every test image once, a batch at a time), never
the whole split at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

BATCH = 4  # the streamed test split has 6 images: batches of 4 and 2


@pytest.fixture(scope="module")
def streamed(module_photos, tmp_path_factory):
    """(a streamed run's directory, the same folder decoded whole: the reference)."""
    from cnnlab.cli import main
    from cnnlab.runs.directory import load_run

    out = tmp_path_factory.mktemp("stream") / "st"
    assert main(["train", "--data", f"folder:{module_photos}", "--model", "conv4k3-relu,gap,dense3", "--epochs", "1",
                 "--batch-size", "8", "--quiet", "--no-report", "--offline", "--stream", "--out", str(out)]) == 0
    run = load_run(out)
    assert run.streamed
    return out, run.load_data()


@pytest.fixture()
def decoded(monkeypatch):
    """The files decoded, in order, in this process (the run's loaders get no worker processes);
    reading the whole folder (Run.load_data, folder.read_images) fails the test."""
    from cnnlab.data import stream
    from cnnlab.runs.directory import Run

    def whole(*args, **kwargs):
        raise AssertionError("a streamed run's whole split was decoded")

    in_process = Run.load_stream
    monkeypatch.setattr(Run, "load_stream", lambda self, workers=None: in_process(self, workers=0))
    monkeypatch.setattr(Run, "load_data", whole)
    monkeypatch.setattr("cnnlab.data.folder.read_images", whole)
    files: list[str] = []
    real = stream.decode
    monkeypatch.setattr(stream, "decode", lambda *args: files.append(args[0]) or real(*args))
    return files


def decoded_per_forward(model, files: list[str]) -> list[int]:
    """A list that fills with how many images were decoded before each forward pass of ``model``
    since the previous one: what one batch held."""
    seen = [0]
    per_batch: list[int] = []

    def hook(module, inputs):
        per_batch.append(len(files) - seen[0])
        seen[0] = len(files)

    model.register_forward_pre_hook(hook)
    return per_batch


def test_explain_decodes_only_the_test_images_named(streamed, decoded, tmp_path, capsys):
    from cnnlab.cli import main
    from cnnlab.insight.attribution import gradcam_maps
    from cnnlab.runs.directory import load_run

    out, mem = streamed
    assert main(["explain", str(out), "test:1", "test:4", "--target", "actual",
                 "--save-array", str(tmp_path / "maps.npy")]) == 0
    assert len(decoded) == 2
    run = load_run(out)
    want, *_ = gradcam_maps(run.build_model(), run.preprocess(mem.test.images[[1, 4]]), "actual",
                            labels=mem.test.labels[[1, 4]])
    np.testing.assert_allclose(np.load(tmp_path / "maps.npy"), next(iter(want.values())), rtol=1e-5, atol=1e-6)
    assert f"actual {run.classes[mem.test.labels[4]]}" in capsys.readouterr().out.splitlines()[1]


def test_features_score_the_split_batch_by_batch_and_decode_only_the_top_examples(streamed, decoded, tmp_path):
    from cnnlab.cli import main
    from cnnlab.insight.featurevis import run_channel_visuals, top_examples
    from cnnlab.insight.stream_images import load_test_images
    from cnnlab.runs.directory import load_run

    out, mem = streamed
    run = load_run(out)
    model = run.build_model()
    images, labels = load_test_images(run)
    assert not decoded and np.array_equal(labels, mem.test.labels)
    got = run_channel_visuals(run, model, channels=[0, 2], steps=2, images=images, k=2)
    want = run_channel_visuals(run, model, channels=[0, 2], steps=2, images=mem.test.images, k=2)
    assert np.array_equal(got.top, want.top) and np.array_equal(got.examples, want.examples)
    np.testing.assert_array_equal(got.images, want.images)
    assert len(decoded) == 6 + 2 * 2  # one pass over the test split, then the 2 top images of 2 channels
    decoded.clear()
    per_batch = decoded_per_forward(model, decoded)
    got_top = top_examples(model, images, layer="0", channels=[0, 1, 2], k=3, batch_size=BATCH,
                           preprocess=run.preprocess)
    assert per_batch == [4, 2]  # never more than one batch decoded at a time
    want_top = top_examples(model, mem.test.images, layer="0", channels=[0, 1, 2], k=3, batch_size=BATCH,
                            preprocess=run.preprocess)
    assert np.array_equal(got_top, want_top)
    assert main(["features", str(out), "--channels", "0-1", "--steps", "2", "--examples", "2",
                 "--out", str(tmp_path / "f.png")]) == 0


def test_embedding_of_a_streamed_run_goes_batch_by_batch_and_samples_before_decoding(streamed, decoded, tmp_path):
    from cnnlab.cli import main
    from cnnlab.insight.embedding import embed, run_embedding
    from cnnlab.runs.directory import load_run

    out, mem = streamed
    run = load_run(out)
    model = run.build_model()
    per_batch = decoded_per_forward(model, decoded)
    got = run_embedding(out, batch_size=BATCH, refresh=True, model=model)
    assert per_batch == [4, 2] and len(decoded) == 6  # each test image once, one batch held at a time
    want = embed(model, mem.test.images, mem.test.labels, preprocess=run.preprocess, batch_size=BATCH)
    np.testing.assert_allclose(got.coords, want.coords, rtol=1e-5, atol=1e-5)
    assert np.array_equal(got.labels, want.labels) and np.array_equal(got.predictions, want.predictions)
    decoded.clear()
    sample = run_embedding(out, limit=3, seed=1, batch_size=2, refresh=True, model=model)
    assert sorted(decoded) == sorted(run.load_stream().test.files[i] for i in sample.indices)  # only those 3
    want = embed(model, mem.test.images[sample.indices], mem.test.labels[sample.indices], preprocess=run.preprocess)
    np.testing.assert_allclose(sample.coords, want.coords, rtol=1e-5, atol=1e-5)
    assert main(["embed", str(out), "--method", "pca", "--refresh", "--out", str(tmp_path / "m.png")]) == 0


def test_the_lab_shows_a_streamed_runs_test_images_one_at_a_time(streamed, decoded):
    from cnnlab.insight.predictions import predict
    from cnnlab.lab.analysis import cell, confusion
    from cnnlab.lab.targets import RunTarget

    out, mem = streamed
    target = RunTarget(out)
    item = target.test_input(3)
    assert len(decoded) == 1 and item.label == mem.test.labels[3]
    np.testing.assert_array_equal(item.image, mem.test.images[3])
    torch.testing.assert_close(item.x, target.run.preprocess(mem.test.images[3:4]))
    probs = target.probs()  # every test image once, 1,000 a batch
    assert len(decoded) == 1 + 6
    want = predict(target.model, target.run.preprocess(mem.test.images), precision="fp32")
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
    assert confusion(target)["n"] == 6 and cell(target, 0, 0, 10)["count"] >= 0


def test_stream_images_batches_from_worker_processes_equal_the_decoded_array(module_photos):
    from cnnlab.data import load
    from cnnlab.data.stream import stream_folder
    from cnnlab.insight.stream_images import StreamImages, image_batches, take

    mem = load(f"folder:{module_photos}", cache=False, progress=False, seed=0)
    images = StreamImages(stream_folder(f"folder:{module_photos}", seed=0, workers=1).test)
    batches = list(image_batches(images, BATCH))
    assert [len(b) for b in batches] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(batches), mem.test.images)
    subset = take(images, np.array([5, 0, 3]))  # lazy: decoded when batched or indexed
    np.testing.assert_array_equal(np.concatenate(list(image_batches(subset, 2))), mem.test.images[[5, 0, 3]])
    np.testing.assert_array_equal(subset[1], mem.test.images[0])
    np.testing.assert_array_equal(images[2:4], mem.test.images[2:4])
    np.testing.assert_array_equal(subset.labels, mem.test.labels[[5, 0, 3]])


def test_image_batches_refuses_a_batch_size_below_one():
    from cnnlab.errors import CnnlabError
    from cnnlab.insight.stream_images import image_batches

    with pytest.raises(CnnlabError, match="batch_size must be a whole number of at least 1, got 0"):
        list(image_batches(np.zeros((3, 2, 2, 1), np.uint8), 0))
    assert [len(b) for b in image_batches(np.zeros((5, 2, 2, 1), np.uint8), 2)] == [2, 2, 1]
