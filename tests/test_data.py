"""cnnlab.data on synthetic files: IDX and CIFAR-10 formats, corruptions, search order, cache, options."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnlab import data
from cnnlab.data import cache, cifar
from cnnlab.errors import CnnlabError

RNG = np.random.default_rng(0)


pytestmark = pytest.mark.usefixtures("offline_data_env")


# ---------------------------------------------------------------- synthetic files


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder: Path, n_train=30, n_test=10, gz=True, size=28, classes=10) -> dict:
    """Four MNIST-style files; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": RNG.integers(0, classes, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": RNG.integers(0, classes, n_test, dtype=np.uint8),
    }
    for base, array in arrays.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{base}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / base).write_bytes(raw)
    return arrays


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R, G, B planes, row-major
    return np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tobytes()


def write_cifar_bin(folder: Path, n=4, meta=True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).astype(np.int64)
        (folder / f"{name}.bin").write_bytes(cifar_records(images, labels))
        out[name] = (images, labels)
    if meta:
        (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return out


def write_cifar_py(folder: Path, n=4, protocol=2) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).astype(np.int64)
        batch = {b"batch_label": name.encode(), b"labels": [int(x) for x in labels],
                 b"data": images.transpose(0, 3, 1, 2).reshape(n, -1).copy(), b"filenames": [b"a.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        out[name] = (images, labels)
    meta = {"num_cases_per_batch": n, "label_names": [f"py{i}" for i in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return out


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- arrays and value types


def test_to_float_scales_uint8_to_unit_interval():
    x = np.array([0, 1, 128, 255], np.uint8)
    y = data.to_float(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.array([0, 1, 128, 255], np.float32) / np.float32(255))
    with pytest.raises(CnnlabError, match="float64"):
        data.to_float(y.astype(np.float64))


def test_channel_stats_match_float64_reference():
    images = RNG.integers(0, 256, (300, 7, 5, 3), dtype=np.uint8)
    mean, std = data.channel_stats(images)
    ref = images.reshape(-1, 3).astype(np.float64) / 255
    assert mean.dtype == np.float64 and mean.shape == (3,)
    np.testing.assert_allclose(mean, ref.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, ref.std(0), rtol=0, atol=1e-9)
    # all-255 blocks reach the largest per-block uint32 sums
    full = np.full((600, 4, 4, 1), 255, np.uint8)
    assert data.channel_stats(full) == (pytest.approx([1.0]), pytest.approx([0.0], abs=1e-7))
    with pytest.raises(CnnlabError, match="uint8"):
        data.channel_stats(images.astype(np.float32))


def test_one_hot():
    y = data.one_hot(np.array([2, 0, 1]), 3)
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[[2, 0, 1]])
    assert y.dtype == np.float32
    with pytest.raises(CnnlabError, match="label 3 is outside 0..2"):
        data.one_hot(np.array([0, 3]), 3)
    with pytest.raises(CnnlabError, match="num_classes"):
        data.one_hot(np.array([0]), 0)


def test_split_validates_layout():
    images = np.zeros((2, 4, 4, 1), np.uint8)
    assert len(data.Split(images, np.zeros(2, np.int64))) == 2
    with pytest.raises(CnnlabError, match="int64"):
        data.Split(images, np.zeros(2, np.uint8))
    with pytest.raises(CnnlabError, match="2 images but 3 labels"):
        data.Split(images, np.zeros(3, np.int64))
    with pytest.raises(CnnlabError, match="uint8"):
        data.Split(images.astype(np.float32), np.zeros(2, np.int64))


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip_gzipped_or_not(tmp_path, gz):
    arrays = write_idx_set(tmp_path / "d" / "mnist", gz=gz)
    ds = data.load("mnist", root=tmp_path / "d", verify=False)
    assert ds.name == "mnist" and ds.classes == tuple("0123456789")
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.train.images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert ds.train.labels.dtype == np.int64 and ds.train.images.flags.writeable
    assert ds.source == str(tmp_path / "d" / "mnist")


IDX_CORRUPTIONS = {
    "magic": (lambda raw: b"\x1f\x8c" + raw[2:], "magic number"),
    "ndim": (lambda raw: raw[:3] + b"\x02" + raw[4:], "dimensions"),
    "truncated": (lambda raw: raw[:-1], "truncated"),
    "extra": (lambda raw: raw + b"\x00", "header promises"),
    "empty": (lambda raw: b"", "magic number"),
    # dimensions whose product wraps to 0 in int64 (2**24 * 2**25 * 3 * 2**24): found by the fuzzer
    "overflowing-shape": (lambda raw: b"\0\0\x08\x03\x01\0\0\0\x02\0\0\0\x03\0\0\0", "header promises"),
}


@pytest.mark.parametrize("kind", list(IDX_CORRUPTIONS))
def test_idx_corruptions_name_the_file(tmp_path, kind):
    folder = tmp_path / "mnist"
    write_idx_set(folder, gz=False)
    bad = folder / "train-images-idx3-ubyte"
    corrupt, words = IDX_CORRUPTIONS[kind]
    bad.write_bytes(corrupt(bad.read_bytes()))
    with pytest.raises(CnnlabError) as exc:
        data.load("mnist", root=tmp_path, verify=False)
    assert str(bad) in one_line(exc) and words in str(exc.value) and "again" in str(exc.value)


def test_idx_label_out_of_range(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder, gz=False)
    labels = np.zeros(10, np.uint8)
    labels[7] = 10
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(CnnlabError, match=r"label 10 at index 7 is outside 0\.\.9") as exc:
        data.load("mnist", root=tmp_path, verify=False)
    assert "t10k-labels-idx1-ubyte" in one_line(exc)


def test_idx_count_mismatch(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder, gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(CnnlabError, match="holds 30 images but .* holds 29 labels") as exc:
        data.load("mnist", root=tmp_path, verify=False)
    one_line(exc)


def test_truncated_gzip(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder)
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-20])
    with pytest.raises(CnnlabError, match="gzip") as exc:
        data.load("mnist", root=tmp_path, verify=False)
    assert str(bad) in one_line(exc)


def test_verify_checks_mnist_content_md5_and_counts(tmp_path):
    write_idx_set(tmp_path / "mnist")
    with pytest.raises(CnnlabError, match="content md5 .* does not match mnist's published") as exc:
        data.load("mnist", root=tmp_path)
    one_line(exc)
    write_idx_set(tmp_path / "fashion-mnist")  # no published content md5: the counts are checked
    with pytest.raises(CnnlabError, match="should have 60,000 training and 10,000 test") as exc:
        data.load("fashion-mnist", root=tmp_path)
    one_line(exc)
    assert len(data.load("fashion-mnist", root=tmp_path, verify=False).train) == 30


# ---------------------------------------------------------------- CIFAR-10


def test_cifar_binary_layout(tmp_path):
    written = write_cifar_bin(tmp_path / "cifar10" / "cifar-10-batches-bin")
    ds = data.load("cifar10", root=tmp_path, verify=False)
    assert ds.classes == tuple(f"class{i}" for i in range(10))
    assert ds.train.images.shape == (20, 32, 32, 3) and ds.train.images.flags.c_contiguous
    np.testing.assert_array_equal(ds.train.images[:4], written["data_batch_1"][0])
    np.testing.assert_array_equal(ds.train.images[16:], written["data_batch_5"][0])
    np.testing.assert_array_equal(ds.test.labels, written["test_batch"][1])
    # a pixel check independent of the helper: record byte 1 is the red top-left pixel
    raw = (tmp_path / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    assert ds.test.images[0, 0, 0, 0] == raw[1] and ds.test.images[0, 0, 0, 1] == raw[1 + 1024]
    assert ds.test.images[0, 0, 1, 2] == raw[1 + 2048 + 1]


def test_cifar_binary_files_directly_in_root_without_meta(tmp_path):
    write_cifar_bin(tmp_path, meta=False)
    ds = data.load("cifar10", root=tmp_path, verify=False)
    assert ds.classes[0] == "airplane" and len(ds.test) == 4


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_layout(tmp_path, protocol):
    written = write_cifar_py(tmp_path / "cifar-10-batches-py", protocol=protocol)
    ds = data.load("cifar10", root=tmp_path, verify=False)
    assert ds.classes[3] == "py3"
    np.testing.assert_array_equal(ds.train.images[4:8], written["data_batch_2"][0])
    np.testing.assert_array_equal(ds.test.labels, written["test_batch"][1])


def test_cifar_counts_checked_when_verifying(tmp_path):
    write_cifar_bin(tmp_path / "cifar10")
    with pytest.raises(CnnlabError, match="should have 50,000 training"):
        data.load("cifar10", root=tmp_path)


def test_cifar_binary_corruptions(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar_bin(folder)
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(CnnlabError, match="not a whole number of 3,073-byte") as exc:
        data.load("cifar10", root=tmp_path, verify=False)
    assert str(bad) in one_line(exc)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    bad.write_bytes(cifar_records(images, np.array([1, 12])))
    with pytest.raises(CnnlabError, match="label 12 at index 1") as exc:
        data.load("cifar10", root=tmp_path, verify=False)
    bad.write_bytes(cifar_records(images, np.array([1, 2])))
    (folder / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(CnnlabError, match="2 class names, expected 10"):
        data.load("cifar10", root=tmp_path, verify=False)


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cifar_pickle_refuses_arbitrary_globals(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_py(folder)
    marker = tmp_path / "pwned"
    bad = folder / "data_batch_1"
    bad.write_bytes(pickle.dumps({"data": Evil(marker), "labels": []}, protocol=2))
    with pytest.raises(CnnlabError, match="refusing to load global [a-z_]+.open") as exc:
        data.load("cifar10", root=tmp_path, verify=False)
    assert str(bad) in one_line(exc) and not marker.exists()
    # os.system by name, and a numpy array subclass smuggled through _reconstruct
    bad.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(CnnlabError, match="refusing to load global os.system"):
        data.load("cifar10", root=tmp_path, verify=False)
    assert not marker.exists()
    bad.write_bytes(pickle.dumps(np.ma.masked_array([1, 2]), protocol=2))
    with pytest.raises(CnnlabError, match="refusing to load global numpy.ma"):
        data.load("cifar10", root=tmp_path, verify=False)


def test_cifar_python_bad_contents(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_py(folder)
    bad = folder / "test_batch"
    bad.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.float32), "labels": [0] * 4}))
    with pytest.raises(CnnlabError, match="'data' should be uint8"):
        data.load("cifar10", root=tmp_path, verify=False)
    bad.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}))
    with pytest.raises(CnnlabError, match="4 images but 3 labels"):
        data.load("cifar10", root=tmp_path, verify=False)
    bad.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CnnlabError, match="not a CIFAR-10 batch dict"):
        data.load("cifar10", root=tmp_path, verify=False)
    bad.write_bytes(b"\x80\x02}q")
    with pytest.raises(CnnlabError, match="not a readable pickle") as exc:
        data.load("cifar10", root=tmp_path, verify=False)
    assert str(bad) in one_line(exc)


