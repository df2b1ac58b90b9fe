"""The layer spool of a build: each layer fetched once, read twice.

The SBOM pass must read every layer before the manifest (the first tar member)
is fixed; the archive writer needs the same bytes afterwards.  The spool tees
what the SBOM pass downloads into a private directory next to the output, and
the writer copies the layer from there instead of fetching it again, deleting
each file once it is copied.  Every read of a spooled file hashes it again, so
bytes changed on disk between the passes are refused, naming the blob.

Only the blobs the writer will copy are spooled (*wanted*); a layer another
image's chain reads again in the SBOM pass comes from the spool too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from airgap._internal.fsutil import Dir, display
from airgap._internal.text import plural
from airgap.exceptions import IntegrityError, OperationError

__all__ = ["NO_SPACE", "LayerSpool", "no_space"]

CHUNK = 1024 * 1024
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _name(digest: str) -> str:
    return digest.replace(":", "-")


def no_space(directory: Path, doing: str, spool: LayerSpool | None) -> OperationError:
    """A full disk, said with what it holds for the build, what is free, and what to do."""
    from airgap.inspect import human_size

    try:
        free = human_size(shutil.disk_usage(directory).free)
    except OSError:
        free = "unknown"
    held = f"the build's layer spool held {human_size(spool.held())}, " if spool and spool.held() else ""
    return OperationError(
        f"{display(directory)}: no space left while {doing} ({held}{free} free). A build needs there the bundle's "
        "size and, while it writes, up to its layers' size more (the layers read for the SBOMs are kept until "
        "they are copied into the bundle): free space there, or give -o on a larger disk")


def _write(fd: int, view: memoryview) -> int:
    return os.write(fd, view)


class _Tee:
    """A blob sink that writes into the spool file, then into the next sink."""

    def __init__(self, fd: int, nxt, spool: LayerSpool, digest: str) -> None:
        self.fd, self.nxt, self.spool, self.digest = fd, nxt, spool, digest

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            try:
                view = view[_write(self.fd, view):]
            except OSError as exc:
                raise self.spool.write_error(exc, self.digest) from None
        return self.nxt.write(data)

    def seek(self, pos: int) -> None:
        self.nxt.seek(pos)  # the SBOM reader's pipe cannot go back: it restarts the layer
        os.lseek(self.fd, pos, os.SEEK_SET)
        os.ftruncate(self.fd, pos)

    def tell(self) -> int:
        return self.nxt.tell()


class LayerSpool:
    """Spooled blobs of one build, by digest, in a private directory next to the output."""

    def __init__(self, out: Path, wanted: set[str]) -> None:
        # Beside the output, like the bundle's temporary file: the same disk, never a RAM-backed /tmp.
        self.path = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.spool-"))
        self._dir = Dir.open_root(self.path)
        self._wanted = wanted
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._done: dict[str, int] = {}  # digest -> size of the complete, digest-checked file

    # -- the SBOM pass ---------------------------------------------------------------
    def copy_blob(self, origin, digest: str, size: int, sink) -> None:
        """Stream *digest* into *sink*: from the spool if it is there, else from *origin*, teed."""
        if digest not in self._wanted:
            origin.copy_blob(digest, size, sink)
            return
        with self._lock:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:  # one fetch per digest: a second reader waits, then reads the file
            if digest in self._done:
                self.copy_out(digest, size, sink, f"{origin.label}@{digest}", keep=True)
                return
            fd = self._dir.open_file(_name(digest), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                origin.copy_blob(digest, size, _Tee(fd, sink, self, digest))  # checks size and sha256
            finally:
                os.close(fd)
            with self._lock:
                self._done[digest] = size

    def write_error(self, exc: OSError, digest: str) -> OperationError:
        if exc.errno in NO_SPACE:
            return no_space(self.path.parent, f"keeping layer {digest} for the bundle", self)
        return OperationError(f"{display(self.path / _name(digest))}: cannot write the layer spool ({exc.strerror or exc})")

    def held(self) -> int:
        """Bytes of complete layers in the spool."""
        with self._lock:
            return sum(self._done.values())

    # -- the archive writer ----------------------------------------------------------
    def has(self, digest: str) -> bool:
        return digest in self._done

    def copy_out(self, digest: str, size: int, sink, artifact: str, *, keep: bool = False) -> None:
        """Copy the spooled *digest* into *sink*, checking its sha256 again; then remove it unless *keep*."""
        h = hashlib.sha256()
        done, over = 0, False
        try:
            fd = self._dir.open_file(_name(digest), os.O_RDONLY)
        except OSError as exc:
            raise IntegrityError(artifact, f"its spooled copy in {display(self.path)} cannot be read "
                                           f"({exc.strerror or exc})") from None
        try:
            while chunk := os.read(fd, CHUNK):
                if done + len(chunk) > size:
                    over = True
                    break
                h.update(chunk)
                sink.write(chunk)
                done += len(chunk)
        finally:
            os.close(fd)
        if over or done != size or "sha256:" + h.hexdigest() != digest:
            raise IntegrityError(artifact, f"its spooled copy in {display(self.path)} changed after it was fetched "
                                           f"and checked (now {'more than ' if over else ''}{plural(done, 'byte')}, sha256:{h.hexdigest()}): "
                                           "something wrote into the build's spool; build again")
        if not keep:
            self._dir.unlink(_name(digest))
            with self._lock:
                self._done.pop(digest, None)

    def close(self) -> None:
        """Remove the spool (never following a link inside it)."""
        if self._dir.fd < 0:
            return
        for name in self._dir.names():
            self._dir.rmtree(name)
        self._dir.close()
        try:
            os.rmdir(self.path)
        except OSError:
            pass

