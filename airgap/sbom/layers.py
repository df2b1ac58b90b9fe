"""Reading package databases out of image layers, as a stream, with whiteouts applied.

A layer is read once, front to back (gzip, zstd or plain tar): headers are
parsed, the data of every member is skipped except for the few files that are
package databases, and those are kept only up to :data:`MAX_DB_FILE`.  Memory
does not grow with the layer's size.

The filesystem an image runs with is its layers applied in order, as a container
runtime applies them (OCI image-spec, "Applying changesets"):

* ``dir/.wh.name`` deletes ``dir/name`` (and everything under it) from the layers below;
* ``dir/.wh..wh..opq`` deletes everything under ``dir`` from the layers below;
* an entry that is not a directory replaces whatever the layers below had at its
  path, a whole directory tree included; a directory replaces a file;
* whiteouts never hide entries of their own layer; a later entry for the same path wins.

:class:`FsView` is that result for the files that matter here.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, BinaryIO, TypeAlias

from airgap.exceptions import FormatError, InputError
from airgap.sbom.packages import PARSERS, Package, parse_os_release

__all__ = [
    "CHUNK",
    "DbFile",
    "FsView",
    "GZIP",
    "LAYER_TYPES",
    "MAX_DB_FILE",
    "MAX_TAR_HEADER",
    "PLAIN",
    "Restart",
    "ZSTD",
    "apply_layer",
    "decompressed",
    "kind_of",
    "piped",
]

MAX_DB_FILE = 64 * 1024 * 1024  # a dpkg status of a full desktop is ~5 MiB
MAX_TAR_HEADER = 1024 * 1024  # PAX and GNU long-name headers are read into memory: cap them
CHUNK = 1024 * 1024
# A layer's uncompressed tar as apply_layer reads it: a pipe, zstd's stdout, or a GzipFile
# (which typeshed does not count as an IO[bytes]).
TarStream: TypeAlias = "IO[bytes] | gzip.GzipFile"

PLAIN = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
}
GZIP = {
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
ZSTD = {
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}
LAYER_TYPES = PLAIN | GZIP | ZSTD

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_DPKG_STATUS = "var/lib/dpkg/status"
_DPKG_STATUS_D = "var/lib/dpkg/status.d/"
_APK = "lib/apk/db/installed"
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_RPM = ("var/lib/rpm/rpmdb.sqlite", "var/lib/rpm/Packages", "var/lib/rpm/Packages.db",
        "usr/lib/sysimage/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/Packages.db")


def kind_of(path: str) -> str | None:
    """Which database a layer path is, if any: dpkg, apk, python, os-release, rpm."""
    if path == _DPKG_STATUS:
        return "dpkg"
    if path.startswith(_DPKG_STATUS_D):
        rest = path[len(_DPKG_STATUS_D):]
        return "dpkg" if rest and "/" not in rest and not rest.endswith(".md5sums") else None
    if path == _APK:
        return "apk"
    if path.endswith(".dist-info/METADATA") and path.count("/") >= 1:
        return "python"
    if path in _OS_RELEASE:
        return "os-release"
    if path in _RPM:
        return "rpm"
    return None


@dataclass(frozen=True)
class DbFile:
    """One database file as the layers leave it: parsed packages (or os-release fields), or why not."""

    kind: str
    layer: str  # digest of the layer that wrote it
    packages: tuple[Package, ...] = ()
    os_release: dict | None = None
    symlink: str | None = None  # os-release is usually a link to ../usr/lib/os-release
    problem: str | None = None  # set when the file could not be read: the SBOM is incomplete
    skipped: int = 0


@dataclass
class FsView:
    """The database files of an image's filesystem after some of its layers."""

    files: dict[str, DbFile] = field(default_factory=dict)

    def copy(self) -> FsView:
        return FsView(dict(self.files))

    def key(self) -> frozenset:
        """The view by value: two layer chains that leave the same files have the same key."""
        return frozenset(
            (path, f.kind, f.layer, f.packages, tuple(sorted((f.os_release or {}).items())), f.symlink, f.problem, f.skipped)
            for path, f in self.files.items()
        )


def _norm(name: str) -> str | None:
    path = posixpath.normpath("/" + name).lstrip("/")
    return path if path and path != "." else None


def _ancestors(paths) -> set[str]:
    out: set[str] = {""}
    for p in paths:
        while "/" in p:
            p = p.rsplit("/", 1)[0]
            out.add(p)
    return out


class _CappedTarInfo(tarfile.TarInfo):
    """tarfile reads PAX and GNU long-name headers whole: refuse absurd ones instead."""

    def _proc_pax(self, tf):
        if self.size > MAX_TAR_HEADER:
            raise tarfile.HeaderError(f"PAX header of {self.size} bytes (cap {MAX_TAR_HEADER})")
        return super()._proc_pax(tf)

    def _proc_gnulong(self, tf):
        if self.size > MAX_TAR_HEADER:
            raise tarfile.HeaderError(f"GNU long-name header of {self.size} bytes (cap {MAX_TAR_HEADER})")
        return super()._proc_gnulong(tf)


