"""Atomic file writes: the one way airgap writes state, records and keys.

A temporary file in the same directory, created exclusively with its final
mode (never readable by others, not even for an instant), written, fsynced,
renamed over the target with ``os.replace``, and the directory fsynced, so a
crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from airgap.exceptions import InputError, OperationError, OutputExistsError

# Errors that say the caller named a path that cannot be used (exit 2); any
# other OSError (disk full, I/O error) is the operation failing (exit 1).
_INPUT_ERRNOS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EEXIST,
    errno.ELOOP, errno.ENAMETOOLONG, errno.EROFS, errno.EINVAL,
})


def fsync_dir(directory: str | os.PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def os_error(exc: OSError, path: str | os.PathLike | None = None, doing: str = "") -> InputError | OperationError:
    """*exc* as the airgap error it means: a path the caller must fix (exit 2) or a failed operation (exit 1)."""
    where = os.fspath(path if path is not None else exc.filename or "")
    what = f"cannot {doing}: " if doing else ""
    message = f"{where}: {what}{exc.strerror or exc}" if where else f"{what}{exc.strerror or exc}"
    return InputError(message) if exc.errno in _INPUT_ERRNOS else OperationError(message)


def check_output(path: str | os.PathLike, *, force: bool, directory: bool = False) -> Path:
    """Before any work: refuse an existing *path* (file, directory or link) unless *force*.

    *directory*: the output is a directory written as a whole (with *force*, an
    existing one is replaced; a file in its place is refused).  Missing parent
    directories are made; one that cannot be (a file in the way, no permission)
    is an input error, so a long build never fails at its end.
    """
    out = Path(path)
    if os.path.lexists(out):
        if not force:
            raise OutputExistsError(os.fspath(out))
        is_dir = out.is_dir() and not out.is_symlink()
        if is_dir != directory:
            raise InputError(f"{out}: is a directory; give the file to write" if is_dir
                             else f"{out}: exists and is not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, out.parent, "make the output's directory") from None
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: not a directory; cannot write {out.name} there")
    return out


def check_output_dir(path: str | os.PathLike) -> Path:
    """A directory to write into: made if missing; anything else in the way is an input error."""
    out = Path(path)
    if os.path.lexists(out) and not out.is_dir():
        raise InputError(f"{out}: not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, out, "make the directory") from None
    return out


def place(tmp: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool) -> None:
    """Give the finished file *tmp* its name *dest* (same directory).

    With *overwrite*, ``os.replace``.  Without, a hard link, which fails if
    *dest* exists (even one made since :func:`check_output` looked), so a file
    nobody asked to replace is never lost; then *tmp* is removed.
    """
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest, follow_symlinks=False)
    except FileExistsError:
        raise OutputExistsError(os.fspath(dest)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename (a narrow race).
        if os.path.lexists(dest):
            raise OutputExistsError(os.fspath(dest)) from None
        os.rename(tmp, dest)
        return
    os.unlink(tmp)


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644, *, overwrite: bool = True) -> None:
    """Replace *path* with *data*, atomically and durably (without *overwrite*: only if it does not exist)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # an odd umask must not widen or narrow it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        place(tmp, path, overwrite=overwrite)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
