"""Writing files without following links: the one way airgap writes state, records and files.

Atomic writes: a temporary file in the same directory, created exclusively with
its final mode (never readable by others, not even for an instant), written,
fsynced, renamed over the target with ``os.replace``, and the directory
fsynced, so a crash leaves either the old file or the new one, never a torn one.

No path is followed below a root.  The directories an operator names
(``--state``, ``--files-dir``, the output of ``extract``) are opened once; every
component below is opened relative to its parent's descriptor with
``O_NOFOLLOW`` (``openat``), and every leaf is created with ``O_NOFOLLOW`` or
replaced by ``rename`` (which replaces a link, never writes through it).  A
symbolic link met on the way is refused and named (:class:`UnsafePathError`):
whoever planted it inside the state directory does not get to choose where
airgap writes.  The root itself is the operator's choice and is opened as
given.

Names are ``str`` as Python gives them: bytes that are not UTF-8 arrive as
surrogate escapes (PEP 383) and go back to the same bytes through
``os.fsencode``.  :func:`display` turns such a name into printable text and
:func:`record_names` records it losslessly in JSON (display text plus the
bytes in hex).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from airgap.exceptions import UnsafePathError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def display(path: str | os.PathLike | bytes) -> str:
    """*path* as printable, valid UTF-8 text: bytes that are not UTF-8 appear as ``\\xff``."""
    from airgap._internal.text import escape

    return escape(os.fsencode(path).decode("utf-8", "backslashreplace"))


def record_names(obj: Any) -> Any:
    """*obj* (a JSON-able mapping) with every name that is not UTF-8 recorded losslessly.

    Such a name (surrogate escapes, PEP 383) cannot be UTF-8 JSON, and airgap's
    strict reader refuses lone surrogate escapes (Go would read U+FFFD).  So the
    value becomes its :func:`display` text and a sibling ``<key>_hex`` holds the
    name's exact bytes in hex: ``bytes.fromhex(doc["bundle_hex"])`` is the name.
    """
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if isinstance(value, str) and not _is_utf8(value):
                out[key] = display(value)
                out[f"{key}_hex"] = os.fsencode(value).hex()
            else:
                out[key] = record_names(value)
        return out
    if isinstance(obj, list):
        return [display(v) if isinstance(v, str) and not _is_utf8(v) else record_names(v) for v in obj]
    return obj


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _refusal(path: Path, dir_fd: int, name: str) -> UnsafePathError:
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return UnsafePathError(display(path), "could not be opened as a directory")
    if stat.S_ISLNK(st.st_mode):
        return UnsafePathError(display(path), "is a symbolic link; airgap never writes through a link "
                                              "below the directory it was given: remove the link")
    return UnsafePathError(display(path), "is not a directory; move it out of the way")


class Dir:
    """An open directory; every name below it is opened relative to it, never followed."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    # -- opening ----------------------------------------------------------
    @classmethod
    def open_root(cls, path: str | os.PathLike, *, create: bool = False, mode: int = 0o755) -> "Dir":
        """Open the directory the operator named (links in *its* path are the operator's)."""
        path = Path(path)
        if create:
            try:
                path.mkdir(mode=mode, parents=True, exist_ok=True)
            except FileExistsError:
                raise UnsafePathError(display(path), "is not a directory") from None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UnsafePathError(display(path), "no such directory") from None
        except NotADirectoryError:
            raise UnsafePathError(display(path), "is not a directory") from None
        return cls(fd, path)

    def child(self, name: str, *, create: bool = False, mode: int = 0o755) -> "Dir":
        """The directory *name* inside this one (one component), created if asked; never a link."""
        _one_component(name)
        path = self.path / name
        try:
            return Dir(os.open(name, _DIR_FLAGS, dir_fd=self.fd), path)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _refusal(path, self.fd, name) from None
            raise
        try:
            os.mkdir(name, mode, dir_fd=self.fd)
        except FileExistsError:
            pass  # made by someone else meanwhile: opened (and judged) below
        try:
            return Dir(os.open(name, _DIR_FLAGS, dir_fd=self.fd), path)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _refusal(path, self.fd, name) from None
            raise

    def walk(self, rel: str | os.PathLike, *, create: bool = False, mode: int = 0o755) -> "Dir":
        """The directory at relative path *rel*, each component opened with O_NOFOLLOW."""
        parts = [p for p in PurePosixPath(os.fspath(rel)).parts if p not in ("", ".")]
        current = Dir(os.dup(self.fd), self.path)
        try:
            for part in parts:
                nxt = current.child(part, create=create, mode=mode)
                current.close()
                current = nxt
        except BaseException:
            current.close()
            raise
        return current

    # -- files ------------------------------------------------------------
    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return None

    def refuse_link(self, name: str) -> None:
        """Refuse *name* if it is a symbolic link (dangling or not)."""
        st = self.lstat(name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(display(self.path / name), "is a symbolic link; airgap never writes through "
                                                             "a link below the directory it was given: remove the link")

    def open_file(self, name: str, flags: int, mode: int = 0o644) -> int:
        """``openat`` with O_NOFOLLOW: a link at *name* is refused and named."""
        _one_component(name)
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.refuse_link(name)
            raise

    def write_atomic(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Replace *name* with *data*, atomically and durably; a link at *name* is refused."""
        self.refuse_link(name)
        tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = self.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            try:
                os.fchmod(fd, mode)  # an odd umask must not widen or narrow it
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.unlink(tmp)
            raise
        self.fsync()

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def symlink(self, target: str, name: str) -> None:
        os.symlink(target, name, dir_fd=self.fd)

    def readlink(self, name: str) -> str | None:
        try:
            return os.readlink(name, dir_fd=self.fd)
        except (FileNotFoundError, OSError):
            return None

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def rmtree(self, name: str) -> None:
        """Remove *name* (a tree or a file) without following any link inside it."""
        st = self.lstat(name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            import shutil

            shutil.rmtree(name, dir_fd=self.fd, ignore_errors=True)
        else:
            self.unlink(name)

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Dir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _one_component(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a single path component")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def open_under(root: str | os.PathLike, rel: str | os.PathLike = "", *, create: bool = False, mode: int = 0o755) -> Dir:
    """Open ``root/rel``: *root* as given, every component of *rel* never followed."""
    with Dir.open_root(root, create=create, mode=mode) as top:
        return top.walk(rel, create=create, mode=mode)


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644, *, root: str | os.PathLike | None = None) -> None:
    """Replace *path* with *data*, atomically and durably.

    With *root* (a directory *path* lies under), no component between *root*
    and *path* may be a link, and neither may *path* itself; missing
    directories are created.
    """
    path = Path(path)
    if root is not None:
        rel = path.relative_to(root)
        with open_under(root, rel.parent, create=True) as d:
            d.write_atomic(rel.name, data, mode)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o644, *, root: str | os.PathLike | None = None) -> int:
    """Open *path* without following a link at it (or, with *root*, at any component below *root*)."""
    path = Path(path)
    if root is None:
        try:
            return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(display(path), "is a symbolic link; airgap never writes through it: "
                                                     "remove the link") from None
            raise
    rel = path.relative_to(root)
    with open_under(root, rel.parent, create=bool(flags & os.O_CREAT)) as d:
        return d.open_file(rel.name, flags, mode)
