"""Streamed folders: the header pass, the memory rule, and the same batches (and the same
training) as the in-memory folder for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import load
from cnnlab.data.stream import FolderStream, decode, should_stream, stream_folder
from cnnlab.errors import CnnlabError
from cnnlab.train.batches import Batches
from cnnlab.train.feed import LoaderFeed


def test_streamed_and_in_memory_give_the_same_batches(photos):
    mem = load(f"folder:{photos}", cache=False, progress=False, seed=3)
    st = stream_folder(f"folder:{photos}", seed=3, workers=0)
    assert len(st.train) == len(mem.train) and st.classes == mem.classes
    order = Batches(len(mem.train), 8, seed=5).epoch(None)
    feed = LoaderFeed(st.train, batch_size=8, seed=5, device=torch.device("cpu"))
    for idx, (xb, yb) in zip(order, feed.batches(), strict=True):
        want = torch.from_numpy(mem.train.images[idx.numpy()]).permute(0, 3, 1, 2).float() / 255
        torch.testing.assert_close(xb, want, rtol=0, atol=0)
        assert torch.equal(yb, torch.from_numpy(mem.train.labels[idx.numpy()]))


def test_header_pass_lists_unreadable_files_and_skip_bad_leaves_them_out(photos):
    (photos / "dog" / "notes.jpg").write_text("not a photo")
    (photos / "owl" / "broken.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(CnnlabError, match=r"2 of 32 files .* are not readable images: .*--skip-bad"):
        stream_folder(f"folder:{photos}")
    st = stream_folder(f"folder:{photos}", skip_bad=True, workers=0)
    assert len(st.skipped) == 2 and len(st.train) + len(st.test) == 30


def test_the_memory_rule():
    # 1,000 images of 224x224x3 take 1000 * 150,528 * 5 bytes = 0.70 GiB as uint8 + float32.
    assert should_stream(1000, (224, 224), 3, max_memory_gib=0.5)
    assert not should_stream(1000, (224, 224), 3, max_memory_gib=1.0)


def test_big_jpegs_are_drafted_and_resized(tmp_path):
    img = np.zeros((400, 600, 3), np.uint8)
    img[:, 300:] = 255
    Image.fromarray(img).save(tmp_path / "big.jpg", quality=95)
    out = decode(str(tmp_path / "big.jpg"), (40, 60), "RGB")
    assert out.shape == (40, 60, 3) and out[:, :25].max() < 20 and out[:, 35:].min() > 235
    item, label = FolderStream([tmp_path / "big.jpg"], [4], size=(40, 60), mode="L", workers=0)[0]
    assert item.shape == (1, 40, 60) and item.dtype == torch.uint8 and label == 4


def test_cli_streamed_run_trains_as_the_in_memory_one(photos, tmp_path):
    from cnnlab.cli import main
    from cnnlab.runs.directory import load_checkpoint, load_run

    common = ["train", "--data", f"folder:{photos}", "--model", "conv4k3-relu,gap,dense3", "--epochs", "2",
              "--batch-size", "8", "--quiet", "--no-report", "--offline"]
    assert main([*common, "--out", str(tmp_path / "mem")]) == 0
    assert main([*common, "--stream", "--workers", "1", "--out", str(tmp_path / "st")]) == 0
    a, b = load_checkpoint(tmp_path / "mem" / "last.pt"), load_checkpoint(tmp_path / "st" / "last.pt")
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], msg=k)
    assert load_run(tmp_path / "st").config["streamed"] is True
    assert load_run(tmp_path / "st").metrics["test_accuracy"] == load_run(tmp_path / "mem").metrics["test_accuracy"]


def test_cli_streamed_run_resumes_exactly(photos, tmp_path):
    from cnnlab.cli import main
    from cnnlab.runs.directory import load_checkpoint

    common = ["train", "--data", f"folder:{photos}", "--model", "conv4k3-relu,gap,dense3", "--batch-size", "8",
              "--quiet", "--no-report", "--offline", "--stream", "--workers", "1",
              "--augment", "flip-h,resized-crop=0.5"]
    assert main([*common, "--epochs", "3", "--out", str(tmp_path / "straight")]) == 0
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--epochs", "3", "--quiet", "--no-report",
                 "--offline"]) == 0
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


RECORDER = '''
import os
from torch import nn


class Record(nn.Module):
    """Appends "train|eval INDEX" per example to seen<RANK>.txt (pixel [0, 0, 0] * 255 = the image's index)."""

    def forward(self, x):
        with open(os.path.join(os.environ["SEEN_DIR"], f"seen{os.environ['RANK']}.txt"), "a") as f:
            mode = "train" if self.training else "eval"
            f.writelines(f"{mode} {i}\\n" for i in (x[:, 0, 0, 0] * 255).round().long().tolist())
        return x


def make_net(input_shape, num_classes):
    return nn.Sequential(Record(), nn.Conv2d(input_shape[2], 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))
'''


@pytest.mark.slow
def test_torchrun_streamed_ranks_read_disjoint_shards_that_cover_the_folder(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for i in range(39):  # 3 classes x 13: a 30-image training split and a 9-image (odd) test split
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
        img[0, 0] = i  # the image's index, read back by the recorder
        Image.fromarray(img).save(root / f"c{i % 3}" / f"{i}.png")
    (tmp_path / "recorder.py").write_text(RECORDER)
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, OMP_NUM_THREADS="1", SEEN_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(src), os.environ.get("PYTHONPATH", "")]))
    env.pop("RANK", None)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cnnlab",
           "train", "--data", f"folder:{root}", "--stream", "--workers", "1", "--model", "recorder:make_net",
           "--epochs", "1", "--batch-size", "10", "--out", str(out), "--no-report", "--offline", "--quiet",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["streamed"] is True
    seen = []
    for r in range(2):
        lines = [line.split() for line in (tmp_path / f"seen{r}.txt").read_text().splitlines()]
        seen.append({mode: [int(i) for m, i in lines if m == mode] for mode in ("train", "eval")})
    train = [set(s["train"]) for s in seen]
    assert len(seen[0]["train"]) == len(seen[1]["train"]) == 15  # 30 training images, 15 per rank, no repeats
    assert not train[0] & train[1] and len(train[0] | train[1]) == 30
    # the test split is evaluated twice (as validation, then as the test): each image once per pass, on one rank
    evals = [s["eval"] for s in seen]
    assert sorted(evals[0] + evals[1]) == sorted(2 * list(set(evals[0]) | set(evals[1])))
    assert not set(evals[0]) & set(evals[1]) and len(evals[0]) + len(evals[1]) == 18  # 9 + 9, none padded in
    assert (train[0] | train[1] | set(evals[0]) | set(evals[1])) == set(range(39))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and round(metrics["test_accuracy"] * 9, 6).is_integer()


def test_evaluation_shards_are_disjoint_unpadded_and_cover_the_data():
    from cnnlab.train.feed import Shard

    for n in (9, 10, 1):
        parts = [list(Shard(n, r, 2)) for r in range(2)]
        assert sorted(parts[0] + parts[1]) == list(range(n)) and [len(Shard(n, r, 2)) for r in range(2)] == list(
            map(len, parts))


def test_evaluating_a_streamed_run_matches_in_memory_evaluation_and_decodes_batch_by_batch(photos, tmp_path,
                                                                                           monkeypatch):
    from cnnlab.cli import main
    from cnnlab.data import stream
    from cnnlab.insight.predictions import evaluate_images, evaluate_run
    from cnnlab.insight.results import ResultsOptions, collect_results
    from cnnlab.runs.directory import Run, load_run

    out = tmp_path / "st"
    assert main(["train", "--data", f"folder:{photos}", "--model", "conv4k3-relu,gap,dense3", "--epochs", "2",
                 "--batch-size", "8", "--quiet", "--no-report", "--offline", "--stream", "--out", str(out)]) == 0
    run = load_run(out)
    mem = run.load_data()  # the same folder decoded whole: the reference
    want = evaluate_images(run.build_model(), mem.test.images, mem.test.labels, preprocess=run.preprocess,
                           classes=run.classes, batch_size=4)

    def no_whole_folder(*args, **kwargs):
        raise AssertionError("a streamed run's evaluation decoded the whole folder")

    monkeypatch.setattr("cnnlab.data.folder.read_images", no_whole_folder)
    in_process = Run.load_stream  # decoding in this process, where it can be counted
    monkeypatch.setattr(Run, "load_stream", lambda self, workers=None: in_process(self, workers=0))
    decoded = []
    real_decode = stream.decode
    monkeypatch.setattr(stream, "decode", lambda *a: decoded.append(a[0]) or real_decode(*a))
    got = evaluate_run(run, batch_size=4)
    assert len(decoded) == len(mem.test.labels) == 6  # each test image once, in batches of 4
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.probs, want.probs, rtol=1e-5, atol=1e-6)
    for key in ("accuracy", "n_wrong", "confusion_matrix", "per_class", "most_confused"):
        assert got.metrics[key] == want.metrics[key], key
    assert got.metrics["loss"] == pytest.approx(want.metrics["loss"], rel=1e-5)
    decoded.clear()
    results = collect_results(out, options=ResultsOptions(n_wrong=2, n_top_losses=3, n_activation_images=1,
                                                          n_feature_channels=0, n_explained=1), save=False)
    # the evaluation pass, the embedding's pass (batch by batch), then only the images the report shows
    # (top losses, first wrong, activations, Grad-CAM)
    assert len(decoded) <= 6 + 6 + 3 + 2 + 1 + 1
    assert results.top_loss_images.shape == (3, 12, 12, 3) and results.metrics["accuracy"] == want.metrics["accuracy"]
    np.testing.assert_array_equal(results.top_loss_images[0], mem.test.images[results.top_losses[0].index])
    assert results.embedding_skipped is None and len(results.embedding.coords) == 6
