"""Media parts on the receiving side: the part index, opening a bundle or its parts, and join.

``airgap split`` (:mod:`airgap.split`) writes ``<bundle>.part001``,
``<bundle>.part002``, ... and ``<bundle>.parts.json`` (canonical JSON: the
whole bundle's name, size and sha256 plus each part's name, size and sha256),
optionally a DSSE signature over the index in ``<bundle>.parts.json.dsse``.

:class:`PartsReader` opens every part once (never through a link) and checks
its presence and size before anything reads a byte; it then acts as one
read-only seekable file over those descriptors, so ``verify`` and ``import``
stream the bundle without a joined copy.  Parts are not hashed up front: the
bundle's own signatures and member hashes decide, each byte is read once, and
when verification fails the parts are hashed against the index so that a bad
disc is named ("...part003: sha256 mismatch") instead of surfacing as a
confusing tar error.  :func:`join` writes a bundle from a verified object.
:func:`open_bundle` gives the same reader interface for a plain bundle file
(:class:`~airgap._internal.positional.FileSource`).
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap import caps
from airgap._internal import digest as _digest
from airgap._internal.fsutil import atomic_writer, check_output, read_capped
from airgap._internal.jsonutil import canonical_bytes, loads_strict
from airgap._internal.positional import FileSource, PositionalReader
from airgap._internal.text import plural
from airgap.exceptions import FormatError, InputError, IntegrityError

__all__ = [
    "CHUNK",
    "INDEX_SUFFIX",
    "INDEX_TYPE",
    "MAX_PARTS",
    "PAYLOAD_TYPE",
    "PartIndex",
    "PartInfo",
    "PartsReader",
    "SIGNATURE_SUFFIX",
    "join",
    "open_bundle",
    "sign_index",
    "verify_index_signature",
]

INDEX_TYPE = "airgap-parts"
INDEX_SUFFIX = ".parts.json"
SIGNATURE_SUFFIX = ".dsse"
PAYLOAD_TYPE = "application/vnd.airgap.parts+json"
CHUNK = 1 << 20
MAX_PARTS = caps.MAX_PARTS
_MAX_INDEX = caps.MAX_PART_INDEX_BYTES


def _plain_name(name: Any, artifact: str, what: str) -> str:
    # Names come from an untrusted index and are joined onto a directory: only a
    # plain file name may pass, or "../../etc/shadow" would be a "part".
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    ):
        raise FormatError(artifact, f"{what} {name!r} is not a plain file name")
    return name


@dataclass(frozen=True)
class PartInfo:
    """One part as listed in the index."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PartIndex:
    """The part index: the whole bundle's name, size, sha256 and its parts in order."""

    bundle_name: str
    bundle_size: int
    bundle_sha256: str
    parts: tuple[PartInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": INDEX_TYPE,
            "bundle": {"name": self.bundle_name, "size": self.bundle_size, "sha256": self.bundle_sha256},
            "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts],
        }

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes (what is written and signed)."""
        return canonical_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes, artifact: str) -> PartIndex:
        """Parse and validate untrusted index bytes; FormatError names *artifact*."""
        obj = loads_strict(data, artifact, max_size=_MAX_INDEX)
        if not isinstance(obj, dict) or set(obj) != {"_type", "bundle", "parts"}:
            raise FormatError(artifact, "expected exactly _type, bundle and parts")
        if obj["_type"] != INDEX_TYPE:
            raise FormatError(artifact, f"_type is {obj['_type']!r}, not {INDEX_TYPE!r}")
        bundle = _entry(obj["bundle"], artifact, "bundle")
        parts_raw = obj["parts"]
        if not isinstance(parts_raw, list) or not parts_raw:
            raise FormatError(artifact, "parts must be a non-empty list")
        if len(parts_raw) > MAX_PARTS:
            raise FormatError(artifact, f"{len(parts_raw)} parts exceeds the cap of {MAX_PARTS}")
        parts = tuple(_entry(p, artifact, f"parts[{i}]") for i, p in enumerate(parts_raw))
        names = {p.name for p in parts}
        if len(names) != len(parts):
            raise FormatError(artifact, "a part is listed twice")
        if bundle.name in names:
            raise FormatError(artifact, "a part has the bundle's own name")
        total = sum(p.size for p in parts)
        if total != bundle.size:
            raise FormatError(artifact, f"parts add up to {plural(total, 'byte')} but the bundle has {bundle.size}")
        return cls(bundle.name, bundle.size, bundle.sha256, parts)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PartIndex:
        """Read and validate an index file."""
        return cls.from_bytes(_read_index(Path(path)), Path(path).name)


def _read_index(path: Path) -> bytes:
    return read_capped(path, _MAX_INDEX, "a part index")


def _entry(obj: Any, artifact: str, where: str) -> PartInfo:
    if not isinstance(obj, dict) or set(obj) != {"name", "size", "sha256"}:
        raise FormatError(artifact, f"{where} must have exactly name, size and sha256")
    name = _plain_name(obj["name"], artifact, f"{where}.name")
    size = obj["size"]
    if type(size) is not int or size < 1:
        raise FormatError(artifact, f"{where}.size must be a positive integer")
    if not _digest.is_hex(obj["sha256"]):
        raise FormatError(artifact, f"{where}.sha256 is not 64 lower-case hex digits")
    return PartInfo(name, size, obj["sha256"])


# --- signing ----------------------------------------------------------------


def sign_index(index_bytes: bytes, signing_key: Any) -> bytes:
    """A DSSE envelope (canonical JSON bytes) over *index_bytes*, signed with *signing_key*.

    The envelope is a separate file, so the index bytes a signature covers are
    exactly the bytes on the medium.
    """
    from airgap import dsse  # late: signing is optional and dsse pulls in PyNaCl

    envelope = dsse.Envelope(index_bytes, PAYLOAD_TYPE)
    envelope.add_signature(signing_key)
    return envelope.to_bytes()


def verify_index_signature(index_path: str | os.PathLike[str], index_bytes: bytes, policy: Any) -> Any:
    """Judge ``<index>.dsse`` over *index_bytes* (the index as the reader read it) under *policy*.

    None if the index is unsigned.  Otherwise through
    :func:`airgap.trust.verify_envelope`: the part index's payloadType, the
    payload byte for byte the index, one signature by a key holding any role
    of the policy and no signature that does not count.  Returns the
    :class:`~airgap.trust.SignatureReport`; raises SignatureError or FormatError.
    """
    from airgap import dsse, trust

    sig_path = Path(str(index_path) + SIGNATURE_SUFFIX)
    try:
        with open(sig_path, "rb") as fh:
            data = fh.read(dsse.MAX_ENVELOPE_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{sig_path}: cannot read the part index signature: {exc.strerror}") from None
    envelope = dsse.Envelope.from_bytes(data, sig_path.name)
    return trust.verify_envelope(policy, envelope, PAYLOAD_TYPE, index_bytes, artifact=sig_path.name,
                                 payload_name=f"the part index {Path(index_path).name} as read",
                                 roles=(trust.ANY_ROLE,))


# --- reading ----------------------------------------------------------------


class BackgroundHash:
    """sha256 fed from a bounded queue on another thread (hashlib drops the GIL).

    The whole-bundle digest and each part's digest are computed over the same
    bytes; doing them on two cores keeps split at disk speed.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)  # bounds memory
        self._thread = threading.Thread(target=self._run, name="airgap-bundle-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._hash.hexdigest()


class PartsReader(PositionalReader):
    """The parts listed in an index, checked first, then read as one bundle."""

    def __init__(self, index_path: str | os.PathLike[str], *, workers: int | None = None):
        super().__init__()
        self._fds: list[int] = []  # first: close() runs (from __del__) even when the index below is refused
        self.index_path = Path(index_path)
        self.dir = self.index_path.parent
        # The bytes the index signature is judged over are the bytes this reader uses.
        self.index_bytes = _read_index(self.index_path)
        self.index = PartIndex.from_bytes(self.index_bytes, self.index_path.name)
        self.name = self.index.bundle_name
        self.size = self.index.bundle_size
        self._workers = workers or min(len(self.index.parts), os.cpu_count() or 1)
        # Start offset of every part, for bisecting an offset to its part.
        self._starts: list[int] = []
        offset = 0
        for part in self.index.parts:
            self._starts.append(offset)
            offset += part.size
        self._checked = False
        self._check_lock = threading.Lock()

    def open_parts(self) -> None:
        """Open every part (never through a link) and check its presence and size.

        Cheap: no byte is hashed.  The bundle's own signatures cover every byte
        that is used, and verification hashes each member once; the parts'
        hashes are only needed to name a bad disc, which :meth:`diagnose` does
        when verification fails.  The descriptors opened here are the ones every
        later read uses, so a part swapped on disk afterwards is not what is read.
        """
        with self._check_lock:
            if self._fds:
                return
            self._checkClosed()
            fds: list[int] = []
            try:
                for part in self.index.parts:
                    fds.append(self._open_part(part))
            except BaseException:
                for fd in fds:
                    os.close(fd)
                raise
            self._fds = fds

    def check(self) -> None:
        """Verify every part's presence, size and sha256; IntegrityError names the first bad part.

        A full media check (every byte read): for naming a bad disc, not
        needed before verification (see :meth:`open_parts`).
        """
        self.open_parts()
        with self._check_lock:
            if self._checked:
                return
            self._raise_bad(self._bad_parts())
            self._checked = True

    def diagnose(self) -> None:
        """After a failed verification: raise IntegrityError naming a part whose sha256 is not the index's."""
        if not self._fds or self.closed:
            return
        self._raise_bad(self._bad_parts())

    def _bad_parts(self) -> list[PartInfo]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="airgap-part") as pool:
            digests = list(pool.map(_hash_fd, self._fds))
        return [p for p, d in zip(self.index.parts, digests) if d != p.sha256]

    @staticmethod
    def _raise_bad(bad: list[PartInfo]) -> None:
        if bad:
            more = f" (also bad: {', '.join(p.name for p in bad[1:])})" if len(bad) > 1 else ""
            raise IntegrityError(bad[0].name, f"sha256 mismatch{more}")

    def _open_part(self, part: PartInfo) -> int:
        path = self.dir / part.name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise IntegrityError(part.name, "missing") from None
        except OSError as exc:
            raise IntegrityError(part.name, f"cannot be opened: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise IntegrityError(part.name, "not a regular file")
        if st.st_size != part.size:
            os.close(fd)
            raise IntegrityError(part.name, f"size {plural(st.st_size, 'byte')}, index says {part.size}")
        return fd

    def _pread_one(self, offset: int, n: int) -> bytes | None:
        if not self._fds:
            self.open_parts()
        i = bisect_right(self._starts, offset) - 1
        within = offset - self._starts[i]
        if n and within + n <= self.index.parts[i].size:
            return os.pread(self._fds[i], n, within)  # inside one part
        return None

    def readinto_at(self, view: memoryview, offset: int) -> int:
        """Fill *view* with the bundle's bytes at *offset*, across part boundaries; thread-safe."""
        if not self._fds:
            self.open_parts()
        end = min(offset + len(view), self.size)
        pos = offset
        i = bisect_right(self._starts, pos) - 1
        while pos < end:
            part = self.index.parts[i]
            within = pos - self._starts[i]
            want = min(end - pos, part.size - within)
            k = os.preadv(self._fds[i], [view[pos - offset:pos - offset + want]], within)
            if not k:
                raise IntegrityError(part.name, f"shrank after it was opened (at byte {within})")
            pos += k
            if k == want:
                i += 1
        return max(0, end - offset)

    def close(self) -> None:
        if not self.closed:
            for fd in self._fds:
                os.close(fd)
            self._fds = []
        super().close()


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def join(verified: Any, out_path: str | os.PathLike[str], *, force: bool = False) -> str:
    """Write the bundle that *verified* (a VerifiedBundle, e.g. read from parts) holds; return its sha256.

    An existing *out_path* is replaced only with *force* (refused before anything is written).

    Written from the verified object, never by copying the parts: every header
    is rendered from the verified (name, size, mode), the manifest and the
    envelope are the bytes whose signatures were checked, and every member's
    bytes are hashed against the manifest as they are written.  The result
    appears under *out_path* only when all of that held and, for parts, when
    its sha256 is the one the part index gives.
    """
    from airgap._internal import tarfmt

    out = check_output(out_path, force=force)
    index = getattr(verified.source, "index", None)
    whole = BackgroundHash()
    finished = False
    try:
        with atomic_writer(out, 0o600, overwrite=force) as fh:

            def put(data: bytes) -> None:
                whole.update(data)
                fh.write(data)

            last = len(verified.members) - 1
            for i, m in enumerate(verified.members):
                put(tarfmt.header(m.name, m.size, m.mode))
                if i == 0:
                    put(verified.manifest_bytes)
                elif i == last:
                    put(verified.signatures_bytes)
                else:
                    for chunk in verified.stream(m.name):
                        put(chunk)
                put(tarfmt.padding(m.size))
            put(tarfmt.END_OF_ARCHIVE)
            digest = whole.finish()
            finished = True
            if index is not None and digest != index.bundle_sha256:
                raise IntegrityError(index.bundle_name,
                                     f"the bundle written from the verified members has sha256 {digest}, the part "
                                     f"index says {index.bundle_sha256}: the parts carry bytes outside the members "
                                     "that the bundle format does not write")
    except BaseException:
        if not finished:
            whole.finish()
        raise
    verified.content_used("every member hashed as it was written into the joined bundle")
    return digest


def open_bundle(path: str | os.PathLike[str]) -> FileSource | PartsReader:
    """A checked reader for a bundle file, a ``*.parts.json`` index, or a directory holding one index."""
    p = Path(path)
    if p.is_dir():
        indexes = sorted(e for e in p.iterdir() if e.name.endswith(INDEX_SUFFIX) and e.is_file())
        if len(indexes) != 1:
            found = ", ".join(e.name for e in indexes) or "none"
            raise InputError(f"{p}: expected exactly one *{INDEX_SUFFIX} in the directory, found {found}")
        p = indexes[0]
    if p.name.endswith(INDEX_SUFFIX):
        reader = PartsReader(p)
        try:
            reader.open_parts()
        except BaseException:
            reader.close()
            raise
        return reader
    if not p.exists():
        raise InputError(f"{p}: no such bundle")
    return FileSource(p)
