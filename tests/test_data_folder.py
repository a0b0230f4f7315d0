"""folder:PATH datasets written with Pillow into tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab import data
from cnnlab.data import sources
from cnnlab.errors import CnnlabError

RNG = np.random.default_rng(2)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DIR", tmp_path / "system")


def save(path, size=(8, 6), mode="RGB", value=None):
    """An image of (height, width) ``size``; ``value`` fills it with one grey level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = RNG.integers(0, 256, (h, w, channels), dtype=np.uint8) if value is None else \
        np.full((h, w, channels), value, np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)
    return pixels


def make_flat(root, per_class=10, classes=("cat", "dog", "fox")):
    for c in classes:
        for i in range(per_class):
            save(root / c / f"{i:02d}.png", mode="L")
    return root


def test_flat_folder_seeded_stratified_split(tmp_path):
    root = make_flat(tmp_path / "pets")
    ds = data.load(f"folder:{root}", progress=False)
    assert ds.name == f"folder:{root}" and ds.classes == ("cat", "dog", "fox")
    assert ds.input_shape == (8, 6, 1) and ds.source == str(root.resolve())
    assert (len(ds.train), len(ds.test)) == (24, 6)
    np.testing.assert_array_equal(ds.test.class_counts(3), [2, 2, 2])  # 20% of each class
    again = data.load(f"folder:{root}", progress=False)
    np.testing.assert_array_equal(ds.test.images, again.test.images)
    other = data.load(f"folder:{root}", progress=False, seed=1)
    assert not np.array_equal(ds.test.images, other.test.images)
    # seeded random order, so the first N training images span the classes
    assert len(set(ds.train.labels[:6].tolist())) > 1
    half = data.load(f"folder:{root}", progress=False, test_size=0.5, val_size=4)
    assert (len(half.train), len(half.val), len(half.test)) == (11, 4, 15)


def test_train_test_folders_are_the_split(tmp_path):
    root = tmp_path / "ds"
    for part, n in (("train", 4), ("test", 2)):
        for c in ("a", "b"):
            for i in range(n):
                save(root / part / c / f"{i}.png", value=40 if part == "train" else 200)
    save(root / "test" / "b" / "extra.png", value=200)
    ds = data.load(f"folder:{root}", progress=False)
    assert (len(ds.train), len(ds.test)) == (8, 5)
    assert (ds.train.images == 40).all() and (ds.test.images == 200).all()
    np.testing.assert_array_equal(ds.test.class_counts(2), [2, 3])


def test_test_folder_may_lack_a_class_but_not_add_one(tmp_path):
    root = tmp_path / "ds"
    save(root / "train" / "a" / "0.png")
    save(root / "train" / "b" / "0.png")
    save(root / "test" / "a" / "0.png")
    assert data.load(f"folder:{root}", progress=False).test.labels.tolist() == [0]
    save(root / "test" / "zebra" / "0.png")
    with pytest.raises(CnnlabError, match="zebra is a class the training folder lacks"):
        data.load(f"folder:{root}", progress=False)


def test_common_size_and_mode(tmp_path):
    root = tmp_path / "mixed"
    save(root / "a" / "big.png", size=(20, 30))
    save(root / "a" / "x.png", size=(10, 12), mode="L")
    save(root / "b" / "y.png", size=(10, 12), mode="RGBA")
    save(root / "b" / "z.jpg", size=(10, 12))
    ds = data.load(f"folder:{root}", progress=False, test_size=0.0)
    assert ds.input_shape == (10, 12, 3) and len(ds.train) == 4 and len(ds.test) == 0
    grey = data.load(f"folder:{root}", progress=False, test_size=0.0, mode="L", image_size=(5, 7))
    assert grey.input_shape == (5, 7, 1)
    square = data.load(f"folder:{root}", progress=False, test_size=0.0, image_size=16)
    assert square.input_shape == (16, 16, 3)
    only_grey = tmp_path / "grey"
    save(only_grey / "a" / "0.png", mode="L")
    save(only_grey / "b" / "0.png", mode="L")
    assert data.load(f"folder:{only_grey}", progress=False).input_shape == (8, 6, 1)


def test_pixels_are_read_exactly_when_no_resize_is_needed(tmp_path):
    root = tmp_path / "exact"
    pixels = save(root / "a" / "0.png")
    save(root / "b" / "0.png")
    ds = data.load(f"folder:{root}", progress=False, test_size=0.0, seed=0)
    index = int(np.flatnonzero(ds.train.labels == 0)[0])
    np.testing.assert_array_equal(ds.train.images[index], pixels)


def test_hidden_files_are_skipped(tmp_path):
    root = make_flat(tmp_path / "pets", per_class=2)
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "cat" / ".thumbs").write_bytes(b"junk")
    (root / ".ipynb_checkpoints").mkdir()
    assert data.load(f"folder:{root}", progress=False).num_classes == 3


@pytest.mark.parametrize("problem, words", [
    ("non-image", "notes.txt is not an image Pillow can read"),
    ("empty class", "class folder .*empty is empty"),
    ("stray file", "readme.md is a file outside any class folder"),
    ("truncated", "00.png: cannot decode"),
    ("not a dir", "is not a directory"),
    ("no classes", "has no class folders"),
])
def test_bad_folders(tmp_path, problem, words):
    root = make_flat(tmp_path / "pets", per_class=2)
    if problem == "non-image":
        (root / "dog" / "notes.txt").write_text("hello")
    elif problem == "empty class":
        (root / "empty").mkdir()
    elif problem == "stray file":
        (root / "readme.md").write_text("hi")
    elif problem == "truncated":
        path = root / "cat" / "00.png"
        path.write_bytes(path.read_bytes()[:-30])
    elif problem == "not a dir":
        root = root / "missing"
    elif problem == "no classes":
        root = tmp_path / "bare"
        root.mkdir()
    with pytest.raises(CnnlabError, match=words) as exc:
        data.load(f"folder:{root}", progress=False)
    assert "\n" not in str(exc.value)


def test_folder_cache_skips_decoding_and_notices_changes(tmp_path, monkeypatch):
    root = make_flat(tmp_path / "pets", per_class=3)
    first = data.load(f"folder:{root}", progress=False)
    with monkeypatch.context() as m:
        m.setattr("cnnlab.data.folder.read_images", lambda *a, **k: pytest.fail("decoded again"))
        second = data.load(f"folder:{root}", progress=False)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    save(root / "cat" / "new.png", mode="L")
    assert len(data.load(f"folder:{root}", progress=False, test_size=0.0).train) == 10


def test_bad_folder_options(tmp_path):
    root = make_flat(tmp_path / "pets", per_class=2)
    with pytest.raises(CnnlabError, match="image_size"):
        data.load(f"folder:{root}", image_size=(0, 4))
    with pytest.raises(CnnlabError, match="mode must be 'L' or 'RGB'"):
        data.load(f"folder:{root}", mode="CMYK")
    with pytest.raises(CnnlabError, match="test_size"):
        data.load(f"folder:{root}", test_size=1.0)
