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


@pytest.fixture()
def photos(tmp_path):
    """3 classes x 10 RGB images (12x12 PNG, a few 24x24 JPEG) with distinct pixels."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root


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
    from cnnlab.train.runs import load_checkpoint, load_run

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
    from cnnlab.train.runs import load_checkpoint

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
