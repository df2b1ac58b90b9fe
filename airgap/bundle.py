"""Opening a bundle (one tar file or its media parts) and signing it in place.

Layout of a bundle tar, in this order:

``manifest.json``      the canonical-JSON manifest (what is signed)
``oci-layout``         OCI image layout marker
``index.json``         OCI layout index, one entry per image
``blobs/sha256/<hex>`` every blob once, sorted by digest
``files/<path>``       the spec's files, sorted by path
``signatures.json``    a DSSE envelope over the manifest bytes (always last)

Because the envelope is the last member, adding a signature rewrites only the
archive's tail: milliseconds for any bundle size, and the signed payload is
never touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from airgap import caps
from airgap._internal import tarfmt
from airgap._internal.fsutil import atomic_write, display
from airgap.exceptions import ArchiveError, FormatError, InputError, OperationError
from airgap.manifest import MANIFEST_MEMBER, SIGNATURES_MEMBER, BundleManifest

__all__ = [
    "Bundle",
    "CHUNK",
    "Ends",
    "ends_of",
    "open_source",
    "read_ends",
    "recover_interrupted_sign",
    "replace_signatures",
    "scan_members",
    "stream",
]

CHUNK = 1024 * 1024
_TAIL_WINDOW = 64 * 1024


def open_source(path: str | os.PathLike) -> tarfmt.Source:
    """A pread-able view of a bundle: a tar file, a parts index, or a folder of parts.

    The file (or every part) is opened here, once; everything after reads
    these descriptors, never the path again.
    """
    from airgap import media

    p = Path(path)
    if not p.exists():
        raise InputError(f"{display(p)}: no such file or directory")
    return media.open_bundle(p)


@dataclass(frozen=True)
class Ends:
    """The two members a bundle's trust rests on: manifest.json (first) and signatures.json (last)."""

    manifest: tarfmt.Member
    manifest_bytes: bytes
    signatures: tarfmt.Member
    signatures_bytes: bytes


def read_ends(source: tarfmt.Source, label: str) -> Ends | None:
    """manifest.json and signatures.json, without walking the members between them.

    Signatures are checked before anything costs time (trust before cost): the
    manifest's header is the first block, the envelope's header is found by
    looking back from the end-of-archive marker (the envelope's text holds no
    NUL byte, so the first block that reads as its header, going backwards, is
    it).  Returns None when the archive does not have that shape; the full
    walk (:func:`scan`) then names what is wrong.  Whatever is found here is
    checked again by that walk before anything else is trusted.
    """
    total = source.size
    if total % tarfmt.BLOCK or total < 4 * tarfmt.BLOCK:
        return None
    first = tarfmt.parse_header(source.pread(0, tarfmt.BLOCK), 0)
    if first.name != MANIFEST_MEMBER:
        return None
    end = total - len(tarfmt.END_OF_ARCHIVE)
    if source.pread(end, len(tarfmt.END_OF_ARCHIVE)) != tarfmt.END_OF_ARCHIVE:
        return None
    last = _find_last_header(source, first.end_offset, end)
    if last is None:
        return None
    _check_end_modes(first, last)
    return Ends(first, _read_capped(source, first, caps.MAX_MANIFEST_BYTES),
                last, _read_capped(source, last, caps.MAX_SIGNATURES_BYTES))


def _find_last_header(source: tarfmt.Source, lowest: int, end: int) -> tarfmt.Member | None:
    name = SIGNATURES_MEMBER.encode() + b"\0"
    limit = max(lowest, end - tarfmt.BLOCK - tarfmt.padded(caps.MAX_SIGNATURES_BYTES))
    window = _TAIL_WINDOW
    searched = end
    while searched > limit:
        start = max(limit, end - window)
        start -= start % tarfmt.BLOCK
        buf = source.pread(start, searched - start)
        for off in range(searched - tarfmt.BLOCK, start - 1, -tarfmt.BLOCK):
            rel = off - start
            if buf.startswith(name, rel):
                try:
                    member = tarfmt.parse_header(buf[rel:rel + tarfmt.BLOCK], off)
                except ArchiveError:
                    return None
                return member if member.name == SIGNATURES_MEMBER and member.end_offset == end else None
        searched = start
        window *= 4
    return None


def scan_members(source: tarfmt.Source, label: str) -> list[tarfmt.Member]:
    """Walk every header; the archive must start with the manifest and end with the signatures."""
    members = tarfmt.scan(source, max_members=caps.MAX_MEMBERS + 2, artifact=label)
    tarfmt.check_tree([m.name for m in members])
    if not members:
        raise ArchiveError(label, "empty archive")
    if members[0].name != MANIFEST_MEMBER:
        raise ArchiveError(label, f"first member is {members[0].name!r}, expected {MANIFEST_MEMBER}")
    if members[-1].name != SIGNATURES_MEMBER:
        raise ArchiveError(label, f"last member is {members[-1].name!r}, expected {SIGNATURES_MEMBER}")
    if len(members) < 2:
        raise ArchiveError(label, "no signatures member")
    _check_end_modes(members[0], members[-1])
    return members