def test_restricted_unpickler_admits_plain_values(tmp_path):
    value = {"a": [1, 2.5, 3j, b"x", "y", None, True], "s": {1, 2}, "f": frozenset([3]),
             "t": (np.arange(6, dtype=np.int16).reshape(2, 3), np.float64(1.5)), "b": bytearray(b"z")}
    for protocol in (0, 2, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        out = cifar.restricted_load(path)
        np.testing.assert_array_equal(out["t"][0], value["t"][0])
        assert out["a"] == value["a"] and out["s"] == {1, 2} and out["t"][1] == 1.5


# ---------------------------------------------------------------- search order


def test_search_order_root_env_cache_system(tmp_path, monkeypatch):
    places = {p: tmp_path / p for p in ("root", "env", "xdg/cnnlab", "system")}
    for place in places.values():
        write_idx_set(place / "mnist", n_train=3)
    monkeypatch.setenv("CNNLAB_DATA", str(places["env"]))
    assert data.locate("mnist", root=places["root"]) == places["root"] / "mnist"
    assert data.locate("mnist") == places["env"] / "mnist"
    monkeypatch.delenv("CNNLAB_DATA")
    assert data.locate("mnist") == places["xdg/cnnlab"] / "mnist"
    assert data.locations()["mnist"] == [places["xdg/cnnlab"] / "mnist", places["system"] / "mnist"]
    (places["xdg/cnnlab"] / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert data.locate("mnist") == places["system"] / "mnist"
    assert data.load("mnist", verify=False).source == str(places["system"] / "mnist")


def test_cnnlab_data_can_list_several_folders_and_files_directly(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "b", gz=False)  # files directly in the folder
    monkeypatch.setenv("CNNLAB_DATA", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert data.locate("fashion-mnist") == tmp_path / "b"


def test_torchvision_layout_and_dotted_names(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_idx_set(folder, gz=False)
    for f in folder.iterdir():
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    assert data.locate("mnist", root=tmp_path) == folder
    assert len(data.load("mnist", root=tmp_path, verify=False).train) == 30


def test_cache_home_follows_xdg(tmp_path, monkeypatch):
    assert data.cache_dir() == tmp_path / "xdg" / "cnnlab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert data.cache_dir() == Path.home() / ".cache" / "cnnlab"


def test_not_found_lists_every_place_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    write_idx_set(tmp_path / "env" / "mnist")
    (tmp_path / "env" / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(CnnlabError) as exc:
        data.load("mnist", root=tmp_path / "r", download=False)
    message = one_line(exc)
    for part in ("root", str(tmp_path / "r"), "$CNNLAB_DATA", "user cache", str(tmp_path / "xdg" / "cnnlab"),
                 "system", "lacks t10k-images-idx3-ubyte", "download=False", "cnnlab data fetch mnist",
                 "ossci-datasets"):
        assert part in message
    with pytest.raises(CnnlabError, match="download failed: .*network disabled in tests"):
        data.load("mnist")
    assert not (tmp_path / "xdg").exists()  # a failed download leaves no folders behind


def test_unknown_name_and_bad_options(tmp_path):
    with pytest.raises(CnnlabError, match="unknown dataset 'mnits'; use one of mnist"):
        data.load("mnits")
    write_idx_set(tmp_path / "mnist")
    for kwargs, words in [({"train_size": 0}, "train_size"), ({"train_size": 31}, "at most 30"),
                          ({"val_size": 1.5}, "fraction"), ({"val_size": 30}, "leave some"),
                          ({"val_size": -1}, ">= 0"), ({"seed": 1.5}, "seed")]:
        with pytest.raises(CnnlabError, match=words):
            data.load("mnist", root=tmp_path, verify=False, **kwargs)


def test_train_size_takes_the_first_images_and_val_is_seeded(tmp_path):
    arrays = write_idx_set(tmp_path / "mnist", n_train=50)
    full = arrays["train-images-idx3-ubyte"]
    ds = data.load("mnist", root=tmp_path, verify=False, train_size=20)
    np.testing.assert_array_equal(ds.train.images[..., 0], full[:20])
    assert ds.val is None
    a = data.load("mnist", root=tmp_path, verify=False, train_size=20, val_size=0.25, seed=3)
    b = data.load("mnist", root=tmp_path, verify=False, train_size=20, val_size=5, seed=3)
    c = data.load("mnist", root=tmp_path, verify=False, train_size=20, val_size=5, seed=4)
    assert (len(a.train), len(a.val)) == (15, 5)
    np.testing.assert_array_equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val.images, c.val.images)
    # val and train partition the first 20, each in original order
    rows = {full[i].tobytes(): i for i in range(20)}
    val_idx = [rows[x.tobytes()] for x in a.val.images[..., 0]]
    train_idx = [rows[x.tobytes()] for x in a.train.images[..., 0]]
    assert sorted(val_idx + train_idx) == list(range(20)) and val_idx == sorted(val_idx)
    assert list(a.splits()) == ["train", "val", "test"]


# ---------------------------------------------------------------- parsed cache


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "mnist")
    first = data.load("mnist", root=tmp_path, verify=False)
    entries = list((tmp_path / "xdg" / "cnnlab" / "parsed").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("mnist-")

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again")

    with monkeypatch.context() as m:
        m.setattr("cnnlab.data.idx.read_idx_pair", no_parse)
        second = data.load("mnist", root=tmp_path, verify=False)
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert second.train.images.flags.writeable and second.classes == first.classes
    # a changed source file is a cache miss
    arrays = write_idx_set(tmp_path / "mnist", n_train=7)
    third = data.load("mnist", root=tmp_path, verify=False)
    np.testing.assert_array_equal(third.train.labels, arrays["train-labels-idx1-ubyte"])


def test_cache_write_failure_is_harmless(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "mnist")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    ds = data.load("mnist", root=tmp_path, verify=False)
    assert len(ds.train) == 30
    assert list((tmp_path / "xdg" / "cnnlab" / "parsed").iterdir()) == []


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    arrays = write_idx_set(tmp_path / "mnist")
    data.load("mnist", root=tmp_path, verify=False)
    (entry,) = (tmp_path / "xdg" / "cnnlab" / "parsed").iterdir()
    npy = entry / "train_images.npy"
    npy.write_bytes(npy.read_bytes()[:200])
    ds = data.load("mnist", root=tmp_path, verify=False)
    np.testing.assert_array_equal(ds.train.images[..., 0], arrays["train-images-idx3-ubyte"])
    assert cache.read("mnist", entry.name.split("-", 1)[1]) is not None
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]


def test_failed_parse_writes_no_cache_and_cache_false_writes_nothing(tmp_path):
    write_idx_set(tmp_path / "mnist")
    with pytest.raises(CnnlabError):
        data.load("mnist", root=tmp_path)  # content md5 mismatch
    assert not (tmp_path / "xdg" / "cnnlab" / "parsed").exists()
    data.load("mnist", root=tmp_path, verify=False, cache=False)
    assert not (tmp_path / "xdg").exists()


def test_package_does_not_import_torch():
    code = "import sys, cnnlab.data; assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
