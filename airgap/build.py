"""Building a bundle on the connected side.

Every size and digest is known before the first blob byte arrives (descriptors
carry them, local files are hashed first), so the whole archive layout, and
therefore the manifest, is fixed up front, except for the SBOMs, which are
read from the layers first; the layers that pass reads are kept in a spool
(:mod:`airgap._internal.spool`) so no blob is fetched twice.  Blobs are then
copied from the spool, or downloaded, in parallel straight into their final
place in the output file, digests checked while the bytes stream.

What the sources say is checked as it is fetched (:mod:`airgap.pull`), and the
manifest is checked the way verify will read it before any content is fetched.
The output appears at its path only when complete, signed and passing verify's
structural checks (temporary file next to it, fsync, check, ``os.replace``);
any failure removes the temporary file, so a failed build never leaves a
signed bundle behind.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap import __version__, caps, oci
from airgap._internal import tarfmt, timefmt
from airgap._internal.fsutil import atomic_writer, check_output
from airgap._internal.jsonutil import canonical_bytes
from airgap._internal.progress import ByteProgress
from airgap._internal.spool import NO_SPACE, LayerSpool, no_space
from airgap._internal.text import plural
from airgap.exceptions import FormatError, InputError, IntegrityError, OperationError, SpecError, UnreachableError
from airgap.manifest import (
    MANIFEST_MEMBER,
    SIGNATURES_MEMBER,
    BaseRecord,
    BundleManifest,
    ImageRecord,
    MemberRecord,
    names_of,
)
from airgap.pull import Blob, Documents, ImageOrigin, LayoutOrigin, RegistryOrigin, Resolver
from airgap.registry.limits import Limits

__all__ = [
    "BuildResult",
    "FILE_CHUNK",
    "OutputWriteError",
    "PlannedMember",
    "RegionWriter",
    "build",
    "build_time",
    "check_caps",
    "collect_files",
    "hash_file",
    "load_since",
    "plan_members",
    "write_bundle",
]

FILE_CHUNK = 1024 * 1024
_SPOOL = True
"""Keep the layers the SBOM pass reads for the writer (off only in tests that compare the bundles)."""


def build_time(created: str | None = None) -> datetime:
    """The bundle's creation time: explicit, else SOURCE_DATE_EPOCH, else now.

    Reproducible builds need the time to be an input, not a reading of the clock.
    """
    if created:
        try:
            t = timefmt.to_datetime(created)
        except ValueError:
            raise InputError(f"--created {created!r}: expected an RFC 3339 UTC time like 2026-11-23T12:00:00Z") from None
        return t
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        if not epoch.isdigit():
            raise InputError(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds")
        return datetime.fromtimestamp(int(epoch), tz=UTC)
    return datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- sinks


class OutputWriteError(Exception):
    """The output file could not be written: not an OSError, so no download takes it for a
    dropped connection and retries (a full disk stays full)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class RegionWriter:
    """Writes one blob into its reserved region of the output file with pwrite.

    ``seek`` lets a downloader restart or resume after a dropped connection.
    """

    def __init__(self, fd: int, offset: int, size: int, progress: Callable[[int], None] | None = None, artifact: str = "blob"):
        self.fd, self.offset, self.size, self.artifact = fd, offset, size, artifact
        self.pos = 0
        self.progress = progress

    def write(self, data: bytes) -> int:
        if self.pos + len(data) > self.size:
            raise IntegrityError(self.artifact, f"more bytes than the descriptor's {self.size}")
        view = memoryview(data)
        while view:
            try:
                n = os.pwrite(self.fd, view, self.offset + self.pos)
            except OSError as exc:
                raise OutputWriteError(exc) from None
            self.pos += n
            view = view[n:]
            if self.progress:
                self.progress(n)
        return len(data)

    def seek(self, pos: int) -> None:
        if self.progress and pos < self.pos:
            self.progress(pos - self.pos)
        self.pos = pos

    def tell(self) -> int:
        return self.pos


