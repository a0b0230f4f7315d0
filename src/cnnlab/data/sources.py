"""Where dataset files are: the search order, and what counts as "present" in a folder.

Search order (first hit wins):
  1. the ``root`` argument;
  2. ``$CNNLAB_DATA`` (several folders may be joined with ``os.pathsep``);
  3. the user cache, ``$XDG_CACHE_HOME/cnnlab`` (default ``~/.cache/cnnlab``), where downloads go;
  4. the system folder ``/usr/share/datasets`` (Debian's ``dataset-*`` packages, e.g.
     ``apt-get install dataset-fashion-mnist`` -> ``/usr/share/datasets/fashion-mnist``).
Within the first two, both ``<root>/<name>/...`` and the files directly in ``<root>`` count;
in the cache and system folder only ``<root>/<name>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.data.registry import ARCHIVES, DATASETS, DatasetSpec, get_spec
from cnnlab.files import cache_dir  # the one definition; re-exported as cnnlab.data.cache_dir

SYSTEM_DIR = Path("/usr/share/datasets")
CIFAR_BIN_DIR = "cifar-10-batches-bin"
CIFAR_PY_DIR = "cifar-10-batches-py"
CIFAR_BIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR_PY_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def search_roots(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(label, folder) pairs in search order; labels are for messages."""
    roots: list[tuple[str, Path]] = []
    if root is not None:
        roots.append(("root", Path(root)))
    for part in os.environ.get("CNNLAB_DATA", "").split(os.pathsep):
        if part:
            roots.append(("$CNNLAB_DATA", Path(part)))
    roots.append(("user cache", cache_dir()))
    roots.append(("system", SYSTEM_DIR))
    return roots


def _root_dirs(spec: DatasetSpec, label: str, base: Path) -> list[Path]:
    dirs = [base / d for d in spec.dirnames]
    if label in ("root", "$CNNLAB_DATA"):
        dirs.append(base)
    return dirs


def candidate_dirs(spec: DatasetSpec, root: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that is checked for ``spec``'s files, in order, without duplicates."""
    out: list[Path] = []
    for label, base in search_roots(root):
        for d in _root_dirs(spec, label, base):
            if d not in out:
                out.append(d)
    return out


@dataclass(frozen=True)
class Found:
    """Files of one dataset found in one place.

    layout: "idx" (files: role -> path), "cifar-bin" / "cifar-py" (files: batch name -> path,
    plus "meta" when present), or "archive" (files: {"archive": path}).
    path: the folder holding the files, or the archive itself.
    """

    path: Path
    layout: str
    files: dict[str, Path] = field(default_factory=dict)


def _idx_variants(base: str) -> list[str]:
    # Uncompressed first (fastest to read); "train-images.idx3-ubyte" is how some unzip tools
    # and the Windows-era copies of MNIST name the files.
    dotted = base.replace("-idx", ".idx")
    return [base, f"{base}.gz", dotted, f"{dotted}.gz"]


def _find_idx(spec: DatasetSpec, folder: Path) -> tuple[Found | None, list[str]]:
    files: dict[str, Path] = {}
    missing: list[str] = []
    for role, base in spec.files.items():
        hit = next((folder / v for v in _idx_variants(base) if (folder / v).is_file()), None)
        if hit is None:
            missing.append(f"{base}[.gz]")
        else:
            files[role] = hit
    if not missing:
        return Found(folder, "idx", files), []
    return None, missing if files else []


def _find_cifar(folder: Path) -> tuple[Found | None, list[str]]:
    partial: list[str] = []
    for sub in (folder / CIFAR_BIN_DIR, folder):
        present = [name for name in CIFAR_BIN_FILES if (sub / name).is_file()]
        if len(present) == len(CIFAR_BIN_FILES):
            files = {name: sub / name for name in CIFAR_BIN_FILES}
            if (sub / "batches.meta.txt").is_file():
                files["meta"] = sub / "batches.meta.txt"
            return Found(sub, "cifar-bin", files), []
        if present:
            partial = [f"{sub / n}" for n in CIFAR_BIN_FILES if n not in present]
    for sub in (folder / CIFAR_PY_DIR, folder):
        present = [name for name in CIFAR_PY_FILES if (sub / name).is_file()]
        if len(present) == len(CIFAR_PY_FILES):
            files = {name: sub / name for name in CIFAR_PY_FILES}
            if (sub / "batches.meta").is_file():
                files["meta"] = sub / "batches.meta"
            return Found(sub, "cifar-py", files), []
        if present:
            partial = [f"{sub / n}" for n in CIFAR_PY_FILES if n not in present]
    for archive in ARCHIVES:
        if (folder / archive).is_file():
            return Found(folder / archive, "archive", {"archive": folder / archive}), []
    return None, partial


def find_in(spec: DatasetSpec, folder: Path) -> tuple[Found | None, list[str]]:
    """``spec``'s files in ``folder``, or (None, names of files missing from a partial copy)."""
    if not folder.is_dir():
        return None, []
    if spec.format == "idx":
        return _find_idx(spec, folder)
    return _find_cifar(folder)


def find(spec: DatasetSpec, root: str | os.PathLike | None = None) -> Found | None:
    """The first place in search order that holds ``spec``'s files."""
    for folder in candidate_dirs(spec, root):
        found, _ = find_in(spec, folder)
        if found is not None:
            return found
    return None


def locate(name: str, *, root: str | os.PathLike | None = None) -> Path | None:
    """Where ``load(name)`` would read from: a folder of files, an archive, or None.

    ``folder:PATH`` names locate to PATH when it is a directory.
    """
    if name.startswith("folder:"):
        path = Path(name[len("folder:") :]).expanduser()
        return path if path.is_dir() else None
    found = find(get_spec(name), root)
    return found.path if found else None


def locations(*, root: str | os.PathLike | None = None) -> dict[str, list[Path]]:
    """Every place each known dataset is present, in search order (for ``cnnlab data list``)."""
    out: dict[str, list[Path]] = {}
    for name, spec in DATASETS.items():
        hits = []
        for folder in candidate_dirs(spec, root):
            found, _ = find_in(spec, folder)
            if found is not None and found.path not in hits:
                hits.append(found.path)
        out[name] = hits
    return out


def not_found_message(spec: DatasetSpec, root: str | os.PathLike | None, download_note: str) -> str:
    """One line: every folder looked in, partial copies, the download outcome, and the fix.

    ``/x[/mnist|/MNIST/raw]`` means /x itself, /x/mnist and /x/MNIST/raw.
    """
    looked, partial = [], []
    for label, base in search_roots(root):
        subs = "|".join(f"/{d}" for d in spec.dirnames)
        direct = label in ("root", "$CNNLAB_DATA")
        looked.append(f"{label} {base}[{subs}]" if direct else f"{label} {base}/{{{subs[1:].replace('|/', '|')}}}")
        for folder in _root_dirs(spec, label, base):
            _, missing = find_in(spec, folder)
            if missing:
                partial.append(f"{folder} lacks {', '.join(Path(m).name for m in missing)}")
    names = ", ".join(d.filename for d in spec.downloads)
    url = spec.downloads[0].urls[0].rsplit("/", 1)[0] + "/"
    incomplete = f"; incomplete copies: {'; '.join(partial)}" if partial else ""
    return (
        f"{spec.name} not found; looked in {', '.join(looked)}{incomplete}; {download_note}; "
        f"fix: run `cnnlab data fetch {spec.name}` while online, or put {names} from {url} "
        f"into <dir>/{spec.dirnames[0]}/ and set CNNLAB_DATA=<dir> (or pass root=<dir>)"
    )
