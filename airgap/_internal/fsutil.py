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

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from airgap.exceptions import InputError, InvalidValueError, OperationError, OutputExistsError, UnsafePathError

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
    target = path if path is not None else exc.filename
    where = display(target) if target else ""
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


def place(tmp: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool, dir_fd: int | None = None) -> None:
    """Give the finished file *tmp* its name *dest* (same directory; both relative to *dir_fd* if given).

    With *overwrite*, ``os.replace``.  Without, a hard link, which fails if
    *dest* exists (even one made since :func:`check_output` looked), so a file
    nobody asked to replace is never lost; then *tmp* is removed.
    """
    # Keyword arguments only with a directory: a plain path call stays os.replace(tmp, dest).
    fds = {} if dir_fd is None else {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    if overwrite:
        os.replace(tmp, dest, **fds)
        return
    try:
        os.link(tmp, dest, follow_symlinks=False, **fds)
    except FileExistsError:
        raise OutputExistsError(os.fspath(dest)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename (a narrow race).
        if _lexists(dest, dir_fd):
            raise OutputExistsError(os.fspath(dest)) from None
        os.rename(tmp, dest, **fds)
        return
    os.unlink(tmp, **({} if dir_fd is None else {"dir_fd": dir_fd}))


def _lexists(path: str | os.PathLike, dir_fd: int | None) -> bool:
    try:
        os.lstat(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


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
    def open_root(cls, path: str | os.PathLike, *, create: bool = False, mode: int = 0o755) -> Dir:
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

    def child(self, name: str, *, create: bool = False, mode: int = 0o755) -> Dir:
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

    def walk(self, rel: str | os.PathLike, *, create: bool = False, mode: int = 0o755) -> Dir:
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

    def write_atomic(self, name: str, data: bytes, mode: int = 0o644, *, overwrite: bool = True) -> None:
        """Replace *name* with *data*, atomically and durably; a link at *name* is refused."""
        with self.atomic_writer(name, mode, overwrite=overwrite) as f:
            f.write(data)

    @contextlib.contextmanager
    def atomic_writer(self, name: str, mode: int = 0o644, *, overwrite: bool = True) -> Iterator[IO[bytes]]:
        """A file that replaces *name* when the block ends without an error (see :func:`atomic_writer`)."""
        self.refuse_link(name)
        tmp = _temp_name(name)
        fd = self.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(fd, mode)  # an odd umask must not widen or narrow it
                yield f
                f.flush()
                os.fsync(fd)
            place(tmp, name, overwrite=overwrite, dir_fd=self.fd)
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

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _one_component(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidValueError(f"{name!r} is not a single path component")


def open_under(root: str | os.PathLike, rel: str | os.PathLike = "", *, create: bool = False, mode: int = 0o755) -> Dir:
    """Open ``root/rel``: *root* as given, every component of *rel* never followed."""
    with Dir.open_root(root, create=create, mode=mode) as top:
        return top.walk(rel, create=create, mode=mode)


def _temp_name(name: str) -> str:
    return f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644, *, root: str | os.PathLike | None = None,
                 overwrite: bool = True) -> None:
    """Replace *path* with *data*, atomically and durably (without *overwrite*: only if it does not exist).

    With *root* (a directory *path* lies under), no component between *root*
    and *path* may be a link, and neither may *path* itself; missing
    directories are created.
    """
    with atomic_writer(path, mode, root=root, overwrite=overwrite) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike, mode: int = 0o644, *, root: str | os.PathLike | None = None, overwrite: bool = True
) -> Iterator[IO[bytes]]:
    """A binary file that replaces *path* when the ``with`` block ends without an error.

    The file is a temporary one next to *path* (``f.name`` while it is open),
    created exclusively with *mode*; at the end of the block it is flushed,
    fsynced, renamed over *path* and the directory fsynced.  An exception in
    the block (a failed check included) removes it and leaves *path* as it
    was.  Without *overwrite* the file is given its name only if *path* does
    not exist (:class:`OutputExistsError` otherwise, see :func:`place`).
    *root*: as for :func:`atomic_write`.
    """
    path = Path(path)
    if root is not None:
        rel = path.relative_to(root)
        with open_under(root, rel.parent, create=True) as d, d.atomic_writer(rel.name, mode, overwrite=overwrite) as f:
            yield f
        return
    tmp = path.with_name(_temp_name(path.name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with open(tmp, "wb", opener=lambda p, _: os.open(p, flags, mode)) as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        place(tmp, path, overwrite=overwrite)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def read_capped(
    path: str | os.PathLike, cap: int, what: str, *, too_large: Callable[[str], Exception] = InputError
) -> bytes:
    """The whole file at *path*, which is *what* (``the bundle spec``) and at most *cap* bytes.

    Never reads more than ``cap + 1`` bytes.  :class:`InputError` names the file
    and the reason when it cannot be read; ``too_large(message)`` is raised
    when it is larger than *cap*.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as exc:
        raise InputError(f"{display(path)}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise too_large(f"{display(path)}: larger than {cap} bytes, too large for {what}")
    return data


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
