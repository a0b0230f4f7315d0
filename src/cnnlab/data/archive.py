"""Safe, all-or-nothing extraction of a dataset's .tar.gz archive.

Every member is checked before anything is written: no absolute paths, no ``..``, no link
that points outside the target, nothing but plain files, folders and in-tree links. Where
Python has it (3.12, and 3.8.17+/3.9.17+/3.10.12+/3.11.4+ backports), tarfile's own
``filter="data"`` checks again. Files are extracted into a hidden temporary folder beside the
target and renamed into place only when the whole archive has extracted.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from cnnlab.errors import CnnlabError
from cnnlab.files import make_temporary_folder


def _inside(base: Path, path: Path) -> bool:
    base = base.resolve()
    path = path.resolve()
    return path == base or base in path.parents


def _check_member(member: tarfile.TarInfo, tmp: Path, archive: Path) -> None:
    name = member.name
    fix = "the archive is unsafe or corrupt; delete it and download it again from the official site"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (parts and parts[0].endswith(":")):
        raise CnnlabError(f"{archive}: member {name!r} has an absolute path; {fix}")
    if ".." in parts or not _inside(tmp, tmp / name):
        raise CnnlabError(f"{archive}: member {name!r} would be written outside the target folder; {fix}")
    if member.issym():
        target = (tmp / name).parent / member.linkname
        if os.path.isabs(member.linkname) or not _inside(tmp, target):
            raise CnnlabError(f"{archive}: link {name!r} -> {member.linkname!r} points outside the target; {fix}")
    elif member.islnk():
        if os.path.isabs(member.linkname) or not _inside(tmp, tmp / member.linkname):
            raise CnnlabError(f"{archive}: hard link {name!r} -> {member.linkname!r} points outside; {fix}")
    elif not (member.isfile() or member.isdir()):
        raise CnnlabError(f"{archive}: member {name!r} is a device or pipe, not a file; {fix}")


def extract_archive(archive: Path, into: Path) -> list[Path]:
    """Extract ``archive`` into folder ``into``; return the top-level entries placed there.

    A top-level entry that already exists in ``into`` is kept as it is (it came from an earlier,
    complete extraction). On any error nothing new is left in ``into``.
    """
    into.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary_folder(into, "extract")  # normal permissions; a killed run's is removable
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, tmp, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without the PEP 706 backport
                    tar.extractall(tmp, members=members)  # noqa: S202 - members checked above
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise CnnlabError(
                f"{archive}: cannot extract ({type(exc).__name__}: {exc}); the archive is truncated or "
                "corrupt; delete it and download it again"
            ) from None
        placed = []
        for entry in sorted(tmp.iterdir()):
            dest = into / entry.name
            if not dest.exists():
                os.rename(entry, dest)
            placed.append(dest)
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
