"""Downloads and archives, offline: a fake urlopen serves local bytes."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
import urllib.error
import urllib.response
from email.message import Message
from pathlib import Path

import numpy as np
import pytest

from cnnlab import data
from cnnlab.data import download
from cnnlab.data.archive import extract_archive
from cnnlab.data.registry import DATASETS, Download
from cnnlab.errors import CnnlabError

RNG = np.random.default_rng(1)


pytestmark = pytest.mark.usefixtures("offline_data_env")


class FakeWeb:
    """urlopen(request, timeout=...) serving bytes by URL; records the URLs asked for."""

    def __init__(self, pages: dict[str, bytes], fail_after: int | None = None, interrupt: bool = False):
        self.pages, self.fail_after, self.interrupt, self.asked = pages, fail_after, interrupt, []

    def __call__(self, request, timeout=None):
        url = request.full_url
        self.asked.append(url)
        if url not in self.pages:
            raise urllib.error.URLError("Name or service not known")
        body = self.pages[url]
        headers = Message()
        headers["Content-Length"] = str(len(body))
        stream = io.BytesIO(body)
        if self.fail_after is not None or self.interrupt:
            stream = Broken(body[: self.fail_after or 10], self.interrupt)
        return urllib.response.addinfourl(stream, headers, url, 200)


class Broken(io.BytesIO):
    """Serves some bytes, then the connection drops (or the user presses Ctrl-C)."""

    def __init__(self, head: bytes, interrupt: bool):
        super().__init__(head)
        self.interrupt = interrupt

    def read(self, n=-1):
        chunk = super().read(n)
        if chunk:
            return chunk
        raise KeyboardInterrupt if self.interrupt else ConnectionResetError(104, "Connection reset by peer")


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def idx_gz(array: np.ndarray) -> bytes:
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    return gzip.compress(raw)


def fake_mnist(monkeypatch) -> dict[str, bytes]:
    """Replace MNIST's download list by synthetic files with their own MD5s; return url -> bytes."""
    blobs = {
        "train-images-idx3-ubyte.gz": idx_gz(RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte.gz": idx_gz(RNG.integers(0, 10, 12, dtype=np.uint8)),
        "t10k-images-idx3-ubyte.gz": idx_gz(RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": idx_gz(RNG.integers(0, 10, 5, dtype=np.uint8)),
    }
    spec = DATASETS["mnist"]
    downloads = tuple(Download(d.filename, d.urls, md5(blobs[d.filename])) for d in spec.downloads)
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, downloads=downloads))
    return {d.urls[0]: blobs[d.filename] for d in downloads}


