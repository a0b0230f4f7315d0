"""Downloads from the official locations into the user cache, checksum-verified and atomic.

Each file streams into a hidden temporary file beside its destination while its MD5 is
computed (``cnnlab.files.atomic_open``); only when the whole file has arrived and its MD5
matches the published one is it renamed (atomic on one filesystem) to its final name. Any
failure, including Ctrl-C, deletes the temporary file, so the cache only ever holds complete,
verified files.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cnnlab import files
from cnnlab.data import sources
from cnnlab.data.archive import extract_archive
from cnnlab.data.registry import Download, get_spec
from cnnlab.errors import CnnlabError

# What a download did, for a caller who wants to see or redirect it (logging.getLogger("cnnlab")):
# which URL, which mirror failed before another was tried, what was verified. All at INFO: a
# mirror that fails is either made up for by the next or ends in the DownloadError naming them all.
log = logging.getLogger(__name__)

TIMEOUT_S = 60
_CHUNK = 1 << 20
_USER_AGENT = "cnnlab (dataset downloader)"  # no project URL: cnnlab has no public home yet


class DownloadError(CnnlabError):
    """A download failed: network error, HTTP error or checksum mismatch."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(url: str, out, opener: Callable, progress: bool, desc: str) -> str:
    from tqdm.auto import tqdm  # lazy: only downloads need it

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.md5()
    with opener(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length") if response.headers else None
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  disable=not progress, leave=False) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _download_one(url: str, dest: Path, md5: str, opener: Callable, progress: bool) -> None:
    try:
        with files.atomic_open(dest) as out:  # renamed into place only when complete and verified
            got = _stream(url, out, opener, progress, dest.name)
            if got != md5:
                raise DownloadError(f"checksum mismatch (md5 {got}, published {md5})")
    except CnnlabError:  # a checksum mismatch, or a full disk: already one line
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(f"{type(exc).__name__}: {exc}") from None


def download_file(download: Download, folder: Path, *, progress: bool = True,
                  opener: Callable | None = None) -> Path:
    """Fetch ``download`` into ``folder`` (trying its mirrors in order) and return its path.

    ``opener(request, timeout=...)`` defaults to ``urllib.request.urlopen``; tests pass a fake.
    Raises DownloadError (a CnnlabError) naming every URL tried; nothing is left behind.
    """
    opener = opener or urllib.request.urlopen
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / download.filename
    errors = []
    for url in download.urls:
        log.info("downloading %s into %s", url, folder)
        try:
            _download_one(url, dest, download.md5, opener, progress)
            log.info("%s: md5 %s verified", dest.name, download.md5)
            return dest
        except DownloadError as exc:
            log.info("download of %s failed (%s)", url, exc)
            errors.append(f"{url}: {exc}")
    for path in created:  # leave the cache as it was: remove the folders made for this file
        try:
            path.rmdir()
        except OSError:
            break
    raise DownloadError(f"could not download {download.filename}: {'; '.join(errors)}")


def fetch(name: str, *, root=None, force: bool = False, progress: bool = True,
          opener: Callable | None = None) -> Path:
    """Make ``name`` present and return where it is (a folder of files, or an archive).

    If it is already present in the search path (see ``cnnlab.data.sources``) and ``force`` is
    False, nothing is downloaded. Otherwise its files are downloaded from the official location
    into ``<user cache>/<name>``; files already there (complete and verified, because only those
    are ever renamed into place) are not downloaded again. CIFAR-10's archive is extracted
    safely and then deleted.
    """
    spec = get_spec(name)
    if not force:
        found = sources.find(spec, root)
        if found is not None:
            return found.path
    folder = sources.cache_dir() / spec.name
    for download in spec.downloads:
        if not (folder / download.filename).is_file():
            download_file(download, folder, progress=progress, opener=opener)
    if spec.format == "cifar10":
        archive = folder / spec.downloads[0].filename
        extract_archive(archive, folder)
        archive.unlink()
    found, _ = sources.find_in(spec, folder)
    if found is None:  # pragma: no cover - the official archives always hold the files
        raise CnnlabError(f"downloaded {spec.name} into {folder} but its files are not there; report this")
    return found.path
