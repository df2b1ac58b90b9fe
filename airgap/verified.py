"""A bundle that ``verify()`` accepted: the one object everything after verification uses.

Import, extract, join and ``verify --record`` take a :class:`VerifiedBundle`,
never a path: the bundle file (or its media parts) was opened once, by
``verify``, and every byte used afterwards is read from those descriptors.  An
open descriptor does not stop someone from writing into the same file, so
every byte is also hashed as it is consumed and compared with the manifest the
signatures cover; the last chunk of a member is handed out only after its
sha256 matched, so nothing that differs is ever written or pushed in full.
Image documents (manifests, indexes) are the very bytes verify hashed and
parsed, kept in memory: they are never read twice.

This is Zarf's pattern: a loaded, verified package object handed to deploy.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from airgap import oci
from airgap._internal import tarfmt
from airgap._internal.positional import Region
from airgap._internal.progress import ByteProgress
from airgap._internal.text import plural
from airgap.exceptions import AirgapError, ArchiveError, FormatError, IntegrityError, SignatureError
from airgap.manifest import BundleManifest, ImageRecord, MemberRecord

CHUNK = 1024 * 1024

__all__ = ["ImagePlan", "VerifiedBundle", "explain"]


@dataclass
class ImagePlan:
    """One image as verified: its child manifests and every blob it needs (descriptors only).

    The documents' bytes are not kept (a bundle may carry thousands of 4 MiB
    manifests): they are read again when used, hashed against the manifest.
    """

    record: ImageRecord
    repository: str  # the internal repository path, derived from the approved ref
    children: list[oci.Descriptor] = field(default_factory=list)
    blobs: list[oci.Descriptor] = field(default_factory=list)


def explain(source: Any, exc: AirgapError) -> AirgapError:
    """For a bundle read from media parts: name the bad part, if a part's sha256 is not the index's.

    Only when something already failed: the parts' hashes say which disc to
    replace, the bundle's own signatures and member hashes decide acceptance.
    """
    diagnose = getattr(source, "diagnose", None)
    # Only symptoms a damaged disc can cause; policy decisions (expiry, rollback, target) cannot.
    if diagnose is None or not isinstance(exc, (ArchiveError, FormatError, IntegrityError, SignatureError)):
        return exc
    try:
        diagnose()
    except IntegrityError as bad:
        reason = getattr(exc, "reason", str(exc))
        return IntegrityError(bad.artifact, f"{bad.reason} ({getattr(exc, 'artifact', '')}: {reason})")
    return exc


def _close(source: Any) -> None:
    close = getattr(source, "close", None)
    if close:
        close()


class VerifiedBundle:
    """What ``verify()`` returns: the open bundle, its verified manifest, policy, report and images.

    Close it (or use it as a context manager) to release the descriptors.
    """

    def __init__(self, *, source: Any, members: list[tarfmt.Member], manifest_bytes: bytes, signatures_bytes: bytes,
                 manifest: BundleManifest, policy: Any, report: Any, images: list[ImagePlan], hashed: set[str],
                 accepted_policy: Any = None):
        self.source = source
        self.members = members
        self.manifest_bytes = manifest_bytes
        self.signatures_bytes = signatures_bytes
        self.manifest = manifest
        self.policy = policy
        # The airgap.trust.AcceptedPolicy of a verification with a state directory: what
        # committing the acceptance records as the trusted policy (None without --state).
        self.accepted_policy = accepted_policy
        self.report = report
        self.images = images
        self._hashed = hashed  # documents already hashed (and kept) by verify
        self._by_name = {m.name: m for m in members}
        self._finalizer = weakref.finalize(self, _close, source)

    # ------------------------------------------------------------------ lookups
    @property
    def accepted(self) -> bool:
        return bool(self.report.accepted)

    @property
    def content_members(self) -> list[tarfmt.Member]:
        return self.members[1:-1]

    def member(self, name: str) -> tarfmt.Member:
        member = self._by_name.get(name)
        if member is None or name in (self.members[0].name, self.members[-1].name):
            raise ArchiveError(name, "not a member of the verified bundle")
        return member

    def record(self, name: str) -> MemberRecord:
        record = self.manifest.member(name)
        if record is None:
            raise ArchiveError(name, "not listed in the verified manifest")
        return record

    # ------------------------------------------------------------------ reading
    def stream(self, name: str, chunk: int = CHUNK, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The member's bytes from the verified descriptor, hashed on the way.

        The final chunk is yielded only after the whole member's sha256 matched
        the manifest, so a consumer never receives all of a member that differs.
        """
        member, record = self.member(name), self.record(name)
        h = hashlib.sha256()
        pos, end = member.data_offset, member.data_offset + member.size
        while pos < end:
            data = self.source.pread(pos, min(chunk, end - pos))
            if not data:
                raise self._changed(ArchiveError(name, f"bundle ended at byte {pos} while this member was read for use"))
            h.update(data)
            pos += len(data)
            if pos == end:
                self._check_digest(name, record, h)
            if progress:
                progress(len(data))
            yield data
        if member.size == 0:
            self._check_digest(name, record, h)

    def read(self, name: str, cap: int) -> bytes:
        member = self.member(name)
        if member.size > cap:
            raise ArchiveError(name, f"{member.size} bytes exceeds the cap of {cap}")
        return b"".join(self.stream(name))

    def opener(self, name: str) -> Callable[[int], io.BufferedReader]:
        """``open(offset)`` for a registry upload of this member.

        The registry client hashes what it sends and the registry refuses a
        blob whose bytes do not have the digest it is pushed under; that digest
        is the member's name, which verify checked against the manifest.
        """
        member = self.member(name)
        return lambda offset: io.BufferedReader(Region(self.source, member.data_offset, member.size, offset),
                                                buffer_size=CHUNK)

    def _check_digest(self, name: str, record: MemberRecord, h) -> None:
        got = h.hexdigest()
        if got != record.sha256:
            raise self._changed(IntegrityError(
                name, f"sha256 mismatch while reading it for use (manifest {record.sha256[:16]}…, read {got[:16]}…): "
                      "the bundle changed after it was verified; nothing was switched"))

    def _changed(self, exc: AirgapError) -> AirgapError:
        exc = explain(self.source, exc)
        exc.report = self.report  # type: ignore[attr-defined]
        return exc

    # ------------------------------------------------------------------ content
    def check_content(self, *, progress: bool = False, workers: int | None = None) -> None:
        """Hash every member (each byte once, on all cores); the report is accepted after."""
        try:
            total = _hash_members(self, progress, workers)
        except AirgapError as exc:
            self.fail_content(exc)
        self.content_used(f"{plural(total, 'byte')} hashed, every sha256 matches")

    def skip_content(self, reason: str) -> None:
        """No content byte will be used (the caller says why); nothing is hashed."""
        self.report.set("content", "skipped", reason)
        self.report.accepted = True

    def content_used(self, detail: str) -> None:
        self.report.set("content", "pass", detail)
        self.report.accepted = True

    def fail_content(self, exc: AirgapError):
        exc = explain(self.source, exc)
        self.report.set("content", "fail", getattr(exc, "reason", str(exc)), getattr(exc, "artifact", None))
        self.report.error = exc
        self.report.accepted = False
        exc.report = self.report  # type: ignore[attr-defined]
        raise exc

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> VerifiedBundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _hash_members(vb: VerifiedBundle, progress: bool, workers: int | None) -> int:
    manifest = vb.manifest
    todo = [(m, manifest.member(m.name)) for m in vb.content_members if m.name not in vb._hashed]
    todo.sort(key=lambda pair: -pair[0].size)  # largest first balances the cores
    total = sum(m.size for m, _ in todo)
    workers = workers or max(2, os.cpu_count() or 2)
    failure: list[AirgapError] = []
    source = vb.source

    local = threading.local()

    with ByteProgress(total=total, desc="verifying", enabled=progress) as bar:

        def one(pair) -> None:
            member, record = pair
            if failure:
                return
            view = getattr(local, "view", None)
            if view is None:  # one reused buffer per thread: no allocation per chunk
                view = local.view = memoryview(bytearray(CHUNK))
            h = hashlib.sha256()
            pos, end = member.data_offset, member.data_offset + member.size
            try:
                while pos < end:
                    n = source.readinto_at(view[:min(CHUNK, end - pos)], pos)
                    if not n:
                        raise ArchiveError(member.name, f"unexpected end of bundle at byte {pos} (file shrank while being read?)")
                    h.update(view[:n])
                    pos += n
                    bar.update(n)
            except AirgapError as exc:
                failure.append(exc)
                return
            got = h.hexdigest()
            if got != record.sha256:
                failure.append(IntegrityError(member.name, f"sha256 mismatch (manifest {record.sha256[:16]}…, content {got[:16]}…)"))

        # Plain threads taking the next member (largest first): hashlib drops the GIL.
        pending = iter(todo)
        lock = threading.Lock()

        def worker() -> None:
            while not failure:
                with lock:
                    pair = next(pending, None)
                if pair is None:
                    return
                one(pair)

        threads = [threading.Thread(target=worker, name=f"airgap-hash-{i}", daemon=True)
                   for i in range(max(1, min(workers, len(todo))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if failure:
        # Report the earliest member in archive order, so the message is stable.
        order = {m.name: i for i, m in enumerate(vb.members)}
        raise min(failure, key=lambda e: order.get(getattr(e, "artifact", ""), 0))
    # Padding between members is outside every hash; tarfmt.scan refused any that is not zero.
    return total