def cifar_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def cifar_members(n=3) -> dict[str, bytes]:
    out = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = RNG.integers(0, 256, (n, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        out[f"cifar-10-batches-bin/{name}"] = records.tobytes()
    out["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(f"c{i}" for i in range(10)).encode()
    return out


ITEM = Download("f.bin", ("https://a.example/f.bin", "https://b.example/f.bin"), md5(b"payload" * 1000))


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_download_success_is_verified_and_atomic(tmp_path):
    web = FakeWeb({ITEM.urls[0]: b"payload" * 1000})
    path = download.download_file(ITEM, tmp_path / "c", progress=False, opener=web)
    assert path == tmp_path / "c" / "f.bin" and path.read_bytes() == b"payload" * 1000
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["f.bin"]


def test_second_mirror_used_when_first_fails(tmp_path):
    web = FakeWeb({ITEM.urls[1]: b"payload" * 1000})
    download.download_file(ITEM, tmp_path, progress=False, opener=web)
    assert web.asked == list(ITEM.urls)


def test_checksum_mismatch_leaves_nothing_and_cache_untouched(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "keep.txt").write_bytes(b"already here")
    (folder / "f.bin").write_bytes(b"an older complete copy")
    before = listing(folder)
    web = FakeWeb({url: b"tampered" for url in ITEM.urls})
    with pytest.raises(CnnlabError, match="checksum mismatch .*published") as exc:
        download.download_file(ITEM, folder, progress=False, opener=web)
    assert "\n" not in str(exc.value) and ITEM.urls[0] in str(exc.value) and ITEM.urls[1] in str(exc.value)
    assert listing(folder) == before


@pytest.mark.parametrize("how", ["no network", "connection reset", "ctrl-c"])
def test_failed_download_leaves_no_partial_file(tmp_path, how):
    folder = tmp_path / "cache"
    folder.mkdir()
    pages = {} if how == "no network" else {u: b"payload" * 1000 for u in ITEM.urls}
    web = FakeWeb(pages, fail_after=100 if how == "connection reset" else None, interrupt=how == "ctrl-c")
    expected = KeyboardInterrupt if how == "ctrl-c" else CnnlabError
    with pytest.raises(expected):
        download.download_file(ITEM, folder, progress=False, opener=web)
    assert list(folder.iterdir()) == []


def test_progress_bar_can_be_silenced(tmp_path, capsys):
    web = FakeWeb({ITEM.urls[0]: b"payload" * 1000})
    download.download_file(ITEM, tmp_path / "a", progress=False, opener=web)
    assert capsys.readouterr().err == ""
    download.download_file(ITEM, tmp_path / "b", progress=True, opener=web)
    assert "f.bin" in capsys.readouterr().err


def test_load_downloads_mnist_into_the_cache_once(tmp_path, monkeypatch):
    web = FakeWeb(fake_mnist(monkeypatch))
    monkeypatch.setattr("urllib.request.urlopen", web)
    ds = data.load("mnist", verify=False, progress=False)
    assert (len(ds.train), len(ds.test)) == (12, 5)
    assert ds.source == str(tmp_path / "xdg" / "cnnlab" / "mnist")
    assert len(web.asked) == 4
    data.load("mnist", verify=False, progress=False)
    assert len(web.asked) == 4  # found in the cache, not downloaded again


def test_partial_download_keeps_complete_files_and_resumes(tmp_path, monkeypatch):
    pages = fake_mnist(monkeypatch)
    missing = next(url for url in pages if "t10k-labels" in url)
    monkeypatch.setattr("urllib.request.urlopen", FakeWeb({u: b for u, b in pages.items() if u != missing}))
    with pytest.raises(CnnlabError, match="mnist not found; .*download failed: could not download t10k-labels"):
        data.load("mnist", verify=False, progress=False)
    cached = tmp_path / "xdg" / "cnnlab" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
    web = FakeWeb(pages)
    monkeypatch.setattr("urllib.request.urlopen", web)
    assert data.fetch("mnist", progress=False) == cached
    assert web.asked == [missing]


def test_fetch_returns_existing_copy_without_downloading(tmp_path, monkeypatch):
    folder = tmp_path / "mine" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, blob in cifar_members().items():
        (folder.parent / name).write_bytes(blob)
    web = FakeWeb({})
    assert data.fetch("cifar10", root=tmp_path / "mine", opener=web) == folder
    assert web.asked == []


def test_fetch_cifar10_downloads_verifies_and_extracts(tmp_path, monkeypatch):
    archive = cifar_tar(cifar_members())
    spec = DATASETS["cifar10"]
    item = dataclasses.replace(spec.downloads[0], md5=md5(archive))
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(spec, downloads=(item,)))
    web = FakeWeb({item.urls[0]: archive})
    path = data.fetch("cifar10", progress=False, opener=web)
    cache = tmp_path / "xdg" / "cnnlab" / "cifar10"
    assert path == cache / "cifar-10-batches-bin"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-bin"]  # archive removed
    ds = data.load("cifar10", verify=False)
    assert len(ds.train) == 15 and ds.classes[0] == "c0"


def test_real_cifar10_checksum_refuses_a_fake_archive(tmp_path):
    web = FakeWeb({DATASETS["cifar10"].downloads[0].urls[0]: cifar_tar(cifar_members())})
    with pytest.raises(CnnlabError, match="c32a1d4ab5d03f1284b67883e8d87530"):
        data.fetch("cifar10", progress=False, opener=web)
    assert not (tmp_path / "xdg").exists()


def test_archive_in_a_root_is_verified_then_extracted_into_the_cache(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "cifar-10-binary.tar.gz").write_bytes(cifar_tar(cifar_members()))
    assert data.locate("cifar10", root=tmp_path / "r") == tmp_path / "r" / "cifar-10-binary.tar.gz"
    with pytest.raises(CnnlabError, match="does not match the published c32a1d4a") as exc:
        data.load("cifar10", root=tmp_path / "r")
    assert "cifar-10-binary.tar.gz" in str(exc.value)
    ds = data.load("cifar10", root=tmp_path / "r", verify=False)
    assert len(ds.test) == 3 and ds.source.endswith("cifar-10-binary.tar.gz")
    assert list((tmp_path / "xdg" / "cnnlab" / "extracted").iterdir())[0].joinpath("cifar-10-batches-bin").is_dir()


def link_tar(kind: str, name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("archive_bytes, words", [
    (cifar_tar({"../escape.txt": b"x"}), "outside the target"),
    (cifar_tar({"cifar-10-batches-bin/../../escape.txt": b"x"}), "outside the target"),
    (cifar_tar({"/tmp/cnnlab-absolute-escape.txt": b"x"}), "absolute path"),
    (link_tar(tarfile.SYMTYPE, "cifar-10-batches-bin", "/etc"), "points outside"),
    (link_tar(tarfile.SYMTYPE, "a/link", "../../escape"), "points outside"),
    (link_tar(tarfile.LNKTYPE, "hard", "../escape.txt"), "points outside"),
    (link_tar(tarfile.FIFOTYPE, "fifo", ""), "device or pipe"),
])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, archive_bytes, words):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(archive_bytes)
    target = tmp_path / "out" / "inner"
    with pytest.raises(CnnlabError, match=words) as exc:
        extract_archive(archive, target)
    assert str(archive) in str(exc.value) and "\n" not in str(exc.value)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "escape.txt").exists()
    assert not Path("/tmp/cnnlab-absolute-escape.txt").exists()


def test_truncated_archive(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(cifar_tar(cifar_members())[:5000])
    with pytest.raises(CnnlabError, match="truncated or corrupt") as exc:
        extract_archive(archive, tmp_path / "out")
    assert str(archive) in str(exc.value)
    assert list((tmp_path / "out").iterdir()) == []
