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

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from airgap._internal import tarfmt
from airgap.exceptions import ArchiveError, FormatError, InputError, OperationError
from airgap.manifest import (
    MANIFEST_MEMBER,
    MAX_MANIFEST_BYTES,
    MAX_MEMBERS,
    MAX_SIGNATURES_BYTES,
    SIGNATURES_MEMBER,
    BundleManifest,
)

CHUNK = 1024 * 1024


def open_source(path: str | os.PathLike) -> tarfmt.Source:
    """A pread-able view of a bundle: a tar file, a parts index, or a folder of parts."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if p.is_dir() or p.name.endswith(".parts.json"):
        from airgap import split

        return split.open_bundle(p)
    return tarfmt.FileSource(p)


@dataclass
class Bundle:
    """A bundle whose tar structure has been checked; contents not yet verified."""

    path: Path
    source: tarfmt.Source
    members: list[tarfmt.Member]
    manifest_bytes: bytes
    signatures_bytes: bytes

    @classmethod
    def open(cls, path: str | os.PathLike, *, max_members: int = MAX_MEMBERS) -> "Bundle":
        source = open_source(path)
        label = os.fspath(path)
        try:
            members = tarfmt.scan(source, max_members=max_members + 2, artifact=label)
            tarfmt.check_tree([m.name for m in members])
            if not members:
                raise ArchiveError(label, "empty archive")
            if members[0].name != MANIFEST_MEMBER:
                raise ArchiveError(label, f"first member is {members[0].name!r}, expected {MANIFEST_MEMBER}")
            if members[-1].name != SIGNATURES_MEMBER:
                raise ArchiveError(label, f"last member is {members[-1].name!r}, expected {SIGNATURES_MEMBER}")
            if len(members) < 2:
                raise ArchiveError(label, "no signatures member")
            for m in (members[0], members[-1]):  # the manifest pins every mode but these two
                if m.mode != 0o644:
                    raise ArchiveError(m.name, f"mode {oct(m.mode)}; the bundle writer writes 0o644")
            manifest_bytes = _read_capped(source, members[0], MAX_MANIFEST_BYTES)
            signatures_bytes = _read_capped(source, members[-1], MAX_SIGNATURES_BYTES)
        except BaseException:
            _close(source)
            raise
        return cls(Path(path), source, members, manifest_bytes, signatures_bytes)

    @property
    def content_members(self) -> list[tarfmt.Member]:
        return self.members[1:-1]

    def manifest(self) -> BundleManifest:
        return BundleManifest.from_bytes(self.manifest_bytes, MANIFEST_MEMBER)

    def envelope(self):
        from airgap import dsse

        return dsse.Envelope.from_bytes(self.signatures_bytes, SIGNATURES_MEMBER)

    def member(self, name: str) -> tarfmt.Member | None:
        # Import looks up every blob by name: an index keeps that linear in the member count.
        index = self.__dict__.get("_by_name")
        if index is None:
            index = self.__dict__["_by_name"] = {m.name: m for m in self.members}
        return index.get(name)

    def read(self, member: tarfmt.Member, cap: int) -> bytes:
        return _read_capped(self.source, member, cap)

    def stream(self, member: tarfmt.Member, chunk: int = CHUNK) -> Iterator[bytes]:
        yield from stream(self.source, member.data_offset, member.size, chunk, artifact=member.name)

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


def member_sha256(source: tarfmt.Source, member: tarfmt.Member) -> str:
    h = hashlib.sha256()
    for chunk in stream(source, member.data_offset, member.size, artifact=member.name):
        h.update(chunk)
    return h.hexdigest()


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
    if len(envelope_bytes) > MAX_SIGNATURES_BYTES:
        raise FormatError(SIGNATURES_MEMBER, "envelope exceeds its cap")
    new_tail = (
        tarfmt.header(SIGNATURES_MEMBER, len(envelope_bytes), 0o644)
        + envelope_bytes
        + tarfmt.padding(len(envelope_bytes))
        + tarfmt.END_OF_ARCHIVE
    )
    journal = _journal(path)
    tmp = journal.with_name(journal.name + ".tmp")
    with open(tmp, "wb") as j:
        j.write(sig.header_offset.to_bytes(8, "big") + old_tail)
        j.flush()
        os.fsync(j.fileno())
    os.replace(tmp, journal)
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
