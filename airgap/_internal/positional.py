"""The one positional reader: a bundle (a file, media parts, or one member's bytes) read by offset.

Every reader of bundle bytes (verify, import, extract, join) goes through
:class:`PositionalReader`: ``pread(offset, n)`` is safe across threads (no
shared file offset), so members can be hashed on all cores, and the same object
is also a read-only seekable file for the few consumers that want one.
Subclasses supply the size and how bytes at an offset are read:
:class:`FileSource` (one file), ``airgap.media.PartsReader`` (media parts) and
:class:`Region` (one member's bytes inside another reader, for uploads).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import Any

from airgap._internal.tarfmt import Source
from airgap.exceptions import InputError, IntegrityError, InvalidValueError

__all__ = ["FileSource", "PositionalReader", "Region"]


class PositionalReader(io.RawIOBase):
    """Shared read/seek/tell built on :meth:`pread`; subclasses supply _pread_one, readinto_at and size."""

    name: str
    size: int

    def __init__(self) -> None:
        super().__init__()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise InvalidValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise InvalidValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        # RawIOBase.read would copy pread's bytes into a buffer and back out again.
        if size is None or size < 0:
            return self.readall()
        data = self.pread(self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.pread(self._pos, len(b))
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        self._pos += n
        return n

    def pread(self, offset: int, n: int) -> bytes:
        """Up to *n* bytes at *offset* (fewer only at the end); safe across threads."""
        self._checkClosed()
        if offset < 0 or n < 0:
            raise InvalidValueError("offset and length must not be negative")
        n = max(0, min(n, self.size - offset))
        data = self._pread_one(offset, n)  # the common case: one read, no copy
        if data is not None and len(data) == n:
            return data
        buf = bytearray(n)
        got = self.readinto_at(memoryview(buf), offset)
        return bytes(buf) if got == n else bytes(buf[:got])

    def _pread_one(self, offset: int, n: int) -> bytes | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def readinto_at(self, view: memoryview, offset: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class FileSource(PositionalReader):
    """A bundle in one file, read with ``os.pread`` on a descriptor opened once."""

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__()
        self.path = Path(path)
        self.name = self.path.name
        self._fd = -1  # close() (also from __del__) must never close a number it does not own
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read bundle: {exc.strerror}") from None
        st = os.fstat(self._fd)
        if stat.S_ISDIR(st.st_mode):  # os.open opens a directory where open() refuses it
            os.close(self._fd)
            self._fd = -1
            raise InputError(f"{self.path}: cannot read bundle: {os.strerror(errno.EISDIR)}")
        self.size = st.st_size

    def _pread_one(self, offset: int, n: int) -> bytes | None:
        return os.pread(self._fd, n, offset)

    def readinto_at(self, view: memoryview, offset: int) -> int:
        """Fill *view* with the bytes at *offset* (fewer only at the end); no allocation, thread-safe."""
        n = max(0, min(len(view), self.size - offset))
        got = 0
        while got < n:
            k = os.preadv(self._fd, [view[got:n]], offset + got)
            if not k:
                raise IntegrityError(self.name, f"file shrank while being read (at byte {offset + got})")
            got += k
        return n

    def close(self) -> None:
        if not self.closed and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()


class Region(PositionalReader):
    """*size* bytes at *offset* in another reader, as a file of their own (a member for a registry upload).

    Reads stop short where the underlying reader does; the consumer (the
    registry client hashing what it sends) sees the short blob.
    """

    def __init__(self, source: Source, offset: int, size: int, start: int = 0):
        super().__init__()
        self.source, self.base, self.size = source, offset, size
        self.name = getattr(source, "name", "")
        self._pos = start

    def _pread_one(self, offset: int, n: int) -> bytes | None:
        return self.source.pread(self.base + offset, n)

    def readinto_at(self, view: memoryview, offset: int) -> int:
        data = self.source.pread(self.base + offset, len(view))
        view[: len(data)] = data
        return len(data)
