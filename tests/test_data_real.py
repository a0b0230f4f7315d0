"""The real datasets in ../shared (and Debian's Fashion-MNIST when installed); skipped when absent.

Each dataset is parsed once per module into a private cache (XDG_CACHE_HOME in tmp), then
loaded again from that cache.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnlab import data
from cnnlab.data import sources
from cnnlab.errors import CnnlabError

# Uncompressed IDX MD5s, copied from ../shared/README.md.
MNIST_MD5 = {
    "train-images": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels": "a25bea736e30d166cdddb491f175f624",
    "t10k-images": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        m.delenv("CNNLAB_DATA", raising=False)
        yield m


@pytest.fixture(scope="module")
def mnist(env, mnist_dir):
    return data.load("mnist", root=mnist_dir.parent, download=False)


@pytest.fixture(scope="module")
def cifar10(env, cifar10_dir, datasets_root):
    env.setenv("CNNLAB_DATA", str(datasets_root))
    return data.load("cifar10", download=False)


def idx_md5(array: np.ndarray) -> str:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return hashlib.md5(header + array.astype(np.uint8).tobytes()).hexdigest()


def test_mnist_bytes_are_read_exactly(mnist, mnist_dir):
    assert mnist.source == str(mnist_dir)
    assert (len(mnist.train), len(mnist.test)) == (60_000, 10_000)
    assert mnist.input_shape == (28, 28, 1) and mnist.classes == tuple("0123456789")
    assert idx_md5(mnist.train.images[..., 0]) == MNIST_MD5["train-images"]
    assert idx_md5(mnist.train.labels) == MNIST_MD5["train-labels"]
    assert idx_md5(mnist.test.images[..., 0]) == MNIST_MD5["t10k-images"]
    assert idx_md5(mnist.test.labels) == MNIST_MD5["t10k-labels"]
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_mnist_from_cache_is_identical_and_tutorial_options(mnist, mnist_dir):
    again = data.load("mnist", root=mnist_dir.parent, train_size=20_000, val_size=0.1)
    np.testing.assert_array_equal(again.train.images[:5], mnist.train.images[:5])
    assert (len(again.train), len(again.val), len(again.test)) == (18_000, 2_000, 10_000)
    mean, std = data.channel_stats(mnist.train.images)
    np.testing.assert_allclose([mean[0], std[0]], [0.1307, 0.3081], atol=5e-5)


def test_cifar10_counts_labels_and_mean(cifar10, cifar10_dir):
    assert cifar10.source == str(cifar10_dir / "cifar-10-batches-bin")
    assert (len(cifar10.train), len(cifar10.test)) == (50_000, 10_000)
    assert cifar10.input_shape == (32, 32, 3) and cifar10.classes[0] == "airplane"
    assert cifar10.classes[-1] == "truck"
    assert cifar10.train.class_counts(10).tolist() == [5_000] * 10
    assert cifar10.test.class_counts(10).tolist() == [1_000] * 10
    assert cifar10.train.labels[:5].tolist() == [6, 9, 9, 4, 1]
    assert cifar10.test.labels[:5].tolist() == [3, 8, 8, 0, 6]
    mean, std = data.channel_stats(cifar10.train.images)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=5e-5)
    np.testing.assert_allclose(std, [0.2470, 0.2435, 0.2616], atol=5e-5)


def test_cifar10_pixels_follow_the_record_layout(cifar10, cifar10_dir):
    with open(cifar10_dir / "cifar-10-batches-bin" / "test_batch.bin", "rb") as f:
        record = np.frombuffer(f.read(3073), np.uint8)
    expected = record[1:].reshape(3, 32, 32).transpose(1, 2, 0)  # R, G, B planes -> HWC
    np.testing.assert_array_equal(cifar10.test.images[0], expected)
    again = data.load("cifar10", download=False)  # from the parsed cache
    np.testing.assert_array_equal(again.test.images, cifar10.test.images)
    assert again.train.images.flags.c_contiguous and again.train.images.flags.writeable


def test_mnist_files_are_not_accepted_as_fashion_mnist(env, mnist_dir, monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_DIR", mnist_dir / "nowhere")
    with pytest.raises(CnnlabError, match="is mnist's train-images-idx3-ubyte, not fashion-mnist's"):
        data.load("fashion-mnist", root=mnist_dir, download=False, cache=False)


def test_data_list_sees_the_shared_folder(env, datasets_root, mnist_dir, cifar10_dir):
    found = data.locations(root=datasets_root)
    assert found["mnist"][0] == mnist_dir
    assert found["cifar10"][0] == cifar10_dir / "cifar-10-batches-bin"


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian(env):
    ds = data.load("fashion-mnist", download=False)
    assert ds.source == str(FASHION_DIR)
    assert (len(ds.train), len(ds.test)) == (60_000, 10_000)
    assert ds.train.class_counts(10).tolist() == [6_000] * 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.train.labels[:3].tolist() == [9, 0, 0]
