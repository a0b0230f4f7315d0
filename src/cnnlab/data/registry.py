"""The datasets cnnlab knows by name: files, official URLs, published checksums, classes.

A registry is a plain dict (``DATASETS``) of frozen specs. Checksums are the ones the
publishers print next to their downloads; they check the archive bytes we download.
MNIST's *content* MD5s (of the uncompressed IDX files) also let us check files that were
re-compressed elsewhere, as in ``../shared`` or a distribution package.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Download:
    """One file to download: its name on disk, mirrors tried in order, and its MD5."""

    filename: str
    urls: tuple[str, ...]
    md5: str


@dataclass(frozen=True)
class DatasetSpec:
    """What cnnlab knows about a named dataset.

    ``format`` is ``"idx"`` (the four MNIST-style files) or ``"cifar10"``.
    ``files`` maps a role (``train_images``, ...) to an IDX file's base name (without ``.gz``).
    ``content_md5`` maps an uncompressed IDX base name to its MD5, where published.
    ``counts`` is (train, test): checked when ``verify=True``.
    """

    name: str
    title: str
    format: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    counts: tuple[int, int]
    dirnames: tuple[str, ...]
    downloads: tuple[Download, ...]
    homepage: str
    licence: str
    files: dict[str, str] = field(default_factory=dict)
    content_md5: dict[str, str] = field(default_factory=dict)


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# torchvision tries the ossci-datasets S3 mirror first: yann.lecun.com often refuses
# scripted downloads. The .gz MD5s are the ones torchvision.datasets.MNIST checks.
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Uncompressed IDX content, from ../shared/README.md (a byte-exact rebuild of the official files).
_MNIST_CONTENT_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Published in the README of github.com/zalandoresearch/fashion-mnist (the .gz files).
# Debian's dataset-fashion-mnist re-compresses them, so only downloads are checked with these.
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12e480ee83cd310",
}

# www.cs.toronto.edu/~kriz/cifar.html publishes both archives' MD5s. We download the binary
# one: its records parse with one np.frombuffer and need no unpickling at all.
CIFAR10_BINARY = Download(
    "cifar-10-binary.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    "c32a1d4ab5d03f1284b67883e8d87530",
)
CIFAR10_PYTHON = Download(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "c58f30108f718f92721af3b95e74349a",
)


def _idx_downloads(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[Download, ...]:
    return tuple(
        Download(f"{base}.gz", tuple(m + f"{base}.gz" for m in mirrors), md5s[base])
        for base in IDX_FILES.values()
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST handwritten digits",
        format="idx",
        classes=tuple(str(d) for d in range(10)),
        shape=(28, 28, 1),
        counts=(60_000, 10_000),
        dirnames=("mnist", "MNIST/raw"),  # MNIST/raw: where torchvision puts it
        downloads=_idx_downloads(_MNIST_MIRRORS, _MNIST_GZ_MD5),
        homepage="http://yann.lecun.com/exdb/mnist/",
        licence="CC BY-SA 3.0",
        files=dict(IDX_FILES),
        content_md5=dict(_MNIST_CONTENT_MD5),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando) clothing",
        format="idx",
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        shape=(28, 28, 1),
        counts=(60_000, 10_000),
        dirnames=("fashion-mnist", "FashionMNIST/raw"),
        downloads=_idx_downloads((_FASHION_URL,), _FASHION_GZ_MD5),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        licence="MIT",
        files=dict(IDX_FILES),
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        title="CIFAR-10 tiny colour images",
        format="cifar10",
        classes=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),
        shape=(32, 32, 3),
        counts=(50_000, 10_000),
        dirnames=("cifar10", "cifar-10"),
        downloads=(CIFAR10_BINARY,),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        licence="no licence stated (Krizhevsky 2009)",
    ),
}

ARCHIVES = {CIFAR10_BINARY.filename: CIFAR10_BINARY, CIFAR10_PYTHON.filename: CIFAR10_PYTHON}


def get_spec(name: str) -> DatasetSpec:
    """The spec for a known name, or a CnnlabError listing the known names."""
    from cnnlab.errors import CnnlabError

    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise CnnlabError(
            f"unknown dataset {name!r}; use one of {known}, digits, or folder:PATH for a folder of class folders"
        ) from None