# --------------------------------------------------------------------------- layout


@dataclass
class PlannedMember:
    path: str
    size: int
    sha256: str
    mode: int
    data: bytes | None = None  # small members written from memory
    blob: Blob | None = None  # downloaded into place (or, if blob.stored, taken from the Documents store)
    file: Path | None = None  # copied from the spec's directory
    header_offset: int = 0


def plan_members(images: list[ImageRecord], blobs: dict[str, Blob], files: list[tuple[str, Path, int, int, str]],
                 skip: set[str]) -> tuple[list[PlannedMember], list[tuple[str, int]]]:
    """Order and describe every member (except manifest and signatures)."""
    index_entries: list[dict[str, Any]] = [
        {"mediaType": r.media_type, "digest": r.digest, "size": r.size, "annotations": {oci.REF_NAME: r.layout_ref}}
        for r in images
    ]
    index_entries.sort(key=lambda e: e["annotations"][oci.REF_NAME])
    index_bytes = canonical_bytes({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": index_entries})
    if len(index_bytes) > oci.MAX_INDEX_BYTES:
        raise SpecError("images", f"index.json would be {plural(len(index_bytes), 'byte')}; verify reads at most {oci.MAX_INDEX_BYTES}")
    layout_bytes = oci.layout_file()
    external: list[tuple[str, int]] = []
    members = [
        PlannedMember("oci-layout", len(layout_bytes), hashlib.sha256(layout_bytes).hexdigest(), 0o644, data=layout_bytes),
        PlannedMember("index.json", len(index_bytes), hashlib.sha256(index_bytes).hexdigest(), 0o644, data=index_bytes),
    ]
    for digest in sorted(blobs):
        b = blobs[digest]
        # Manifests are always carried, even in a differential bundle: they are what
        # import pushes last and they are tiny.
        if digest in skip and not b.manifest:
            external.append((digest, b.size))
            continue
        members.append(PlannedMember(oci.blob_path(digest), b.size, digest.split(":", 1)[1], 0o644, blob=b))
    for dest, src, size, mode, sha in sorted(files):
        members.append(PlannedMember("files/" + dest, size, sha, mode, file=src))
    return members, external


def check_caps(members: list[PlannedMember], images: list[ImageRecord], external: list[tuple[str, int]]) -> None:
    """Refuse, with the reason, a bundle verify would refuse for its size (limits in airgap.caps)."""
    if len(members) > caps.MAX_MEMBERS:
        files = sum(1 for m in members if m.path.startswith("files/"))
        raise SpecError("files", f"the bundle would hold {plural(len(members), 'member')} ({plural(files, 'file')}); verify accepts at most "
                                 f"{caps.MAX_MEMBERS}: carry the files in more than one bundle, or as one archive file")
    if len(images) > caps.MAX_IMAGES:
        raise SpecError("images", f"{len(images)} images; verify accepts at most {caps.MAX_IMAGES} per bundle")
    if len(external) > caps.MAX_EXTERNAL_BLOBS:
        raise SpecError("", f"{len(external)} blobs left out for the base; verify accepts at most {caps.MAX_EXTERNAL_BLOBS}")


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(FILE_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def collect_files(spec) -> list[tuple[str, Path, int, int, str]]:
    """(dest, src, size, mode, sha256) for every file the spec carries."""
    out: dict[str, tuple[str, Path, int, int, str]] = {}
    seen: dict[str, str] = {}
    for f in spec.files:
        for dest, src in f.entries:
            if src.is_symlink() or not src.is_file():
                raise SpecError(f"files[{f.index}].src", f"{src} is not a regular file")
            mode = f.mode if f.mode is not None else (0o755 if os.stat(src).st_mode & 0o111 else 0o644)
            tarfmt.check_name("files/" + dest, f"files[{f.index}] {dest}")
            key = tarfmt.collision_key(dest)
            if key in seen:
                raise SpecError(f"files[{f.index}].dest", f"{dest} collides with {seen[key]}")
            seen[key] = dest
            size, sha = hash_file(src)
            out[dest] = (dest, src, size, mode & 0o777, sha)
    return list(out.values())


# --------------------------------------------------------------------------- writing


def _layout_offsets(members: list[PlannedMember], manifest_size: int) -> int:
    offset = tarfmt.BLOCK + tarfmt.padded(manifest_size)
    for m in members:
        m.header_offset = offset
        offset += tarfmt.BLOCK + tarfmt.padded(m.size)
    return offset


def write_bundle(
    out: Path,
    manifest_bytes: bytes,
    members: list[PlannedMember],
    envelope_bytes: bytes,
    *,
    documents: Documents,
    check: Callable[[Path], None],
    workers: int = 4,
    progress: ByteProgress | None = None,
    force: bool = False,
    spool: LayerSpool | None = None,
) -> None:
    """Write the archive to a temporary file next to *out*; rename it into place
    only after ``check(temporary path)`` passes (over an existing *out* only with
    *force*).  On any failure nothing is left."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sig_offset = _layout_offsets(members, len(manifest_bytes))
    with atomic_writer(out, overwrite=force) as f:
        try:
            _write_members(f.fileno(), manifest_bytes, members, envelope_bytes, sig_offset, documents, workers,
                           progress, spool)
            os.fsync(f.fileno())
        except (OSError, OutputWriteError) as failure:
            exc = failure.error if isinstance(failure, OutputWriteError) else failure
            if exc.errno in NO_SPACE:
                raise no_space(out.parent, f"writing {out.name}", spool) from None
            if exc.filename is not None:
                raise
            raise OperationError(f"{out}: cannot write the bundle ({exc.strerror or exc})") from None
        check(Path(f.name))


def _write_members(fd: int, manifest_bytes: bytes, members: list[PlannedMember], envelope_bytes: bytes,
                   sig_offset: int, documents: Documents, workers: int, progress: ByteProgress | None,
                   spool: LayerSpool | None = None) -> None:
    def put(offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            offset += n
            view = view[n:]

    put(0, tarfmt.header(MANIFEST_MEMBER, len(manifest_bytes), 0o644) + manifest_bytes + tarfmt.padding(len(manifest_bytes)))
    downloads: list[PlannedMember] = []
    for m in members:
        put(m.header_offset, tarfmt.header(m.path, m.size, m.mode))
        pad = tarfmt.padding(m.size)
        if pad:
            put(m.header_offset + tarfmt.BLOCK + m.size, pad)
        data = m.data if m.data is not None or m.blob is None or not m.blob.stored else documents.get(m.blob.digest)
        if data is not None:
            if len(data) != m.size:  # pragma: no cover - the store holds only checked documents
                raise IntegrityError(m.path, f"{plural(len(data), 'byte')} where {m.size} were planned")
            put(m.header_offset + tarfmt.BLOCK, data)
        elif m.file is not None:
            _copy_file(m, fd)
        else:
            downloads.append(m)
    tail = tarfmt.header(SIGNATURES_MEMBER, len(envelope_bytes), 0o644) + envelope_bytes + tarfmt.padding(len(envelope_bytes)) + tarfmt.END_OF_ARCHIVE
    put(sig_offset, tail)
    os.ftruncate(fd, sig_offset + len(tail))
    _download_all(downloads, fd, workers, progress, spool)


def _copy_file(m: PlannedMember, fd: int) -> None:
    h = hashlib.sha256()
    sink = RegionWriter(fd, m.header_offset + tarfmt.BLOCK, m.size, artifact=str(m.file))
    assert m.file is not None
    with open(m.file, "rb") as f:
        while chunk := f.read(FILE_CHUNK):
            h.update(chunk)
            sink.write(chunk)
    if sink.tell() != m.size or h.hexdigest() != m.sha256:
        raise IntegrityError(str(m.file), "file changed while the bundle was being built")


def _download_all(downloads: list[PlannedMember], fd: int, workers: int, progress: ByteProgress | None,
                  spool: LayerSpool | None = None) -> None:
    if not downloads:
        return
    # Largest first, so one big layer does not start last and run alone.
    downloads = sorted(downloads, key=lambda m: -m.size)
    errors: list[BaseException] = []
    stop = threading.Event()

    def one(m: PlannedMember) -> None:
        if stop.is_set():
            return
        assert m.blob is not None and m.blob.origin is not None
        sink = RegionWriter(fd, m.header_offset + tarfmt.BLOCK, m.size, progress.update if progress else None,
                            artifact=f"{m.blob.origin.label}@{m.blob.digest}")
        try:
            if spool is not None and spool.has(m.blob.digest):
                spool.copy_out(m.blob.digest, m.size, sink, sink.artifact)
            else:
                m.blob.origin.copy_blob(m.blob.digest, m.size, sink)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, first error wins
            stop.set()
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, downloads))
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    path: Path
    manifest: BundleManifest
    blob_bytes: int
    external_blobs: int
    warnings: tuple[str, ...] = ()


def load_since(path: str | None) -> tuple[set[str], BaseRecord | None]:
    """Blobs the receiving side confirmed it has (``airgap inventory`` output or a manifest)."""
    if not path:
        return set(), None
    from airgap import inventory

    inv = inventory.Inventory.load(path)
    return inv.blob_digests(), BaseRecord(inv.kind, inv.digest, inv.description)


def _manifest_bytes(spec, spec_path: Path, t0: datetime, records, base, external, workload_records, packages,
                    planned: list[PlannedMember]) -> bytes:
    """The manifest of a build whose members are *planned* (made twice: before and after the SBOMs)."""
    return BundleManifest(
        name=spec.metadata.name,
        version=spec.metadata.version,
        target=spec.metadata.target,
        created=timefmt.format_time(t0),
        expires=timefmt.format_time(spec.metadata.expires_at),
        spec_name=spec_path.name,
        spec_sha256=spec.digest.split(":")[-1],
        toolkit_version=__version__,
        images=tuple(records),
        members=tuple(MemberRecord(m.path, m.size, m.sha256, m.mode) for m in planned),
        base=base,
        external_blobs=tuple(sorted(external)),
        description=spec.metadata.description,
        workloads=workload_records,
        packages=packages,
    ).to_bytes()


def build(
    spec_path: str | os.PathLike,
    out: str | os.PathLike,
    signing_key,
    *,
    plain_http: bool = False,
    ca_file: str | None = None,
    auth_file: str | None = None,
    limits: Limits | None = None,
    created: str | None = None,
    since: str | None = None,
    workers: int = 4,
    progress: bool = False,
    registry_client_factory: Callable[..., object] | None = None,
    log: Callable[[str], None] | None = None,
    apt_sources: str | os.PathLike | None = None,
    apt_baseline: str | os.PathLike | None = None,
    force: bool = False,
) -> BuildResult:
    """Build and sign a bundle from a spec; see the module docstring.

    An existing *out* is replaced only with *force* (refused before anything is pulled).
    *apt_sources* and *apt_baseline* replace the spec's ``packages.sources`` and
    ``packages.baseline`` (the connected side's mirror and the target's base
    system are properties of where the bundle is built, like its registries).
    """
    from airgap import dsse
    from airgap import spec as specmod

    spec_path = Path(spec_path)
    out = check_output(out, force=force)
    t0 = build_time(created)
    # Relative expiry counts from the creation time, not the clock: same inputs, same bytes.
    spec = specmod.load_spec(spec_path, now=t0)
    skip, base = load_since(since)
    factory = registry_client_factory or _default_client_factory(plain_http, ca_file, auth_file, limits)
    clients: dict[str, object] = {}
    documents = Documents(out.parent)
    work = tempfile.TemporaryDirectory(prefix="airgap-build-")
    spool: LayerSpool | None = None
    try:
        resolver = Resolver(documents)
        records = _resolve_images(spec, resolver, clients, factory, log)
        warnings: list[str] = []
        files, workload_records, packages = _bundle_files(spec, records, Path(work.name), t0, log, warnings,
                                                          apt_sources, apt_baseline)
        members, external = plan_members(records, resolver.blobs, files, skip)
        manifest_of = functools.partial(_manifest_bytes, spec, spec_path, t0, records, base, external,
                                        workload_records, packages)

        # The manifest is checked as verify will read it before a byte of layer content
        # is fetched (a build that cannot be accepted stops here, having written
        # nothing), and again once the SBOMs, read from the layers, are pinned in it.
        check_caps(members, records, external)
        _own_manifest(manifest_of(members), out)
        # Every blob the writer will copy and the SBOM pass reads is fetched once, by the
        # SBOM pass, and kept in the spool until the writer has copied it.
        spool = LayerSpool(out, {m.blob.digest for m in members if m.blob is not None and not m.blob.stored}) \
            if _SPOOL else None
        members += _sbom_members(records, resolver, documents, workers, log, spool)
        check_caps(members, records, external)
        manifest = _own_manifest(manifest_of(members), out)
        envelope = dsse.Envelope(manifest.to_bytes())
        envelope.add_signature(signing_key, artifact=SIGNATURES_MEMBER)
        blob_bytes = sum(m.size for m in members if m.blob is not None and not m.blob.stored)
        with ByteProgress(total=blob_bytes, desc="pulling", enabled=progress) as bar:
            write_bundle(out, manifest.to_bytes(), members, envelope.to_bytes(), documents=documents,
                         check=lambda tmp: _check_output(tmp, out, manifest.to_bytes(), signing_key.public_key),
                         workers=workers, progress=bar, force=force, spool=spool)
    except SpecError as exc:  # found while resolving: say where the spec asks for it
        raise spec.locate(exc) from None
    finally:
        _release(spool, documents, work, clients)
    return BuildResult(out, manifest, blob_bytes, len(external), tuple(warnings))


def _bundle_files(spec, records: list[ImageRecord], work: Path, t0: datetime, log, warnings: list[str],
                  apt_sources, apt_baseline) -> tuple[list, tuple, object]:
    """The spec's files, the toolkit's wheels, the workloads' files and the OS packages, as bundle files."""
    files = collect_files(spec)
    if getattr(spec, "wheels", None):
        files.extend(_wheel_files(spec, warnings))
    workload_records, workload_files = _workload_files(spec, records)
    packages, package_files = _package_files(spec, work, t0, log, apt_sources, apt_baseline)
    return files + workload_files + package_files, workload_records, packages


def _release(spool: LayerSpool | None, documents: Documents, work: tempfile.TemporaryDirectory,
             clients: dict[str, object]) -> None:
    """What a build holds, given back whether it succeeded or not."""
    if spool is not None:
        spool.close()
    documents.close()
    work.cleanup()
    for c in clients.values():
        close = getattr(c, "close", None)
        if close:
            close()


def _resolve_images(spec, resolver: Resolver, clients: dict[str, object], factory: Callable[[str], object],
                    log: Callable[[str], None] | None) -> list[ImageRecord]:
    """One record per spec image; *clients* gets one registry client per registry."""
    from airgap import sovereignty

    policy = sovereignty.SovereigntyPolicy.load()
    records: list[ImageRecord] = []
    for img in spec.images:
        artifact = f"{img.field} {img.ref}"
        try:
            # Every name in the record is derived from the ref the officer is shown; verify checks the same.
            source = spec.sources[img.alias] if getattr(img, "alias", None) else None
            names = names_of(img.ref, source)
        except ValueError as exc:
            raise SpecError(f"{img.field}", str(exc)) from None
        registry, repository, tag, layout_ref = names.registry, names.repository, names.tag, names.layout_ref
        sov = None
        if img.kind == "oci-layout":
            origin: ImageOrigin = LayoutOrigin(Path(img.layout_path))
            reference, pinned = img.digest or img.tag, None
        else:
            ref = img.reference
            match = policy.check_image_source(ref.registry, img.allow_reason, artifact=artifact)
            if match is not None:
                sov = {"provider": match.provider, "reason": img.allow_reason}
            if ref.registry not in clients:
                clients[ref.registry] = factory(ref.registry)
            origin = RegistryOrigin(clients[ref.registry], ref.repository)
            reference, pinned = ref.digest or ref.tag, ref.digest
        if log:
            log(f"resolving {img.ref}")
        try:
            r = resolver.resolve(origin, reference, img.platforms, artifact)
        except UnreachableError as exc:
            raise UnreachableError(exc.host, str(exc) + _source_hint(spec, img, registry)) from None
        if pinned and r.source_index is None and r.digest != pinned:
            raise IntegrityError(artifact, f"registry served {r.digest}, the spec pins {pinned}")
        records.append(ImageRecord(
            ref=img.ref, layout_ref=layout_ref, registry=registry, repository=repository, tag=tag,
            digest=r.digest, media_type=r.media_type, size=r.size, platforms=r.platforms,
            source_index=r.source_index, sovereignty=sov, source=source,
        ))
    refs = [r.layout_ref for r in records]
    if len(set(refs)) != len(refs):
        raise SpecError("images", "the same image reference is listed twice")
    return records


def _source_hint(spec, img, registry: str) -> str:
    """Where an unreachable registry's address came from, and what to set instead."""
    alias = getattr(img, "alias", None)
    where = f"sources.{alias}" if alias else img.field
    for name, value in getattr(spec, "variables", {}).items():
        if value != registry or (not alias and f"${{{name}" not in getattr(img, "spec_ref", "")):
            continue
        if os.environ.get(name):
            return f"; {where} takes the registry from {name}={value}: check that variable"
        return (f"; {where} takes the registry from ${{{name}}}, which is not set, so the spec's default "
                f"{value} was used: set {name}=host:port of your connected-side registry "
                "(and add --plain-http if it serves plain HTTP)")
    return ""


def _own_manifest(manifest_bytes: bytes, out: Path) -> BundleManifest:
    try:
        return BundleManifest.from_bytes(manifest_bytes)
    except FormatError as exc:
        raise FormatError(str(out), f"not written: its manifest would be refused by verify ({exc})") from None


def _check_output(tmp: Path, out: Path, manifest_bytes: bytes, builder_key) -> None:
    """verify's structural checks, on the file about to become *out*."""
    from airgap import dsse, verify
    from airgap.exceptions import AirgapError

    try:
        manifest, signatures = verify.check_structure(tmp)
        envelope = dsse.Envelope.from_bytes(signatures, SIGNATURES_MEMBER)
        if manifest.to_bytes() != manifest_bytes or envelope.payload != manifest_bytes:
            raise IntegrityError(MANIFEST_MEMBER, "differs from the manifest this build signed")
        if envelope.payload_type != dsse.PAYLOAD_TYPE or len(envelope.signatures) != 1:
            raise FormatError(SIGNATURES_MEMBER, "not the one builder signature this build made")
        builder_key.verify(envelope.signatures[0].sig, envelope.pae(), artifact=SIGNATURES_MEMBER)
    except AirgapError as exc:
        raise IntegrityError(str(out), f"not written: the bundle failed its own check ({exc})") from None


def _default_client_factory(plain_http: bool, ca_file: str | None, auth_file: str | None, limits: Limits | None):
    from airgap.registry import RegistryClient

    def make(registry: str):
        return RegistryClient(registry, plain_http=plain_http, ca_file=ca_file, auth_file=auth_file, limits=limits)

    return make


def _sbom_members(records: list[ImageRecord], resolver: Resolver, documents: Documents, workers: int,
                  log, spool: LayerSpool | None = None) -> list[PlannedMember]:
    # The manifest pins each SBOM and comes first in the archive, so the SBOMs must
    # exist before the layout is fixed: the layers they read are kept in *spool*
    # for the writer.
    from airgap import sbom

    carried = _CarriedDocuments(resolver.blobs, documents, spool)
    images = [_SbomImage(r, carried) for r in records]
    return [PlannedMember(path, len(data), hashlib.sha256(data).hexdigest(), 0o644, data=data)
            for path, data in sbom.for_images(images, workers=workers, log=log)]


@dataclass(frozen=True)
class _Carried:
    """A manifest or index the bundle carries, as the SBOM reader takes it."""

    digest: str
    media_type: str
    data: bytes
    origin: object


class _CarriedDocuments(Mapping[str, _Carried]):
    """The carried documents by digest, read from the build's document store on use
    (so the SBOM pass keeps the store's memory bound)."""

    def __init__(self, blobs: dict[str, Blob], store: Documents, spool: LayerSpool | None) -> None:
        self._blobs, self._store, self._spool = blobs, store, spool

    def __getitem__(self, digest: str) -> _Carried:
        blob = self._blobs.get(digest)
        data = self._store.get(digest) if blob is not None and blob.manifest else None
        if blob is None or data is None:
            raise KeyError(digest)
        return _Carried(digest, blob.media_type, data, _SbomOrigin(blob.origin, self._store, self._spool))

    def __iter__(self) -> Iterator[str]:
        return (d for d, b in self._blobs.items() if b.manifest)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _SbomOrigin:
    """Where the SBOM pass reads an image from: configs from the document store (fetched and
    checked while resolving), layers through the spool, so no blob is fetched twice."""

    def __init__(self, origin, store: Documents, spool: LayerSpool | None) -> None:
        self._origin, self._store, self._spool = origin, store, spool
        self.label = origin.label

    def get_config(self, desc) -> bytes:
        data = self._store.get(desc.digest)
        return data if data is not None else self._origin.get_config(desc)

    def copy_blob(self, digest: str, size: int, sink) -> None:
        if self._spool is None:
            self._origin.copy_blob(digest, size, sink)
        else:
            self._spool.copy_blob(self._origin, digest, size, sink)


@dataclass(frozen=True)
class _SbomImage:
    record: ImageRecord
    documents: Mapping[str, _Carried]


def _wheel_files(spec, warnings: list[str]) -> list[tuple[str, Path, int, int, str]]:
    """The wheelhouse's wheels and, when it has one, its toolkit release statement.

    The statement's signatures are the isolated side's business (the builder
    holds no toolkit key and may not know the policy), but a statement that
    does not describe these very wheels is refused here: carried, it would only
    make the rollout keep the old toolkit.
    """
    from airgap import toolkit, wheels

    house = wheels.wheelhouse(spec)
    out = []
    records = {}
    for path in house.wheels:
        size, sha = hash_file(path)
        records[path.name] = toolkit.WheelRecord(path.name, size, sha)
        out.append((f"wheels/{path.name}", path, size, 0o644, sha))
    if house.release is None:
        warnings.append(f"{house.directory} has no {toolkit.RELEASE_FILE}: the bundle carries {plural(len(out), 'wheel')} that "
                        "no toolkit release lists, so isolated hosts keep their installed toolkit (build with "
                        f"{wheels.ENV}=<a toolkit release directory>)")
        return out
    statement = toolkit.ReleaseStatement.from_file(house.release)
    problems = toolkit.check_wheels(statement.release, records, house.directory)
    if problems:
        raise InputError(f"{house.release} does not describe the wheels next to it: {'; '.join(problems)}")
    size, sha = hash_file(house.release)
    out.append((f"wheels/{toolkit.RELEASE_FILE}", house.release, size, 0o644, sha))
    return out


def _workload_files(spec, records: list[ImageRecord]) -> tuple[tuple, list[tuple[str, Path, int, int, str]]]:
    """Each workload's files, read and checked once, and its record: objects and the bundle image of each reference."""
    from airgap import workloads

    images = [(src.spec_ref, src.ref, record) for src, record in zip(spec.images, records)]
    found_records: list[workloads.WorkloadRecord] = []
    files = []
    for w in spec.workloads:
        seen: set[str] = set()
        objects, uses_found, paths = [], [], []
        for rel, src in w.entries:
            where = f"workloads[{w.index}] {w.name}: {rel}"
            data = src.read_bytes()
            try:
                found, uses = workloads.scan(workloads.parse(data, rel), rel, seen)
            except FormatError as exc:
                raise SpecError(f"workloads[{w.index}].src", f"{w.name}: {exc}") from None
            objects += found
            for use in uses:
                record = workloads.resolve(use.ref, images)
                if record is None:
                    raise SpecError(f"workloads[{w.index}].src",
                                    f"{where}: {use.object} {use.field} is {use.ref!r}, which is not one of the bundle's "
                                    "images; list it under images (or write it as images[].ref writes it)")
                uses_found.append(workloads.WorkloadImage(use.object, use.field, use.ref, record.layout_ref, record.digest))
            dest = f"workloads/{w.name}/{rel}"
            tarfmt.check_name("files/" + dest, where)
            files.append((dest, src, len(data), 0o644, hashlib.sha256(data).hexdigest()))
            paths.append("files/" + dest)
        if not objects:
            raise SpecError(f"workloads[{w.index}].src", f"{w.name}: no Kubernetes object in its files")
        found_records.append(workloads.WorkloadRecord(w.name, tuple(paths), tuple(objects), tuple(uses_found)))
    return tuple(found_records), files


def _package_files(spec, work: Path, created: datetime, log, apt_sources=None,
                   apt_baseline=None) -> tuple[object, list[tuple[str, Path, int, int, str]]]:
    """The .deb closure apt computes for ``packages:``, with the repository index, as bundle files."""
    p = spec.packages
    if p is None:
        if apt_sources or apt_baseline:
            raise SpecError("packages", "--apt-sources/--apt-baseline given, but the spec has no packages: section")
        return None, []
    from airgap import debs

    sources = Path(apt_sources) if apt_sources else p.sources
    baseline = Path(apt_baseline) if apt_baseline else p.baseline
    for what, path in (("--apt-sources", sources), ("--apt-baseline", baseline)):
        if path is not None and not path.is_file():
            raise InputError(f"{what} {path}: no such file")
    resolved = debs.resolve(p.names, sources, baseline, p.architecture, work, log)
    index_paths = debs.write_repository(resolved, work / "index", release=p.release, architecture=p.architecture,
                                        label=f"{spec.metadata.name} {spec.metadata.version}", date=created)
    files = [(f"{debs.INDEX_DIR}/{d.file_name}", d.path, d.size, 0o644, d.sha256) for d in resolved]
    for path in index_paths:
        size, sha = hash_file(path)
        files.append((f"{debs.INDEX_DIR}/{path.name}", path, size, 0o644, sha))
    record = debs.PackageSet(
        release=p.release, architecture=p.architecture, names=p.names,
        debs=tuple(debs.DebRecord(d.package, d.version, d.architecture, f"files/{debs.INDEX_DIR}/{d.file_name}")
                   for d in resolved),
        index=tuple(f"files/{debs.INDEX_DIR}/{path.name}" for path in index_paths),
    )
    return record, files