def _check_end_modes(*ends: tarfmt.Member) -> None:
    for m in ends:  # the manifest pins every mode but these two
        if m.mode != 0o644:
            raise ArchiveError(m.name, f"mode {oct(m.mode)}; the bundle writer writes 0o644")


def ends_of(source: tarfmt.Source, members: list[tarfmt.Member]) -> Ends:
    return Ends(members[0], _read_capped(source, members[0], caps.MAX_MANIFEST_BYTES),
                members[-1], _read_capped(source, members[-1], caps.MAX_SIGNATURES_BYTES))


@dataclass
class Bundle:
    """A bundle whose tar structure has been checked; contents not yet verified.

    For reading what a bundle says (inspect, sign, diff).  What is *used* comes
    from :class:`airgap.verified.VerifiedBundle`, which ``verify`` returns.
    """

    path: Path
    source: tarfmt.Source
    members: list[tarfmt.Member]
    manifest_bytes: bytes
    signatures_bytes: bytes

    @classmethod
    def open(cls, path: str | os.PathLike) -> Bundle:
        source = open_source(path)
        try:
            members = scan_members(source, os.fspath(path))
            ends = ends_of(source, members)
        except BaseException:
            _close(source)
            raise
        return cls(Path(path), source, members, ends.manifest_bytes, ends.signatures_bytes)

    @property
    def content_members(self) -> list[tarfmt.Member]:
        return self.members[1:-1]

    def manifest(self) -> BundleManifest:
        return BundleManifest.from_bytes(self.manifest_bytes, MANIFEST_MEMBER)

    def member(self, name: str) -> tarfmt.Member | None:
        index = self.__dict__.get("_by_name")
        if index is None:
            index = self.__dict__["_by_name"] = {m.name: m for m in self.members}
        return index.get(name)

    def read(self, member: tarfmt.Member, cap: int) -> bytes:
        """A member's bytes, unchecked (for showing and comparing; use a VerifiedBundle to use them)."""
        return _read_capped(self.source, member, cap)

    def envelope(self):
        from airgap import dsse

        return dsse.Envelope.from_bytes(self.signatures_bytes, SIGNATURES_MEMBER, max_size=caps.MAX_SIGNATURES_BYTES)

    def close(self) -> None:
        _close(self.source)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close(source) -> None:
    close = getattr(source, "close", None)
    if close:
        close()


def stream(source: tarfmt.Source, offset: int, size: int, chunk: int = CHUNK, *, artifact: str = "bundle") -> Iterator[bytes]:
    end = offset + size
    while offset < end:
        data = source.pread(offset, min(chunk, end - offset))
        if not data:
            raise ArchiveError(artifact, f"unexpected end of bundle at byte {offset} (file shrank while being read?)")
        offset += len(data)
        yield data


def _read_capped(source: tarfmt.Source, member: tarfmt.Member, cap: int) -> bytes:
    if member.size > cap:
        raise ArchiveError(member.name, f"{member.size} bytes exceeds the cap of {cap}")
    data = source.pread(member.data_offset, member.size)
    if len(data) != member.size:
        raise ArchiveError(member.name, "short read")
    return data


# --------------------------------------------------------------------------- signing


def _journal(path: Path) -> Path:
    return path.with_name(path.name + ".sign-journal")


def recover_interrupted_sign(path: Path) -> bool:
    """Undo a signing that was killed half-way: put the saved tail back."""
    journal = _journal(path)
    if not journal.exists():
        return False
    data = journal.read_bytes()
    offset = int.from_bytes(data[:8], "big")
    tail = data[8:]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(tail)
        f.truncate(offset + len(tail))
        f.flush()
        os.fsync(f.fileno())
    journal.unlink()
    return True


def replace_signatures(path: str | os.PathLike, envelope_bytes: bytes) -> None:
    """Rewrite only the signatures member at the end of the archive.

    The old tail is saved to a journal first, so a crash at any point leaves
    either the old or the new signatures, never a torn archive.
    """
    path = Path(path)
    if path.is_dir() or path.name.endswith(".parts.json"):
        raise InputError(f"{path}: sign the bundle before splitting it into media parts")
    recover_interrupted_sign(path)
    with Bundle.open(path) as bundle:
        sig = bundle.members[-1]
        old_tail = bundle.source.pread(sig.header_offset, bundle.source.size - sig.header_offset)
    if len(envelope_bytes) > caps.MAX_SIGNATURES_BYTES:
        raise FormatError(SIGNATURES_MEMBER, "envelope exceeds its cap")
    new_tail = (
        tarfmt.header(SIGNATURES_MEMBER, len(envelope_bytes), 0o644)
        + envelope_bytes
        + tarfmt.padding(len(envelope_bytes))
        + tarfmt.END_OF_ARCHIVE
    )
    journal = _journal(path)
    atomic_write(journal, sig.header_offset.to_bytes(8, "big") + old_tail)
    try:
        with open(path, "r+b") as f:
            f.seek(sig.header_offset)
            f.write(new_tail)
            f.truncate(sig.header_offset + len(new_tail))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        recover_interrupted_sign(path)
        raise OperationError(f"{path}: could not write the signature: {exc.strerror}") from None
    journal.unlink()