def apply_layer(view: FsView, tar_stream: TarStream, layer: str, artifact: str) -> FsView:
    """*view* with one layer applied; *tar_stream* is the layer's uncompressed tar, read once."""
    lower = dict(view.files)  # what the layers below leave; whiteouts delete from here only
    ancestors = _ancestors(lower)
    mine: dict[str, DbFile] = {}  # what this layer writes

    def delete(path: str, *, subtree_only: bool = False) -> None:
        if not subtree_only:
            lower.pop(path, None)
        if path in ancestors:
            prefix = path + "/" if path else ""
            for p in [p for p in lower if p.startswith(prefix)]:
                del lower[p]

    try:
        with tarfile.open(fileobj=tar_stream, mode="r|", tarinfo=_CappedTarInfo, bufsize=CHUNK) as tf:
            for member in tf:
                path = _norm(member.name)
                if path is None or path == ".." or path.startswith("../"):
                    continue
                parent, base = posixpath.split(path)
                if base == _OPAQUE:
                    delete(parent, subtree_only=True)
                    continue
                if base.startswith(_WHITEOUT):
                    delete(posixpath.join(parent, base[len(_WHITEOUT):]))
                    continue
                if member.isdir():
                    lower.pop(path, None)
                    mine.pop(path, None)
                    continue
                delete(path)
                mine.pop(path, None)
                kind = kind_of(path)
                if kind is not None:
                    mine[path] = _read_db(tf, member, kind, path, layer, mine)
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise FormatError(artifact, f"not a readable layer: {exc}") from None
    lower.update(mine)
    return FsView(lower)


def _read_db(tf: tarfile.TarFile, member: tarfile.TarInfo, kind: str, path: str, layer: str,
             mine: dict[str, DbFile]) -> DbFile:
    if member.issym():
        if kind == "os-release":
            return DbFile(kind, layer, symlink=posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname)).lstrip("/"))
        return DbFile(kind, layer, problem=f"{path} is a symbolic link ({member.linkname}); not followed")
    if member.islnk():
        target = _norm(member.linkname)
        if target in mine:
            return mine[target]
        return DbFile(kind, layer, problem=f"{path} is a hard link to {member.linkname}, which is not a package database; not read")
    if not member.isreg():
        return DbFile(kind, layer, problem=f"{path} is not a regular file; not read")
    if kind == "rpm":
        return DbFile(kind, layer, problem=f"{path}: RPM databases are not read")
    if member.size > MAX_DB_FILE:
        return DbFile(kind, layer, problem=f"{path} is {member.size} bytes, over the cap of {MAX_DB_FILE}; not read")
    f = tf.extractfile(member)
    data = f.read(MAX_DB_FILE + 1) if f is not None else b""
    if kind == "os-release":
        return DbFile(kind, layer, os_release=parse_os_release(data))
    parsed = PARSERS[kind](data)
    return DbFile(kind, layer, packages=tuple(parsed.packages), skipped=parsed.skipped)


# --------------------------------------------------------------------------- streams


class Restart(Exception):
    """The source restarted a download from byte 0: read the layer again from the start."""


class _PipeSink:
    """What a blob source writes into (``write``, ``seek``, ``tell``): the write end of a pipe."""

    def __init__(self, fd: int):
        self.fd, self.pos = fd, 0

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.pos += len(data)
        return len(data)

    def seek(self, pos: int) -> None:
        if pos != self.pos:
            raise Restart()

    def tell(self) -> int:
        return self.pos


@contextmanager
def piped(produce: Callable[[_PipeSink], None]) -> Iterator[BinaryIO]:
    """Run *produce(sink)* in a thread and yield what it writes as a readable stream.

    The producer (a registry download or a local copy) checks the blob's digest
    after the last byte, so the stream is drained to the end and the producer's
    error, if any, wins over what the reader made of truncated data.
    """
    r, w = os.pipe()
    try:
        # A 1 MiB pipe instead of 64 KiB: fewer wake-ups between the two threads.
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except OSError:
        pass
    errors: list[BaseException] = []

    def run() -> None:
        try:
            produce(_PipeSink(w))
        except BaseException as exc:  # noqa: BLE001 - handed to the reader's thread
            errors.append(exc)
        finally:
            os.close(w)

    thread = threading.Thread(target=run, name="sbom-layer", daemon=True)
    thread.start()
    reader = os.fdopen(r, "rb", buffering=CHUNK)
    try:
        yield reader
        while reader.read(CHUNK):
            pass
    except Exception:
        # Bytes that do not decompress may be bytes that do not match their digest:
        # let the producer finish and say so, which is the more useful refusal.
        try:
            while reader.read(CHUNK):
                pass
        except OSError:
            pass
        reader.close()
        thread.join()
        if errors:
            raise errors[0] from None
        raise
    except BaseException:
        reader.close()
        thread.join()
        raise
    reader.close()
    thread.join()
    if errors:
        raise errors[0]


@contextmanager
def decompressed(raw: BinaryIO, media_type: str, artifact: str) -> Iterator[TarStream]:
    """The uncompressed tar of a layer whose compressed bytes are *raw*."""
    if media_type in PLAIN:
        yield raw
        return
    if media_type in GZIP:
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield gz
        return
    if media_type not in ZSTD:
        raise FormatError(artifact, f"layer media type {media_type!r} is not one airgap can decompress")
    zstd = shutil.which("zstd")
    if zstd is None:
        raise InputError(f"{artifact}: a zstd-compressed layer needs the zstd program (apt-get install zstd)")
    proc = subprocess.Popen([zstd, "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    assert stdin and stdout and stderr  # all three are PIPE, so Popen opened all three

    def feed() -> None:
        try:
            while chunk := raw.read(CHUNK):
                stdin.write(chunk)
        except (BrokenPipeError, ValueError, OSError):
            pass
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, name="sbom-zstd", daemon=True)
    feeder.start()
    try:
        yield stdout
        while stdout.read(CHUNK):
            pass
    finally:
        stdout.close()
        feeder.join()
        err = stderr.read().decode("utf-8", "replace").strip()
        stderr.close()
        code = proc.wait()
    if code != 0:
        raise FormatError(artifact, f"zstd could not decompress the layer: {err or f'exit {code}'}")
