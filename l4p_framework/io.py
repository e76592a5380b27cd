"""File helpers: atomic writes (of a file or of a whole folder) and sha256."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from .errors import L4PError


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class WriteError(L4PError):
    """A file could not be written (full disk, no permission); the file's previous content is intact."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"cannot write {self.path}: {reason}; free disk space (or choose another output folder) and rerun "
            "(training: with --resume)"
        )


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path) on a temp file beside `path`, fsync it, then rename it onto `path`.

    The temp file is `.NAME.tmp-PID-XXXX`; those left beside `path` by a killed process (PID gone) are
    deleted first. On any failure the temp file is removed and `path` keeps its old content: a reader
    never sees a half-written file. An OSError or SafetensorError (full disk) becomes a WriteError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise L4PError(f"cannot create folder {path.parent} for {path.name}: {exc}") from None
    remove_stale_folders(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # normal permissions (umask)
        write(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # a late ENOSPC/EIO surfaces before the rename
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(path, _reason(exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically (UTF-8)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


# -- whole folders -------------------------------------------------------------------------------
# A folder NAME is built in a hidden sibling `.NAME.partial-PID-XXXX` and renamed onto NAME when it
# is complete; an old NAME being replaced is first renamed to `.NAME.old-PID-XXXX`. So a reader of
# NAME sees a complete old or a complete new folder, never a half-written file. A SIGKILL (or a power
# cut) can leave only such hidden folders behind; the next atomic_folder for the same NAME deletes
# those whose process (PID) no longer runs. (Between the two renames of a replacement NAME is briefly
# absent; a kill exactly there leaves the old and the new folder under their hidden names.)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no harmless liveness probe (os.kill would terminate it): keep the folder
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def remove_stale_folders(path: str | os.PathLike) -> list[Path]:
    """Delete the hidden `.NAME.partial-PID-*` / `.NAME.old-PID-*` folders and `.NAME.tmp-PID-*` files
    beside `path` whose PID is gone.

    Those of a process that still runs (another `l4p run` into the same place) are kept. Returns the
    paths deleted.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:partial|old|tmp)-(\d+)-\w+")
    removed = []
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and not _pid_alive(int(match[1])):
            try:
                _remove(entry)
            except OSError:  # removed meanwhile, or not ours to remove: leave it
                continue
            removed.append(entry)
    return removed


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`: a late ENOSPC/EIO surfaces before the rename."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if os.name == "posix":  # folders cannot be opened for fsync elsewhere
            fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)  # what survives is a stale .old-PID folder, removed later
    else:
        path.unlink(missing_ok=True)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite and os.path.lexists(path):
        aside: Path | None = path.parent / f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:  # another run moved it away meanwhile
            aside = None
        try:
            os.rename(tmp, path)
        except BaseException:
            if aside is not None:
                os.rename(aside, path)  # put the old folder back
            raise
        if aside is not None:
            _remove(aside)
        return
    try:
        os.rename(tmp, path)  # replaces an empty folder; refuses a non-empty folder or a file
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, "already exists", str(path)) from None
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden empty folder beside `path`; when the block ends, rename it onto `path` whole.

    Write every file into the yielded folder. On success its files are fsynced and it becomes `path`: an
    existing `path` is replaced when `overwrite` (nothing of it is left), else FileExistsError (an empty
    folder is replaced). On any failure (OSError such as a full disk, KeyboardInterrupt) the hidden
    folder is deleted, the exception propagates and `path` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give the folder normal permissions
        _publish(tmp, path, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
