"""Writing files safely, and where cnnlab keeps its cache. Standard library only.

Every file cnnlab writes (checkpoints, ``history.csv``, ``config.json``, ``metrics.json``,
reports, every image a command saves, downloads) goes through :func:`atomic_open`:

1. the bytes go to a temporary file beside the target (``.NAME.PID.RANDOM.tmp``; same
   folder, so the rename below stays on one filesystem and is atomic);
2. the file is flushed and ``fsync``-ed, then renamed over the target with ``os.replace``;
3. the folder is ``fsync``-ed, so the rename itself is on disk.

A power loss or kill therefore leaves either the old complete file or the new complete
file, never a renamed but empty one; any failure (an exception, Ctrl-C, a full disk)
removes the temporary file and leaves an existing good file untouched. A full disk becomes
a one-line :class:`~cnnlab.errors.CnnlabError` naming the path, even when the writer (say
``torch.save``) wraps the ``OSError`` in its own exception: the file object records it.

Permissions are what ``open(path, "w")`` gives: ``0o666 & ~umask`` for a new file, the old
mode when replacing one (``tempfile.mkstemp`` would make it 0600, unreadable to a web
server or a colleague).

Forms, all with the same guarantees::

    write_bytes(path, data)                     write_text(path, text)
    with atomic_open(path) as f:                # binary; "w" for text
        torch.save(obj, f)                      # or np.save(f, a), img.save(f, format="PNG")
    write_with(path, lambda f: torch.save(obj, f))
    save_figure(fig, path, dpi=100)             # the format follows the suffix, as savefig's
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from cnnlab.errors import CnnlabError

__all__ = ["atomic_open", "cache_dir", "make_temporary_folder", "remove_stale_temporaries", "save_figure",
           "write_bytes", "write_text", "write_with"]

TMP_SUFFIX = ".tmp"
# errno -> how a one-line error names it. EDQUOT is a full disk as far as the user is concerned.
_FULL = {errno.ENOSPC: "no space left on device", getattr(errno, "EDQUOT", -1): "disk quota exceeded"}


class CannotWrite(CnnlabError, OSError):
    """A file cnnlab cannot create (a read-only folder or file system, no permission, no such folder),
    as one line naming it. Still an OSError, so code that falls back when a cache folder is not
    writable keeps doing so."""


class _RecordingFile(io.FileIO):
    """A raw file that remembers a disk-full error, whoever catches and re-wraps it."""

    full_errno: int | None = None

    def write(self, b) -> int:
        try:
            return super().write(b)
        except OSError as exc:
            if exc.errno in _FULL:
                self.full_errno = exc.errno
            raise


def _temporary_name(path: Path) -> Path:
    # NAME_MAX is 255 on common filesystems: keep the prefix short enough for any target name.
    return path.with_name(f".{path.name[:200]}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def _open_temporary(path: Path, *, binary: bool, encoding: str | None, newline: str | None):
    tmp = _temporary_name(path)
    try:
        # O_EXCL: never follow a planted link or share a name; 0o666 lets the umask decide, as open() does.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno in _FULL:
            raise CnnlabError(f"{_FULL[exc.errno]} writing {path}; free some space and run the command again") from None
        why = {errno.EROFS: "the file system is read-only", errno.EACCES: "no permission to write in that folder",
               errno.EPERM: "no permission to write in that folder",
               errno.ENOENT: "the folder does not exist", errno.ENOTDIR: "a part of the path is a file, not a folder",
               }.get(exc.errno, exc.strerror or type(exc).__name__)
        raise CannotWrite(f"cannot write {path}: {why}; choose a folder you can write to") from None
    raw = _RecordingFile(fd, "wb", closefd=True)
    try:
        with contextlib.suppress(OSError, NotImplementedError):  # replacing a file keeps its mode, as open(path, "w") does
            os.chmod(fd, os.stat(path).st_mode & 0o7777)
        buffered = io.BufferedWriter(raw)
        f = buffered if binary else io.TextIOWrapper(buffered, encoding=encoding, newline=newline)
    except BaseException:
        raw.close()
        tmp.unlink(missing_ok=True)
        raise
    return tmp, raw, f


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable. Not every OS/filesystem can open or sync a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in _FULL:
            raise
    finally:
        os.close(fd)


def _full_disk_errno(exc: BaseException, raw: _RecordingFile, folder: Path) -> int | None:
    """The errno of a full disk behind ``exc``, or None when the failure is something else.

    Found in the exception chain, else recorded by the file object (``torch.save`` turns it
    into a RuntimeError), else read off the folder's free space: ``ndarray.tofile`` (used by
    ``np.save``) writes through the file descriptor and reports a short write with no errno.
    """
    seen = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _FULL:
            return cause.errno
        cause = cause.__cause__ or cause.__context__
    if raw.full_errno is not None:
        return raw.full_errno
    if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, FileNotFoundError):
        try:
            st = os.statvfs(folder)  # before the temporary file is removed: it holds the space
        except (OSError, AttributeError):  # no statvfs on Windows
            return None
        free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize  # root may use reserved blocks
        if free < max(64 * 1024, 16 * st.f_frsize):
            return errno.ENOSPC
    return None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the block ends without an error.

    ``mode`` is ``"wb"`` (default) or ``"w"`` (text; ``encoding`` defaults to UTF-8). The
    folder must exist. On any exception the temporary file is removed, ``path`` is left as
    it was, and a full disk is raised as CnnlabError "no space left on device writing PATH".
    """
    if mode not in ("wb", "w"):
        raise CnnlabError(f"atomic_open mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    binary = mode == "wb"
    tmp, raw, f = _open_temporary(path, binary=binary, encoding=None if binary else encoding or "utf-8",
                                  newline=newline)
    try:
        try:
            yield f
            f.flush()
            os.fsync(raw.fileno())
        finally:
            f.close()
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as exc:
        code = _full_disk_errno(exc, raw, path.parent)
        tmp.unlink(missing_ok=True)
        if code is not None:
            raise CnnlabError(f"{_FULL[code]} writing {path}; free some space and run the command again "
                              "(the previous file, if any, is unchanged)") from exc
        raise


def write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` with a binary file object, atomically replacing ``path``; return ``path``."""
    with atomic_open(path) as f:
        write(f)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; return ``path``."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", newline: str | None = None) -> Path:
    """Atomically replace ``path`` with ``text`` (UTF-8 by default); return ``path``."""
    with atomic_open(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``fig.savefig(path, ...)`` made atomic; the format follows the suffix as with savefig."""
    from cnnlab.text import clean_figure_text

    path = Path(path)
    fmt = savefig_kwargs.pop("format", None) or path.suffix.lstrip(".").lower() or None
    clean_figure_text(fig)  # titles made from file names that are not UTF-8 would fail to render
    return write_with(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def make_temporary_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden, uniquely named folder in ``parent`` with normal permissions
    (``0o777 & ~umask``; ``tempfile.mkdtemp`` makes 0700), for building a folder to rename into place."""
    for _ in range(100):
        folder = Path(parent) / f".{prefix[:200]}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            folder.mkdir(mode=0o777)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot make a temporary folder in {parent}")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders that killed writers left in ``folder``; return them.

    Only entries named as :func:`atomic_open` and :func:`make_temporary_folder` name them
    whose process is gone (on this machine) are removed: a live writer's are left alone.
    """
    removed = []
    for entry in Path(folder).glob(f".*{TMP_SUFFIX}"):
        parts = entry.name[: -len(TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists but is someone else's, or cannot tell: keep the file
    return True


def cache_dir(*parts: str) -> Path:
    """cnnlab's user cache, ``$XDG_CACHE_HOME/cnnlab`` (else ``~/.cache/cnnlab``), joined with ``parts``.

    The XDG Base Directory spec says a relative ``XDG_CACHE_HOME`` is invalid and must be
    ignored, so only an absolute one counts. Nothing is created here.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root.joinpath("cnnlab", *parts)
